//! `/_vespa/metrics`: known traffic gives exact counts, and both exposition formats pass the
//! official Prometheus client's parsers (tests/python/check_metrics.py).

use crate::fake_autoscaler::FakeAutoscaler;
use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// One sample as the parser read it.
#[derive(Debug, serde::Deserialize)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of `text`, read by the Python client's `format` parser (`openmetrics` or
/// `prometheus`); the test fails if the parser rejects the text.
async fn parse(text: &str, format: &str) -> Vec<Sample> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let path = file.path().to_str().unwrap();
    let out = python_output("check_metrics.py", &[path, "--format", format]).await;
    let parsed: Value = serde_json::from_slice(&out).expect("check_metrics.py prints JSON");
    serde_json::from_value(parsed["samples"].clone()).unwrap()
}

/// The value of the sample `name` with exactly `labels`, failing when there is none.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
        .value
}

/// `GET /_vespa/metrics`, asking for OpenMetrics or not; returns the content type and text.
async fn scrape(client: &HttpClient, addr: &str, openmetrics: bool) -> (String, String) {
    let mut req = Request::get(format!("http://{addr}/_vespa/metrics"));
    if openmetrics {
        req = req.header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        );
    }
    let (head, body) = send(client, req.body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!(head.status, 200);
    let ct = head.headers["content-type"].to_str().unwrap().to_string();
    (ct, String::from_utf8(body.to_vec()).unwrap())
}

/// A backend for every outcome: `/v1/hold` waits for the returned gate, `/v1/fail` answers
/// 500, `/v1/stream` streams the chunks sent on the returned channel, anything else 200.
pub async fn outcome_backend() -> (Backend, oneshot::Sender<()>, mpsc::UnboundedSender<Bytes>) {
    let (release, gate) = oneshot::channel::<()>();
    let gate = Arc::new(Mutex::new(Some(gate)));
    let (chunks, rx) = mpsc::unbounded_channel();
    let rx = Arc::new(Mutex::new(Some(rx)));
    let backend = Backend::start(move |seen| {
        let gate = match seen.uri.path() {
            "/v1/hold" => gate.lock().unwrap().take(),
            _ => None,
        };
        let stream = match seen.uri.path() {
            "/v1/stream" => rx.lock().unwrap().take(),
            _ => None,
        };
        async move {
            if let Some(g) = gate {
                let _ = g.await;
            }
            match (seen.uri.path(), stream) {
                ("/v1/fail", _) => json(500, json!({"error": "model crashed"})),
                (_, Some(rx)) => streaming("text/event-stream", "stream", rx, seen.events),
                _ => json(200, json!({"ok": true})),
            }
        }
    })
    .await;
    (backend, release, chunks)
}

