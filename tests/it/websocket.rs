//! WebSockets through `vespa worker`: the upgrade passes auth and admission like any
//! request, the two upgraded connections are spliced byte for byte, the socket is one
//! working request until it closes, and the worker closes it properly when it must
//! (idle timeout, drain). Clients and backends are `tokio-tungstenite`, an implementation
//! independent of the worker's.

use crate::support::*;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use vespa::http_util::Body;
use vespa::worker::Worker;

type ClientSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the WebSocket backend saw.
#[derive(Debug)]
enum WsEvent {
    /// A handshake: the request target and headers, and a handle to the socket's commands.
    Opened {
        target: String,
        headers: HeaderMap,
        control: mpsc::UnboundedSender<Command>,
    },
    /// The client's close frame (its code), or `None` when the connection ended without one.
    Closed(Option<u16>),
}

/// What a test makes the backend do on one socket.
#[derive(Debug)]
enum Command {
    /// Send a message.
    Send(Message),
    /// Start the closing handshake with this code.
    Close(u16),
    /// Drop the connection without a close frame.
    Vanish,
}

/// A WebSocket backend: `/health` answers 200; an upgrade on any other path echoes every
/// message back (tungstenite answers pings itself), or refuses with 403 on `/refuse`.
struct WsBackend {
    addr: SocketAddr,
    events: mpsc::UnboundedReceiver<WsEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsBackend {
    async fn start() -> WsBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(vespa::serve::accept_loop(listener, move |req| {
            answer(req, tx.clone())
        }));
        WsBackend { addr, events, task }
    }

    fn url(&self) -> http::Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    async fn next(&mut self) -> WsEvent {
        tokio::time::timeout(PATIENCE, self.events.recv())
            .await
            .expect("backend event in time")
            .expect("backend running")
    }

    /// The next handshake: its target, headers and command handle.
    async fn opened(&mut self) -> (String, HeaderMap, mpsc::UnboundedSender<Command>) {
        match self.next().await {
            WsEvent::Opened {
                target,
                headers,
                control,
            } => (target, headers, control),
            other => panic!("expected a handshake, got {other:?}"),
        }
    }

    async fn closed(&mut self) -> Option<u16> {
        match self.next().await {
            WsEvent::Closed(code) => code,
            other => panic!("expected the socket to close, got {other:?}"),
        }
    }
}

async fn answer(
    mut req: Request<Incoming>,
    events: mpsc::UnboundedSender<WsEvent>,
) -> Response<Body> {
    let status = |s: u16, body: &'static str| {
        let mut r = Response::new(vespa::http_util::full(body));
        *r.status_mut() = StatusCode::from_u16(s).unwrap();
        r
    };
    if req.uri().path() == "/health" {
        return status(200, "ok");
    }
    if req.uri().path() == "/refuse" {
        return status(403, r#"{"detail": "no sockets here"}"#);
    }
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return status(400, "not a WebSocket handshake");
    };
    let (control, commands) = mpsc::unbounded_channel();
    let _ = events.send(WsEvent::Opened {
        target: req.uri().to_string(),
        headers: req.headers().clone(),
        control,
    });
    let protocol = req.headers().get("sec-websocket-protocol").cloned();
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(io) = upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await;
        echo(ws, commands, events).await;
    });
    let mut resp = Response::new(vespa::http_util::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert("connection", "upgrade".parse().unwrap());
    h.insert("upgrade", "websocket".parse().unwrap());
    h.insert(
        "sec-websocket-accept",
        tungstenite::handshake::derive_accept_key(key.as_bytes())
            .parse()
            .unwrap(),
    );
    if let Some(p) = protocol {
        h.insert("sec-websocket-protocol", p);
    }
    resp
}

