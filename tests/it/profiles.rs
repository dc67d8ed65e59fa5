//! Backend profiles in the worker: the start-up benchmark, its cache, failures, and the
//! workload rule for requests without a cost.

use crate::support::*;
use serde_json::json;
use std::sync::Arc;
use vespa::profile::Profile;
use vespa::worker::Worker;
use vespa::worker::config::{Benchmark, WorkerConfig};
use vespa::worker::lifecycle::State;

fn profile_config(
    backend: &Backend,
    name: &str,
    cache: Option<std::path::PathBuf>,
) -> WorkerConfig {
    let mut c = config(backend);
    let mut profile = Profile::built_in(name).unwrap();
    // These backends answer at once: a short window keeps the benchmark short.
    profile.benchmark.window = std::time::Duration::from_millis(200);
    c.benchmark = Benchmark::Profile {
        profile: Arc::new(profile),
        measure: true,
    };
    c.max_perf = 0.0;
    c.benchmark_cache = cache;
    c
}

fn temp_file(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vespa-it-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("has_benchmark")
}

#[tokio::test]
async fn the_worker_benchmarks_before_ready_and_caches_the_result() {
    let backend = Backend::start(|seen| async move {
        let req: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
        json(
            200,
            json!({"usage": {"completion_tokens": req["max_tokens"]}}),
        )
    })
    .await;
    let cache = temp_file("cache");
    let _ = std::fs::remove_file(&cache);
    let worker = Worker::start(profile_config(&backend, "openai", Some(cache.clone())))
        .await
        .unwrap();
    wait_state(&worker, |s| *s == State::Benchmarking).await;
    wait_state(&worker, |s| *s == State::Ready).await;
    let measured = worker.shared().ledger.snapshot().max_perf;
    assert!(measured > 0.0);
    let cached: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    assert_eq!(cached["max_perf"], measured);
    assert_eq!(cached["profile"], "openai");
    std::fs::remove_file(&cache).unwrap();
}

#[tokio::test]
async fn a_benchmark_that_reaches_its_bound_is_used_but_not_cached() {
    // 20 tokens/s per sequence and room for 1000: every level gains until the bound.
    let sim = vespa::sim::Sim::start(vespa::sim::SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        decode_tps: 20.0,
        max_batch: 1000,
        ..Default::default()
    })
    .await
    .unwrap();
    let backend_url: http::Uri = sim.url().parse().unwrap();
    let cache = temp_file("bounded");
    let _ = std::fs::remove_file(&cache);
    let mut profile = Profile::built_in("openai").unwrap();
    profile.benchmark.window = std::time::Duration::from_millis(300);
    let mut c = WorkerConfig::new(backend_url, 0.0);
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.unsecured = true;
    c.benchmark = Benchmark::Profile {
        profile: Arc::new(profile),
        measure: true,
    };
    c.max_perf = 0.0;
    c.benchmark_cache = Some(cache.clone());
    c.benchmark_max_time = std::time::Duration::from_millis(1200);
    let worker = Worker::start(c).await.unwrap();
    wait_state(&worker, |s| *s == State::Ready).await;
    assert!(worker.shared().ledger.snapshot().max_perf > 0.0);
    assert!(
        !cache.exists(),
        "a bounded result is measured again at the next start"
    );
}

/// A completions backend that answers 401 on every path, `/health` included, without
/// `Authorization: Bearer key`, and otherwise as many completion tokens as were asked for.
async fn keyed_completions_backend(key: &str) -> Backend {
    Backend::start_requiring_key(key, |seen| async move {
        let req: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
        json(
            200,
            json!({"usage": {"completion_tokens": req["max_tokens"]}}),
        )
    })
    .await
}

#[tokio::test]
async fn backend_api_key_reaches_the_health_probe_and_the_benchmark() {
    let backend = keyed_completions_backend("sekret").await;
    let mut cfg = profile_config(&backend, "openai", None);
    cfg.backend_api_key = Some("sekret".into());
    let worker = Worker::start(cfg).await.unwrap();
    wait_state(&worker, |s| *s == State::Ready).await;
    assert!(worker.shared().ledger.snapshot().max_perf > 0.0);
}

