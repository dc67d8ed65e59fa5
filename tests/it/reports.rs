//! Reports to the autoscaler, failover, health, drain and the failure beacon.

use crate::fake_autoscaler::FakeAutoscaler;
use crate::support::*;
use http::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use vespa::worker::config::WorkerConfig;
use vespa::worker::lifecycle::State;
use vespa::worker::report::{Disk, ReportTarget, Reporter};

/// Every `worker_status` field of PROTOCOL.md §5.1, spelling included.
const STATUS_FIELDS: [&str; 18] = [
    "id",
    "mtoken",
    "version",
    "loadtime",
    "new_load",
    "cur_load",
    "rej_load",
    "max_perf",
    "cur_perf",
    "error_msg",
    "num_requests_working",
    "num_requests_recieved",
    "additional_disk_usage",
    "disk_usage",
    "working_request_idxs",
    "cur_capacity",
    "max_capacity",
    "url",
];

fn reporting_config(backend: &Backend, addrs: &[String]) -> WorkerConfig {
    let mut c = config(backend);
    c.vast.report_addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
    c.vast.container_id = Some(7);
    c.vast.master_token = Some("secret-master-token".into());
    c.vast.public_ipaddr = Some("203.0.113.7".into());
    c.vast.public_port = Some(41234);
    c.report_tick = Duration::from_millis(20);
    c.report_retry_pause = Duration::from_millis(10);
    c.health_interval = Duration::from_millis(20);
    c
}

#[tokio::test]
async fn worker_status_carries_every_field_and_interval_counters_add_up() {
    let backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let mut autoscaler = FakeAutoscaler::start(true).await;
    let mut cfg = reporting_config(&backend, &[autoscaler.url()]);
    cfg.max_perf = 50.0;
    cfg.max_wait_time = 0.0;
    let worker = start_worker(cfg).await;
    let first = autoscaler.status_where(|_| true).await;
    let mut keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    let mut expected: Vec<&str> = STATUS_FIELDS.to_vec();
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(first["id"], 7);
    assert_eq!(first["mtoken"], "secret-master-token");
    assert_eq!(first["url"], "http://203.0.113.7:41234");
    assert_eq!(first["version"], env!("CARGO_PKG_VERSION"));

    let client = h1_client();
    for (i, cost) in [2.0, 3.0, 5.0].into_iter().enumerate() {
        let (head, _) = post_envelope(&client, &worker, "/x", i as u64 + 1, cost).await;
        assert_eq!(head.status, 200);
    }
    assert_settled(&worker).await;
    let (mut new_load, mut cur_perf) = (0.0, 0.0);
    let mut last = Value::Null;
    while new_load < 10.0 || cur_perf < 10.0 {
        last = autoscaler.status_where(|_| true).await;
        new_load += last["new_load"].as_f64().unwrap();
        cur_perf += last["cur_perf"].as_f64().unwrap();
    }
    assert_eq!(
        (new_load, cur_perf),
        (10.0, 10.0),
        "each unit reported exactly once"
    );
    assert!(last["loadtime"].as_f64().unwrap() > 0.0);
    assert_eq!(last["max_perf"], 50.0);
    assert_eq!(last["num_requests_recieved"], 3);
    assert_eq!(last["num_requests_working"], 0);
    assert_eq!(last["error_msg"], "");

    let mut records = Vec::new();
    while records.len() < 3 {
        let d = autoscaler.next_delete().await;
        assert_eq!(d["worker_id"], 7);
        assert_eq!(d["mtoken"], "secret-master-token");
        records.extend(d["requests"].as_array().unwrap().iter().cloned());
    }
    let idxs: Vec<u64> = records
        .iter()
        .map(|r| r["request_idx"].as_u64().unwrap())
        .collect();
    assert_eq!(idxs, vec![1, 2, 3]);
    for r in &records {
        assert_eq!(r["status"], "Success");
        assert_eq!(r["success"], true);
        for t in ["entered_queue_at", "work_started_at", "work_completed_at"] {
            assert!(r[t].as_f64().unwrap() > 1.7e9, "{t}: {r}");
        }
    }
}

#[tokio::test]
async fn reports_fail_over_to_the_next_address_in_order() {
    let backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let mut autoscaler = FakeAutoscaler::start(true).await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let worker = start_worker(reporting_config(
        &backend,
        &[format!("http://{closed}"), autoscaler.url()],
    ))
    .await;
    autoscaler.status_where(|_| true).await;
    let mut req = request("GET", &url(&worker, "/_vespa/status"), "");
    req.headers_mut().insert(
        "authorization",
        "Bearer secret-master-token".parse().unwrap(),
    );
    let (_, body) = send(&h1_client(), req).await;
    let status: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status["report"]["last_success_addr"], autoscaler.url());
}

