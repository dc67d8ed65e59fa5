//! The benchmark finds the real capacity of a backend whose capacity is known: `vespa sim`
//! with batch sizes 4, 16 and 64, within ±10 % (scripts/bench-accuracy.sh prints the same
//! comparison at full size, next to PyWorker's 8 × 10 rounds).

use crate::support::{Backend, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vespa::profile::Profile;
use vespa::profile::bench::{Bench, BenchEvent, Counting};
use vespa::sim::{Sim, SimConfig};

/// The built-in `openai` profile (streamed, counting tokens as they arrive) with shorter
/// answers and a 1 s window, so a level takes about a second here (250 tokens/s per
/// sequence: slow enough that the client's own work on a busy 2-core machine does not show
/// in the figures).
fn short_openai() -> Profile {
    openai_answering(100)
}

/// The built-in `openai` profile asking for `tokens` per answer, with a 1 s window.
fn openai_answering(tokens: u64) -> Profile {
    let text = vespa::profile::BUILT_IN
        .iter()
        .find(|(n, _)| *n == "openai")
        .unwrap()
        .1;
    Profile::parse(
        &text
            .replace("max_tokens = 500", &format!("max_tokens = {tokens}"))
            .replace("window = 3", "window = 1"),
        "openai (short)",
    )
    .unwrap()
}

/// A sim decoding `decode_tps` tokens/s per sequence, `batch` at once, and its true capacity.
async fn sim(batch: usize, decode_tps: f64) -> (Sim, f64) {
    let cfg = SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        decode_tps,
        max_batch: batch,
        ..Default::default()
    };
    let truth = cfg.capacity_tokens_per_sec();
    (Sim::start(cfg).await.unwrap(), truth)
}

fn assert_within_ten_percent(what: &str, got: f64, truth: f64) {
    let error = got / truth - 1.0;
    assert!(
        error.abs() <= 0.10,
        "{what}: measured {got:.0}, true {truth:.0} ({:+.1} %)",
        error * 100.0
    );
}

/// At most 4 000 tokens/s in all (250 per sequence up to batch 16, slower beyond): a debug
/// build reading more events than that on a busy 2-core machine falls behind, and a reader
/// that lags counts a backlog as it catches up, not the backend's rate.
async fn measured(batch: usize) -> (f64, f64) {
    let (sim, truth) = sim(batch, 250.0_f64.min(4000.0 / batch as f64)).await;
    let report = Bench::new(Arc::new(short_openai()), &sim.url(), "m")
        .run(&|_| {})
        .await
        .unwrap();
    (report.max_perf, truth)
}

#[tokio::test]
async fn ramp_measures_batch_4_16_and_64_within_ten_percent() {
    for batch in [4, 16, 64] {
        let (got, truth) = measured(batch).await;
        assert_within_ten_percent(&format!("batch {batch}"), got, truth);
    }
}

#[tokio::test]
async fn whole_answers_are_counted_when_the_profile_does_not_stream() {
    let mut profile = short_openai();
    profile.benchmark.stream = None;
    let (sim, truth) = sim(16, 250.0).await;
    let report = Bench::new(Arc::new(profile), &sim.url(), "m")
        .run(&|_| {})
        .await
        .unwrap();
    assert_eq!(report.counting, Counting::Whole);
    assert_within_ten_percent("whole answers, batch 16", report.max_perf, truth);
}

#[tokio::test]
async fn tgi_streams_from_its_own_path_and_counts_tokens() {
    let text = vespa::profile::BUILT_IN
        .iter()
        .find(|(n, _)| *n == "tgi")
        .unwrap()
        .1;
    let profile = Profile::parse(
        &text
            .replace("max_new_tokens = 256", "max_new_tokens = 100")
            .replace("window = 3", "window = 1"),
        "tgi (short)",
    )
    .unwrap();
    let (sim, truth) = sim(16, 250.0).await;
    let report = Bench::new(Arc::new(profile), &sim.url(), "m")
        .run(&|_| {})
        .await
        .unwrap();
    assert_eq!(report.counting, Counting::Stream);
    assert_within_ten_percent("tgi, batch 16", report.max_perf, truth);
}

