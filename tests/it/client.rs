//! The client library (`vespa::client`): routing, polling, the envelope, retries before the
//! first response byte and never after, workload estimates, endpoint discovery.

use crate::support::*;
use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use vespa::autoscaler::Autoscaler;
use vespa::client::discovery::{self, DiscoveryError};
use vespa::client::{Client, ClientConfig, ClientRequest, RouteAnswer};

/// A stand-in for `/route/` that assigns the given worker URLs in order (the last one
/// repeats) and records every route request as a backend event.
pub async fn scripted_autoscaler(urls: Vec<String>) -> Backend {
    let queue = Arc::new(Mutex::new(VecDeque::from(urls)));
    Backend::start(move |seen| {
        let mut q = queue.lock().unwrap();
        let url = if q.len() > 1 {
            q.pop_front().unwrap()
        } else {
            q.front().cloned().unwrap()
        };
        let req: Value = serde_json::from_slice(&seen.body).unwrap();
        async move {
            json(
                200,
                json!({"endpoint": req["endpoint"], "url": url, "cost": req["cost"], "reqnum": 5,
                       "request_idx": 77, "signature": "c2ln", "__request_id": "r-1"}),
            )
        }
    })
    .await
}

async fn body_of(resp: http::Response<vespa::http_util::Body>) -> Bytes {
    tokio::time::timeout(PATIENCE, resp.into_body().collect())
        .await
        .expect("body in time")
        .unwrap()
        .to_bytes()
}

fn route_body(seen: &Seen) -> Value {
    assert_eq!(seen.uri.path(), "/route/");
    serde_json::from_slice(&seen.body).unwrap()
}

#[tokio::test]
async fn a_request_refused_before_responding_lands_on_another_worker() {
    let mut busy = Backend::start(|_| async { json(503, json!({"code": "not_ready"})) }).await;
    let mut full = Backend::start(|_| async { json(429, json!({"code": "queue_full"})) }).await;
    let mut good = Backend::start(|_| async { json(200, json!({"ok": true})) }).await;
    let urls = vec![
        busy.url().to_string(),
        full.url().to_string(),
        refused_url().await,
        good.url().to_string(),
    ];
    let mut autoscaler = scripted_autoscaler(urls).await;
    let mut c = test_config(&autoscaler.url().to_string(), "ep", KEY);
    c.max_attempts = 4;
    let client = Client::new(c).unwrap();

    let req = ClientRequest::post_json("/v1/completions", &json!({"max_tokens": 5}));
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(body_of(resp).await, r#"{"ok":true}"#);

    let first = route_body(&autoscaler.next_request().await);
    assert_eq!(first["request_idx"], 0);
    for _ in 0..3 {
        let again = route_body(&autoscaler.next_request().await);
        assert_eq!(again["request_idx"], 77, "a retry keeps its request_idx");
    }
    autoscaler.assert_quiet();
    for worker in [&mut busy, &mut full, &mut good] {
        let seen = worker.next_request().await;
        assert_eq!(seen.uri, "/v1/completions");
        let env: Value = serde_json::from_slice(&seen.body).unwrap();
        assert_eq!(env["payload"], json!({"max_tokens": 5}));
        assert_eq!(env["auth_data"]["request_idx"], 77);
        assert_eq!(env["auth_data"]["__request_id"], "r-1");
    }
}

#[tokio::test]
async fn the_last_attempts_answer_or_error_is_what_the_caller_gets() {
    let busy = Backend::start(|_| async {
        let mut r = json(503, json!({"code": "draining"}));
        r.headers_mut().insert("retry-after", "3".parse().unwrap());
        r
    })
    .await;
    let autoscaler = scripted_autoscaler(vec![busy.url().to_string()]).await;
    let mut c = test_config(&autoscaler.url().to_string(), "ep", KEY);
    c.max_attempts = 2;
    let client = Client::new(c).unwrap();
    let resp = client
        .request(ClientRequest::post_json("/x", &json!({})))
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "3");

    let autoscaler = scripted_autoscaler(vec![refused_url().await]).await;
    let mut c = test_config(&autoscaler.url().to_string(), "ep", KEY);
    c.max_attempts = 2;
    let err = Client::new(c)
        .unwrap()
        .request(ClientRequest::post_json("/x", &json!({})))
        .await
        .unwrap_err();
    assert!(err.is_worker_unavailable(), "{err}");
    assert!(err.to_string().contains("2 attempt"), "{err}");
}

