//! The worker on a Vast instance: HTTPS with the instance certificate, readiness from the
//! model server's log, and the rolling-update route.

use crate::fake_autoscaler::FakeAutoscaler;
use crate::support::*;
use crate::tls::{Ca, TempDir, connect, get, h1, text, write_pair};
use http::StatusCode;
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use vespa::worker::Worker;
use vespa::worker::config::{ModelLog, Readiness, WorkerConfig};
use vespa::worker::lifecycle::State;
use vespa::worker::model_log::Engine;

fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

fn log_config(backend: &Backend, log: &Path, readiness: Readiness) -> WorkerConfig {
    let mut c = config(backend);
    c.model_log = Some(ModelLog {
        path: log.to_path_buf(),
        markers: Engine::Vllm.markers(),
    });
    c.readiness = readiness;
    c.ready_poll_interval = Duration::from_millis(20);
    c
}

#[tokio::test]
async fn use_ssl_serves_https_with_the_instance_certificate_and_reports_https() {
    let backend = Backend::start(|_| async { json(200, json!({"ok": 1})) }).await;
    let mut autoscaler = FakeAutoscaler::start(true).await;
    let ca = Ca::vast_quirk();
    let dir = TempDir::new();
    let files = write_pair(&dir, &ca.leaf("127.0.0.1"));
    let mut cfg = config(&backend);
    cfg.vast.use_ssl = true;
    cfg.tls = Some(files);
    cfg.vast.report_addrs = vec![autoscaler.url().parse().unwrap()];
    cfg.report_tick = Duration::from_millis(20);
    let worker = Worker::start(cfg).await.unwrap();
    wait_state(&worker, |s| *s == State::Ready).await;
    assert_eq!(worker.scheme(), "https");

    for alpn in [&b"http/1.1"[..], b"h2"] {
        let tls = connect(worker.local_addr(), &ca.worker_ca(), &[alpn])
            .await
            .unwrap();
        let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        assert_eq!(negotiated.as_deref(), Some(alpn));
        if alpn == b"h2" {
            let mut h2 = crate::tls::h2(tls).await;
            let uri = format!("https://127.0.0.1:{}/v1/x", worker.local_addr().port());
            let resp = h2.send_request(get(&uri)).await.unwrap();
            assert_eq!(text(resp).await, (200, r#"{"ok":1}"#.to_string()));
        } else {
            let resp = h1(tls).await.send_request(get("/v1/x")).await.unwrap();
            assert_eq!(text(resp).await, (200, r#"{"ok":1}"#.to_string()));
        }
    }
    // Plain HTTP on the TLS port gets no answer: never plain while reporting https.
    let plain = tokio::time::timeout(
        PATIENCE,
        h1_client().request(request("GET", &url(&worker, "/_vespa/health"), "")),
    )
    .await
    .expect("an answer in time");
    assert!(plain.is_err(), "plain HTTP was served on the TLS port");
    let report = autoscaler
        .status_where(|r| r["url"].as_str().is_some_and(|u| u.starts_with("https://")))
        .await;
    assert_eq!(
        report["url"],
        format!("https://127.0.0.1:{}", worker.local_addr().port())
    );
}

#[tokio::test]
async fn a_load_marker_in_the_model_log_makes_the_worker_ready() {
    let backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let dir = TempDir::new();
    let log = dir.path("vllm.log");
    append(&log, "INFO loading weights");
    let worker = Worker::start(log_config(&backend, &log, Readiness::Both))
        .await
        .unwrap();
    // Healthy backend, no marker yet: still waiting.
    wait_state(&worker, |s| *s == State::WaitingForBackend).await;
    let (head, _) = post_envelope(&h1_client(), &worker, "/x", 1, 1.0).await;
    assert_eq!(head.status, StatusCode::SERVICE_UNAVAILABLE);
    append(&log, "INFO:     Application startup complete.");
    wait_state(&worker, |s| *s == State::Ready).await;
    // Once loaded, the log also echoes what clients send: a traceback in a prompt, or one
    // request's crash, must not end the worker (the health checks decide).
    append(&log, "prompt: fix this: Traceback (most recent call last):");
    let mut states = worker.shared().lifecycle.subscribe();
    let changed = tokio::time::timeout(Duration::from_millis(500), states.changed()).await;
    assert!(
        changed.is_err(),
        "state changed: {:?}",
        worker.shared().lifecycle.state()
    );
    assert_eq!(worker.shared().lifecycle.state(), State::Ready);
}

#[tokio::test]
async fn an_error_line_errors_the_worker_for_good_and_is_reported_at_once() {
    let backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let mut autoscaler = FakeAutoscaler::start(true).await;
    let dir = TempDir::new();
    let log = dir.path("vllm.log");
    let mut cfg = log_config(&backend, &log, Readiness::Logs);
    cfg.vast.report_addrs = vec![autoscaler.url().parse().unwrap()];
    cfg.report_tick = Duration::from_millis(20);
    let worker = Worker::start(cfg).await.unwrap();
    wait_state(&worker, |s| *s == State::WaitingForBackend).await;
    append(
        &log,
        "RuntimeError: Engine core initialization failed. See root cause above.",
    );
    let report = autoscaler
        .status_where(|r| r["error_msg"].as_str().is_some_and(|m| !m.is_empty()))
        .await;
    assert!(
        report["error_msg"]
            .as_str()
            .unwrap()
            .contains("RuntimeError: Engine core initialization failed"),
        "{report}"
    );
    assert_eq!(report["max_perf"], 0.0);
    // A load marker after the error does not make it ready.
    append(&log, "INFO:     Application startup complete.");
    append(&log, "a line that only proves the marker above was read");
    let mut states = worker.shared().lifecycle.subscribe();
    let _ = tokio::time::timeout(Duration::from_millis(300), states.changed()).await;
    assert!(matches!(
        worker.shared().lifecycle.state(),
        State::Errored(_)
    ));
    assert_eq!(worker.shared().lifecycle.loadtime(), None);
}

#[tokio::test]
async fn pyworker_update_needs_the_master_token_then_asks_the_worker_to_drain() {
    let backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let dir = TempDir::new();
    let marker = dir.path("force_update");
    let mut cfg = config(&backend);
    cfg.vast.master_token = Some("master-token-123".into());
    cfg.force_update_file = marker.clone();
    let worker = start_worker(cfg).await;
    let client = h1_client();
    let update = |auth: Option<&str>| {
        let mut req = request("POST", &url(&worker, "/pyworker/update"), "");
        if let Some(a) = auth {
            req.headers_mut()
                .insert("authorization", a.parse().unwrap());
        }
        send(&client, req)
    };
    for bad in [None, Some("Bearer wrong"), Some("Bearer ")] {
        let (head, body) = update(bad).await;
        assert_eq!(head.status, 401, "{bad:?}");
        assert!(String::from_utf8_lossy(&body).contains("unauthorized"));
        assert!(!marker.exists());
    }
    let (head, body) = update(Some("Bearer master-token-123")).await;
    assert_eq!(head.status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        json!({"ok": true})
    );
    assert!(marker.exists());
    tokio::time::timeout(PATIENCE, worker.update_requested())
        .await
        .expect("the update was signalled");
}

#[tokio::test]
async fn without_a_master_token_nobody_may_update() {
    let backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let worker = start_worker(config(&backend)).await;
    let mut req = request("POST", &url(&worker, "/pyworker/update"), "");
    req.headers_mut()
        .insert("authorization", "Bearer ".parse().unwrap());
    let (head, _) = send(&h1_client(), req).await;
    assert_eq!(head.status, 401);
}
