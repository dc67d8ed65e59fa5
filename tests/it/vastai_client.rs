//! Interoperability: the official Vast Python client (`vastai==1.9.1`) completes requests
//! through `vespa autoscaler` to a signed `vespa worker`, unchanged. `.ci/run` creates the
//! virtual environment (`.venv`) this test runs the client from.

use crate::support::*;
use bytes::Bytes;
use serde_json::{Value, json};
use std::time::Duration;
use vespa::autoscaler::Autoscaler;

#[tokio::test]
async fn official_vastai_client_completes_requests_unchanged() {
    let python = python();
    let backend = Backend::start(|seen| async move {
        let payload: Value = serde_json::from_slice(&seen.body).unwrap_or(Value::Null);
        if payload["stream"] == true {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            for word in ["Hello", " from", " vespa"] {
                let ev = json!({"choices": [{"index": 0, "text": word}]});
                tx.send(Bytes::from(format!("data: {ev}\n\n"))).unwrap();
            }
            tx.send(Bytes::from_static(b"data: [DONE]\n\n")).unwrap();
            drop(tx);
            return streaming("text/event-stream", "stream", rx, seen.events);
        }
        json(200, json!({"id": "cmpl-1", "object": "text_completion", "choices": [{"index": 0, "text": "Hello"}],
                         "usage": {"completion_tokens": 1}}))
    })
    .await;
    let autoscaler = Autoscaler::start(local_autoscaler("vespa-test", "k-test"))
        .await
        .unwrap();
    let worker = signed_worker(&backend, &autoscaler, 1).await;

    let out = tokio::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/test_vastai_client.py"
        ))
        .env("VESPA_AUTOSCALER_URL", autoscaler.url())
        .env("VESPA_ENDPOINT", "vespa-test")
        .env("VESPA_API_KEY", "k-test")
        .env("VESPA_TIMEOUT", "60")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("client finished")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "vastai client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ALL PASSED"), "{stdout}");
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.totals.served.requests, 2);
    assert_eq!(
        snap.totals.served.workload, 16.0,
        "cost 8 per request, as the client routed it"
    );
}
