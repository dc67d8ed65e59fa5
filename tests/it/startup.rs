//! Start-up, refusals the worker makes itself, and backend failures.

use crate::support::*;
use http::StatusCode;
use serde_json::{Value, json};
use vespa::worker::Worker;
use vespa::worker::lifecycle::State;

fn parse(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test]
async fn before_ready_requests_get_503_not_ready_with_retry_after() {
    let mut backend = Backend::start_with_health(StatusCode::SERVICE_UNAVAILABLE, |_| async {
        json(200, json!({}))
    })
    .await;
    let worker = Worker::start(config(&backend)).await.unwrap();
    let client = h1_client();
    wait_state(&worker, |s| *s == State::WaitingForBackend).await;
    let (head, body) = post_envelope(&client, &worker, "/v1/completions", 1, 1.0).await;
    assert_eq!(head.status, 503);
    assert!(head.headers.contains_key("retry-after"));
    assert_eq!(parse(&body)["code"], "not_ready");
    let (head, body) = send(&client, request("GET", &url(&worker, "/_vespa/ready"), "")).await;
    assert_eq!(head.status, 503);
    assert_eq!(parse(&body)["state"], "waiting_for_backend");
    let (head, body) = send(&client, request("GET", &url(&worker, "/_vespa/health"), "")).await;
    assert_eq!(head.status, 200, "{body:?}");
    backend.assert_quiet();
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.totals.rejected.requests, 1);
}

#[tokio::test]
async fn backend_never_healthy_moves_the_worker_to_errored() {
    let backend = Backend::start_with_health(StatusCode::SERVICE_UNAVAILABLE, |_| async {
        json(200, json!({}))
    })
    .await;
    let mut cfg = config(&backend);
    cfg.ready_timeout = std::time::Duration::from_millis(300);
    cfg.ready_poll_interval = std::time::Duration::from_millis(100);
    let worker = Worker::start(cfg).await.unwrap();
    let state = wait_state(&worker, |s| matches!(s, State::Errored(_))).await;
    assert!(state.error().unwrap().contains("/health"), "{state:?}");
    let (head, body) = send(
        &h1_client(),
        request("GET", &url(&worker, "/_vespa/status"), ""),
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(parse(&body)["state"], "errored");
}

#[tokio::test]
async fn worker_routes_answer_without_the_backend() {
    let mut backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let worker = start_worker(config(&backend)).await;
    let client = h1_client();
    let (head, body) = send(&client, request("GET", &url(&worker, "/ping"), "")).await;
    assert_eq!((head.status.as_u16(), &body[..]), (200, &b"pong"[..]));
    let (head, body) = send(&client, request("GET", &url(&worker, "/_vespa/status"), "")).await;
    assert_eq!(head.status, 200);
    let status = parse(&body);
    assert_eq!(status["state"], "ready");
    assert_eq!(status["max_perf"], 1000.0);
    for key in ["cur_load", "estimated_wait", "queued", "in_flight"] {
        assert_eq!(status[key].as_f64(), Some(0.0), "{key}");
    }
    for total in ["received", "served", "errored", "cancelled", "rejected"] {
        assert_eq!(
            status["totals"][total],
            json!({"requests": 0, "workload": 0.0}),
            "{total}"
        );
    }
    let (head, _) = send(&client, request("GET", &url(&worker, "/_vespa/ready"), "")).await;
    assert_eq!(head.status, 200);
    let (head, body) = send(&client, request("GET", &url(&worker, "/_vespa/nope"), "")).await;
    assert_eq!(head.status, 404);
    assert_eq!(parse(&body)["code"], "not_found");
    backend.assert_quiet();
}

#[tokio::test]
async fn oversized_body_gets_413_and_is_not_forwarded() {
    let mut backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let mut cfg = config(&backend);
    cfg.max_body_size = 1024;
    let worker = start_worker(cfg).await;
    let big = envelope(1, 1.0, json!({"prompt": "x".repeat(2000)})).to_string();
    let (head, body) = send(
        &h1_client(),
        request("POST", &url(&worker, "/v1/completions"), big),
    )
    .await;
    assert_eq!(head.status, 413);
    assert_eq!(parse(&body)["code"], "body_too_large");
    backend.assert_quiet();
    assert_settled(&worker).await;
}

#[tokio::test]
async fn malformed_envelopes_get_422_naming_each_problem() {
    let mut backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let mut cfg = config(&backend);
    cfg.unsecured = false;
    // Envelope errors come before readiness: no key or autoscaler is needed.
    let worker = Worker::start(cfg).await.unwrap();
    let client = h1_client();
    let (head, body) = send(&client, request("POST", &url(&worker, "/x"), "{not json")).await;
    assert_eq!(head.status, 422);
    assert_eq!(parse(&body)["code"], "invalid_request");

    let partial = json!({"auth_data": {"cost": 1, "endpoint": "e", "reqnum": 1, "request_idx": 1, "signature": "s"}});
    let (head, body) = send(
        &client,
        request("POST", &url(&worker, "/x"), partial.to_string()),
    )
    .await;
    assert_eq!(head.status, 422);
    let v = parse(&body);
    assert_eq!(v["auth_data"], json!({"url": "missing parameter"}));
    assert_eq!(v["payload"], "field missing");

    let (head, body) = send(
        &client,
        request(
            "POST",
            &url(&worker, "/x"),
            json!({"prompt": "hi"}).to_string(),
        ),
    )
    .await;
    assert_eq!(head.status, 422);
    assert_eq!(parse(&body)["auth_data"], "field missing");
    backend.assert_quiet();
}

#[tokio::test]
async fn invalid_json_is_422_in_unsecured_mode_too() {
    let mut backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let worker = start_worker(config(&backend)).await;
    let (head, _) = send(
        &h1_client(),
        request("POST", &url(&worker, "/x"), "{\"a\":"),
    )
    .await;
    assert_eq!(head.status, 422);
    backend.assert_quiet();
}

#[tokio::test]
async fn backend_gone_after_start_gives_502_and_counts_an_error() {
    let backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let worker = start_worker(config(&backend)).await;
    backend.stop();
    let (head, body) = post_envelope(&h1_client(), &worker, "/x", 1, 2.0).await;
    assert_eq!(head.status, 502);
    assert_eq!(parse(&body)["code"], "backend_unavailable");
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.totals.errored.requests, 1);
    assert_eq!(snap.totals.errored.workload, 2.0);
}

#[tokio::test]
async fn slow_response_start_gets_504_and_closes_the_backend_request() {
    let mut backend = Backend::start(|_| std::future::pending()).await;
    let mut cfg = config(&backend);
    cfg.response_start_timeout = Some(std::time::Duration::from_millis(200));
    let worker = start_worker(cfg).await;
    let (head, body) = post_envelope(&h1_client(), &worker, "/slow", 1, 1.0).await;
    assert_eq!(head.status, 504);
    assert_eq!(parse(&body)["code"], "backend_timeout");
    backend.next_request().await;
    assert_eq!(backend.expect_dropped().await, "/slow");
    assert_eq!(assert_settled(&worker).await.totals.errored.requests, 1);
}
