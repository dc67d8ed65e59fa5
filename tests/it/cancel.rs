//! A client that leaves aborts the backend's work, wherever its request is.

use crate::support::*;
use bytes::Bytes;
use serde_json::json;

#[tokio::test]
async fn client_leaving_while_backend_has_not_answered_closes_the_backend_request() {
    let mut backend = Backend::start(|_| std::future::pending()).await;
    let worker = start_worker(config(&backend)).await;
    let client = RawClient::post(
        worker.local_addr(),
        "/v1/completions",
        &envelope(5, 7.0, json!({})),
    )
    .await;
    backend.next_request().await;
    wait_until(&worker, |s| s.in_flight == 1).await;
    drop(client);
    assert_eq!(backend.expect_dropped().await, "/v1/completions");
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.totals.cancelled.requests, 1);
    assert_eq!(snap.totals.cancelled.workload, 7.0);
}

#[tokio::test]
async fn client_leaving_mid_stream_closes_the_backend_stream() {
    let (mut backend, chunks) = streaming_backend("stream").await;
    let worker = start_worker(config(&backend)).await;
    let mut client = RawClient::post(
        worker.local_addr(),
        "/v1/chat/completions",
        &envelope(6, 3.0, json!({"stream": true})),
    )
    .await;
    chunks.send(Bytes::from_static(b"data: first\n\n")).unwrap();
    client.read_until(b"data: first").await;
    backend.next_request().await;
    drop(client);
    assert_eq!(backend.expect_dropped().await, "stream");
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.totals.cancelled.requests, 1);
    assert_eq!(snap.totals.served.requests, 0);
}

#[tokio::test]
async fn client_leaving_the_queue_is_never_forwarded() {
    let (mut backend, gate_tx) = held_first_backend().await;
    let mut cfg = config(&backend);
    cfg.allow_parallel = false;
    let worker = start_worker(cfg).await;
    let client = h1_client();
    let first = {
        let u = url(&worker, "/first");
        let body = envelope(1, 1.0, json!({})).to_string();
        tokio::spawn(async move { send(&client, request("POST", &u, body)).await })
    };
    assert_eq!(backend.next_request().await.uri.path(), "/first");
    let queued =
        RawClient::post(worker.local_addr(), "/queued", &envelope(2, 4.0, json!({}))).await;
    wait_until(&worker, |s| s.queued == 1).await;
    drop(queued);
    let snap = wait_until(&worker, |s| s.queued == 0).await;
    assert_eq!(snap.totals.cancelled.requests, 1);
    assert_eq!(snap.working_request_idxs, vec![1]);
    gate_tx.send(()).unwrap();
    assert_eq!(first.await.unwrap().0.status, 200);
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.totals.served.requests, 1);
    backend.assert_quiet();
}

#[tokio::test]
async fn idle_backend_stream_is_aborted_and_counted_as_errored() {
    let (mut backend, chunks) = streaming_backend("idle").await;
    let mut cfg = config(&backend);
    cfg.idle_timeout = Some(std::time::Duration::from_millis(200));
    let worker = start_worker(cfg).await;
    let mut client =
        RawClient::post(worker.local_addr(), "/gen", &envelope(8, 2.0, json!({}))).await;
    chunks.send(Bytes::from_static(b"data: one\n\n")).unwrap();
    client.read_until(b"data: one").await;
    backend.next_request().await;
    // The backend now stays silent: the worker gives up and closes the backend stream.
    assert_eq!(backend.expect_dropped().await, "idle");
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.totals.errored.requests, 1);
    drop(chunks);
}