async fn echo<S>(
    mut ws: WebSocketStream<S>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<WsEvent>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    if ws.send(m).await.is_err() {
                        let _ = events.send(WsEvent::Closed(None));
                        return;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let _ = events.send(WsEvent::Closed(frame.map(|f| u16::from(f.code))));
                    // tungstenite answers the close; drive it out, then end.
                    while let Some(Ok(_)) = ws.next().await {}
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    let _ = events.send(WsEvent::Closed(None));
                    return;
                }
            },
            Some(cmd) = commands.recv() => match cmd {
                Command::Send(m) => ws.send(m).await.unwrap(),
                Command::Close(code) => {
                    let _ = ws
                        .close(Some(CloseFrame { code: CloseCode::from(code), reason: "bye".into() }))
                        .await;
                }
                Command::Vanish => return,
            },
        }
    }
}

/// `ws://WORKER{target}`.
fn ws_url(worker: &Worker, target: &str) -> String {
    format!("ws://{}{target}", worker.local_addr())
}

async fn connect(url: &str) -> (ClientSocket, tungstenite::handshake::client::Response) {
    tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake in time")
        .unwrap_or_else(|e| panic!("handshake with {url}: {e}"))
}

/// The next message from the worker, failing the test if none comes in time.
async fn next<S>(ws: &mut WebSocketStream<S>) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("message in time")
        .expect("socket open")
        .expect("message")
}

/// The code of the close frame the worker sends next (failing the test if the next message
/// is anything else), after reading on until the connection ends: tungstenite answers the
/// close frame itself.
async fn close_code<S>(ws: &mut WebSocketStream<S>) -> u16
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let code = match next(ws).await {
        Message::Close(Some(f)) => u16::from(f.code),
        other => panic!("expected a close frame, got {other:?}"),
    };
    while let Some(Ok(_)) = ws.next().await {}
    code
}

/// A raw handshake request's status and body (for refusals, which are not sockets).
async fn refused_handshake(url: &str) -> (StatusCode, Value) {
    let req = Request::get(url)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (parts, body) = send(&h1_client(), req).await;
    (
        parts.status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_websocket_relays_text_binary_large_frames_and_pings_byte_for_byte() {
    let mut backend = WsBackend::start().await;
    let worker = start_worker(config_for(backend.url())).await;
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(ws_url(
        &worker,
        "/echo?room=1&api_key=k",
    ))
    .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "chat.v1".parse().unwrap());
    let (mut ws, resp) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 101);
    assert!(resp.headers().contains_key("x-request-id"));
    assert_eq!(resp.headers()["sec-websocket-protocol"], "chat.v1");
    let (target, headers, _control) = backend.opened().await;
    assert_eq!(target, "/echo?room=1", "api_key never reaches the backend");
    assert_eq!(headers["upgrade"], "websocket");
    assert_eq!(headers["sec-websocket-protocol"], "chat.v1");
    assert!(headers.contains_key("sec-websocket-key"));
    assert!(headers.contains_key("x-request-id"));

    let large: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    for m in [
        Message::text("héllo wörld"),
        Message::binary((0..=255u8).collect::<Vec<u8>>()),
        Message::binary(large),
    ] {
        ws.send(m.clone()).await.unwrap();
        assert_eq!(next(&mut ws).await, m);
    }
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ws).await,
        Message::Pong(Bytes::from_static(b"are you there"))
    );
    let open = wait_until(&worker, |s| s.in_flight == 1).await;
    assert_eq!(open.working(), 1, "the socket is one working request");
    assert_eq!(worker.shared().websockets.open(), 1);
    let status = send(
        &h1_client(),
        request("GET", &url(&worker, "/_vespa/status"), ""),
    )
    .await;
    let status: Value = serde_json::from_slice(&status.1).unwrap();
    assert_eq!(
        (&status["websockets"], &status["in_flight"]),
        (&Value::from(1), &Value::from(1))
    );

    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    }))
    .await
    .unwrap();
    assert_eq!(backend.closed().await, Some(1000));
    while let Some(Ok(_)) = ws.next().await {}
    let s = assert_settled(&worker).await;
    assert_eq!(s.totals.served.requests, 1);
    assert_eq!(s.totals.served.workload, 1.0, "DEFAULT_COST");
}

