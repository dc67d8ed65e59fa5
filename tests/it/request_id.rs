//! Request ids, W3C trace context and `Server-Timing`.

use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::json;
use vespa::worker::observe::TraceContext;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn post(url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = Request::post(url).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(Bytes::from_static(b"{}"))).unwrap()
}

/// The `dur` of each metric in a `Server-Timing` value, in order.
fn server_timing(value: &str) -> Vec<(String, f64)> {
    value
        .split(',')
        .map(|metric| {
            let mut params = metric.trim().split(';');
            let name = params.next().unwrap().to_string();
            let dur = params
                .find_map(|p| p.strip_prefix("dur="))
                .unwrap_or_else(|| panic!("no dur in {metric:?}"))
                .parse()
                .unwrap();
            (name, dur)
        })
        .collect()
}

#[tokio::test]
async fn a_client_request_id_and_trace_context_reach_the_backend_unchanged() {
    let mut backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let worker = start_worker(config(&backend)).await;
    let client = h1_client();
    let headers = [
        ("x-request-id", "client-chosen-1"),
        ("traceparent", TRACEPARENT),
        ("tracestate", "vendor=abc,other=1"),
        ("baggage", "user=42"),
    ];
    let (head, _) = send(&client, post(&url(&worker, "/v1/completions"), &headers)).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["x-request-id"], "client-chosen-1");
    let seen = backend.next_request().await;
    for (name, value) in headers {
        assert_eq!(seen.headers[name], value, "{name}");
    }
}

#[tokio::test]
async fn a_request_without_an_id_gets_one_the_backend_and_the_client_both_see() {
    let mut backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let worker = start_worker(config(&backend)).await;
    let client = h1_client();
    let too_long = "x".repeat(vespa::worker::observe::MAX_REQUEST_ID_LEN + 1);
    let mut ids = Vec::new();
    for given in [None, Some(too_long.as_str())] {
        let headers: Vec<_> = given.map(|id| ("x-request-id", id)).into_iter().collect();
        let (head, _) = send(&client, post(&url(&worker, "/v1/x"), &headers)).await;
        let returned = head.headers["x-request-id"].to_str().unwrap().to_string();
        let seen = backend.next_request().await;
        assert_eq!(seen.headers["x-request-id"], returned.as_str());
        assert!(!seen.headers.contains_key("traceparent"), "none invented");
        assert_ne!(Some(returned.as_str()), given);
        ids.push(returned);
    }
    assert_ne!(ids[0], ids[1]);
}

#[tokio::test]
async fn trace_context_generate_gives_a_request_without_traceparent_a_sampled_one() {
    let mut backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let mut cfg = config(&backend);
    cfg.trace_context = TraceContext::Generate;
    let worker = start_worker(cfg).await;
    let client = h1_client();
    send(&client, post(&url(&worker, "/v1/x"), &[])).await;
    let made = backend.next_request().await.headers["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    let parts: Vec<&str> = made.split('-').collect();
    assert_eq!(parts.len(), 4, "{made}");
    assert_eq!((parts[0], parts[3]), ("00", "01"), "{made}");
    assert_eq!((parts[1].len(), parts[2].len()), (32, 16), "{made}");
    assert!(
        made[3..]
            .chars()
            .all(|c| c == '-' || (c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
    );
    assert!(parts[1].chars().any(|c| c != '0') && parts[2].chars().any(|c| c != '0'));
    // One the client sent is kept.
    send(
        &client,
        post(&url(&worker, "/v1/x"), &[("traceparent", TRACEPARENT)]),
    )
    .await;
    assert_eq!(
        backend.next_request().await.headers["traceparent"],
        TRACEPARENT
    );
}

#[tokio::test]
async fn server_timing_splits_queue_from_backend_time_in_a_streamed_response_head() {
    let (backend, chunks) = streaming_backend("sse").await;
    let worker = start_worker(config(&backend)).await;
    let client = h1_client();
    let resp = tokio::time::timeout(
        PATIENCE,
        client.request(post(&url(&worker, "/v1/completions"), &[])),
    )
    .await
    .unwrap()
    .unwrap();
    // The head is here while the body has not started: the figures came with it.
    let timing = resp.headers()["server-timing"].to_str().unwrap();
    let metrics = server_timing(timing);
    let names: Vec<&str> = metrics.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["queue", "backend"], "{timing}");
    assert!(metrics.iter().all(|(_, d)| *d >= 0.0), "{timing}");
    assert!(resp.headers().contains_key("x-request-id"));
    drop(chunks);
    drop(resp);
}

#[tokio::test]
async fn a_refusal_carries_the_request_id_and_no_backend_timing() {
    let mut backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let mut cfg = config(&backend);
    cfg.max_body_size = 1;
    let worker = start_worker(cfg).await;
    let client = h1_client();
    let (head, _) = send(
        &client,
        post(&url(&worker, "/v1/x"), &[("x-request-id", "refused-1")]),
    )
    .await;
    assert_eq!(head.status, 413);
    assert_eq!(head.headers["x-request-id"], "refused-1");
    assert!(!head.headers.contains_key("server-timing"));
    backend.assert_quiet();
}