/// A worker that answers every request with the head of an SSE stream and one event, then
/// dies (closes the connection mid-body) when told to. Counts the requests it received.
struct DyingWorker {
    url: String,
    requests: Arc<AtomicUsize>,
    die: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DyingWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DyingWorker {
    async fn start() -> DyingWorker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let die = Arc::new(Notify::new());
        let (count, signal) = (Arc::clone(&requests), Arc::clone(&die));
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (count, signal) = (Arc::clone(&count), Arc::clone(&signal));
                conns.spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                    let event = "data: 1\n\n";
                    let out = format!("{head}{:x}\r\n{event}\r\n", event.len());
                    stream.write_all(out.as_bytes()).await.unwrap();
                    signal.notified().await;
                    // Dropping the stream here ends the body without its last chunk.
                });
            }
        });
        DyingWorker {
            url,
            requests,
            die,
            task,
        }
    }
}

#[tokio::test]
async fn a_response_that_started_streaming_is_never_replayed() {
    let dying = DyingWorker::start().await;
    let mut autoscaler = scripted_autoscaler(vec![dying.url.clone()]).await;
    let client = Client::new(test_config(&autoscaler.url().to_string(), "ep", KEY)).unwrap();
    let resp = client
        .request(ClientRequest::post_json(
            "/v1/completions",
            &json!({"stream": true}),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(PATIENCE, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "data: 1\n\n");
    dying.die.notify_one();
    let rest = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("the body ends in time");
    assert!(
        rest.is_err(),
        "a worker that dies mid-stream is an error in the body"
    );
    assert_eq!(dying.requests.load(Ordering::SeqCst), 1, "never re-sent");
    route_body(&autoscaler.next_request().await);
    autoscaler.assert_quiet();
}

#[tokio::test]
async fn the_client_polls_route_until_a_worker_reports_then_completes() {
    let backend = Backend::start(|_| async { json(200, json!({"done": true})) }).await;
    let autoscaler = Autoscaler::start(local_autoscaler("ep", KEY))
        .await
        .unwrap();
    let client = Client::new(test_config(&autoscaler.url(), "ep", KEY)).unwrap();
    let RouteAnswer::NotReady { request_idx, .. } = client.route(1.0, 0).await.unwrap() else {
        panic!("no worker has reported yet");
    };
    assert!(request_idx > 0);

    let pending = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .request(ClientRequest::post_json("/v1/x", &json!({"a": 1})))
                .await
        }
    });
    let worker = signed_worker(&backend, &autoscaler, 1).await;
    let resp = tokio::time::timeout(PATIENCE, pending)
        .await
        .expect("routed once the worker reported")
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(body_of(resp).await, r#"{"done":true}"#);
    assert_eq!(assert_settled(&worker).await.totals.served.requests, 1);
}

#[tokio::test]
async fn no_worker_within_the_route_timeout_is_a_no_worker_error() {
    let autoscaler = Autoscaler::start(local_autoscaler("ep", KEY))
        .await
        .unwrap();
    let mut c = test_config(&autoscaler.url(), "ep", KEY);
    c.route_timeout = Duration::from_millis(100);
    let err = Client::new(c)
        .unwrap()
        .request(ClientRequest::post_json("/x", &json!({})))
        .await
        .unwrap_err();
    assert!(err.is_no_worker(), "{err}");
    assert!(err.to_string().contains("\"ep\""), "{err}");
}

#[tokio::test]
async fn route_errors_say_whose_fault_it_was() {
    let autoscaler = Autoscaler::start(local_autoscaler("ep", KEY))
        .await
        .unwrap();
    let send = |c: ClientConfig| async move {
        Client::new(c)
            .unwrap()
            .request(ClientRequest::post_json("/x", &json!({})))
            .await
            .unwrap_err()
    };
    let err = send(test_config(&autoscaler.url(), "ep", "wrong-key")).await;
    assert!(err.is_auth(), "{err}");
    assert!(err.to_string().contains("API key"), "{err}");
    let err = send(test_config(&autoscaler.url(), "nope", KEY)).await;
    assert!(err.is_unknown_endpoint(), "{err}");
    assert!(err.to_string().contains("\"nope\""), "{err}");
    let mut c = test_config(&refused_url().await, "ep", KEY);
    c.max_attempts = 2;
    let err = send(c).await;
    assert!(err.is_autoscaler_unavailable(), "{err}");
}