#[tokio::test]
async fn an_upgrade_without_or_with_forged_auth_is_401_json_and_never_reaches_the_backend() {
    let mut backend = WsBackend::start().await;
    let autoscaler = vespa::autoscaler::Autoscaler::start(local_autoscaler("ep", KEY))
        .await
        .unwrap();
    let worker = start_worker(signed_config(backend.url(), &autoscaler, 1)).await;
    let own_url = format!("http://{}", worker.local_addr());
    let forged = format!(
        "/ws?clientId=a&serverless_cost=1&serverless_endpoint=ep&serverless_reqnum=1\
         &serverless_request_idx=1&serverless_signature=Zm9yZ2Vk&serverless_url={}",
        own_url.replace(':', "%3A").replace('/', "%2F")
    );
    for target in ["/ws?clientId=a", forged.as_str()] {
        let (status, body) =
            refused_handshake(&ws_url(&worker, target).replace("ws:", "http:")).await;
        assert_eq!(status, 401, "{target}: {body}");
        assert_eq!(body["code"], "invalid_signature", "{body}");
    }
    let partial = "/ws?serverless_cost=1";
    let (status, body) = refused_handshake(&url(&worker, partial)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "invalid_request");
    assert!(
        backend.events.try_recv().is_err(),
        "a refused upgrade never reaches the backend"
    );
    // Only a signature that fails its check is counted as unauthorized; a request with
    // no auth at all is refused before that.
    assert_eq!(worker.shared().unauthorized_total(), 1);
    let s = worker.shared().ledger.snapshot();
    assert_eq!(s.totals.received.requests, 0, "401s never reach the books");

    // Signed by the autoscaler, through the client library: the socket opens.
    let client = vespa::client::Client::new(test_config(&autoscaler.url(), "ep", KEY)).unwrap();
    let signed = client.websocket_url("/ws?clientId=a", 7.0).await.unwrap();
    assert!(
        signed.starts_with(&own_url.replace("http:", "ws:")),
        "{signed}"
    );
    let (mut ws, _) = connect(&signed).await;
    let (target, _, _) = backend.opened().await;
    assert_eq!(
        target, "/ws?clientId=a",
        "serverless_* stay with the worker"
    );
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("hi"));
    assert_eq!(
        wait_until(&worker, |s| s.in_flight == 1).await.cur_load,
        7.0
    );

    // Admission applies too: a draining worker refuses new sockets with 503 JSON.
    worker
        .shared()
        .lifecycle
        .set(vespa::worker::lifecycle::State::Draining);
    let again = client.websocket_url("/ws?clientId=b", 1.0).await.unwrap();
    let (status, body) = refused_handshake(&again.replace("ws:", "http:")).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::SERVICE_UNAVAILABLE, &Value::from("draining"))
    );
    drop(ws);
    let s = assert_settled(&worker).await;
    assert_eq!(
        s.totals.cancelled.requests, 1,
        "the client left without a close frame"
    );
    assert_eq!(s.totals.rejected.requests, 1);
}

#[tokio::test]
async fn a_backend_that_refuses_the_upgrade_is_relayed_as_a_normal_response() {
    let backend = WsBackend::start().await;
    let worker = start_worker(config_for(backend.url())).await;
    let (status, body) = refused_handshake(&url(&worker, "/refuse")).await;
    assert_eq!(status, 403);
    assert_eq!(body["detail"], "no sockets here");
    let s = assert_settled(&worker).await;
    assert_eq!(s.totals.served.requests, 1);
    assert_eq!(worker.shared().websockets.open(), 0);
}

