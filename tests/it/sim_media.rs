//! `vespa sim`'s other OpenAI routes (embeddings, rerank, images, audio): the answers'
//! shapes, the time each takes, and the counts under `/_sim/stats` and `/_sim/metrics`.

use crate::sim::{post, start, wait_stats};
use crate::support::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use vespa::sim::{PNG, Sim, SimConfig};

/// A sim whose routes take milliseconds, unless a test slows one down.
async fn fast(tune: impl FnOnce(&mut SimConfig)) -> Sim {
    let mut c = SimConfig {
        image_secs: 0.01,
        embed_tps: 1e6,
        audio_secs: 0.01,
        ..SimConfig::default()
    };
    tune(&mut c);
    start(c).await
}

/// `GET /_sim/metrics` as text.
async fn metrics_text(sim: &Sim) -> String {
    let url = format!("{}/_sim/metrics", sim.url());
    let (_, body) = send(&h1_client(), request("GET", &url, "")).await;
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn embeddings_answer_one_vector_per_input_as_floats_or_base64() {
    let sim = fast(|_| {}).await;
    let (head, v) = post(
        &sim,
        "/v1/embeddings",
        json!({"model": "e5", "input": ["one two three", "four"]}),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "e5");
    assert_eq!(v["usage"], json!({"prompt_tokens": 4, "total_tokens": 4}));
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    let floats: Vec<f32> = data[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();

    // The OpenAI SDK asks for base64: little-endian f32s, the same vector.
    let (_, v) = post(
        &sim,
        "/v1/embeddings",
        json!({"input": "one two three", "encoding_format": "base64"}),
    )
    .await;
    let raw = STANDARD
        .decode(v["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = raw
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, floats);

    let (_, v) = post(&sim, "/v1/embeddings", json!({"input": [[1, 2, 3], [4]]})).await;
    assert_eq!(v["usage"]["prompt_tokens"], 4);
    let (head, _) = post(&sim, "/v1/embeddings", json!({"input": 3})).await;
    assert_eq!(head.status, StatusCode::BAD_REQUEST);
    let s = wait_stats(&sim, |s| s.completed == 3).await;
    assert_eq!((s.invalid, s.tokens_generated), (1, 0));
    let text = metrics_text(&sim).await;
    assert!(text.contains(r#"vespa_sim_requests_total{api="embeddings",outcome="completed"} 3"#));
    assert!(text.contains(r#"vespa_sim_requests_total{api="embeddings",outcome="invalid"} 1"#));
}

#[tokio::test]
async fn an_embedding_holds_a_batch_slot_for_its_tokens() {
    // 1000 words at 2000 tokens/s: at least half a second.
    let sim = fast(|c| c.embed_tps = 2000.0).await;
    let started = Instant::now();
    let (head, _) = post(
        &sim,
        "/v1/embeddings",
        json!({"input": "word ".repeat(1000)}),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn rerank_orders_documents_by_the_query_words_they_hold() {
    let sim = fast(|_| {}).await;
    let body = json!({
        "query": "red fox",
        "documents": ["a blue whale", "the red fox jumps", "red paint"],
        "top_n": 2,
        "return_documents": true,
    });
    let (head, v) = post(&sim, "/v1/rerank", body).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(
        v["results"],
        json!([
            {"index": 1, "relevance_score": 1.0, "document": {"text": "the red fox jumps"}},
            {"index": 2, "relevance_score": 0.5, "document": {"text": "red paint"}},
        ])
    );
    // Each document is read with the query: 3 × 2 + 3 + 4 + 2.
    assert_eq!(v["usage"]["total_tokens"], 15);
    let text = metrics_text(&sim).await;
    assert!(text.contains(r#"vespa_sim_requests_total{api="rerank",outcome="completed"} 1"#));
}

#[tokio::test]
async fn image_generations_answer_n_pngs_after_their_render_time() {
    // A 1024x1024 image is four 512x512 ones: 4 × 0.05 s each, two images.
    let sim = fast(|c| c.image_secs = 0.05).await;
    let started = Instant::now();
    let (head, v) = post(
        &sim,
        "/v1/images/generations",
        json!({"prompt": "a cat", "n": 2, "size": "1024x1024"}),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(400));
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let png = STANDARD
        .decode(data[0]["b64_json"].as_str().unwrap())
        .unwrap();
    assert_eq!(png, PNG);
    for bad in [
        json!({"prompt": "x", "n": 11}),
        json!({"prompt": "x", "size": "huge"}),
        json!({"prompt": "x", "response_format": "url"}),
        json!({"n": 1}),
    ] {
        let (head, _) = post(&sim, "/v1/images/generations", bad.clone()).await;
        assert_eq!(head.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let text = metrics_text(&sim).await;
    assert!(
        text.contains(r#"vespa_sim_requests_total{api="image_generations",outcome="completed"} 1"#)
    );
    assert!(
        text.contains(r#"vespa_sim_requests_total{api="image_generations",outcome="invalid"} 4"#)
    );
}

#[tokio::test]
async fn a_transcription_reads_the_whole_upload_and_takes_time_by_its_bytes() {
    // 960,000 bytes of audio (30 s) at 0.3 s per 960,000 bytes.
    let sim = fast(|c| c.audio_secs = 0.3).await;
    let audio = audio_bytes(960_000);
    let (content_type, body) = multipart_upload("clip.wav", &audio);
    let req = http::Request::post(format!("{}/v1/audio/transcriptions", sim.url()))
        .header("content-type", content_type)
        .body(http_body_util::Full::new(body))
        .unwrap();
    let started = Instant::now();
    let (head, bytes) = send(&h1_client(), req).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(head.status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    // 30 s of speech at 150 words a minute.
    assert_eq!(v["text"].as_str().unwrap().split(' ').count(), 75);
    assert_eq!(v["usage"], json!({"type": "duration", "seconds": 30.0}));
    assert_eq!(v["vespa_sim"]["file_bytes"], 960_000);
    assert_eq!(v["vespa_sim"]["filename"], "clip.wav");
    assert_eq!(v["vespa_sim"]["file_sha256"], sha256_hex(&audio));

    // Not a form, or a form without a file: 400.
    let (head, _) = post(&sim, "/v1/audio/transcriptions", json!({"file": "x"})).await;
    assert_eq!(head.status, StatusCode::BAD_REQUEST);
    let text = metrics_text(&sim).await;
    assert!(
        text.contains(r#"vespa_sim_requests_total{api="transcriptions",outcome="completed"} 1"#)
    );
    assert!(text.contains(r#"vespa_sim_requests_total{api="transcriptions",outcome="invalid"} 1"#));
}

#[tokio::test]
async fn speech_answers_a_wav_file_as_long_as_the_text() {
    let sim = fast(|_| {}).await;
    let url = format!("{}/v1/audio/speech", sim.url());
    let body = json!({"model": "tts", "input": "x".repeat(150), "voice": "alloy"});
    let (head, wav) = send(&h1_client(), request("POST", &url, body.to_string())).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers["content-type"], "audio/wav");
    assert_eq!(&wav[..4], b"RIFF");
    // 150 characters at 15 a second: 10 s of 8 kHz 8-bit audio.
    assert_eq!(wav.len(), 44 + 80_000);
    let (head, _) = post(&sim, "/v1/audio/speech", json!({"input": "x".repeat(5000)})).await;
    assert_eq!(head.status, StatusCode::BAD_REQUEST);
    let s = wait_stats(&sim, |s| s.completed == 1).await;
    assert_eq!(s.invalid, 1);
}

/// SHA-256 of `data`, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
