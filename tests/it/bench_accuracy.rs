//! The benchmark finds the real capacity of a backend whose capacity is known: `vespa sim`
//! with batch sizes 4, 16 and 64, within ±10 % (scripts/bench-accuracy.sh prints the same
//! comparison at full size, next to PyWorker's 8 × 10 rounds).

use std::sync::Arc;
use vespa::profile::Profile;
use vespa::profile::bench::Bench;
use vespa::sim::{Sim, SimConfig};

/// The built-in `openai` profile with shorter answers, so a level takes 0.4 s here (250
/// tokens/s per sequence: slow enough that the client's own work on a busy 2-core machine
/// does not show in the figures).
fn short_openai() -> Profile {
    let text = vespa::profile::BUILT_IN
        .iter()
        .find(|(n, _)| *n == "openai")
        .unwrap()
        .1;
    Profile::parse(
        &text.replace("max_tokens = 500", "max_tokens = 100"),
        "openai (short)",
    )
    .unwrap()
}

async fn measured(batch: usize) -> (f64, f64) {
    let cfg = SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        decode_tps: 250.0,
        max_batch: batch,
        ..Default::default()
    };
    let truth = cfg.capacity_tokens_per_sec();
    let sim = Sim::start(cfg).await.unwrap();
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
        let error = got / truth - 1.0;
        assert!(
            error.abs() <= 0.10,
            "batch {batch}: measured {got:.0}, true {truth:.0} ({:+.1} %)",
            error * 100.0
        );
    }
}
