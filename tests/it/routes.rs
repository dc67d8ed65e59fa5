//! Workload per route and uploads: each route's request counts by its own rule, and a
//! multipart upload travels through the worker unchanged, streamed, within `MAX_BODY_SIZE`;
//! a mixed load (chat, embeddings, a transcription upload) runs through `vespa autoscaler`,
//! a signed worker and `vespa sim` with the client library.

use crate::sim_media::sha256_hex;
use crate::support::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use vespa::client::{Client, ClientError, ClientRequest};
use vespa::profile::Profile;
use vespa::sim::SimConfig;
use vespa::worker::config::{Benchmark, WorkerConfig};

/// `serverless_*` query parameters of an unsigned request with cost 0 (so the worker's rule
/// sizes it), as the client library puts them on an upload.
const QUERY_AUTH: &str = "serverless_cost=0&serverless_endpoint=ep&serverless_reqnum=1\
    &serverless_request_idx=1&serverless_signature=&serverless_url=http%3A%2F%2Fworker";

/// The built-in `openai` profile with a fixed capacity, in front of `url`.
fn openai_config(url: http::Uri) -> WorkerConfig {
    let mut c = config_for(url);
    c.benchmark = Benchmark::Profile {
        profile: Arc::new(Profile::built_in("openai").unwrap()),
        measure: false,
    };
    c.max_perf = 100_000.0;
    c
}

/// What the upload backend saw of one request: the head at once, the body when complete.
struct Upload {
    first_bytes: oneshot::Receiver<usize>,
    body: oneshot::Receiver<Bytes>,
}

/// A backend that reads a request body frame by frame: it reports when the first bytes
/// arrive, then reads to the end and reports the whole body. Answers `{"bytes": N}`.
async fn upload_backend() -> (http::Uri, mpsc::UnboundedReceiver<Upload>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        if req.uri().path() == "/health" {
                            return Ok::<_, std::convert::Infallible>(Response::new(
                                vespa::http_util::full("ok"),
                            ));
                        }
                        let (first_tx, first_bytes) = oneshot::channel();
                        let (body_tx, body) = oneshot::channel();
                        let _ = tx.send(Upload { first_bytes, body });
                        let mut first_tx = Some(first_tx);
                        let mut incoming = req.into_body();
                        let mut all = Vec::new();
                        while let Some(frame) = incoming.frame().await {
                            let Ok(data) = frame.map(|f| f.into_data()) else {
                                break;
                            };
                            let Ok(data) = data else { continue };
                            all.extend_from_slice(&data);
                            if let Some(t) = first_tx.take() {
                                let _ = t.send(all.len());
                            }
                        }
                        let n = all.len();
                        let _ = body_tx.send(Bytes::from(all));
                        Ok(json(200, json!({"bytes": n})))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, rx)
}

#[tokio::test]
async fn a_multipart_upload_streams_through_byte_identical_without_being_buffered() {
    let (backend_url, mut uploads) = upload_backend().await;
    let mut cfg = openai_config(backend_url);
    // Far less than the upload: a body held in memory would be refused with 503.
    cfg.max_buffered_bytes = 64 * 1024;
    let worker = start_worker(cfg).await;

    let audio = audio_bytes(6 << 20);
    let (content_type, body) = multipart_upload("clip.wav", &audio);
    let (chunks, rx) = mpsc::unbounded_channel();
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<ChannelBody>();
    let req = Request::post(url(
        &worker,
        &format!("/v1/audio/transcriptions?{QUERY_AUTH}"),
    ))
    .header("content-type", content_type)
    .header("content-length", body.len())
    .body(ChannelBody::new(rx))
    .unwrap();
    let response = tokio::spawn(client.request(req));

    // The first MiB reaches the backend while the client still holds the other five.
    chunks.send(body.slice(..1 << 20)).unwrap();
    let upload = tokio::time::timeout(PATIENCE, uploads.recv())
        .await
        .expect("the backend gets the request before the body is sent")
        .unwrap();
    let arrived = tokio::time::timeout(PATIENCE, upload.first_bytes)
        .await
        .unwrap()
        .unwrap();
    assert!(arrived <= 1 << 20, "{arrived}");
    for piece in body.slice(1 << 20..).chunks(256 << 10) {
        chunks.send(Bytes::copy_from_slice(piece)).unwrap();
    }
    drop(chunks);

    let resp = tokio::time::timeout(PATIENCE, response)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let received = upload.body.await.unwrap();
    assert_eq!(received.len(), body.len());
    assert!(received == body, "the backend got different bytes");
    let answer: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(answer["bytes"], body.len());
    // The transcription rule counts the upload by its Content-Length.
    let want = 500.0 * (body.len() as f64 / 960_000.0).clamp(0.1, 8.0);
    let snap = assert_settled(&worker).await;
    assert!(
        (snap.totals.served.workload - want).abs() < 1e-9,
        "{snap:?}"
    );
}