#[tokio::test]
async fn metrics_count_each_outcome_of_known_traffic_exactly() {
    let (mut backend, release, chunks) = outcome_backend().await;
    let mut autoscaler = FakeAutoscaler::start(true).await;
    let mut cfg = config(&backend);
    cfg.unsecured = false;
    cfg.vast.report_addrs = vec![autoscaler.url().parse().unwrap()];
    cfg.report_tick = Duration::from_millis(20);
    cfg.pubkey_backoff_unit = Duration::from_millis(10);
    // Capacity 1/s, 1 s of wait allowed: one request of cost 10 fills the queue.
    cfg.max_perf = 1.0;
    cfg.max_wait_time = 1.0;
    cfg.max_cost = Some(100.0);
    let worker = start_worker(cfg).await;
    let addr = worker.local_addr().to_string();
    let me = format!("http://{addr}");
    let client = h1_client();
    let signed = |idx: u64, cost: f64| json!({"auth_data": autoscaler.auth_data(&me, idx, json!(cost)), "payload": {}});
    let post = |path: &str, body: &Value| request("POST", &url(&worker, path), body.to_string());

    // A client that leaves mid-stream, after three frames (two gaps between them).
    let mut leaver = RawClient::post(worker.local_addr(), "/v1/stream", &signed(1, 1.0)).await;
    backend.next_request().await;
    for n in 1..=3 {
        let chunk = format!("data: {n}\n\n");
        chunks.send(Bytes::from(chunk.clone())).unwrap();
        leaver.read_until(chunk.as_bytes()).await;
    }
    drop(leaver);
    backend.expect_dropped().await;

    for idx in 2..5 {
        let (head, _) = send(&client, post("/v1/ok", &signed(idx, 0.1))).await;
        assert_eq!(head.status, 200);
    }
    let (head, _) = send(&client, post("/v1/fail", &signed(5, 0.1))).await;
    assert_eq!(head.status, 500);
    let held = {
        let (client, req) = (client.clone(), post("/v1/hold", &signed(6, 10.0)));
        tokio::spawn(async move { send(&client, req).await })
    };
    wait_until(&worker, |s| s.in_flight == 1).await;
    let (head, _) = send(&client, post("/v1/ok", &signed(7, 1.0))).await;
    assert_eq!(head.status, 429);
    release.send(()).unwrap();
    assert_eq!(held.await.unwrap().0.status, 200);
    let mut forged = signed(8, 1.0);
    forged["auth_data"]["signature"] = json!("AAAA");
    let (head, _) = send(&client, post("/v1/ok", &forged)).await;
    assert_eq!(head.status, 401);
    for path in [
        "/_vespa/health",
        "/_vespa/ready",
        "/ping",
        "/_vespa/nothing",
    ] {
        send(&client, request("GET", &url(&worker, path), "")).await;
    }
    assert_settled(&worker).await;
    // Two reports received: the first one's answer was counted before the second went out.
    autoscaler.status_where(|_| true).await;
    autoscaler.status_where(|_| true).await;

    let (ct, openmetrics) = scrape(&client, &addr, true).await;
    assert_eq!(
        ct,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let (ct, prometheus) = scrape(&client, &addr, false).await;
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    for (format, text) in [("openmetrics", openmetrics), ("prometheus", prometheus)] {
        let s = parse(&text, format).await;
        let requests = |code, outcome| {
            value(
                &s,
                "vespa_requests_total",
                &[("code", code), ("outcome", outcome)],
            )
        };
        assert_eq!(requests("200", "ok"), 4.0, "{format}");
        assert_eq!(requests("500", "backend_error"), 1.0, "{format}");
        assert_eq!(requests("200", "client_gone"), 1.0, "{format}");
        assert_eq!(requests("429", "rejected"), 1.0, "{format}");
        assert_eq!(requests("401", "unauthorized"), 1.0, "{format}");
        let counted: f64 = s
            .iter()
            .filter(|x| x.name == "vespa_requests_total")
            .map(|x| x.value)
            .sum();
        assert_eq!(counted, 8.0, "own routes are not counted ({format})");
        let durations = |outcome| {
            value(
                &s,
                "vespa_request_duration_seconds_count",
                &[("outcome", outcome)],
            )
        };
        for (outcome, n) in [
            ("ok", 4.0),
            ("backend_error", 1.0),
            ("client_gone", 1.0),
            ("rejected", 1.0),
            ("unauthorized", 1.0),
            ("invalid", 0.0),
            ("timeout", 0.0),
        ] {
            assert_eq!(durations(outcome), n, "{outcome} ({format})");
        }
        // Six requests reached the backend: four ok, the 500 and the stream.
        let count = |name| value(&s, name, &[]);
        assert_eq!(count("vespa_time_to_first_byte_seconds_count"), 6.0);
        assert_eq!(count("vespa_queue_wait_seconds_count"), 6.0);
        assert_eq!(count("vespa_stream_gap_seconds_count"), 2.0);
        for (gauge, v) in [
            ("vespa_in_flight_requests", 0.0),
            ("vespa_queued_requests", 0.0),
            ("vespa_working_set_workload", 0.0),
            ("vespa_max_perf", 1.0),
            ("vespa_estimated_wait_seconds", 0.0),
        ] {
            assert_eq!(count(gauge), v, "{gauge} ({format})");
        }
        assert_eq!(value(&s, "vespa_state", &[("state", "ready")]), 1.0);
        assert_eq!(value(&s, "vespa_state", &[("state", "starting")]), 0.0);
        let conns = |state| value(&s, "vespa_backend_connections", &[("state", state)]);
        assert_eq!(conns("busy"), 0.0, "{format}");
        assert!(conns("idle") >= 1.0, "{format}");
        let reports = |result| {
            value(
                &s,
                "vespa_reports_total",
                &[("kind", "status"), ("result", result)],
            )
        };
        assert!(reports("ok") >= 1.0, "{format}");
        assert_eq!(reports("error"), 0.0, "{format}");
    }
}

#[tokio::test]
async fn metrics_show_requests_in_flight_and_queued_while_they_wait() {
    let (mut backend, release) = held_first_backend().await;
    let mut cfg = config(&backend);
    cfg.max_concurrency = Some(1);
    let worker = start_worker(cfg).await;
    let client = h1_client();
    let mut answers = Vec::new();
    for idx in 0..2 {
        let (client, body) = (client.clone(), envelope(idx, 2.0, json!({})).to_string());
        let u = url(&worker, "/v1/completions");
        answers.push(tokio::spawn(async move {
            send(&client, request("POST", &u, body)).await
        }));
    }
    wait_until(&worker, |s| s.in_flight == 1 && s.queued == 1).await;
    backend.next_request().await;
    let (_, text) = scrape(&client, &worker.local_addr().to_string(), false).await;
    let s = parse(&text, "prometheus").await;
    assert_eq!(value(&s, "vespa_in_flight_requests", &[]), 1.0);
    assert_eq!(value(&s, "vespa_queued_requests", &[]), 1.0);
    assert_eq!(value(&s, "vespa_working_set_workload", &[]), 4.0);
    // 4 units at 1000 units/s.
    assert_eq!(value(&s, "vespa_estimated_wait_seconds", &[]), 0.004);
    let conns = |state| value(&s, "vespa_backend_connections", &[("state", state)]);
    assert_eq!((conns("busy"), conns("idle")), (1.0, 0.0));
    release.send(()).unwrap();
    for a in answers {
        assert_eq!(a.await.unwrap().0.status, 200);
    }
}

#[tokio::test]
async fn a_client_that_leaves_mid_upload_is_counted_client_gone() {
    use tokio::io::AsyncWriteExt;
    let (mut backend, _release, _chunks) = outcome_backend().await;
    let worker = start_worker(config(&backend)).await;
    let addr = worker.local_addr().to_string();
    let mut tcp = tokio::net::TcpStream::connect(worker.local_addr())
        .await
        .unwrap();
    tcp.write_all(
        b"POST /v1/x HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"prompt\": ",
    )
    .await
    .unwrap();
    drop(tcp);
    let client = h1_client();
    let deadline = std::time::Instant::now() + PATIENCE;
    let samples = loop {
        let (_, text) = scrape(&client, &addr, true).await;
        let samples = parse(&text, "openmetrics").await;
        let gone = samples.iter().any(|s| {
            s.name == "vespa_requests_total"
                && s.labels.get("outcome").map(String::as_str) == Some("client_gone")
        });
        if gone || std::time::Instant::now() > deadline {
            break samples;
        }
    };
    let counted: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "vespa_requests_total")
        .collect();
    let labels = [("code", "499"), ("outcome", "client_gone")];
    assert_eq!(
        value(&samples, "vespa_requests_total", &labels),
        1.0,
        "{counted:?}"
    );
    assert!(
        !samples.iter().any(
            |s| s.labels.get("outcome").map(String::as_str) == Some("invalid")
                && s.name == "vespa_requests_total"
        ),
        "a cut upload is not an invalid request"
    );
    backend.assert_quiet();
}
