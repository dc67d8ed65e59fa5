//! The access log of `vespa worker` as a process: one line per proxied request, with its
//! outcome, in JSON fields or plain text without colour codes when stderr is not a terminal.

use crate::metrics::outcome_backend;
use crate::support::*;
use bytes::Bytes;
use serde_json::{Value, json};

/// Reads log lines until the access line of `path`; returns every access line read, parsed.
async fn access_lines_until(logs: &mut LogLines, path: &str) -> Vec<Value> {
    let mut lines = Vec::new();
    let read = async {
        while let Some(line) = logs.next_line().await.unwrap() {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["target"] != "vespa::access" {
                continue;
            }
            let last = v["fields"]["path"] == path;
            lines.push(v);
            if last {
                return;
            }
        }
        panic!("the worker exited before logging {path}");
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .unwrap_or_else(|_| panic!("no access line for {path}"));
    lines
}

fn post(
    worker: std::net::SocketAddr,
    path: &str,
    body: String,
) -> http::Request<http_body_util::Full<Bytes>> {
    request("POST", &format!("http://{worker}{path}"), body)
}

#[tokio::test]
async fn every_proxied_request_gets_exactly_one_access_line_with_its_outcome() {
    let (mut backend, release, chunks) = outcome_backend().await;
    let env = [
        ("LOG_FORMAT", "json"),
        ("MAX_PERF", "1"),
        ("MAX_WAIT_TIME", "1"),
        ("MAX_COST", "100"),
    ];
    let (_child, addr, mut logs) = spawn_worker(&backend, &env).await;
    wait_log(&mut logs, &["worker state changed", "\"to\":\"ready\""]).await;
    let client = h1_client();
    let small = |idx| envelope(idx, 0.1, json!({})).to_string();

    let mut leaver = RawClient::post(addr, "/v1/stream", &envelope(1, 0.1, json!({}))).await;
    backend.next_request().await;
    chunks.send(Bytes::from_static(b"data: 1\n\n")).unwrap();
    leaver.read_until(b"data: 1\n\n").await;
    drop(leaver);
    backend.expect_dropped().await;

    let mut ok = post(addr, "/v1/ok/1", small(2));
    ok.headers_mut()
        .insert("x-request-id", "chosen-id".parse().unwrap());
    assert_eq!(send(&client, ok).await.0.status, 200);
    assert_eq!(
        send(&client, post(addr, "/v1/ok/2", small(3)))
            .await
            .0
            .status,
        200
    );
    assert_eq!(
        send(&client, post(addr, "/v1/fail", small(4)))
            .await
            .0
            .status,
        500
    );
    for _ in 0..3 {
        backend.next_request().await;
    }
    let held = {
        let (client, req) = (
            client.clone(),
            post(addr, "/v1/hold", envelope(5, 10.0, json!({})).to_string()),
        );
        tokio::spawn(async move { send(&client, req).await })
    };
    backend.next_request().await;
    assert_eq!(
        send(&client, post(addr, "/v1/full", small(6)))
            .await
            .0
            .status,
        429
    );
    release.send(()).unwrap();
    assert_eq!(held.await.unwrap().0.status, 200);
    let bad = post(addr, "/v1/bad", "{not json".to_string());
    assert_eq!(send(&client, bad).await.0.status, 422);
    for path in ["/_vespa/health", "/_vespa/metrics", "/ping"] {
        send(&client, request("GET", &format!("http://{addr}{path}"), "")).await;
    }
    assert_eq!(
        send(&client, post(addr, "/v1/last", small(7)))
            .await
            .0
            .status,
        200
    );

    let lines = access_lines_until(&mut logs, "/v1/last").await;
    let expected = [
        ("/v1/stream", 200, "client_gone"),
        ("/v1/ok/1", 200, "ok"),
        ("/v1/ok/2", 200, "ok"),
        ("/v1/fail", 500, "backend_error"),
        ("/v1/full", 429, "rejected"),
        ("/v1/hold", 200, "ok"),
        ("/v1/bad", 422, "invalid"),
        ("/v1/last", 200, "ok"),
    ];
    assert_eq!(lines.len(), expected.len(), "{lines:#?}");
    for (path, status, outcome) in expected {
        let of_path: Vec<&Value> = lines
            .iter()
            .filter(|l| l["fields"]["path"] == path)
            .collect();
        assert_eq!(of_path.len(), 1, "{path}: {lines:#?}");
        let f = &of_path[0]["fields"];
        assert_eq!(
            (f["status"].as_u64(), f["outcome"].as_str()),
            (Some(status), Some(outcome)),
            "{path}: {f}"
        );
        assert_eq!(of_path[0]["level"], "INFO");
        assert_eq!(f["method"], "POST");
        assert!(
            f["client"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{f}"
        );
        assert!(!f["request_id"].as_str().unwrap().is_empty(), "{f}");
        assert!(f["total_ms"].as_f64().unwrap() >= 0.0, "{f}");
    }
    let by_path = |p| lines.iter().find(|l| l["fields"]["path"] == p).unwrap()["fields"].clone();
    let ok1 = by_path("/v1/ok/1");
    assert_eq!(ok1["request_id"], "chosen-id");
    assert_eq!(
        (ok1["workload"].as_f64(), ok1["request_idx"].as_u64()),
        (Some(0.1), Some(2))
    );
    assert!(
        ok1["queue_ms"].as_f64().is_some() && ok1["ttfb_ms"].as_f64().is_some(),
        "{ok1}"
    );
    assert_eq!(ok1["bytes_in"].as_u64(), Some(small(2).len() as u64));
    assert_eq!(
        ok1["bytes_out"].as_u64(),
        Some(json!({"ok": true}).to_string().len() as u64)
    );
    let rejected = by_path("/v1/full");
    assert!(rejected.get("ttfb_ms").is_none(), "{rejected}");
    assert_eq!(rejected["request_idx"].as_u64(), Some(6));
    let gone = by_path("/v1/stream");
    assert_eq!(gone["bytes_out"].as_u64(), Some(9), "{gone}");
}

#[tokio::test]
async fn text_logs_written_to_a_pipe_carry_no_colour_codes() {
    let mut backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let (_child, addr, mut logs) = spawn_worker(&backend, &[]).await;
    let mut seen = Vec::new();
    let client = h1_client();
    let read = async {
        while let Some(line) = logs.next_line().await.unwrap() {
            seen.push(line.clone());
            if line.contains("worker state changed") && line.contains("ready") {
                let (head, _) = send(&client, post(addr, "/v1/x", "{}".into())).await;
                assert_eq!(head.status, 200);
            }
            if line.contains("vespa::access") {
                return line;
            }
        }
        panic!("the worker exited early: {seen:#?}");
    };
    let access = tokio::time::timeout(PATIENCE, read)
        .await
        .expect("an access line");
    backend.next_request().await;
    assert!(
        access.contains("outcome=ok") && access.contains("path=/v1/x"),
        "{access}"
    );
    for line in &seen {
        assert!(!line.contains('\u{1b}'), "escape code in {line:?}");
    }
}

#[tokio::test]
async fn access_log_false_logs_no_request() {
    let mut backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let (child, addr, mut logs) = spawn_worker(&backend, &[("ACCESS_LOG", "false")]).await;
    wait_log(&mut logs, &["worker state changed", "ready"]).await;
    let (head, _) = send(&h1_client(), post(addr, "/v1/x", "{}".into())).await;
    assert_eq!(head.status, 200);
    backend.next_request().await;
    sigterm(&child);
    let read = async {
        let mut lines = Vec::new();
        while let Some(line) = logs.next_line().await.unwrap() {
            lines.push(line);
        }
        lines
    };
    let lines = tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the worker stops");
    assert!(
        lines.iter().any(|l| l.contains("worker stopped")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("vespa::access")),
        "{lines:#?}"
    );
}
