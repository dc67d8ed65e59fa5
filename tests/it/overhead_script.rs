//! `scripts/overhead.sh` without running a benchmark (no timed run belongs in the tests):
//! its options are checked before anything starts, every scenario it runs is documented, and
//! its table turns raw results into the medians, ratios and added latencies it promises.

use crate::support::python;
use serde_json::json;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn overhead_sh(args: &[&str]) -> std::process::Output {
    std::process::Command::new("bash")
        .arg(format!("{ROOT}/scripts/overhead.sh"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn overhead_script_refuses_bad_options_before_starting_anything() {
    for (args, says) in [
        (&["--only", "c1,warp"][..], "unknown scenario warp"),
        (&["--reps", "0"], "--reps"),
        (&["--duration", "soon"], "--duration"),
        (&["--streams", "-5"], "--streams"),
        (&["--fast"], "unknown option --fast"),
    ] {
        let out = overhead_sh(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("logs and results"),
            "{args:?} started: {stderr}"
        );
    }
}

#[test]
fn every_overhead_scenario_is_documented() {
    let script = std::fs::read_to_string(format!("{ROOT}/scripts/overhead.sh")).unwrap();
    let all = script
        .lines()
        .find_map(|l| l.strip_prefix("ALL=\""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("the ALL=\"...\" line");
    let doc = std::fs::read_to_string(format!("{ROOT}/docs/PERFORMANCE.md")).unwrap();
    let help = overhead_sh(&["--help"]);
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for scenario in all.split_whitespace() {
        assert!(
            doc.contains(&format!("`{scenario}`")),
            "{scenario} not in PERFORMANCE.md"
        );
        assert!(help.contains(scenario), "{scenario} not in --help");
    }
}

/// One run of `target` in `scenario`.
fn run(scenario: &str, target: &str, rep: u32, rps: f64, p50: f64, p99: f64, cpu: f64) -> String {
    json!({"scenario": scenario, "target": target, "rep": rep, "rps": rps, "p50": p50,
           "p99": p99, "cpu_us": cpu, "errors": 0})
    .to_string()
}

#[test]
fn the_overhead_table_shows_medians_ratios_and_added_latency() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = vec![];
    // Three reps each; the medians are the middle values, whatever the order.
    for (rep, (d, v, n)) in [
        (1000.0, 500.0, 700.0),
        (900.0, 600.0, 650.0),
        (1100.0, 400.0, 800.0),
    ]
    .into_iter()
    .enumerate()
    {
        let rep = rep as u32;
        lines.push(run("c16", "direct", rep, d, 0.10, 1.0, 10.0));
        lines.push(run(
            "c16",
            "vespa",
            rep,
            v,
            0.15 + 0.01 * rep as f64,
            1.5,
            30.0,
        ));
        lines.push(run("c16", "nginx", rep, n, 0.12, 0.9, 20.0));
    }
    let mut sse = |target: &str, rps: f64, ttfb: f64| {
        let mut row = serde_json::from_str::<serde_json::Value>(&run(
            "sse1", target, 0, rps, 1.0, 2.0, 100.0,
        ))
        .unwrap();
        row["ttfb"] = json!(ttfb);
        lines.push(row.to_string());
    };
    sse("direct", 2000.0, 0.08);
    sse("vespa", 1000.0, 0.2);
    sse("nginx", 1500.0, 0.1);
    lines.push(run("signed16", "vespa", 0, 800.0, 1.0, 2.0, 50.0));
    lines.push(run("signed16", "vespa-url", 0, 600.0, 1.0, 2.0, 70.0));
    let mut failed: serde_json::Value =
        serde_json::from_str(&run("signed16", "vespa-legacy", 0, 400.0, 1.0, 2.0, 90.0)).unwrap();
    failed["errors"] = json!(3);
    lines.push(failed.to_string());
    for (scenario, target, kb) in [
        ("rss-start", "vespa", 10240),
        ("rss-start", "nginx", 5120),
        ("idle", "vespa", 40960),
        ("idle", "nginx", 20480),
        ("rss-end", "vespa", 15360),
        ("rss-end", "nginx", 6144),
    ] {
        lines.push(json!({"scenario": scenario, "target": target, "rss_kb": kb}).to_string());
    }
    let results = dir.path().join("results.jsonl");
    std::fs::write(&results, lines.join("\n") + "\n").unwrap();
    let meta = dir.path().join("meta.json");
    let m = json!({"baseline": false, "nginx": true, "streams": 1000});
    std::fs::write(&meta, m.to_string()).unwrap();

    let out = std::process::Command::new(python())
        .arg(format!("{ROOT}/scripts/overhead.py"))
        .arg("table")
        .args([&results, &meta])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    insta::assert_snapshot!(String::from_utf8(out.stdout).unwrap());
}