#[tokio::test]
async fn a_cached_result_for_this_profile_and_backend_skips_the_benchmark() {
    let mut backend = Backend::start(|_| async { json(500, json!({})) }).await;
    let cache = temp_file("cached");
    let entry =
        json!({"max_perf": 4321.5, "profile": "openai", "backend": backend.url().to_string()});
    std::fs::write(&cache, entry.to_string()).unwrap();
    let worker = start_worker(profile_config(&backend, "openai", Some(cache.clone()))).await;
    assert_eq!(worker.shared().ledger.snapshot().max_perf, 4321.5);
    backend.assert_quiet();
    std::fs::remove_file(&cache).unwrap();
}

#[tokio::test]
async fn a_failed_benchmark_is_an_error_not_a_capacity_of_one() {
    let backend =
        Backend::start(|_| async { json(500, json!({"error": "model not loaded"})) }).await;
    let worker = Worker::start(profile_config(&backend, "openai", None))
        .await
        .unwrap();
    let state = wait_state(&worker, |s| matches!(s, State::Errored(_))).await;
    let msg = state.error().unwrap();
    assert!(
        msg.contains("benchmark failed") && msg.contains("warm-up") && msg.contains("500"),
        "{msg}"
    );
    assert_eq!(worker.shared().ledger.snapshot().max_perf, 0.0);
}

#[tokio::test]
async fn requests_without_a_cost_are_counted_by_the_profile_rule() {
    let mut backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let mut cfg = profile_config(&backend, "openai", None);
    cfg.benchmark = Benchmark::Profile {
        profile: Arc::new(Profile::built_in("openai").unwrap()),
        measure: false,
    };
    cfg.max_perf = 1000.0;
    let worker = start_worker(cfg).await;
    let client = h1_client();
    let bodies = [
        // Passthrough (unsecured) with max_tokens: the rule counts 300.
        json!({"prompt": "x", "max_tokens": 300}),
        // An envelope with cost 0 falls back to the rule too; one with a cost keeps it.
        envelope(2, 0.0, json!({"max_tokens": 40})),
        envelope(3, 7.0, json!({"max_tokens": 40})),
        // Nothing the rule can read: DEFAULT_COST (1).
        json!({"prompt": "x"}),
    ];
    for body in bodies {
        send(
            &client,
            request("POST", &url(&worker, "/v1/completions"), body.to_string()),
        )
        .await;
    }
    for _ in 0..4 {
        backend.next_request().await;
    }
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.totals.served.workload, 300.0 + 40.0 + 7.0 + 1.0);
}

#[tokio::test]
async fn benchmark_settings_come_from_environment_like_pyworker() {
    let env = [
        ("BENCHMARK", "benchmarks.openai:benchmark"),
        ("UNSECURED", "true"),
    ];
    let c = WorkerConfig::load(&Default::default(), &env).unwrap();
    match &c.benchmark {
        Benchmark::Profile { profile, measure } => {
            assert_eq!((profile.name.as_str(), *measure), ("openai", true))
        }
        other => panic!("{other:?}"),
    }
    let env = [
        ("BENCHMARK", "tgi"),
        ("MAX_PERF", "900"),
        ("UNSECURED", "true"),
        ("BENCHMARK_CACHE", "none"),
    ];
    let c = WorkerConfig::load(&Default::default(), &env).unwrap();
    assert!(matches!(
        &c.benchmark,
        Benchmark::Profile { measure: false, .. }
    ));
    assert_eq!(c.max_perf, 900.0);
    assert!(c.benchmark_cache.is_none());
}

#[tokio::test]
async fn vespa_bench_sends_backend_api_key_from_the_environment() {
    let backend = keyed_completions_backend("sekret").await;
    let run = |key: Option<&'static str>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_vespa"));
        cmd.args(["bench", "--backend", &backend.url().to_string()])
            .args(["--profile", "openai", "--mode", "rounds", "--runs", "1"])
            .args(["--concurrency", "1", "--json"])
            .env_clear();
        if let Some(k) = key {
            cmd.env("BACKEND_API_KEY", k);
        }
        cmd.output()
    };
    let out = tokio::time::timeout(PATIENCE, run(Some("sekret")))
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["max_perf"].as_f64().unwrap() > 0.0, "{report}");
    let out = tokio::time::timeout(PATIENCE, run(None))
        .await
        .unwrap()
        .unwrap();
    assert!(
        !out.status.success(),
        "without the key the backend answers 401"
    );
}
