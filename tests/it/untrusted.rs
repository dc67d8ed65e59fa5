//! What a client sends is untrusted: costs are validated and bounded, the status document
//! needs the master token, and errors never say where the backend is.

use crate::support::*;
use serde_json::{Value, json};

fn parse(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

async fn post_cost(worker: &vespa::worker::Worker, cost: Value) -> (http::response::Parts, Value) {
    let mut env = envelope(1, 1.0, json!({}));
    env["auth_data"]["cost"] = cost;
    let (head, body) = send(
        &h1_client(),
        request("POST", &url(worker, "/x"), env.to_string()),
    )
    .await;
    (head, parse(&body))
}

#[tokio::test]
async fn negative_non_finite_or_non_numeric_costs_get_422() {
    let mut backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let worker = start_worker(config(&backend)).await;
    for cost in [
        json!(-1),
        json!("-0.5"),
        json!("NaN"),
        json!("inf"),
        json!("lots"),
        json!({"a": 1}),
    ] {
        let (head, body) = post_cost(&worker, cost.clone()).await;
        assert_eq!(head.status, 422, "{cost}");
        assert_eq!(body["code"], "invalid_request", "{cost}");
    }
    backend.assert_quiet();
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.totals.received.requests, 0);
    // 0 and null fall back to DEFAULT_COST, as PROTOCOL.md §4 says.
    for cost in [json!(0), Value::Null] {
        let (head, _) = post_cost(&worker, cost).await;
        assert_eq!(head.status, 200);
    }
    assert_eq!(assert_settled(&worker).await.totals.served.workload, 2.0);
}

/// Starts a request with `cost` that the backend holds until `release` fires.
async fn hold(
    worker: &vespa::worker::Worker,
    cost: Value,
) -> tokio::task::JoinHandle<(http::response::Parts, bytes::Bytes)> {
    let worker_url = url(worker, "/x");
    let mut env = envelope(1, 1.0, json!({}));
    env["auth_data"]["cost"] = cost;
    let task = tokio::spawn(async move {
        send(&h1_client(), request("POST", &worker_url, env.to_string())).await
    });
    wait_until(worker, |s| s.in_flight == 1).await;
    task
}

#[tokio::test]
async fn a_huge_cost_counts_as_max_wait_time_of_work_at_most() {
    let (backend, release) = held_first_backend().await;
    let mut cfg = config(&backend);
    cfg.max_perf = 100.0;
    cfg.max_wait_time = 5.0;
    let worker = start_worker(cfg).await;
    let held = hold(&worker, json!(1e300)).await;
    assert_eq!(
        worker.shared().ledger.snapshot().cur_load,
        500.0,
        "5 s at 100 units/s"
    );
    // 5 s of wait is within the limit: the next one is admitted, and clamped too.
    let (head, _) = post_cost(&worker, json!("1e300")).await;
    assert_eq!(head.status, 200);
    release.send(()).unwrap();
    held.await.unwrap();
    assert_eq!(assert_settled(&worker).await.totals.served.workload, 1000.0);
}

#[tokio::test]
async fn max_cost_bounds_a_request_and_retry_after_stays_a_small_integer() {
    let (backend, release) = held_first_backend().await;
    let mut cfg = config(&backend);
    cfg.max_perf = 100.0;
    cfg.max_wait_time = 5.0;
    cfg.max_cost = Some(600.0);
    let worker = start_worker(cfg).await;
    let held = hold(&worker, json!(1e300)).await;
    let (head, body) = post_cost(&worker, json!(1)).await;
    assert_eq!(head.status, 429, "{body}");
    assert_eq!(
        head.headers["retry-after"], "1",
        "6 s of wait, 1 s over the limit"
    );
    release.send(()).unwrap();
    held.await.unwrap();
}