#[tokio::test]
async fn cost_comes_from_the_argument_the_header_the_profile_or_the_default() {
    let good = Backend::start(|_| async { json(200, json!({})) }).await;
    let mut autoscaler = scripted_autoscaler(vec![good.url().to_string()]).await;
    let mut c = test_config(&autoscaler.url().to_string(), "my-ep", KEY);
    let plain = Client::new(c.clone()).unwrap();
    c.profile = Some(Arc::new(
        vespa::profile::Profile::resolve("openai-chat").unwrap(),
    ));
    let with_profile = Client::new(c).unwrap();
    let body = json!({"max_tokens": 300});

    let with_header = {
        let mut r = ClientRequest::post_json("/v1/chat/completions", &body);
        r.headers.insert("x-serverless-cost", "42".parse().unwrap());
        r
    };
    let cases = [
        (&with_profile, with_header.clone().cost(7.0), 7.0),
        (&with_profile, with_header, 42.0),
        (
            &with_profile,
            ClientRequest::post_json("/v1/chat/completions", &body),
            300.0,
        ),
        (
            &plain,
            ClientRequest::post_json("/v1/chat/completions", &body),
            1.0,
        ),
    ];
    for (client, req, cost) in cases {
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let seen = autoscaler.next_request().await;
        assert_eq!(seen.headers["authorization"], format!("Bearer {KEY}"));
        let route = route_body(&seen);
        assert_eq!(
            route,
            json!({"endpoint": "my-ep", "api_key": KEY, "cost": cost, "request_idx": 0, "replay_timeout": 60})
        );
    }
}

#[tokio::test]
async fn get_and_non_json_bodies_carry_signed_auth_in_the_query() {
    let mut backend = Backend::start(|_| async { json(200, json!({"ok": 1})) }).await;
    let autoscaler = Autoscaler::start(local_autoscaler("ep", KEY))
        .await
        .unwrap();
    let worker = signed_worker(&backend, &autoscaler, 1).await;
    let client = Client::new(test_config(&autoscaler.url(), "ep", KEY)).unwrap();

    let resp = client
        .request(ClientRequest::new(Method::GET, "/v1/models?x=1"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", body_of(resp).await);
    let seen = backend.next_request().await;
    assert_eq!(seen.method, "GET");
    assert_eq!(
        seen.uri, "/v1/models?x=1",
        "auth parameters are not forwarded"
    );

    let audio = Bytes::from_static(b"RIFF\0\x01binary");
    let req = ClientRequest::new(Method::POST, "/v1/audio/transcriptions")
        .body(audio.clone(), "audio/wav".parse().unwrap());
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = backend.next_request().await;
    assert_eq!(seen.body, audio, "a non-JSON body travels unchanged");
    assert_eq!(seen.headers["content-type"], "audio/wav");

    let payload = r#"{"b": 1.50, "a": [2]}"#;
    let req = ClientRequest::new(Method::POST, "/v1/completions")
        .body(payload, "application/json".parse().unwrap());
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = backend.next_request().await;
    assert_eq!(seen.body, payload, "the payload's bytes are kept");
    assert_eq!(assert_settled(&worker).await.totals.served.requests, 3);
}

/// A console listing the account's endpoints, answering only to `Bearer acct-key`.
pub async fn mock_console(results: Value) -> Backend {
    Backend::start(move |seen| {
        let results = results.clone();
        async move {
            assert_eq!(seen.uri, "/api/v0/endptjobs/?autoscaler_instance=prod");
            if seen.headers.get("authorization").map(|v| v.as_bytes()) != Some(b"Bearer acct-key") {
                return json(401, json!({"detail": "bad key"}));
            }
            json(200, results)
        }
    })
    .await
}

#[tokio::test]
async fn discovery_finds_the_endpoint_key_and_explains_failures() {
    let console = mock_console(json!({"success": true, "results": [
        {"id": 1, "endpoint_name": "other", "api_key": "k-other"},
        {"id": 2, "endpoint_name": "vllm", "api_key": "k-vllm"},
    ]}))
    .await;
    let url = console.url().to_string();
    let key = discovery::endpoint_api_key(&url, "acct-key", "vllm")
        .await
        .unwrap();
    assert_eq!(key, "k-vllm");

    let err = discovery::endpoint_api_key(&url, "acct-key", "nope")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DiscoveryError::UnknownEndpoint { available, .. } if available == &["other", "vllm"]),
        "{err}"
    );
    assert!(err.to_string().contains("other, vllm"), "{err}");
    let err = discovery::endpoint_api_key(&url, "wrong", "vllm")
        .await
        .unwrap_err();
    assert!(
        matches!(err, DiscoveryError::BadAccountKey { status: 401, .. }),
        "{err}"
    );

    let malformed = mock_console(json!({"endpoints": []})).await;
    let err = discovery::endpoint_api_key(&malformed.url().to_string(), "acct-key", "vllm")
        .await
        .unwrap_err();
    assert!(matches!(err, DiscoveryError::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("results"), "{err}");
}
