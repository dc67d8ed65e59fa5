//! Sessions (PROTOCOL.md §8) over real HTTP: the four `/session/*` routes with the `vastai`
//! worker's answers, requests inside a session, expiry and its on-close callback, closing
//! that cancels in-flight requests, the reports, the drain and the plain-HTTP `/session/end`.

use crate::fake_autoscaler::FakeAutoscaler;
use crate::support::*;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use vespa::worker::Worker;
use vespa::worker::config::WorkerConfig;
use vespa::worker::lifecycle::State;
use vespa::worker::session::listener::HttpPort;

/// A backend: `/held` never answers, the first `/stream` streams what the returned sender
/// sends, anything else answers `{"path": …}` at once.
async fn backend() -> (Backend, mpsc::UnboundedSender<Bytes>) {
    let (chunks, rx) = mpsc::unbounded_channel();
    let rx = Arc::new(Mutex::new(Some(rx)));
    let backend = Backend::start(move |seen| {
        let stream = match seen.uri.path() {
            "/stream" => rx.lock().unwrap().take(),
            _ => None,
        };
        async move {
            match (seen.uri.path(), stream) {
                ("/held", _) => std::future::pending().await,
                (_, Some(rx)) => streaming("text/event-stream", "stream", rx, seen.events),
                (path, None) => json(200, json!({"path": path})),
            }
        }
    })
    .await;
    (backend, chunks)
}

/// A signed worker in front of a [`backend`], with the autoscaler that signs for it.
struct Setup {
    backend: Backend,
    chunks: mpsc::UnboundedSender<Bytes>,
    autoscaler: FakeAutoscaler,
    worker: Worker,
    me: String,
    client: HttpClient,
}

async fn signed(tune: impl FnOnce(&mut WorkerConfig)) -> Setup {
    let (backend, chunks) = backend().await;
    let autoscaler = FakeAutoscaler::start(true).await;
    let mut c = config(&backend);
    c.unsecured = false;
    c.vast.report_addrs = vec![autoscaler.url().parse().unwrap()];
    c.vast.container_id = Some(1);
    c.report_tick = Duration::from_millis(20);
    c.report_retry_pause = Duration::from_millis(10);
    c.pubkey_backoff_unit = Duration::from_millis(10);
    tune(&mut c);
    let worker = start_worker(c).await;
    let me = format!("http://{}", worker.local_addr());
    Setup {
        backend,
        chunks,
        autoscaler,
        worker,
        me,
        client: h1_client(),
    }
}

