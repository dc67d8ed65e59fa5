//! The steps of the llama.cpp tier, in the order they run. Each starts on a quiet server.

use crate::server::{LlamaServer, MODEL};
use crate::support::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vespa::profile::Profile;
use vespa::worker::Worker;
use vespa::worker::config::Benchmark;
use vespa::worker::lifecycle::State;

/// The product's promise: ready within 30 s of the backend being healthy, benchmark
/// included; 5 s more for a busy machine.
const READY_WITHIN: Duration = Duration::from_secs(35);

/// The product's promise: the backend stops generating within 1 s of its client leaving.
const FREED_WITHIN: Duration = Duration::from_secs(1);

/// Upper bound on one request to the server: a failure guard (a busy 2-core machine can
/// slow generation down tenfold).
const REQUEST_LIMIT: Duration = Duration::from_secs(60);

fn profile(name: &str) -> Arc<Profile> {
    Arc::new(Profile::resolve(name).unwrap())
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_LIMIT)
        .build()
        .unwrap()
}

/// A worker with a fixed capacity (no benchmark) whose `openai` profile counts `max_tokens`
/// as the workload of a request that comes without a cost.
async fn fixed_worker(llama: &LlamaServer, max_perf: f64, max_wait_time: f64) -> Worker {
    let mut c = config_for(llama.url());
    c.benchmark = Benchmark::Profile {
        profile: profile("openai"),
        measure: false,
    };
    c.max_perf = max_perf;
    c.max_wait_time = max_wait_time;
    start_worker(c).await
}

/// A temperature-0 completion request.
fn completion(prompt: &str, max_tokens: u32, stream: bool) -> Value {
    json!({"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
           "stream": stream})
}

/// The text of a completion answer: `choices[0].text` of a JSON answer, or of every event
/// of an SSE answer, joined; and how many pieces it came in.
async fn completion_text(resp: reqwest::Response) -> (String, usize) {
    assert_eq!(resp.status(), 200, "{resp:?}");
    let sse = resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream");
    let body = resp.text().await.unwrap();
    let text = |v: &Value| v["choices"][0]["text"].as_str().map(str::to_string);
    if !sse {
        let answer: Value = serde_json::from_str(&body).unwrap();
        return (text(&answer).expect(&body), 1);
    }
    let pieces: Vec<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| text(&serde_json::from_str(data).unwrap()))
        .filter(|t| !t.is_empty())
        .collect();
    (pieces.concat(), pieces.len())
}

/// A temperature-0 completion through the worker is, byte for byte, the text the server
/// gives directly: whole, then streamed.
pub async fn identical_answer(llama: Arc<LlamaServer>) {
    let worker = fixed_worker(&llama, 1000.0, 10.0).await;
    let http = http();
    for stream in [false, true] {
        let body = completion("The three primary colours are", 48, stream);
        let send = |url: String| http.post(url).json(&body).send();
        let (direct, _) = completion_text(send(llama.path("/v1/completions")).await.unwrap()).await;
        let (relayed, pieces) =
            completion_text(send(url(&worker, "/v1/completions")).await.unwrap()).await;
        assert!(!direct.is_empty(), "an empty completion");
        assert_eq!(relayed, direct, "stream: {stream}");
        assert!(!stream || pieces > 1, "streamed in {pieces} pieces");
    }
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.totals.served.requests, 2, "{:?}", snap.totals);
}

/// The OpenAI Python SDK streams a chat through `vespa proxy`, `vespa autoscaler` and a
/// signed worker: real text in several chunks, the same as the whole answer.
pub async fn openai_sdk(llama: Arc<LlamaServer>) {
    let chain = Chain::start(llama.url(), |c| c.profile = Some(profile("openai-chat"))).await;
    let out = run_python_script(
        "test_openai_proxy.py",
        &[
            ("VESPA_PROXY_URL", chain.proxy.url().as_str()),
            ("VESPA_MODEL", MODEL),
            ("VESPA_PROMPT", "Write two sentences about the sea."),
            ("VESPA_MAX_TOKENS", "32"),
        ],
    )
    .await;
    eprint!("{out}");
    let snap = assert_settled(&chain.worker).await;
    assert_eq!(snap.totals.served.requests, 2, "{:?}", snap.totals);
}