#[tokio::test]
async fn interval_counters_survive_failed_sends_until_one_succeeds() {
    let backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let mut autoscaler = FakeAutoscaler::start(true).await;
    // The worker itself reports nowhere; the reporters below are driven by hand.
    let worker = start_worker(config(&backend)).await;
    post_envelope(&h1_client(), &worker, "/x", 1, 4.0).await;
    assert_settled(&worker).await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let target = |addr: String| ReportTarget {
        pause: Duration::from_millis(1),
        ..ReportTarget::new(vec![addr], 1, "t".into(), "u".into())
    };
    let down = Reporter::new(target(format!("http://{closed}")), reqwest::Client::new());
    assert!(
        !down
            .send_status(&worker.shared().sources(), &mut Disk::default())
            .await
    );
    assert!(
        !down
            .send_status(&worker.shared().sources(), &mut Disk::default())
            .await
    );
    assert_eq!(down.outcome().failed, 2);
    assert_eq!(
        worker.shared().book.interval().received,
        4.0,
        "kept while unreachable"
    );
    let up = Reporter::new(target(autoscaler.url()), reqwest::Client::new());
    assert!(
        up.send_status(&worker.shared().sources(), &mut Disk::default())
            .await
    );
    let report = autoscaler.status_where(|_| true).await;
    assert_eq!(report["new_load"], 4.0);
    assert_eq!(report["cur_perf"], 4.0);
    assert_eq!(
        worker.shared().book.interval().received,
        0.0,
        "settled after success"
    );
}

#[tokio::test]
async fn unhealthy_backend_is_reported_after_three_failures_and_recovers() {
    let mut backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let mut autoscaler = FakeAutoscaler::start(true).await;
    let worker = start_worker(reporting_config(&backend, &[autoscaler.url()])).await;
    backend.set_health(StatusCode::SERVICE_UNAVAILABLE);
    wait_state(&worker, |s| matches!(s, State::Errored(_))).await;
    let report = autoscaler.status_where(|r| r["error_msg"] != "").await;
    assert!(
        report["error_msg"].as_str().unwrap().contains("3 times"),
        "{report}"
    );
    let (head, _) = post_envelope(&h1_client(), &worker, "/x", 1, 1.0).await;
    assert_eq!(head.status, 503);
    backend.set_health(StatusCode::OK);
    wait_state(&worker, |s| *s == State::Ready).await;
    autoscaler.status_where(|r| r["error_msg"] == "").await;
    let (head, _) = post_envelope(&h1_client(), &worker, "/x", 2, 1.0).await;
    assert_eq!(head.status, 200);
    backend.next_request().await;
}

#[tokio::test]
async fn drain_finishes_in_flight_work_refuses_new_work_and_reports_last() {
    let (mut backend, release) = held_first_backend().await;
    let mut autoscaler = FakeAutoscaler::start(true).await;
    let worker = start_worker(reporting_config(&backend, &[autoscaler.url()])).await;
    let client = h1_client();
    let in_flight = {
        let (client, u) = (client.clone(), url(&worker, "/long"));
        tokio::spawn(async move {
            send(
                &client,
                request("POST", &u, envelope(1, 1.0, json!({})).to_string()),
            )
            .await
        })
    };
    backend.next_request().await;
    let worker = std::sync::Arc::new(worker);
    let drained = {
        let w = worker.clone();
        tokio::spawn(async move { w.drain(PATIENCE).await })
    };
    wait_state(&worker, |s| *s == State::Draining).await;
    let (head, body) = post_envelope(&client, &worker, "/new", 2, 1.0).await;
    assert_eq!(head.status, 503);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["code"],
        "draining"
    );
    release.send(()).unwrap();
    assert_eq!(in_flight.await.unwrap().0.status, 200);
    assert!(drained.await.unwrap(), "drained before the timeout");
    autoscaler
        .status_where(|r| r["num_requests_working"] == 0 && r["cur_perf"].as_f64() > Some(0.0))
        .await;
}

#[tokio::test]
async fn a_worker_that_cannot_bind_keeps_reporting_why() {
    let mut autoscaler = FakeAutoscaler::start(true).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vespa"))
        .args(["worker", "--listen", &addr])
        .env_clear()
        .envs([
            ("UNSECURED", "true"),
            ("MAX_PERF", "10"),
            ("REPORT_ADDR", autoscaler.url().as_str()),
            ("CONTAINER_ID", "9"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let report = autoscaler.status_where(|_| true).await;
    assert_eq!(report["id"], 9);
    assert!(
        report["error_msg"]
            .as_str()
            .unwrap()
            .contains("cannot listen"),
        "{report}"
    );
    child.kill().await.unwrap();
}

/// Routing waits for the report that says a worker is ready: it goes out when the worker
/// becomes ready, not at the next tick (here an hour away).
#[tokio::test]
async fn becoming_ready_is_reported_at_once_not_at_the_next_tick() {
    let backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let mut autoscaler = FakeAutoscaler::start(true).await;
    let mut cfg = reporting_config(&backend, &[autoscaler.url()]);
    cfg.max_perf = 50.0;
    cfg.report_tick = Duration::from_secs(3600);
    let _worker = start_worker(cfg).await;
    let ready = autoscaler
        .status_where(|s| s["loadtime"].as_f64().unwrap_or(0.0) > 0.0)
        .await;
    assert_eq!(ready["max_perf"], 50.0);
    assert_eq!(ready["error_msg"], "");
}
