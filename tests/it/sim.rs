//! `vespa sim`: the simulated model server's APIs, capacity model and fault knobs, over
//! real HTTP on 127.0.0.1:0.

use crate::support::*;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use vespa::sim::{Sim, SimConfig, SimStats};

/// A sim on port 0 with `config`'s knobs.
pub async fn start(config: SimConfig) -> Sim {
    let config = SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..config
    };
    config.validate().unwrap();
    Sim::start(config).await.unwrap()
}

/// A fast sim: 1000 tokens/s per sequence, so small answers take milliseconds.
async fn fast() -> Sim {
    start(SimConfig {
        decode_tps: 1000.0,
        image_secs: 0.01,
        ..SimConfig::default()
    })
    .await
}

/// Waits until the counters satisfy `pred` (driven by change notifications, not polling).
pub async fn wait_stats(sim: &Sim, pred: impl FnMut(&SimStats) -> bool) -> SimStats {
    let mut rx = sim.watch_stats();
    let wait = async { *rx.wait_for(pred).await.unwrap() };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("stats condition not reached; now {:?}", sim.stats()))
}

pub async fn post(sim: &Sim, path: &str, body: Value) -> (http::response::Parts, Value) {
    let url = format!("{}{path}", sim.url());
    let (parts, bytes) = send(&h1_client(), request("POST", &url, body.to_string())).await;
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts, value)
}

async fn get(sim: &Sim, path: &str) -> (http::response::Parts, Value) {
    let url = format!("{}{path}", sim.url());
    let (parts, bytes) = send(&h1_client(), request("GET", &url, Bytes::new())).await;
    (parts, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// POSTs `body` and reads the answer frame by frame: the `data:` payloads of each frame,
/// and the error the body ended with, if any.
async fn stream(sim: &Sim, path: &str, body: Value) -> (Vec<Vec<String>>, Option<String>) {
    let url = format!("{}{path}", sim.url());
    let client = h1_client();
    let resp = tokio::time::timeout(
        PATIENCE,
        client.request(request("POST", &url, body.to_string())),
    )
    .await
    .expect("response in time")
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut frames = Vec::new();
    loop {
        let frame = tokio::time::timeout(PATIENCE, body.frame())
            .await
            .expect("frame in time");
        match frame {
            None => return (frames, None),
            Some(Err(e)) => return (frames, Some(e.to_string())),
            Some(Ok(f)) => {
                let Ok(data) = f.into_data() else { continue };
                let text = String::from_utf8(data.to_vec()).unwrap();
                let events = text
                    .split("\n\n")
                    .filter(|e| !e.is_empty())
                    .map(|e| e.strip_prefix("data: ").expect("a data event").to_string())
                    .collect();
                frames.push(events);
            }
        }
    }
}

fn json_of(event: &str) -> Value {
    serde_json::from_str(event).unwrap_or_else(|e| panic!("{event:?}: {e}"))
}

// ---------------------------------------------------------------- APIs

#[tokio::test]
async fn openai_answers_carry_usage_from_prompt_words_and_max_tokens() {
    let sim = fast().await;
    let (parts, v) = post(
        &sim,
        "/v1/completions",
        json!({"model": "m", "prompt": "one two three", "max_tokens": 5}),
    )
    .await;
    assert_eq!(parts.status, 200);
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "m");
    assert_eq!(v["choices"][0]["text"], " lorem ipsum dolor sit amet");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8})
    );

    let (_, v) = post(
        &sim,
        "/v1/chat/completions",
        json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "say something nice"},
        ]}),
    )
    .await;
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 16, "total_tokens": 21}),
        "max_tokens defaults to 16"
    );
    let s = wait_stats(&sim, |s| s.completed == 2).await;
    assert_eq!(s.tokens_generated, 21);
}