#[tokio::test]
async fn the_socket_is_in_flight_until_either_side_closes_and_its_end_is_counted() {
    let mut backend = WsBackend::start().await;
    let worker = start_worker(config_for(backend.url())).await;

    // The backend closes: a clean close, served.
    let (mut ws, _) = connect(&ws_url(&worker, "/a")).await;
    let (_, _, control) = backend.opened().await;
    wait_until(&worker, |s| s.in_flight == 1).await;
    control.send(Command::Close(1000)).unwrap();
    assert_eq!(close_code(&mut ws).await, 1000, "the backend's close");
    assert_eq!(
        backend.closed().await,
        Some(1000),
        "the client answered the close"
    );
    let s = assert_settled(&worker).await;
    assert_eq!(s.totals.served.requests, 1);

    // The client vanishes: cancelled, and the backend connection is closed.
    let (ws, _) = connect(&ws_url(&worker, "/b")).await;
    backend.opened().await;
    wait_until(&worker, |s| s.in_flight == 1).await;
    drop(ws);
    assert_eq!(
        backend.closed().await,
        None,
        "the backend sees the socket end"
    );
    let s = assert_settled(&worker).await;
    assert_eq!(s.totals.cancelled.requests, 1);

    // The backend vanishes: errored, and the client's connection ends.
    let (mut ws, _) = connect(&ws_url(&worker, "/c")).await;
    let (_, _, control) = backend.opened().await;
    control
        .send(Command::Send(Message::text("last words")))
        .unwrap();
    assert_eq!(next(&mut ws).await, Message::text("last words"));
    control.send(Command::Vanish).unwrap();
    let end = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("end in time");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    let s = assert_settled(&worker).await;
    assert_eq!(s.totals.errored.requests, 1);
    assert_eq!(s.totals.received.requests, 3);
    let b = &worker.shared().backend;
    assert_eq!(
        b.open_connections(),
        b.idle_connections(),
        "no socket's backend connection is left open (or pooled)"
    );
}

#[tokio::test]
async fn an_idle_socket_is_closed_with_1001_after_the_websocket_idle_timeout() {
    let mut backend = WsBackend::start().await;
    let mut c = config_for(backend.url());
    c.websocket_idle_timeout = Some(Duration::from_millis(200));
    let worker = start_worker(c).await;
    let (mut ws, _) = connect(&ws_url(&worker, "/quiet")).await;
    backend.opened().await;
    // Nothing more is sent: the worker's close frame is the next thing either side sees.
    assert_eq!(close_code(&mut ws).await, 1001);
    assert_eq!(backend.closed().await, Some(1001));
    let s = assert_settled(&worker).await;
    assert_eq!(s.totals.served.requests, 1);
    let metrics = send(
        &h1_client(),
        request("GET", &url(&worker, "/_vespa/metrics"), ""),
    )
    .await
    .1;
    let text = String::from_utf8_lossy(&metrics);
    assert!(
        text.lines().any(|l| l.starts_with("vespa_requests_total{")
            && l.contains("code=\"101\"")
            && l.contains("outcome=\"timeout\"")
            && l.ends_with(" 1")),
        "{text}"
    );
}

#[tokio::test]
async fn drain_closes_open_sockets_with_1001_to_both_sides_and_settles_them() {
    let mut backend = WsBackend::start().await;
    let worker = start_worker(config_for(backend.url())).await;
    let (mut ws, _) = connect(&ws_url(&worker, "/long")).await;
    backend.opened().await;
    wait_until(&worker, |s| s.in_flight == 1).await;
    let drain = worker.drain(Duration::from_millis(100));
    let (finished, close, backend_close) =
        tokio::join!(drain, close_code(&mut ws), backend.closed());
    assert_eq!(close, 1001);
    assert_eq!(backend_close, Some(1001), "the backend sees a close too");
    assert!(!finished, "the socket was still open at the drain timeout");
    let s = assert_settled(&worker).await;
    assert_eq!(s.totals.served.requests, 1);
    assert_eq!(worker.shared().websockets.open(), 0);
}

/// A ComfyUI API-format txt2img graph of `steps` steps at 512 × 512.
fn txt2img(steps: u64) -> Value {
    serde_json::json!({
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": steps, "cfg": 7.0,
              "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "model.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "vespa", "images": ["8", 0]}},
    })
}

/// The JSON text messages of a socket up to the end of prompt `prompt_id` (`executing`
/// with `"node": null`).
async fn job_messages(ws: &mut ClientSocket, prompt_id: &str) -> Vec<Value> {
    let mut messages = Vec::new();
    loop {
        let m = match next(ws).await {
            Message::Text(t) => serde_json::from_str::<Value>(&t).unwrap(),
            other => panic!("ComfyUI sends JSON text, got {other:?}"),
        };
        let end = m["type"] == "executing"
            && m["data"]["node"].is_null()
            && m["data"]["prompt_id"] == prompt_id;
        messages.push(m);
        if end {
            return messages;
        }
    }
}

