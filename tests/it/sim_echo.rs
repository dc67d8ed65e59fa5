//! `vespa sim --echo`: the benchmark backend answers what it says, directly and behind a
//! worker, over real HTTP on 127.0.0.1:0.

use crate::support::*;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;
use std::time::{Duration, Instant};
use vespa::sim::{Echo, EchoConfig};

async fn start(config: EchoConfig) -> Echo {
    let config = EchoConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..config
    };
    Echo::start(config).await.unwrap()
}

/// POSTs `body` to `url` and reads the answer frame by frame: its status, content type and
/// the `data:` payloads in order.
async fn events(url: &str, body: &str) -> (u16, String, Vec<String>) {
    let resp = tokio::time::timeout(
        PATIENCE,
        h1_client().request(request("POST", url, body.to_string())),
    )
    .await
    .expect("response in time")
    .unwrap();
    let status = resp.status().as_u16();
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    let bytes = tokio::time::timeout(PATIENCE, resp.into_body().collect())
        .await
        .expect("body in time")
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let data = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").expect("a data event").to_string())
        .collect();
    (status, content_type, data)
}

/// Checks a streamed answer: `n` completion chunks, then `[DONE]`.
fn assert_chunks(data: &[String], n: usize) {
    assert_eq!(data.len(), n + 1, "{data:?}");
    for event in &data[..n] {
        let v: Value = serde_json::from_str(event).unwrap();
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["text"], " echo");
    }
    assert_eq!(data[n], "[DONE]");
}

#[tokio::test]
async fn echo_answers_every_request_with_a_fixed_completion() {
    let echo = start(EchoConfig {
        model: "bench".into(),
        ..EchoConfig::default()
    })
    .await;
    let client = h1_client();
    for (method, path) in [
        ("GET", "/health"),
        ("POST", "/v1/completions"),
        ("PUT", "/any/path"),
    ] {
        let url = format!("{}{path}", echo.url());
        let (parts, bytes) = send(&client, request(method, &url, r#"{"stream": false}"#)).await;
        assert_eq!(parts.status, 200, "{method} {path}");
        assert_eq!(parts.headers["content-type"], "application/json");
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["model"], "bench");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["total_tokens"], 2);
    }
}

#[tokio::test]
async fn echo_streams_the_configured_chunks_then_done() {
    let echo = start(EchoConfig {
        chunks: 5,
        ..EchoConfig::default()
    })
    .await;
    let url = format!("{}/v1/completions", echo.url());
    let (status, content_type, data) = events(&url, r#"{"prompt": "x", "stream": true}"#).await;
    assert_eq!((status, content_type.as_str()), (200, "text/event-stream"));
    assert_chunks(&data, 5);

    let (_, _, data) = events(&format!("{url}?echo_chunks=2"), r#"{"stream":true}"#).await;
    assert_chunks(&data, 2);
    let (_, _, data) = events(&format!("{url}?echo_chunks=0"), r#"{"stream":true}"#).await;
    assert_chunks(&data, 0);
}

#[tokio::test]
async fn echo_waits_at_least_the_delay_and_the_gaps() {
    let echo = start(EchoConfig {
        delay: Duration::from_millis(30),
        ..EchoConfig::default()
    })
    .await;
    let client = h1_client();
    let t0 = Instant::now();
    let (parts, _) = send(&client, request("POST", &echo.url(), "{}")).await;
    assert_eq!(parts.status, 200);
    assert!(
        t0.elapsed() >= Duration::from_millis(30),
        "{:?}",
        t0.elapsed()
    );

    // The query overrides both: no delay, then 3 chunks 20 ms apart (two gaps).
    let url = format!(
        "{}/?echo_delay_ms=0&echo_chunks=3&echo_chunk_ms=20",
        echo.url()
    );
    let t0 = Instant::now();
    let (_, _, data) = events(&url, r#"{"stream": true}"#).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(40),
        "{:?}",
        t0.elapsed()
    );
    assert_chunks(&data, 3);
}

#[tokio::test]
async fn echo_refuses_a_bad_query_override_with_400() {
    let echo = start(EchoConfig::default()).await;
    let url = format!("{}/v1/completions?echo_chunks=many", echo.url());
    let (parts, bytes) = send(&h1_client(), request("POST", &url, "{}")).await;
    assert_eq!(parts.status, 400);
    assert_eq!(
        bytes,
        Bytes::from_static(b"echo_chunks: expected a whole number, got \"many\"")
    );
}

#[tokio::test]
async fn a_worker_in_front_of_echo_is_ready_and_relays_both_answers() {
    let echo = start(EchoConfig::default()).await;
    let worker = start_worker(config_for(echo.url().parse().unwrap())).await;
    let (parts, bytes) = send(
        &h1_client(),
        request("POST", &url(&worker, "/v1/completions"), "{}"),
    )
    .await;
    assert_eq!(parts.status, 200);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["object"], "text_completion");

    let (status, _, data) = events(
        &url(&worker, "/v1/completions?echo_chunks=4"),
        r#"{"stream": true}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_chunks(&data, 4);
    assert_settled(&worker).await;
}

#[tokio::test]
async fn the_binary_serves_echo_on_the_printed_address() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vespa"))
        .args([
            "sim",
            "--echo",
            "--listen",
            "127.0.0.1:0",
            "--echo-chunks",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("a line in time")
        .unwrap()
        .expect("stdout open");
    let url = line
        .strip_prefix("listening on ")
        .expect("the address line");
    let (parts, _) = send(
        &h1_client(),
        request("GET", &format!("{url}/health"), Bytes::new()),
    )
    .await;
    assert_eq!(parts.status, 200);
    let (_, _, data) = events(url, r#"{"stream": true}"#).await;
    assert_chunks(&data, 1);
    child.kill().await.unwrap();
}

#[test]
fn echo_flags_out_of_place_exit_64_naming_the_flag() {
    for (args, flag) in [
        (&["--echo-chunks", "3"][..], "--echo-chunks"),
        (&["--echo", "--decode-tps", "5"], "--decode-tps"),
        (&["--echo", "--echo-delay-ms", "soon"], "--echo-delay-ms"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vespa"))
            .args(["sim", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}
