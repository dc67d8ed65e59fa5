//! `vespa demo`: the whole flow in one process, driven through the proxy.

use std::time::Duration;
use vespa::demo::{Demo, DemoConfig};
use vespa::top::Fetcher;

#[tokio::test]
async fn demo_routes_traffic_through_the_proxy_to_both_workers() {
    let config = DemoConfig {
        backends: vec![(1000.0, 2), (1000.0, 4)],
        proxy_listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    let demo = Demo::start(&config).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), demo.ready(&config.endpoint))
        .await
        .unwrap()
        .unwrap();
    let census = demo
        .autoscaler
        .shared()
        .registry()
        .census(&config.endpoint, tokio::time::Instant::now());
    assert_eq!(
        census.ready, 2,
        "ready means the autoscaler routes to both workers"
    );
    for (sim, worker) in demo.sims.iter().zip(&demo.workers) {
        let measured = worker.shared().ledger.snapshot().max_perf;
        let truth = sim.config().capacity_tokens_per_sec();
        assert!(
            (measured / truth - 1.0).abs() < 0.15,
            "measured {measured}, true {truth}"
        );
    }
    let report = demo.drive(Duration::from_millis(1500), 8).await.unwrap();
    assert!(report.ok > 0, "{report:?}");
    assert_eq!(report.ok, report.requests, "{}", report.text());
    assert_eq!(
        report.workers.len(),
        2,
        "both workers served: {}",
        report.text()
    );

    // `vespa top`'s view of the demo lists both workers (once they have reported) and reads
    // their status with the demo's master token.
    let mut fetcher = Fetcher::new(&demo.top_config(&config)).unwrap();
    let listed = async {
        loop {
            let poll = fetcher.poll().await;
            assert_eq!(poll.autoscaler, Some(Ok(())));
            if poll.workers.len() == 2 {
                return poll;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let poll = tokio::time::timeout(Duration::from_secs(30), listed)
        .await
        .expect("both workers listed");
    for probe in &poll.workers {
        let metrics = probe.metrics.as_ref().unwrap();
        assert_eq!(metrics.state.as_deref(), Some("ready"), "{probe:?}");
        assert!(metrics.requests > 0.0, "{probe:?}");
        let status = probe.status.as_ref().expect("status read with the token");
        assert_eq!(status.max_wait_time, Some(10.0));
    }
}

#[test]
fn the_demo_command_runs_end_to_end_and_exits_0() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vespa"))
        .args(["demo", "--listen", "127.0.0.1:0", "--duration", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "worker 1 ready",
        "worker 2 ready",
        "curl http://127.0.0.1:",
        "throughput",
        "status      200:",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    assert!(
        stdout.contains("workers     http://127.0.0.1:") && stdout.matches("%)").count() == 2,
        "{stdout}"
    );
}