/// Checks a prompt's messages against ComfyUI's: start, cached, each node in execution
/// order with one progress per step on the sampler, the output, success, the queue's
/// status, and the end.
fn assert_comfyui_job(messages: &[Value], prompt_id: &str, steps: u64) {
    let kinds: Vec<&str> = messages
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    let mut expected = vec!["status", "execution_start", "execution_cached"];
    // Nodes 5, 4, 7, 6 (the sampler's inputs), then the sampler 3 with its steps.
    expected.extend(std::iter::repeat_n("executing", 5));
    expected.extend(std::iter::repeat_n("progress", steps as usize));
    expected.extend([
        "executing",
        "executing",
        "executed",
        "execution_success",
        "status",
        "executing",
    ]);
    assert_eq!(kinds, expected, "{messages:#?}");
    assert_eq!(
        messages[0]["data"]["status"]["exec_info"]["queue_remaining"],
        1
    );
    for m in &messages[1..] {
        if m["type"] != "status" {
            assert_eq!(m["data"]["prompt_id"], prompt_id, "{m}");
        }
    }
    let nodes: Vec<Value> = messages
        .iter()
        .filter(|m| m["type"] == "executing")
        .map(|m| m["data"]["node"].clone())
        .collect();
    assert_eq!(
        Value::Array(nodes),
        serde_json::json!(["5", "4", "7", "6", "3", "8", "9", null])
    );
    let progress: Vec<(u64, u64, &str)> = messages
        .iter()
        .filter(|m| m["type"] == "progress")
        .map(|m| {
            let d = &m["data"];
            (
                d["value"].as_u64().unwrap(),
                d["max"].as_u64().unwrap(),
                d["node"].as_str().unwrap(),
            )
        })
        .collect();
    let want: Vec<(u64, u64, &str)> = (1..=steps).map(|v| (v, steps, "3")).collect();
    assert_eq!(
        progress, want,
        "one progress per step, in order, on the sampler"
    );
    let executed = messages.iter().find(|m| m["type"] == "executed").unwrap();
    assert_eq!(executed["data"]["node"], "9");
    let image = &executed["data"]["output"]["images"][0];
    assert!(
        image["filename"].as_str().unwrap().starts_with("vespa_"),
        "{image}"
    );
    assert_eq!(image["type"], "output");
    let last_status = &messages[messages.len() - 2];
    assert_eq!(
        last_status["data"]["status"]["exec_info"]["queue_remaining"],
        0
    );
}

