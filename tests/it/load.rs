//! `vespa load`: its figures against a backend with a known, fixed latency.

use crate::support::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use vespa::client::load::{Generator, Live, LoadPlan, Pace, Target, run_load};
use vespa::client::{Client, ClientConfig};
use vespa::profile::Profile;

const LATENCY: Duration = Duration::from_millis(100);

/// A backend that answers every request after exactly `LATENCY`.
async fn fixed_latency_backend() -> Backend {
    Backend::start(|_| async {
        tokio::time::sleep(LATENCY).await;
        json(200, json!({"usage": {"completion_tokens": 1}}))
    })
    .await
}

fn generator() -> Generator {
    Generator::new(Arc::new(Profile::built_in("openai").unwrap()), "m", false)
}

fn plain(url: String) -> Target {
    Target::Plain {
        http: vespa::client::load::target::plain_client(),
        base: url.trim_end_matches('/').to_string(),
    }
}

#[tokio::test]
async fn closed_loop_figures_match_a_fixed_latency_backend() {
    let backend = fixed_latency_backend().await;
    let plan = LoadPlan {
        pace: Pace::Concurrency(4),
        requests: Some(40),
        duration: None,
        timeout: Duration::from_secs(10),
    };
    let live = Arc::new(Live::default());
    let report = run_load(
        plain(backend.url().to_string()),
        generator(),
        plan,
        Arc::clone(&live),
    )
    .await;
    assert_eq!((report.requests, report.ok), (40, 40));
    assert_eq!(report.status["200"], 40);
    assert!(report.errors.is_empty());
    assert_eq!(live.done.load(std::sync::atomic::Ordering::Relaxed), 40);
    // Every request takes at least the backend's 100 ms; loopback adds little.
    let p50 = report.latency_ms.p50;
    assert!((100.0..200.0).contains(&p50), "p50 {p50} ms");
    assert!(report.latency_ms.max >= report.latency_ms.p99 && report.latency_ms.p99 >= p50);
    // 4 in flight at 100 ms each: at most 40 responses/s, and 10 waves take at least 1 s.
    assert!(report.duration_secs >= 1.0, "{report:?}");
    assert!(
        (20.0..=40.0).contains(&report.throughput),
        "throughput {}",
        report.throughput
    );
}

#[tokio::test]
async fn open_loop_sends_at_the_rate_whatever_the_latency() {
    let backend = fixed_latency_backend().await;
    // 50/s for 0.4 s against 100 ms answers: ~20 requests, up to ~5 in flight at once.
    let plan = LoadPlan {
        pace: Pace::Rate(50.0),
        requests: None,
        duration: Some(Duration::from_millis(400)),
        timeout: Duration::from_secs(10),
    };
    let report = run_load(
        plain(backend.url().to_string()),
        generator(),
        plan,
        Arc::default(),
    )
    .await;
    assert!((15..=25).contains(&report.requests), "{report:?}");
    assert_eq!(report.ok, report.requests);
}

#[tokio::test]
async fn errors_are_classified_and_workers_counted() {
    let refused = plain(refused_url().await);
    let plan = LoadPlan {
        pace: Pace::Concurrency(2),
        requests: Some(4),
        duration: None,
        timeout: Duration::from_secs(5),
    };
    let report = run_load(refused, generator(), plan.clone(), Arc::default()).await;
    assert_eq!(report.errors["connect"], 4);
    assert_eq!(report.ok, 0);

    // Through the client library at one (unsecured) worker: the spread names it.
    let backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let worker = start_worker(config(&backend)).await;
    let me = format!("http://{}", worker.local_addr());
    let mut c = ClientConfig::new(me.clone(), "load", "");
    c.debug_worker_url = Some(me.clone());
    c.profile = Some(Arc::new(Profile::built_in("openai").unwrap()));
    let target = Target::Client(Client::new(c).unwrap());
    let report = run_load(target, generator(), plan, Arc::default()).await;
    assert_eq!(report.ok, 4);
    assert_eq!(report.workers[&me], 4);
    // The client routed each request at the profile's workload (max_tokens 500).
    assert_eq!(assert_settled(&worker).await.totals.served.workload, 2000.0);
}

#[test]
fn bad_flags_exit_64() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vespa"))
            .arg("load")
            .args(args)
            .env_clear()
            .output()
            .unwrap()
    };
    for args in [
        &["-n", "1"][..],
        &[
            "--url",
            "http://127.0.0.1:1",
            "--worker",
            "http://127.0.0.1:1",
        ],
        &["--url", "http://127.0.0.1:1", "-c", "2", "-r", "5"],
        &["--url", "http://127.0.0.1:1", "-r", "0"],
        &["--url", "http://127.0.0.1:1", "--profile", "nope"],
        &["--endpoint", "e"],
        &["--url", "http://127.0.0.1:1", "--refresh", "0.01"],
        &["--url", "http://127.0.0.1:1", "--refresh", "NaN"],
    ] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs `vespa load` with stdout and stderr piped (not a terminal).
async fn load_piped(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_vespa"))
        .arg("load")
        .args(args)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn off_a_terminal_the_output_is_the_plain_report_alone() {
    let backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let url = backend.url().to_string();
    let out = load_piped(&["--url", &url, "-n", "6", "-c", "2"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "no progress drawn"
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let heads: Vec<&str> = text.lines().map(|l| &l[..12]).collect();
    assert_eq!(
        heads,
        [
            "requests    ",
            "throughput  ",
            "latency ms  ",
            "TTFB ms     ",
            "status      ",
            "errors      "
        ],
        "{text}"
    );
    assert!(
        text.starts_with("requests    6 (6 ok, 0 failed) in "),
        "{text}"
    );
    assert!(
        text.contains("\nstatus      200: 6\nerrors      none\n"),
        "{text}"
    );

    let out = load_piped(&["--url", &url, "-n", "3", "--json"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut keys: Vec<&str> = report
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "duration_secs",
            "errors",
            "latency_ms",
            "ok",
            "requests",
            "status",
            "throughput",
            "ttfb_ms",
            "workers"
        ]
    );
    assert_eq!(report["status"], json!({"200": 3}));
}
