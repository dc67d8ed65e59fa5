//! Admission: estimated wait, 429, serial FIFO and the concurrency cap.

use crate::support::*;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Gates for a backend: the n-th request to arrive waits for the n-th `release()`.
struct Gates {
    senders: std::collections::VecDeque<oneshot::Sender<()>>,
}

impl Gates {
    fn release(&mut self) {
        self.senders
            .pop_front()
            .expect("a gate to release")
            .send(())
            .unwrap();
    }
}

/// A backend whose requests each wait for a gate, in arrival order.
async fn gated(n: usize) -> (Backend, Gates) {
    let (tx, rx) = mpsc::unbounded_channel::<oneshot::Receiver<()>>();
    let mut senders = std::collections::VecDeque::new();
    for _ in 0..n {
        let (s, r) = oneshot::channel();
        senders.push_back(s);
        tx.send(r).unwrap();
    }
    let rx = Arc::new(Mutex::new(rx));
    let backend = Backend::start(move |seen| {
        let rx = rx.clone();
        async move {
            let gate = rx.lock().await.recv().await.expect("enough gates");
            let _ = gate.await;
            json(200, json!({"path": seen.uri.path()}))
        }
    })
    .await;
    (backend, Gates { senders })
}

#[tokio::test]
async fn over_the_wait_limit_gets_429_with_computed_retry_after() {
    let (mut backend, mut gates) = gated(1).await;
    let mut cfg = config(&backend);
    cfg.max_perf = 10.0;
    cfg.max_wait_time = 1.0;
    // Above the default clamp (1 s of work), so one request can be 10 s of wait.
    cfg.max_cost = Some(100.0);
    let worker = start_worker(cfg).await;
    let client = h1_client();
    let first = {
        let client = client.clone();
        let body = envelope(1, 100.0, json!({})).to_string();
        let u = url(&worker, "/slow");
        tokio::spawn(async move { send(&client, request("POST", &u, body)).await })
    };
    backend.next_request().await;
    // Working set: 100 units at 10/s = 10 s of wait, limit 1 s: under the limit after 9 s.
    let (head, body) = post_envelope(&client, &worker, "/fast", 2, 1.0).await;
    assert_eq!(head.status, 429);
    assert_eq!(head.headers["retry-after"], "9");
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["code"], "queue_full");
    backend.assert_quiet();

    gates.release();
    assert_eq!(first.await.unwrap().0.status, 200);
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.totals.rejected.requests, 1);
    assert_eq!(snap.totals.rejected.workload, 1.0);
    assert_eq!(snap.totals.served.requests, 1);
}

#[tokio::test]
async fn serial_mode_serves_in_strict_fifo_order() {
    let (mut backend, mut gates) = gated(5).await;
    let mut cfg = config(&backend);
    cfg.allow_parallel = false;
    let worker = start_worker(cfg).await;
    let client = h1_client();
    let mut answers = Vec::new();
    for i in 0..5u64 {
        let client = client.clone();
        let u = url(&worker, &format!("/r{i}"));
        let body = envelope(i, 1.0, json!({})).to_string();
        answers.push(tokio::spawn(async move {
            send(&client, request("POST", &u, body)).await
        }));
        // Enqueue one at a time so the arrival order is known.
        wait_until(&worker, |s| s.working() == i as usize + 1).await;
    }
    let snap = worker.shared().ledger.snapshot();
    assert_eq!((snap.in_flight, snap.queued), (1, 4));
    for i in 0..5 {
        let seen = backend.next_request().await;
        assert_eq!(seen.uri.path(), format!("/r{i}"));
        backend.assert_quiet();
        gates.release();
    }
    for a in answers {
        assert_eq!(a.await.unwrap().0.status, 200);
    }
    assert_eq!(assert_settled(&worker).await.totals.served.requests, 5);
}

#[tokio::test]
async fn max_concurrency_caps_parallel_backend_requests() {
    let (mut backend, mut gates) = gated(3).await;
    let mut cfg = config(&backend);
    cfg.max_concurrency = Some(2);
    let worker = start_worker(cfg).await;
    let client = h1_client();
    let mut answers = Vec::new();
    for i in 0..3u64 {
        let client = client.clone();
        let u = url(&worker, &format!("/r{i}"));
        let body = envelope(i, 1.0, json!({})).to_string();
        answers.push(tokio::spawn(async move {
            send(&client, request("POST", &u, body)).await
        }));
    }
    let snap = wait_until(&worker, |s| s.working() == 3 && s.in_flight == 2).await;
    assert_eq!(snap.queued, 1);
    backend.next_request().await;
    backend.next_request().await;
    backend.assert_quiet();
    gates.release();
    backend.next_request().await;
    gates.release();
    gates.release();
    for a in answers {
        assert_eq!(a.await.unwrap().0.status, 200);
    }
    assert_settled(&worker).await;
}