#[tokio::test]
async fn an_upload_over_max_body_size_gets_413_json() {
    let mut backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let mut cfg = openai_config(backend.url());
    cfg.max_body_size = 64 * 1024;
    let worker = start_worker(cfg).await;
    let path = format!("/v1/audio/transcriptions?{QUERY_AUTH}");

    // Announced by Content-Length: refused before a byte is forwarded.
    let (content_type, body) = multipart_upload("big.wav", &audio_bytes(100 * 1024));
    let req = Request::post(url(&worker, &path))
        .header("content-type", &content_type)
        .body(http_body_util::Full::new(body))
        .unwrap();
    let (head, body) = send(&h1_client(), req).await;
    assert_eq!(head.status, 413);
    let e: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(e["code"], "body_too_large");
    backend.assert_quiet();

    // Chunked, so only the bytes tell: cut at the limit, still a 413 with a JSON body.
    let (_, body) = multipart_upload("big.wav", &audio_bytes(64 * 1024));
    let mut raw = RawClient {
        stream: tokio::net::TcpStream::connect(worker.local_addr())
            .await
            .unwrap(),
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: worker\r\ncontent-type: {content_type}\r\n\
         transfer-encoding: chunked\r\n\r\n{:x}\r\n",
        body.len()
    );
    use tokio::io::AsyncWriteExt;
    raw.stream.write_all(head.as_bytes()).await.unwrap();
    raw.stream.write_all(&body).await.unwrap();
    raw.stream.write_all(b"\r\n0\r\n\r\n").await.unwrap();
    let answer = String::from_utf8(raw.read_until(b"}").await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"body_too_large""#), "{answer}");
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.totals.served.requests, 0);
}

/// The answer of a client request: status and JSON body.
async fn answer(resp: Result<http::Response<vespa::http_util::Body>, ClientError>) -> Value {
    let resp = resp.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = tokio::time::timeout(PATIENCE, resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn chat_embeddings_and_an_upload_at_once_each_count_their_route_rule() {
    let logs = Logs::capture();
    let sim = crate::sim::start(SimConfig {
        decode_tps: 1000.0,
        embed_tps: 1e6,
        audio_secs: 0.05,
        ..SimConfig::default()
    })
    .await;
    let (autoscaler, worker) = profile_chain(sim.url().parse().unwrap(), "openai").await;

    let audio = audio_bytes(1_500_000);
    let (content_type, form) = multipart_upload("meeting.wav", &audio);
    let chat = ClientRequest::post_json(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 40}),
    );
    let embed = ClientRequest::post_json(
        "/v1/embeddings",
        &json!({"input": ["x".repeat(900), "y".repeat(300)]}),
    );
    let upload = ClientRequest::new(http::Method::POST, "/v1/audio/transcriptions")
        .body(form.clone(), content_type.parse().unwrap());
    // What the built-in openai profile counts: max_tokens; 1200 characters against 600;
    // the upload's bytes against 960,000 (30 s of 16 kHz 16-bit WAV).
    let want = [
        ("/v1/chat/completions", 40.0),
        ("/v1/embeddings", 1000.0),
        (
            "/v1/audio/transcriptions",
            500.0 * (form.len() as f64 / 960_000.0).clamp(0.1, 8.0),
        ),
    ];

    // First the client routes with cost 0, so the worker sizes each request by its route's
    // rule; then it estimates the cost itself by the same profile, which the worker keeps.
    let mut worker_sized = test_config(&autoscaler.url(), "ep", KEY);
    worker_sized.default_cost = 0.0;
    let mut client_sized = test_config(&autoscaler.url(), "ep", KEY);
    client_sized.profile = Some(Arc::new(Profile::built_in("openai").unwrap()));
    for config in [worker_sized, client_sized] {
        let client = Client::new(config).unwrap();
        let (c, e, u) = tokio::join!(
            client.request(chat.clone()),
            client.request(embed.clone()),
            client.request(upload.clone()),
        );
        let (c, e, u) = (answer(c).await, answer(e).await, answer(u).await);
        let content = c["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(content.split_whitespace().count(), 40, "{c}");
        assert_eq!(e["data"].as_array().unwrap().len(), 2, "{e}");
        assert_eq!(e["usage"]["prompt_tokens"], 2, "{e}");
        // The sim read the uploaded file whole, and it is the client's, byte for byte.
        assert_eq!(u["vespa_sim"]["file_bytes"], audio.len(), "{u}");
        assert_eq!(u["vespa_sim"]["file_sha256"], sha256_hex(&audio), "{u}");
    }

    // Each request was counted by its route's rule, both times.
    let lines = logs.access_lines();
    for (path, units) in want {
        let counted: Vec<f64> = lines
            .iter()
            .filter(|l| l["fields"]["path"] == path)
            .map(|l| l["fields"]["workload"].as_f64().unwrap())
            .collect();
        assert_eq!(counted.len(), 2, "{path}: {lines:?}");
        for w in counted {
            assert!(
                (w - units).abs() < 1e-9,
                "{path}: counted {w}, rule gives {units}"
            );
        }
    }
    assert_settled(&worker).await;
    let mut status = request("GET", &url(&worker, "/_vespa/status"), "");
    let bearer = format!("Bearer {LOCAL_MASTER_TOKEN}");
    status
        .headers_mut()
        .insert("authorization", bearer.parse().unwrap());
    let (_, status) = send(&h1_client(), status).await;
    let status: Value = serde_json::from_slice(&status).unwrap();
    let total: f64 = want.iter().map(|(_, w)| 2.0 * w).sum();
    let served = &status["totals"]["served"];
    assert_eq!(served["requests"], 6, "{status}");
    assert!(
        (served["workload"].as_f64().unwrap() - total).abs() < 1e-6,
        "{status}"
    );
    let s = crate::sim::wait_stats(&sim, |s| s.completed == 6).await;
    assert_eq!(s.invalid + s.errored + s.cancelled, 0);
}