async fn post_json(client: &HttpClient, url: &str, body: String) -> (StatusCode, Value) {
    let (head, bytes) = send(client, request("POST", url, body)).await;
    (
        head.status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

impl Setup {
    /// Signed `auth_data` for this worker, as `/route/` hands it out.
    fn auth(&self, reqnum: u64, cost: f64) -> Value {
        self.autoscaler.auth_data(&self.me, reqnum, json!(cost))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        post_json(&self.client, &url(&self.worker, path), body.to_string()).await
    }

    /// `POST /session/create` as the official client sends it.
    async fn create(&self, auth: &Value, payload: Value) -> (StatusCode, Value) {
        let body = json!({"auth_data": auth, "session_id": null, "payload": payload});
        self.post("/session/create", body).await
    }

    /// A session's id, created with `auth` and `payload`.
    async fn open(&self, auth: &Value, payload: Value) -> String {
        let (status, body) = self.create(auth, payload).await;
        assert_eq!(status, 201, "{body}");
        body["session_id"].as_str().unwrap().to_string()
    }

    /// A request inside session `id` (the client sends the session's `auth_data` again).
    async fn in_session(&self, path: &str, auth: &Value, id: &str) -> (StatusCode, Value) {
        let body = json!({"auth_data": auth, "session_id": id, "payload": {"prompt": "hi"}});
        self.post(path, body).await
    }

    /// `/session/end`, `/session/get` or `/session/health`.
    async fn named(&self, route: &str, id: &str, auth: &Value) -> (StatusCode, Value) {
        let body = json!({"session_id": id, "session_auth": auth});
        self.post(&format!("/session/{route}"), body).await
    }
}

fn error(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
}

#[tokio::test]
async fn a_session_is_created_used_inspected_and_ended_as_the_vastai_worker_answers() {
    // A replay window smaller than the session's requests: they reuse one auth_data.
    let mut s = signed(|c| c.replay_window = 2).await;
    let auth = s.auth(42, 50.0);
    let (status, created) = s
        .create(
            &auth,
            json!({"lifetime": 30, "on_close_route": "/jobs/done", "on_close_payload": {"job": 7}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["session_id"].as_str().unwrap().to_string();
    assert!(created["expiration"].as_f64().unwrap() > 0.0);
    for _ in 0..3 {
        let (status, body) = s.in_session("/v1/completions", &auth, &id).await;
        assert_eq!(
            (status, &body["path"]),
            (StatusCode::OK, &json!("/v1/completions"))
        );
        let seen = s.backend.next_request().await;
        assert_eq!(seen.body, br#"{"prompt":"hi"}"#[..], "the payload, as sent");
    }
    // Streaming inside the session.
    for frame in ["data: a\n\n", "data: b\n\n"] {
        s.chunks.send(Bytes::from_static(frame.as_bytes())).unwrap();
    }
    let (chunks, _) = mpsc::unbounded_channel();
    let chunks = std::mem::replace(&mut s.chunks, chunks);
    drop(chunks);
    let body = json!({"auth_data": auth, "session_id": id, "payload": {"stream": true}});
    let (head, bytes) = send(
        &s.client,
        request("POST", &url(&s.worker, "/stream"), body.to_string()),
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(bytes, "data: a\n\ndata: b\n\n");
    s.backend.next_request().await;

    let (status, doc) = s.named("get", &id, &auth).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["session_id"], json!(id));
    assert_eq!(doc["auth_data"], auth);
    assert_eq!(doc["lifetime"], json!(30.0));
    assert_eq!(doc["on_close_route"], json!("/jobs/done"));
    assert_eq!(doc["on_close_payload"], json!({"job": 7}));
    assert!(doc["expiration"].as_f64().unwrap() >= doc["created_at"].as_f64().unwrap() + 30.0);
    assert_eq!(
        s.named("health", &id, &auth).await,
        (StatusCode::OK, json!({"ok": true}))
    );
    let status = vespa::worker::routes::status(s.worker.shared());
    assert_eq!(status["sessions"][0]["request_idx"], json!(42));
    assert_eq!(status["sessions"][0]["in_flight"], json!(0));

    let (status, ended) = s.named("end", &id, &auth).await;
    assert_eq!(status, 200);
    assert_eq!(ended, json!({"ended": true, "removed_session": id}));
    let callback = s.backend.next_request().await;
    assert_eq!(
        (callback.method.as_str(), callback.uri.path()),
        ("POST", "/jobs/done")
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&callback.body).unwrap(),
        json!({"job": 7, "session_id": id})
    );
    assert_eq!(callback.headers["content-type"], "application/json");

    let (status, body) = s.in_session("/v1/completions", &auth, &id).await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::GONE, "invalid session")
    );
    assert_eq!(
        s.named("health", &id, &auth).await,
        (StatusCode::OK, json!({"ok": false}))
    );
    let (status, body) = s.named("get", &id, &auth).await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::BAD_REQUEST, "session does not exist")
    );
    let (status, body) = s.named("end", &id, &auth).await;
    let expected = format!("session with id {id} not found");
    assert_eq!(
        (status, error(&body)),
        (StatusCode::BAD_REQUEST, expected.as_str())
    );
    let snap = assert_settled(&s.worker).await;
    assert_eq!(snap.sessions, 0);
    assert_eq!(
        snap.totals.served.requests, 5,
        "the session and its four requests"
    );
    s.backend.assert_quiet();
}

#[tokio::test]
async fn session_routes_refuse_bad_requests_with_the_vastai_texts() {
    let mut s = signed(|_| {}).await;
    let end = url(&s.worker, "/session/end");
    let (status, body) = post_json(&s.client, &end, "{".into()).await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid JSON")
    );
    for missing in [json!({}), json!({"session_id": null, "session_auth": {}})] {
        let (status, body) = s.post("/session/get", missing).await;
        assert_eq!(
            (status, error(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, "missing session_id")
        );
    }
    let auth = s.auth(1, 10.0);
    let id = s.open(&auth, json!({})).await;
    let other = s.auth(2, 10.0);
    for route in ["end", "get", "health"] {
        for wrong in [&other, &Value::Null] {
            let (status, body) = s.named(route, &id, wrong).await;
            assert_eq!(
                (status, error(&body)),
                (StatusCode::UNAUTHORIZED, "session_auth is not valid"),
                "{route}"
            );
        }
    }
    // The create payload is checked.
    for (payload, word) in [
        (json!({"lifetime": -1}), "lifetime"),
        (json!({"lifetime": "long"}), "lifetime"),
        (
            json!({"on_close_route": "http://169.254.169.254/"}),
            "on_close_route",
        ),
        (
            json!({"on_close_route": "//evil.example/"}),
            "on_close_route",
        ),
        (json!([1, 2]), "payload"),
    ] {
        let (status, body) = s.create(&s.auth(3, 1.0), payload.clone()).await;
        assert_eq!(status, 422, "{payload}: {body}");
        assert!(error(&body).contains(word), "{payload}: {body}");
    }
    // A forged create is refused before anything is read, and never reaches the books.
    let mut forged = s.auth(4, 1.0);
    forged["signature"] = json!("AAAA");
    let (status, body) = s.create(&forged, json!({})).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::UNAUTHORIZED, &json!("invalid_signature"))
    );
    let (status, _) = s
        .post("/session/create", json!({"payload": {"lifetime": 5}}))
        .await;
    assert_eq!(status, 422, "a create needs an envelope");
    assert_eq!(s.worker.shared().unauthorized_total(), 1);
    // Requests naming no open session.
    let (status, body) = s.in_session("/v1/x", &auth, "no-such-session").await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::GONE, "invalid session")
    );
    let (status, body) = s
        .post(
            "/v1/x",
            json!({"auth_data": auth, "session_id": 5, "payload": {}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (head, _) = send(
        &s.client,
        request(
            "GET",
            &url(&s.worker, "/v1/models?serverless_session_id=guess"),
            "",
        ),
    )
    .await;
    assert_eq!(head.status, 410);
    s.backend.assert_quiet();
    assert_eq!(s.worker.shared().sessions.len(), 1);
    assert_eq!(s.named("end", &id, &auth).await.0, 200);
    let snap = assert_settled(&s.worker).await;
    assert_eq!(
        (snap.totals.served.requests, snap.totals.received.requests),
        (1, 1),
        "only the session itself"
    );
}

#[tokio::test]
async fn a_query_form_request_is_authenticated_by_its_open_session() {
    let mut s = signed(|_| {}).await;
    let auth = s.auth(5, 10.0);
    let id = s.open(&auth, json!({})).await;
    let u = url(
        &s.worker,
        &format!("/v1/models?a=1&serverless_session_id={id}"),
    );
    let (head, body) = send(&s.client, request("GET", &u, "")).await;
    assert_eq!(head.status, 200, "{body:?}");
    let seen = s.backend.next_request().await;
    assert_eq!(
        seen.uri, "/v1/models?a=1",
        "the session id is never forwarded"
    );
    // An upload in the session: the body goes through unchanged.
    let u = url(&s.worker, &format!("/v1/audio?serverless_session_id={id}"));
    let mut req = request("POST", &u, Bytes::from_static(b"RIFF...."));
    req.headers_mut()
        .insert("content-type", "audio/wav".parse().unwrap());
    let (head, _) = send(&s.client, req).await;
    assert_eq!(head.status, 200);
    assert_eq!(s.backend.next_request().await.body, "RIFF....");
    assert_eq!(s.named("end", &id, &auth).await.0, 200);
    let snap = assert_settled(&s.worker).await;
    assert_eq!(snap.totals.served.requests, 3);
}

#[tokio::test]
async fn max_sessions_answers_429_with_a_json_error() {
    let s = signed(|c| c.sessions.max_sessions = Some(1)).await;
    let auth = s.auth(1, 5.0);
    let id = s.open(&auth, json!({})).await;
    let (status, body) = s.create(&s.auth(2, 5.0), json!({})).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::TOO_MANY_REQUESTS, &json!("too_many_sessions"))
    );
    assert!(error(&body).contains("MAX_SESSIONS"), "{body}");
    assert_eq!(s.named("end", &id, &auth).await.0, 200);
    assert_eq!(s.create(&s.auth(3, 5.0), json!({})).await.0, 201);
    let snap = wait_until(&s.worker, |snap| snap.sessions == 1).await;
    assert_eq!(snap.totals.rejected.requests, 1);
}