#[tokio::test]
async fn status_needs_the_master_token_while_health_and_ready_stay_open() {
    let backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let mut cfg = config(&backend);
    cfg.vast.master_token = Some("master-token-123".into());
    let worker = start_worker(cfg).await;
    let client = h1_client();
    let get = |path: &str, auth: Option<&str>| {
        let mut req = request("GET", &url(&worker, path), "");
        if let Some(a) = auth {
            req.headers_mut()
                .insert("authorization", a.parse().unwrap());
        }
        send(&client, req)
    };
    let (head, body) = get("/_vespa/status", None).await;
    assert_eq!(head.status, 401);
    assert!(!String::from_utf8_lossy(&body).contains("working_request_idxs"));
    let (head, _) = get("/_vespa/status", Some("Bearer nope")).await;
    assert_eq!(head.status, 401);
    let (head, body) = get("/_vespa/status", Some("Bearer master-token-123")).await;
    assert_eq!(head.status, 200);
    assert_eq!(parse(&body)["state"], "ready");
    for open in ["/_vespa/health", "/_vespa/ready", "/ping"] {
        let (head, _) = get(open, None).await;
        assert_eq!(head.status, 200, "{open}");
    }
}

#[tokio::test]
async fn errors_never_reveal_the_backend_address() {
    let backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let addr = backend.addr;
    let worker = start_worker(config(&backend)).await;
    drop(backend);
    let (head, body) = post_envelope(&h1_client(), &worker, "/x", 1, 1.0).await;
    assert_eq!(head.status, 502);
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains(&addr.port().to_string()), "{text}");
    assert_eq!(parse(&body)["code"], "backend_unavailable");
    // Errored: the 503 says so, the reason stays in /_vespa/status.
    worker
        .shared()
        .lifecycle
        .set(vespa::worker::lifecycle::State::Errored(format!(
            "backend at {addr} did not answer"
        )));
    let (head, body) = post_envelope(&h1_client(), &worker, "/x", 2, 1.0).await;
    assert_eq!(head.status, 503);
    assert!(!String::from_utf8_lossy(&body).contains(&addr.to_string()));
    let (_, body) = send(
        &h1_client(),
        request("GET", &url(&worker, "/_vespa/ready"), ""),
    )
    .await;
    assert_eq!(parse(&body), json!({"state": "errored"}));
}

#[tokio::test]
async fn before_the_capacity_is_known_a_rejected_cost_is_still_bounded() {
    let backend = Backend::start_with_health(http::StatusCode::SERVICE_UNAVAILABLE, |_| async {
        json(200, json!({}))
    })
    .await;
    let mut cfg = config(&backend);
    cfg.max_perf = 0.0;
    let worker = vespa::worker::Worker::start(cfg).await.unwrap();
    wait_state(&worker, |s| {
        *s == vespa::worker::lifecycle::State::WaitingForBackend
    })
    .await;
    let (head, _) = post_cost(&worker, json!(1.7e308)).await;
    assert_eq!(head.status, 503);
    let rejected = assert_settled(&worker).await.totals.rejected.workload;
    assert_eq!(rejected, vespa::worker::admission::UNMEASURED_MAX_COST);
    assert_eq!(worker.shared().book.interval().rejected, rejected);
}

#[tokio::test]
async fn bodies_held_in_memory_share_max_buffered_bytes_and_get_503_beyond_it() {
    let (backend, release) = held_first_backend().await;
    let mut cfg = config(&backend);
    cfg.max_buffered_bytes = 64 * 1024;
    let worker = start_worker(cfg).await;
    let big = |idx: u64| envelope(idx, 1.0, json!({"prompt": "x".repeat(40 * 1024)})).to_string();
    let first = {
        let (u, body) = (url(&worker, "/x"), big(1));
        tokio::spawn(async move { send(&h1_client(), request("POST", &u, body)).await })
    };
    wait_until(&worker, |s| s.in_flight == 1).await;
    // 40 KiB are held by the first request until the backend answers it: 40 more do not fit.
    let (head, body) = send(&h1_client(), request("POST", &url(&worker, "/x"), big(2))).await;
    assert_eq!(head.status, 503, "{}", String::from_utf8_lossy(&body));
    assert_eq!(parse(&body)["code"], "overloaded");
    assert_eq!(head.headers["retry-after"], "1");
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap().0.status, 200);
    // Released: the same body fits again, one after another.
    for idx in 3..6 {
        let (head, _) = send(&h1_client(), request("POST", &url(&worker, "/x"), big(idx))).await;
        assert_eq!(head.status, 200);
    }
    let snap = assert_settled(&worker).await;
    assert_eq!(
        snap.totals.received.requests, 4,
        "the 503 never entered the books"
    );
}