#[tokio::test]
async fn the_bound_ends_a_slow_benchmark_with_what_it_measured() {
    // 20 tokens/s per sequence and room for 1000: every level gains, so only the bound
    // stops the ramp.
    let (sim, _) = sim(1000, 20.0).await;
    let mut profile = short_openai();
    profile.benchmark.window = Duration::from_millis(400);
    let bound = Duration::from_millis(1500);
    let events = Mutex::new(Vec::new());
    let report = Bench::new(Arc::new(profile), &sim.url(), "m")
        .max_time(bound)
        .run(&|e| events.lock().unwrap().push(e.clone()))
        .await
        .unwrap();
    assert!(report.bounded, "{report:?}");
    assert!(report.max_perf > 0.0, "{report:?}");
    // Timers end it; the slack is for a busy machine.
    assert!(report.secs < bound.as_secs_f64() + 0.5, "{report:?}");
    let levels: Vec<usize> = report.levels.iter().map(|l| l.concurrency).collect();
    assert!(levels.starts_with(&[8, 16]), "{levels:?}");
    // Progress reports the window and an ETA within the bound.
    let events = events.into_inner().unwrap();
    assert!(events.iter().any(|e| matches!(
        e,
        BenchEvent::Progress(p) if !p.settling && p.eta_secs <= bound.as_secs_f64() && p.window_secs == 0.4
    )));
}

#[tokio::test]
async fn a_benchmark_with_no_time_left_is_an_error_not_a_guess() {
    let (sim, _) = sim(4, 20.0).await;
    let mut profile = short_openai();
    profile.benchmark.window = Duration::from_secs(10);
    let err = Bench::new(Arc::new(profile), &sim.url(), "m")
        .max_time(Duration::from_millis(300))
        .run(&|_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("BENCHMARK_MAX_SECONDS"), "{err}");
}

#[tokio::test]
async fn a_backend_that_refuses_streaming_is_measured_with_whole_answers() {
    let backend = Backend::start(|seen| async move {
        let req: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
        if req.get("stream").is_some() {
            return json(400, serde_json::json!({"error": "stream is not supported"}));
        }
        json(
            200,
            serde_json::json!({"usage": {"completion_tokens": req["max_tokens"]}}),
        )
    })
    .await;
    let mut profile = short_openai();
    profile.benchmark.window = Duration::from_millis(200);
    let events = Mutex::new(Vec::new());
    let report = Bench::new(Arc::new(profile), &backend.url().to_string(), "m")
        .run(&|e| events.lock().unwrap().push(e.clone()))
        .await
        .unwrap();
    assert_eq!(report.counting, Counting::Whole);
    assert!(report.max_perf > 0.0);
    assert!(events.into_inner().unwrap().iter().any(|e| matches!(
        e,
        BenchEvent::StreamRefused { reason } if reason.contains("400")
    )));
}

#[tokio::test]
async fn a_backend_that_fails_after_the_warm_up_fails_the_benchmark_at_once() {
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let backend = Backend::start(move |_| {
        let n = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            match n {
                0 => json(
                    200,
                    serde_json::json!({"usage": {"completion_tokens": 100}}),
                ),
                _ => json(500, serde_json::json!({"error": "out of memory"})),
            }
        }
    })
    .await;
    let mut profile = short_openai();
    profile.benchmark.stream = None;
    profile.benchmark.window = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let err = Bench::new(Arc::new(profile), &backend.url().to_string(), "m")
        .run(&|_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("out of memory"), "{err}");
    // It does not wait for the 30 s bound when every request fails.
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
}

/// Measures a sim of batch 4 at 250 tokens/s per sequence whose answers of `answer`
/// tokens hold their slot for `ms_per_token` per prompt token first, against its true
/// capacity: batch × answer / (prefill + answer / 250), below the decode rate.
async fn prefill_case(answer: u64, ms_per_token: f64) {
    let batch = 4;
    let cfg = SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        decode_tps: 250.0,
        max_batch: batch,
        prefill_ms_per_token: ms_per_token,
        ..Default::default()
    };
    let sim = Sim::start(cfg).await.unwrap();
    let profile = openai_answering(answer);
    // The sim's own count of the profile's prompt.
    let mut body = profile
        .request
        .body
        .as_ref()
        .unwrap()
        .render(&vespa::profile::template::RenderContext { model: "m".into() });
    body["max_tokens"] = 1.into();
    let usage: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/completions", sim.url()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let prompt_tokens = usage["usage"]["prompt_tokens"].as_f64().unwrap();
    let prefill = prompt_tokens * ms_per_token / 1000.0;
    let answer = answer as f64;
    let truth = batch as f64 * answer / (prefill + answer / 250.0);
    let decode_only = batch as f64 * 250.0;
    assert!(
        truth < decode_only * 0.85,
        "the case needs a prefill that matters"
    );
    let report = Bench::new(Arc::new(profile), &sim.url(), "m")
        .run(&|_| {})
        .await
        .unwrap();
    assert_within_ten_percent(
        &format!("batch 4, {answer}-token answers, {prefill:.2} s prefill"),
        report.max_perf,
        truth,
    );
}

#[tokio::test]
async fn prefill_counts_against_the_capacity() {
    // Answers shorter than the window: the window sees their prefills.
    prefill_case(100, 0.5).await;
    // Answers longer than the window (2 s): the prefills it cannot see are added.
    prefill_case(500, 2.0).await;
}