#[tokio::test]
async fn a_worker_not_ready_refuses_to_open_a_session() {
    let s = signed(|_| {}).await;
    s.worker.shared().lifecycle.set(State::Draining);
    let (status, body) = s.create(&s.auth(1, 5.0), json!({})).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!("draining"))
    );
    assert!(s.worker.shared().sessions.is_empty());
}

#[tokio::test]
async fn an_expired_session_is_closed_and_calls_its_on_close_route() {
    let mut s = signed(|_| {}).await;
    let auth = s.auth(9, 20.0);
    let id = s
        .open(
            &auth,
            json!({"lifetime": 0.05, "on_close_route": "/closed?why=expired", "on_close_payload": "bye"}),
        )
        .await;
    let callback = s.backend.next_request().await;
    assert_eq!(callback.uri, "/closed?why=expired");
    assert_eq!(
        serde_json::from_slice::<Value>(&callback.body).unwrap(),
        json!({"payload": "bye", "session_id": id})
    );
    let snap = assert_settled(&s.worker).await;
    assert_eq!((snap.sessions, snap.totals.served.requests), (0, 1));
    let (status, body) = s.in_session("/v1/x", &auth, &id).await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::GONE, "invalid session")
    );
}

#[tokio::test]
async fn ending_a_session_cuts_its_streaming_response_and_closes_the_backend_connection() {
    let mut s = signed(|_| {}).await;
    let auth = s.auth(3, 10.0);
    let id = s.open(&auth, json!({})).await;
    let body = json!({"auth_data": auth, "session_id": id, "payload": {"stream": true}});
    let mut client = RawClient::post(s.worker.local_addr(), "/stream", &body).await;
    s.chunks
        .send(Bytes::from_static(b"data: first\n\n"))
        .unwrap();
    client.read_until(b"data: first").await;
    s.backend.next_request().await;
    wait_until(&s.worker, |snap| snap.in_flight == 1).await;
    assert_eq!(s.named("end", &id, &auth).await.0, 200);
    assert_eq!(s.backend.expect_dropped().await, "stream");
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, client.stream.read_to_end(&mut rest))
        .await
        .expect("the worker closes the connection")
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&rest).contains("0\r\n\r\n"),
        "a cut body never ends cleanly: {rest:?}"
    );
    let snap = assert_settled(&s.worker).await;
    assert_eq!(
        (snap.totals.cancelled.requests, snap.totals.served.requests),
        (1, 1),
        "the request cancelled, the session served"
    );
}

