//! The backend keep-alive pool: reuse, and the single retry of a reused connection.

use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Reads one HTTP/1.1 request (head plus `content-length` body); `None` at EOF.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(head);
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

const OK: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";

/// A backend whose first connection answers its first request (keep-alive) and then drops
/// the second request unanswered, like a server closing an idle connection just as a
/// request arrives. Later connections answer everything. Reports (connection, request line).
async fn closing_backend() -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<(usize, String)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for conn in 0.. {
            let (mut stream, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut served = 0;
                while let Some(head) = read_request(&mut stream).await {
                    let line = head.lines().next().unwrap_or_default().to_string();
                    let health = line.contains("/health");
                    if !health {
                        tx.send((conn, line)).unwrap();
                    }
                    if conn == 0 && !health && served == 1 {
                        return; // drop the connection without answering
                    }
                    served += usize::from(!health);
                    stream.write_all(OK).await.unwrap();
                }
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn reused_connection_failing_before_any_byte_is_retried_once_on_a_new_one() {
    let (addr, mut seen) = closing_backend().await;
    let backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let mut cfg = config(&backend);
    cfg.backend_url = format!("http://{addr}").parse().unwrap();
    let worker = start_worker(cfg).await;
    let client = h1_client();
    for i in 0..2 {
        let (head, body) = send(
            &client,
            request(
                "POST",
                &url(&worker, &format!("/r{i}")),
                envelope(i, 1.0, json!({})).to_string(),
            ),
        )
        .await;
        assert_eq!(head.status, 200, "request {i}: {body:?}");
    }
    let mut lines = Vec::new();
    while let Ok(l) = seen.try_recv() {
        lines.push(l);
    }
    // r0 on the first connection; r1 went out on it again (reused), was dropped, and was
    // sent once more on a fresh connection.
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        lines[0].0, lines[1].0,
        "r1 first tried the pooled connection: {lines:?}"
    );
    assert!(lines[1].1.contains("/r1") && lines[2].1.contains("/r1"));
    assert_ne!(
        lines[2].0, lines[1].0,
        "the retry used a new connection: {lines:?}"
    );
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.totals.served.requests, 2);
}

#[tokio::test]
async fn sequential_requests_reuse_one_backend_connection() {
    let mut backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let worker = start_worker(config(&backend)).await;
    let client = h1_client();
    for i in 0..5 {
        post_envelope(&client, &worker, "/x", i, 1.0).await;
        backend.next_request().await;
        assert_eq!(
            worker.shared().backend.idle_connections(),
            1,
            "after request {i}"
        );
    }
}

#[tokio::test]
async fn an_idle_pooled_connection_is_closed_after_the_pool_idle_timeout_without_traffic() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, mut closed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut requests = 0;
                while let Some(head) = read_request(&mut stream).await {
                    requests += usize::from(!head.contains("/health"));
                    stream.write_all(OK).await.unwrap();
                }
                if requests > 0 {
                    let _ = closed_tx.send(requests);
                }
            });
        }
    });
    let backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let mut cfg = config(&backend);
    cfg.backend_url = format!("http://{addr}").parse().unwrap();
    cfg.pool_idle_timeout = std::time::Duration::from_millis(100);
    cfg.health_interval = std::time::Duration::from_secs(3600);
    let worker = start_worker(cfg).await;
    post_envelope(&h1_client(), &worker, "/x", 1, 1.0).await;
    assert_eq!(worker.shared().backend.idle_connections(), 1);
    // Nothing else uses the pool: only the reaper can close the connection.
    let served = tokio::time::timeout(PATIENCE, closed.recv())
        .await
        .expect("the idle connection was closed")
        .unwrap();
    assert_eq!(served, 1);
    assert_eq!(worker.shared().backend.idle_connections(), 0);
}

#[tokio::test]
async fn a_connection_whose_streamed_upload_is_still_running_is_not_pooled() {
    // A backend that answers every request head at once, without reading its body.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                while read_request(&mut stream).await.is_some() {
                    if stream.write_all(OK).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let mut cfg = config(&backend);
    cfg.backend_url = format!("http://{addr}").parse().unwrap();
    cfg.health_interval = std::time::Duration::from_secs(3600);
    let worker = start_worker(cfg).await;
    // An upload (not JSON, so streamed) that never ends.
    let mut upload = TcpStream::connect(worker.local_addr()).await.unwrap();
    upload
        .write_all(b"POST /up HTTP/1.1\r\nhost: w\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.ends_with(b"{}") {
        let n = tokio::time::timeout(PATIENCE, upload.read(&mut chunk))
            .await
            .expect("the backend's answer")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(
        worker.shared().backend.idle_connections(),
        0,
        "a connection still uploading went back to the pool"
    );
    // The next request gets a working connection at once.
    let (head, _) = post_envelope(&h1_client(), &worker, "/next", 2, 1.0).await;
    assert_eq!(head.status, 200);
    drop(upload);
}

#[tokio::test]
async fn a_connection_whose_streamed_upload_went_out_whole_is_pooled_and_reused() {
    let backend =
        Backend::start(|seen| async move { json(200, json!({"len": seen.body.len()})) }).await;
    let mut cfg = config(&backend);
    cfg.health_interval = std::time::Duration::from_secs(3600);
    let worker = start_worker(cfg).await;
    let client = h1_client();
    for i in 0..3 {
        // Not JSON, so the body is streamed to the backend, not read first.
        let req = Request::builder()
            .method("POST")
            .uri(url(&worker, "/upload"))
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(vec![b'x'; 10_000])))
            .unwrap();
        let (head, body) = send(&client, req).await;
        assert_eq!(head.status, 200, "upload {i}");
        assert_eq!(
            &body[..],
            br#"{"len":10000}"#,
            "the whole upload reached the backend"
        );
        assert_eq!(
            worker.shared().backend.idle_connections(),
            1,
            "upload {i}: the connection went back to the pool"
        );
    }
    assert_eq!(
        worker.shared().backend.open_connections(),
        1,
        "one connection for all"
    );
}