#[tokio::test]
async fn openai_stream_sends_one_chunk_per_token_then_done() {
    let sim = fast().await;
    let (frames, error) = stream(
        &sim,
        "/v1/completions",
        json!({"prompt": "hi", "max_tokens": 5, "stream": true}),
    )
    .await;
    assert_eq!(error, None);
    assert!(
        frames.iter().all(|f| f.len() == 1),
        "one event per write: {frames:?}"
    );
    let events: Vec<&String> = frames.iter().flatten().collect();
    assert_eq!(events.len(), 6, "{events:?}");
    assert_eq!(events[5], "[DONE]");
    let text: String = events[..5]
        .iter()
        .map(|e| {
            json_of(e)["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(text, " lorem ipsum dolor sit amet");
    assert_eq!(json_of(events[4])["choices"][0]["finish_reason"], "length");
    assert!(json_of(events[0]).get("usage").is_none());
}

#[tokio::test]
async fn openai_chat_stream_with_include_usage_ends_with_a_usage_chunk() {
    let sim = fast().await;
    let (frames, error) = stream(
        &sim,
        "/v1/chat/completions",
        json!({
            "messages": [{"role": "user", "content": "a b c d"}],
            "max_tokens": 3,
            "stream": true,
            "stream_options": {"include_usage": true},
        }),
    )
    .await;
    assert_eq!(error, None);
    let events: Vec<&String> = frames.iter().flatten().collect();
    assert_eq!(events.len(), 5, "3 tokens, usage, [DONE]: {events:?}");
    let first = json_of(events[0]);
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(first["usage"], Value::Null);
    let usage = json_of(events[3]);
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7})
    );
    assert_eq!(events[4], "[DONE]");
    let s = wait_stats(&sim, |s| s.completed == 1).await;
    assert_eq!(s.tokens_generated, 3);
}

#[tokio::test]
async fn tgi_generate_and_generate_stream_produce_max_new_tokens() {
    let sim = fast().await;
    let (parts, v) = post(
        &sim,
        "/generate",
        json!({"inputs": "x y", "parameters": {"max_new_tokens": 4}}),
    )
    .await;
    assert_eq!(parts.status, 200);
    assert_eq!(v["generated_text"], " lorem ipsum dolor sit");
    assert_eq!(v["details"]["generated_tokens"], 4);
    assert_eq!(v["details"]["finish_reason"], "length");
    let (_, v) = post(&sim, "/generate", json!({"inputs": "x"})).await;
    assert_eq!(
        v["details"]["generated_tokens"], 20,
        "default max_new_tokens"
    );

    let (frames, error) = stream(
        &sim,
        "/generate_stream",
        json!({"inputs": "x", "parameters": {"max_new_tokens": 3}}),
    )
    .await;
    assert_eq!(error, None);
    let events: Vec<Value> = frames.iter().flatten().map(|e| json_of(e)).collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0]["token"]["text"], " lorem");
    assert_eq!(events[0]["generated_text"], Value::Null);
    assert_eq!(events[2]["generated_text"], " lorem ipsum dolor");
    assert_eq!(events[2]["details"]["generated_tokens"], 3);
}