#[tokio::test]
async fn the_sim_reports_a_prompts_progress_on_its_comfyui_socket_in_the_time_it_takes() {
    let sim = crate::sim::start(vespa::sim::SimConfig {
        image_secs: 0.4,
        ..vespa::sim::SimConfig::default()
    })
    .await;
    let (mut ws, _) = connect(&format!("ws://{}/ws?clientId=c1", sim.local_addr())).await;
    let hello: Value = serde_json::from_str(next(&mut ws).await.to_text().unwrap()).unwrap();
    assert_eq!(
        hello,
        serde_json::json!({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "c1"}})
    );
    let body = serde_json::json!({"prompt": txt2img(8), "client_id": "c1"});
    let started = std::time::Instant::now();
    let (parts, answer) = send(
        &h1_client(),
        request("POST", &format!("{}/prompt", sim.url()), body.to_string()),
    )
    .await;
    assert_eq!(parts.status, 200);
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    let prompt_id = answer["prompt_id"].as_str().unwrap().to_string();
    assert_eq!(
        (answer["number"].as_u64(), &answer["node_errors"]),
        (Some(0), &serde_json::json!({}))
    );
    let messages = job_messages(&mut ws, &prompt_id).await;
    // 512 × 512 × 8 steps at 0.4 s per 512 × 512 × 20.
    assert!(
        started.elapsed() >= Duration::from_millis(160),
        "{:?}",
        started.elapsed()
    );
    assert_comfyui_job(&messages, &prompt_id, 8);
    let (_, history) = send(
        &h1_client(),
        request("GET", &format!("{}/history/{prompt_id}", sim.url()), ""),
    )
    .await;
    let history: Value = serde_json::from_slice(&history).unwrap();
    let entry = &history[prompt_id.as_str()];
    assert_eq!(entry["status"]["status_str"], "success");
    let executed = messages.iter().find(|m| m["type"] == "executed").unwrap();
    assert_eq!(entry["outputs"]["9"], executed["data"]["output"]);
    assert_eq!(entry["prompt"][3]["client_id"], "c1");
    let stats = sim.stats();
    assert_eq!((stats.completed, stats.active, stats.queued), (1, 0, 0));

    // A graph without an output node is refused as ComfyUI refuses it.
    let mut graph = txt2img(1);
    graph.as_object_mut().unwrap().remove("9");
    let (parts, refused) = send(
        &h1_client(),
        request(
            "POST",
            &format!("{}/prompt", sim.url()),
            serde_json::json!({"prompt": graph}).to_string(),
        ),
    )
    .await;
    assert_eq!(parts.status, 400);
    let refused: Value = serde_json::from_slice(&refused).unwrap();
    assert_eq!(refused["error"]["type"], "prompt_no_outputs");
    assert_eq!(refused["error"]["message"], "Prompt has no outputs");
}

#[tokio::test]
async fn a_comfyui_job_reports_its_progress_through_a_signed_worker() {
    let sim = crate::sim::start(vespa::sim::SimConfig {
        image_secs: 0.2,
        ..vespa::sim::SimConfig::default()
    })
    .await;
    let chain = Chain::start(sim.url().parse().unwrap(), |_| {}).await;
    let client =
        vespa::client::Client::new(test_config(&chain.autoscaler.url(), "ep", KEY)).unwrap();
    // The socket is routed with the job's workload: it is the long-lived part of the job.
    let socket = client
        .websocket_url("/ws?clientId=job-1", 5242.88)
        .await
        .unwrap();
    assert!(socket.contains("&serverless_signature="), "{socket}");
    let (mut ws, _) = connect(&socket).await;
    let hello: Value = serde_json::from_str(next(&mut ws).await.to_text().unwrap()).unwrap();
    assert_eq!(hello["data"]["sid"], "job-1");

    let submit = vespa::client::ClientRequest::post_json(
        "/prompt",
        &serde_json::json!({"prompt": txt2img(20), "client_id": "job-1"}),
    )
    .cost(1.0);
    let resp = client.request(submit).await.unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = serde_json::from_slice(
        &http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes(),
    )
    .unwrap();
    let prompt_id = answer["prompt_id"].as_str().unwrap().to_string();
    let messages = job_messages(&mut ws, &prompt_id).await;
    assert_comfyui_job(&messages, &prompt_id, 20);

    let history =
        vespa::client::ClientRequest::new(http::Method::GET, format!("/history/{prompt_id}"));
    let resp = client.request(history).await.unwrap();
    let history: Value = serde_json::from_slice(
        &http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes(),
    )
    .unwrap();
    assert_eq!(history[prompt_id.as_str()]["status"]["completed"], true);

    let open = chain.worker.shared().ledger.snapshot();
    assert_eq!(open.in_flight, 1, "the socket is still one working request");
    assert!((open.cur_load - 5242.88).abs() < 1e-9, "{}", open.cur_load);
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    let s = assert_settled(&chain.worker).await;
    assert_eq!(s.totals.served.requests, 3, "socket, prompt and history");
}