/// A client that leaves mid-stream frees the server's slot within [`FREED_WITHIN`], and
/// the worker's working set empties.
pub async fn client_leaves(llama: Arc<LlamaServer>) {
    let worker = fixed_worker(&llama, 1000.0, 10.0).await;
    let mut body = completion("Count from one to one thousand:", 1500, true);
    body["ignore_eos"] = json!(true);
    let mut client = RawClient::post(worker.local_addr(), "/v1/completions", &body).await;
    client.read_until_n(b"data: ", 3).await;
    assert_eq!(llama.busy_slots().await, 1, "the generation runs");
    drop(client);
    match llama.wait_idle(FREED_WITHIN).await {
        Ok(took) => eprintln!("client leaves: slot free {took:.1?} after the client left"),
        Err(busy) => {
            panic!("{busy} slot(s) still generating {FREED_WITHIN:?} after the client left")
        }
    }
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.totals.cancelled.requests, 1, "{:?}", snap.totals);
}

/// Capacity 50 tokens/s, `MAX_WAIT_TIME` 2 s, requests of 90 tokens: the first two are
/// admitted (wait 0, then 1.8 s), and a burst behind them (wait 3.6 s) gets 429 `queue_full`
/// with `Retry-After: 2`, while the two admitted complete.
pub async fn slow_backend_429(llama: Arc<LlamaServer>) {
    let worker = fixed_worker(&llama, 50.0, 2.0).await;
    let mut body = completion("Tell a long story.", 90, false);
    body["ignore_eos"] = json!(true);
    let http = http();
    let send = || {
        tokio::spawn(
            http.post(url(&worker, "/v1/completions"))
                .json(&body)
                .send(),
        )
    };
    let mut admitted = Vec::new();
    for n in 1..=2 {
        admitted.push(send());
        wait_until(&worker, |s| s.working() == n).await;
    }
    let burst: Vec<_> = (0..3).map(|_| send()).collect();
    for rejected in burst {
        let resp = rejected.await.unwrap().unwrap();
        assert_eq!(resp.status(), 429);
        assert_eq!(
            resp.headers()["retry-after"],
            "2",
            "3.6 s of wait, 2 s allowed: under the limit in 1.6 s"
        );
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["code"], "queue_full", "{err}");
        assert!(
            err["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{err}"
        );
    }
    for done in admitted {
        let resp = done.await.unwrap().unwrap();
        assert_eq!(resp.status(), 200);
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["usage"]["completion_tokens"], 90, "{answer}");
    }
    let snap = assert_settled(&worker).await;
    let t = snap.totals;
    assert_eq!((t.served.requests, t.rejected.requests), (2, 3), "{t:?}");
}

/// A worker benchmarks the server with the built-in `openai` profile and is ready, with
/// a measured capacity, within [`READY_WITHIN`] of its start.
pub async fn benchmark(llama: Arc<LlamaServer>) {
    let mut c = config_for(llama.url());
    c.benchmark = Benchmark::Profile {
        profile: profile("openai"),
        measure: true,
    };
    c.benchmark_cache = None;
    c.model_name = MODEL.into();
    let started = Instant::now();
    let worker = Worker::start(c).await.unwrap();
    let mut states = worker.shared().lifecycle.subscribe();
    let settled = tokio::time::timeout(
        READY_WITHIN,
        states.wait_for(|s| matches!(s, State::Ready | State::Errored(_))),
    )
    .await
    .is_ok();
    let state = worker.shared().lifecycle.state();
    assert!(
        settled,
        "not ready within {READY_WITHIN:?} of the start (still {})",
        state.name()
    );
    assert_eq!(state, State::Ready);
    let max_perf = worker.shared().ledger.max_perf();
    assert!(max_perf > 0.0, "max_perf {max_perf}");
    eprintln!(
        "benchmark: ready in {:.1?}, max_perf {max_perf:.1} tokens/s",
        started.elapsed()
    );
}