#[tokio::test]
async fn comfyui_runsync_returns_a_base64_png() {
    let sim = fast().await;
    let graph = json!({
        "3": {"class_type": "KSampler", "inputs": {"steps": 4, "seed": 1}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 256, "height": 256}},
    });
    let (parts, v) = post(&sim, "/runsync", json!({"input": {"workflow_json": graph}})).await;
    assert_eq!(parts.status, 200);
    assert_eq!(v["status"], "COMPLETED");
    let image = &v["output"]["images"][0];
    assert_eq!(image["type"], "base64");
    assert!(image["filename"].as_str().unwrap().ends_with(".png"));
    let png = base64::engine::general_purpose::STANDARD
        .decode(image["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[tokio::test]
async fn models_lists_the_configured_name_and_stats_are_json() {
    let sim = start(SimConfig {
        model: "llama-sim".into(),
        ..SimConfig::default()
    })
    .await;
    let (parts, v) = get(&sim, "/v1/models").await;
    assert_eq!(parts.status, 200);
    assert_eq!(v["data"][0]["id"], "llama-sim");
    let (_, v) = get(&sim, "/_sim/stats").await;
    for key in [
        "active",
        "queued",
        "completed",
        "cancelled",
        "errored",
        "tokens_generated",
    ] {
        assert_eq!(v[key], 0, "{key} in {v}");
    }
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let sim = fast().await;
    let (parts, v) = post(&sim, "/v1/completions", json!({"max_tokens": -1})).await;
    assert_eq!(parts.status, 400);
    assert_eq!(v["error"]["type"], "invalid_request");
    let (parts, _) = get(&sim, "/v1/completions").await;
    assert_eq!(parts.status, 405);
    let (parts, _) = get(&sim, "/nowhere").await;
    assert_eq!(parts.status, 404);
}

// ---------------------------------------------------------------- capacity model

#[tokio::test]
async fn four_requests_on_two_slots_run_in_two_fifo_waves() {
    // 10 tokens at 50 tokens/s: 200 ms per request, two slots.
    let sim = start(SimConfig {
        decode_tps: 50.0,
        max_batch: 2,
        ..SimConfig::default()
    })
    .await;
    assert_eq!(sim.config().capacity_tokens_per_sec(), 100.0);
    let began = Instant::now();
    let spawn = |name: &'static str| {
        let url = format!("{}/v1/completions", sim.url());
        let body = json!({"prompt": name, "max_tokens": 10}).to_string();
        tokio::spawn(async move {
            send(&h1_client(), request("POST", &url, body)).await;
            Instant::now()
        })
    };
    let first = [spawn("a"), spawn("b")];
    wait_stats(&sim, |s| s.active == 2).await;
    let second = [spawn("c"), spawn("d")];
    let s = wait_stats(&sim, |s| s.queued == 2).await;
    assert_eq!((s.active, s.completed), (2, 0), "{s:?}");

    let mut first_done = Vec::new();
    for h in first {
        first_done.push(h.await.unwrap());
    }
    let mut second_done = Vec::new();
    for h in second {
        second_done.push(h.await.unwrap());
    }
    let s = wait_stats(&sim, |s| s.completed == 4).await;
    assert_eq!((s.active, s.queued, s.tokens_generated), (0, 0, 40));
    // FIFO: the queued pair started only when the first pair finished, so each of them ends
    // a whole request time (200 ms) after the first pair; a wide margin for a busy machine.
    let first_end = first_done.iter().max().unwrap();
    for end in &second_done {
        let gap = end.duration_since(*first_end);
        assert!(
            gap >= Duration::from_millis(150),
            "second wave too early: {gap:?}"
        );
    }
    let total = began.elapsed();
    assert!(
        total >= Duration::from_millis(380) && total < Duration::from_secs(3),
        "two waves of 200 ms took {total:?}"
    );
}

#[tokio::test]
async fn a_client_that_disconnects_frees_its_slot_at_once() {
    // One slot, answers that would take 100 s: only cancellation can end them.
    let sim = start(SimConfig {
        decode_tps: 10.0,
        max_batch: 1,
        ..SimConfig::default()
    })
    .await;
    let mut streaming = RawClient::post(
        sim.local_addr(),
        "/v1/completions",
        &json!({"prompt": "x", "max_tokens": 1000, "stream": true}),
    )
    .await;
    streaming.read_until(b"data: ").await;
    let queued = RawClient::post(
        sim.local_addr(),
        "/generate",
        &json!({"inputs": "x", "parameters": {"max_new_tokens": 1000}}),
    )
    .await;
    let s = wait_stats(&sim, |s| s.queued == 1).await;
    assert_eq!(s.active, 1);

    drop(streaming);
    let s = wait_stats(&sim, |s| s.cancelled == 1 && s.active == 1).await;
    assert_eq!(s.queued, 0, "the queued request took the freed slot: {s:?}");

    drop(queued);
    wait_stats(&sim, |s| s.cancelled == 2 && s.active == 0).await;
    let (_, v) = get(&sim, "/_sim/stats").await;
    assert_eq!(
        (v["active"].as_u64(), v["queued"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(v["cancelled"], 2);
    assert_eq!(v["completed"], 0);
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn health_is_503_during_the_startup_delay_then_200() {
    let sim = start(SimConfig {
        startup_delay: Duration::from_millis(300),
        decode_tps: 1000.0,
        ..SimConfig::default()
    })
    .await;
    let (parts, v) = get(&sim, "/health").await;
    assert_eq!(parts.status, 503);
    assert_eq!(v["status"], "loading");
    let (parts, _) = post(&sim, "/v1/completions", json!({"prompt": "x"})).await;
    assert_eq!(
        parts.status, 503,
        "API requests wait for the start-up delay too"
    );
    assert_eq!(sim.stats().rejected, 1);

    // Polled with a bound, as a worker waiting for its backend would.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (parts, _) = get(&sim, "/health").await;
        if parts.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never became healthy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (parts, _) = post(&sim, "/v1/completions", json!({"prompt": "x"})).await;
    assert_eq!(parts.status, 200);
}

#[tokio::test]
async fn health_can_be_switched_off_and_on_at_runtime() {
    let sim = fast().await;
    assert_eq!(get(&sim, "/health").await.0.status, 200);
    let (parts, v) = post(&sim, "/_sim/health", json!({"healthy": false})).await;
    assert_eq!(
        (parts.status.as_u16(), &v),
        (200, &json!({"healthy": false}))
    );
    let (parts, v) = get(&sim, "/health").await;
    assert_eq!(parts.status, 503);
    assert_eq!(v["status"], "unhealthy");
    post(&sim, "/_sim/health", json!({"healthy": true})).await;
    assert_eq!(get(&sim, "/health").await.0.status, 200);
    let (parts, _) = post(&sim, "/_sim/health", json!({"healthy": "no"})).await;
    assert_eq!(parts.status, 400);
}

#[tokio::test]
async fn error_rate_one_answers_every_api_request_with_500() {
    let sim = start(SimConfig {
        error_rate: 1.0,
        seed: Some(1),
        ..SimConfig::default()
    })
    .await;
    for (path, body) in [
        ("/v1/completions", json!({"prompt": "x"})),
        ("/generate", json!({"inputs": "x"})),
        ("/runsync", json!({"input": {}})),
    ] {
        let (parts, v) = post(&sim, path, body).await;
        assert_eq!(parts.status, 500, "{path}");
        assert_eq!(v["error"]["type"], "server_error");
    }
    assert_eq!(
        get(&sim, "/health").await.0.status,
        200,
        "health is not faulty"
    );
    let s = sim.stats();
    assert_eq!((s.errored, s.completed), (3, 0));
}

#[tokio::test]
async fn hang_rate_one_never_answers_until_the_client_leaves() {
    let sim = start(SimConfig {
        hang_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let client = RawClient::post(sim.local_addr(), "/generate", &json!({"inputs": "x"})).await;
    wait_stats(&sim, |s| s.hanging == 1).await;
    drop(client);
    let s = wait_stats(&sim, |s| s.hanging == 0).await;
    assert_eq!((s.cancelled, s.completed), (1, 0));
}

#[tokio::test]
async fn die_after_chunks_breaks_the_stream_mid_way() {
    let sim = start(SimConfig {
        decode_tps: 1000.0,
        die_after_chunks: Some(2),
        ..SimConfig::default()
    })
    .await;
    let (frames, error) = stream(
        &sim,
        "/v1/completions",
        json!({"prompt": "x", "max_tokens": 10, "stream": true}),
    )
    .await;
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(error.is_some(), "the client must see a broken body");
    let s = wait_stats(&sim, |s| s.errored == 1).await;
    assert_eq!((s.active, s.completed, s.tokens_generated), (0, 0, 2));
}

// ---------------------------------------------------------------- binary

#[tokio::test]
async fn the_binary_prints_its_address_and_capacity() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vespa"))
        .args(["sim", "--listen", "127.0.0.1:0", "--decode-tps", "50"])
        .args(["--max-batch", "16"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut listening, mut capacity) = (None, None);
    while listening.is_none() || capacity.is_none() {
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("stdout open");
        if let Some(url) = line.strip_prefix("listening on ") {
            listening = Some(url.to_string());
        } else if line.starts_with("capacity: ") {
            capacity = Some(line);
        }
    }
    assert_eq!(capacity.as_deref(), Some("capacity: 800 tokens/s"));
    let url = listening.unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let (parts, _) = send(
        &h1_client(),
        request("GET", &format!("{url}/health"), Bytes::new()),
    )
    .await;
    assert_eq!(parts.status, 200);
    child.kill().await.unwrap();
}

#[test]
fn invalid_sim_flags_exit_64_naming_the_flag() {
    for (flag, value) in [
        ("--decode-tps", "fast"),
        ("--max-batch", "0"),
        ("--error-rate", "2"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vespa"))
            .args(["sim", "--listen", "127.0.0.1:0", flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag}: {stderr}");
    }
}
