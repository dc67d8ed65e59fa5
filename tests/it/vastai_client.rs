//! Interoperability: the official Vast Python client (`vastai==1.9.1`) completes requests,
//! and opens, uses and closes sessions, through `vespa autoscaler` to a signed
//! `vespa worker`, unchanged. `.ci/run` creates the virtual environment (`.venv`) these tests
//! run the client from.

use crate::support::*;
use bytes::Bytes;
use serde_json::{Value, json};
use vespa::autoscaler::Autoscaler;

/// A completions backend: a streamed answer when the payload asks for `stream`, else a
/// whole one.
async fn completions_backend() -> Backend {
    Backend::start(|seen| async move {
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
    .await
}

#[tokio::test]
async fn official_vastai_client_completes_requests_unchanged() {
    let backend = completions_backend().await;
    let autoscaler = Autoscaler::start(local_autoscaler("vespa-test", "k-test"))
        .await
        .unwrap();
    let worker = signed_worker(&backend, &autoscaler, 1).await;

    run_python_script(
        "test_vastai_client.py",
        &[
            ("VESPA_AUTOSCALER_URL", autoscaler.url().as_str()),
            ("VESPA_ENDPOINT", "vespa-test"),
            ("VESPA_API_KEY", "k-test"),
            ("VESPA_TIMEOUT", "60"),
        ],
    )
    .await;
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.totals.served.requests, 2);
    assert_eq!(
        snap.totals.served.workload, 16.0,
        "cost 8 per request, as the client routed it"
    );
}

#[tokio::test]
async fn official_vastai_client_sessions_work_unchanged() {
    let mut backend = completions_backend().await;
    let autoscaler = Autoscaler::start(local_autoscaler("vespa-test", "k-test"))
        .await
        .unwrap();
    let worker = signed_worker(&backend, &autoscaler, 1).await;

    let out = run_python_script(
        "test_vastai_sessions.py",
        &[
            ("VESPA_AUTOSCALER_URL", autoscaler.url().as_str()),
            ("VESPA_ENDPOINT", "vespa-test"),
            ("VESPA_API_KEY", "k-test"),
            ("VESPA_TIMEOUT", "60"),
        ],
    )
    .await;
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("SESSION_ID="))
        .expect("the script prints the session id");
    // The session request, the streamed one, then the on-close callback.
    let mut paths = Vec::new();
    let callback = loop {
        let seen = backend.next_request().await;
        if seen.uri.path() == "/session_closed" {
            break seen;
        }
        paths.push(seen.uri.path().to_string());
    };
    assert_eq!(paths, ["/v1/completions", "/v1/completions"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&callback.body).unwrap(),
        json!({"job": "j1", "session_id": id})
    );
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.sessions, 0);
    assert_eq!(
        (snap.totals.served.requests, snap.totals.served.workload),
        (3, 50.0 + 2.0),
        "the session (cost 50) and its two requests (DEFAULT_COST each)"
    );
}