#[tokio::test]
async fn ending_a_session_answers_410_to_its_request_waiting_for_the_backend() {
    let mut s = signed(|_| {}).await;
    let auth = s.auth(4, 10.0);
    let id = s.open(&auth, json!({})).await;
    let waiting = {
        let (client, u) = (s.client.clone(), url(&s.worker, "/held"));
        let body = json!({"auth_data": auth, "session_id": id, "payload": {}}).to_string();
        tokio::spawn(async move { post_json(&client, &u, body).await })
    };
    assert_eq!(s.backend.next_request().await.uri, "/held");
    assert_eq!(s.named("end", &id, &auth).await.0, 200);
    let (status, body) = waiting.await.unwrap();
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::GONE, &json!("session_closed"))
    );
    assert_eq!(s.backend.expect_dropped().await, "/held");
    let snap = assert_settled(&s.worker).await;
    assert_eq!(snap.totals.cancelled.requests, 1);
}

#[tokio::test]
async fn reports_show_an_open_session_as_one_working_request_and_one_record_when_it_closes() {
    let mut s = signed(|_| {}).await;
    let auth = s.auth(77, 50.0);
    let id = s.open(&auth, json!({})).await;
    let status = s
        .autoscaler
        .status_where(|v| v["working_request_idxs"] == json!([77]))
        .await;
    assert_eq!(status["cur_load"], json!(50.0));
    assert_eq!(status["num_requests_working"], json!(1));
    assert_eq!(status["num_requests_recieved"], json!(1));
    for _ in 0..2 {
        assert_eq!(s.in_session("/v1/x", &auth, &id).await.0, 200);
        s.backend.next_request().await;
    }
    assert_eq!(s.named("end", &id, &auth).await.0, 200);
    let mut records = Vec::new();
    while !records.iter().any(|r: &Value| r["request_idx"] == 77) {
        let batch = s.autoscaler.next_delete().await;
        records.extend(batch["requests"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(records.len(), 1, "one record, the session's: {records:?}");
    assert_eq!(
        (&records[0]["status"], &records[0]["success"]),
        (&json!("Success"), &json!(true))
    );
    let status = s
        .autoscaler
        .status_where(|v| v["working_request_idxs"] == json!([]))
        .await;
    assert_eq!(
        status["num_requests_recieved"],
        json!(1),
        "the session's reqnum only"
    );
    assert_settled(&s.worker).await;
}

#[tokio::test]
async fn a_drain_does_not_wait_for_sessions_and_closes_them_with_their_callbacks() {
    let (mut backend, _chunks) = backend().await;
    let worker = start_worker(config(&backend)).await;
    let client = h1_client();
    // Unsecured mode: the create is not verified, its auth_data still guards the session.
    let auth = envelope(6, 30.0, json!({}))["auth_data"].clone();
    let body = json!({"auth_data": auth, "session_id": null,
                      "payload": {"lifetime": 600, "on_close_route": "/bye"}});
    let (status, created) =
        post_json(&client, &url(&worker, "/session/create"), body.to_string()).await;
    assert_eq!(status, 201, "{created}");
    assert!(
        worker.drain(PATIENCE).await,
        "nothing in flight to wait for"
    );
    let callback = backend.next_request().await;
    assert_eq!(callback.uri, "/bye");
    assert_eq!(
        serde_json::from_slice::<Value>(&callback.body).unwrap()["session_id"],
        created["session_id"]
    );
    let snap = assert_settled(&worker).await;
    assert_eq!((snap.sessions, snap.totals.served.requests), (0, 1));
}

#[tokio::test]
async fn the_plain_http_listener_ends_sessions_and_nothing_else() {
    let (backend, _chunks) = backend().await;
    let mut cfg = config(&backend);
    cfg.worker_http_port = HttpPort::Port(0);
    let worker = start_worker(cfg).await;
    let side = worker.session_end_addr().expect("bound");
    assert_ne!(side, worker.local_addr());
    let client = h1_client();
    let auth = envelope(8, 1.0, json!({}))["auth_data"].clone();
    let body = json!({"auth_data": auth, "session_id": null, "payload": {}});
    let (_, created) = post_json(&client, &url(&worker, "/session/create"), body.to_string()).await;
    let id = created["session_id"].as_str().unwrap();
    let end = |path: &str| format!("http://{side}{path}");
    let named = json!({"session_id": id, "session_auth": auth}).to_string();
    for path in ["/session/get", "/session/health", "/v1/completions"] {
        let (status, _) = post_json(&client, &end(path), named.clone()).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, body) = post_json(&client, &end("/session/end"), named).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"ended": true, "removed_session": id})
        )
    );
    assert!(worker.shared().sessions.is_empty());
    assert_settled(&worker).await;
}

#[tokio::test]
async fn the_plain_http_listener_is_off_beside_an_ephemeral_port_by_default() {
    let (backend, _chunks) = backend().await;
    let worker = start_worker(config(&backend)).await;
    assert_eq!(worker.session_end_addr(), None);
}