#[tokio::test]
async fn a_standard_library_python_client_follows_a_job_through_the_autoscaler_and_worker() {
    let sim = crate::sim::start(vespa::sim::SimConfig {
        image_secs: 0.2,
        ..vespa::sim::SimConfig::default()
    })
    .await;
    let chain = Chain::start(sim.url().parse().unwrap(), |_| {}).await;
    let out = run_python_script(
        "comfyui_ws_job.py",
        &[
            ("VESPA_AUTOSCALER_URL", chain.autoscaler.url().as_str()),
            ("VESPA_ENDPOINT", "ep"),
            ("VESPA_API_KEY", KEY),
            ("VESPA_STEPS", "5"),
        ],
    )
    .await;
    assert!(out.contains("handshake: HTTP/1.1 101"), "{out}");
    assert!(out.contains("closed: 1000"), "{out}");
    let s = assert_settled(&chain.worker).await;
    assert_eq!(
        s.totals.served.requests, 3,
        "socket, prompt and history: {out}"
    );
}

#[tokio::test]
async fn a_websocket_to_an_https_worker_is_relayed_over_tls() {
    let mut backend = WsBackend::start().await;
    let ca = crate::tls::Ca::new();
    let dir = crate::tls::TempDir::new();
    let mut c = config_for(backend.url());
    c.vast.use_ssl = true;
    c.tls = Some(crate::tls::write_pair(&dir, &ca.leaf("127.0.0.1")));
    let worker = start_worker(c).await;
    let tls = crate::tls::connect(worker.local_addr(), &ca.worker_ca(), &[b"http/1.1"])
        .await
        .unwrap();
    let url = format!("wss://127.0.0.1:{}/secure", worker.local_addr().port());
    let (mut ws, resp) = tokio::time::timeout(PATIENCE, tokio_tungstenite::client_async(url, tls))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(backend.opened().await.0, "/secure");
    let m = Message::binary(vec![42u8; 100_000]);
    ws.send(m.clone()).await.unwrap();
    assert_eq!(next(&mut ws).await, m);
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    let s = assert_settled(&worker).await;
    assert_eq!(s.totals.served.requests, 1);
}

#[tokio::test]
async fn a_socket_takes_no_concurrency_slot_so_its_job_runs_beside_it() {
    // ALLOW_PARALLEL=false, as Vast's ComfyUI template: one backend request at a time. A
    // progress socket opened before its job must not hold that one slot.
    let mut backend = WsBackend::start().await;
    let mut config = config_for(backend.url());
    config.allow_parallel = false;
    let worker = start_worker(config).await;
    let (mut ws, _) = connect(&ws_url(&worker, "/ws?clientId=c1")).await;
    backend.opened().await;
    wait_until(&worker, |s| s.in_flight == 1).await;
    let (head, _) = send(&h1_client(), request("GET", &url(&worker, "/health"), "")).await;
    assert_eq!(
        head.status, 200,
        "the job's request is served while the socket is open"
    );
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    }))
    .await
    .unwrap();
    assert_eq!(backend.closed().await, Some(1000));
    let s = assert_settled(&worker).await;
    assert_eq!(s.totals.served.requests, 2);
}

#[tokio::test]
async fn a_socket_opened_in_a_session_closes_with_1001_when_the_session_ends() {
    let mut backend = WsBackend::start().await;
    let worker = start_worker(config_for(backend.url())).await;
    let mut c = vespa::client::ClientConfig::new("http://127.0.0.1:9", "ep", "k");
    c.debug_worker_url = Some(url(&worker, ""));
    let client = vespa::client::Client::new(c).unwrap();
    let session = client
        .open_session(&vespa::client::SessionSpec::default())
        .await
        .unwrap();
    let ws_url = client
        .session_websocket_url(&session, "/ws?clientId=c1")
        .unwrap();
    assert!(ws_url.contains("serverless_session_id="), "{ws_url}");
    let (mut ws, _) = connect(&ws_url).await;
    let (target, _, _) = backend.opened().await;
    assert_eq!(
        target, "/ws?clientId=c1",
        "no serverless_* parameter reaches the backend"
    );
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("ping"));
    assert!(client.close_session(&session).await.unwrap());
    assert_eq!(close_code(&mut ws).await, 1001);
    assert_eq!(
        backend.closed().await,
        Some(1001),
        "the backend sees the close too"
    );
    let s = assert_settled(&worker).await;
    assert!(worker.shared().sessions.is_empty());
    assert_eq!(s.totals.served.requests, 2, "the session and its socket");
}
