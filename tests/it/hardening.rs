//! Slow, stuck and greedy clients (`HEADER_READ_TIMEOUT`, `BODY_READ_TIMEOUT`,
//! `SEND_TIMEOUT`, `MAX_CONNECTIONS`, HTTP/2 limits), and the drain that loses no byte.

use crate::fake_autoscaler::FakeAutoscaler;
use crate::support::*;
use bytes::Bytes;
use http::StatusCode;
use hyper::body::Frame;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use vespa::http_util::BoxError;
use vespa::worker::Worker;

const SHORT: Duration = Duration::from_millis(200);

/// Reads until the peer closes (EOF or reset); returns what arrived.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("connection closed in time");
    buf
}

async fn get_health(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /_vespa/health HTTP/1.1\r\nhost: w\r\n\r\n")
        .await
        .unwrap();
}

/// Reads one response head and its `{"status":"alive"}` body.
async fn read_health(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&buf).contains("alive") {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn a_client_trickling_its_request_head_is_disconnected() {
    let backend = Backend::start(|_| async { json(200, serde_json::json!({})) }).await;
    let mut c = config(&backend);
    c.serve_limits.header_read_timeout = Some(SHORT);
    let worker = start_worker(c).await;
    let mut stream = TcpStream::connect(worker.local_addr()).await.unwrap();
    let (mut rd, mut wr) = stream.split();
    let started = Instant::now();
    let trickle = async {
        // The behaviour under test: one header byte every 20 ms, never a whole head.
        for b in b"GET /_vespa/health HTTP/1.1\r\nx-slow: ".iter().cycle() {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let closed = async {
        let mut got = Vec::new();
        let _ = rd.read_to_end(&mut got).await;
        got
    };
    let got = tokio::time::timeout(PATIENCE, async {
        tokio::select! {
            got = closed => got,
            () = trickle => Vec::new(),
        }
    })
    .await
    .expect("the worker closes the connection");
    assert!(started.elapsed() >= SHORT);
    assert!(!String::from_utf8_lossy(&got).contains("200"), "{got:?}");
}

#[tokio::test]
async fn a_client_that_stops_sending_its_json_body_gets_408_and_is_disconnected() {
    let mut backend = Backend::start(|_| async { json(200, serde_json::json!({})) }).await;
    let mut c = config(&backend);
    c.body_read_timeout = Some(SHORT);
    let worker = start_worker(c).await;
    let mut stream = TcpStream::connect(worker.local_addr()).await.unwrap();
    stream
        .write_all(b"POST /v1/completions HTTP/1.1\r\nhost: w\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"half\":")
        .await
        .unwrap();
    let got = String::from_utf8(read_to_close(&mut stream).await).unwrap();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("request_timeout"), "{got}");
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.totals.received.requests, 0);
    backend.assert_quiet();
}

#[tokio::test]
async fn a_client_that_stops_a_streamed_upload_gets_408_and_leaves_nothing_in_flight() {
    let backend = Backend::start(|_| async { json(200, serde_json::json!({})) }).await;
    let mut c = config(&backend);
    c.body_read_timeout = Some(SHORT);
    let worker = start_worker(c).await;
    let mut stream = TcpStream::connect(worker.local_addr()).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nhost: w\r\ncontent-type: application/octet-stream\r\ncontent-length: 100\r\n\r\nhalf")
        .await
        .unwrap();
    let got = String::from_utf8(read_to_close(&mut stream).await).unwrap();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.totals.errored.requests, 1);
}

#[tokio::test]
async fn a_third_connection_waits_in_the_backlog_until_one_of_two_closes() {
    let backend = Backend::start(|_| async { json(200, serde_json::json!({})) }).await;
    let mut c = config(&backend);
    c.serve_limits.max_connections = 2;
    let worker = start_worker(c).await;
    let addr = worker.local_addr();
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    for s in [&mut first, &mut second] {
        get_health(s).await;
        read_health(s).await;
    }
    // The kernel completes the handshake (backlog), but the worker does not accept it.
    let mut third = TcpStream::connect(addr).await.unwrap();
    get_health(&mut third).await;
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut byte)).await;
    assert!(early.is_err(), "the third connection was served: {early:?}");
    drop(first);
    let got = tokio::time::timeout(PATIENCE, read_health(&mut third))
        .await
        .expect("served once a connection closed");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

#[tokio::test]
async fn h2_connections_announce_the_stream_and_header_limits() {
    let backend = Backend::start(|_| async { json(200, serde_json::json!({})) }).await;
    let mut c = config(&backend);
    c.serve_limits.h2_max_concurrent_streams = 3;
    c.serve_limits.h2_max_header_list_size = 4096;
    let worker = start_worker(c).await;
    let mut stream = TcpStream::connect(worker.local_addr()).await.unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    // The server's first frame is its SETTINGS (RFC 9113 §3.4): 9-byte header, then
    // 6-byte entries (identifier, value).
    let mut head = [0u8; 9];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head[3], 4, "a SETTINGS frame");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.unwrap();
    let settings: Vec<(u16, u32)> = payload
        .chunks(6)
        .map(|e| {
            (
                u16::from_be_bytes([e[0], e[1]]),
                u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
            )
        })
        .collect();
    // SETTINGS_MAX_CONCURRENT_STREAMS (0x3) and SETTINGS_MAX_HEADER_LIST_SIZE (0x6).
    assert!(settings.contains(&(3, 3)), "{settings:?}");
    assert!(settings.contains(&(6, 4096)), "{settings:?}");
}

#[tokio::test]
async fn h2_streams_beyond_the_limit_wait_for_a_free_one() {
    let (mut backend, release) = held_first_backend().await;
    let mut c = config(&backend);
    c.serve_limits.h2_max_concurrent_streams = 1;
    let worker = Arc::new(start_worker(c).await);
    let client = h2_client();
    let send_one = |i| {
        let (client, worker) = (client.clone(), Arc::clone(&worker));
        tokio::spawn(
            async move { post_envelope(&client, &worker, "/v1/completions", i, 1.0).await },
        )
    };
    let first = send_one(1);
    backend.next_request().await;
    let second = send_one(2);
    let early = tokio::time::timeout(Duration::from_millis(300), backend.events.recv()).await;
    assert!(early.is_err(), "a second stream was opened: {early:?}");
    let _ = release.send(());
    backend.next_request().await;
    assert_eq!(first.await.unwrap().0.status, StatusCode::OK);
    assert_eq!(second.await.unwrap().0.status, StatusCode::OK);
}

/// A body that yields 64 KiB frames as fast as it is polled, forever; its drop is reported
/// as `Event::Dropped`.
struct Endless {
    events: mpsc::UnboundedSender<Event>,
}

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; 64 * 1024])))))
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        let _ = self.events.send(Event::Dropped("endless".into()));
    }
}

/// A serial worker (`ALLOW_PARALLEL=false`, `SEND_TIMEOUT` short) whose backend answers the
/// first request with an endless body and the next ones with `{"second": true}`.
async fn endless_first_serial_worker() -> (Backend, Worker) {
    use http_body_util::BodyExt;
    let calls = Arc::new(AtomicUsize::new(0));
    let backend = Backend::start(move |seen| {
        let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                http::Response::new(
                    Endless {
                        events: seen.events,
                    }
                    .boxed_unsync(),
                )
            } else {
                json(200, serde_json::json!({"second": true}))
            }
        }
    })
    .await;
    let mut c = config(&backend);
    c.allow_parallel = false;
    c.serve_limits.send_timeout = Some(SHORT);
    let worker = start_worker(c).await;
    (backend, worker)
}

/// The request queued behind the stalled one is served once SEND_TIMEOUT frees the GPU, and
/// the stalled one is cancelled with its backend connection closed.
async fn assert_second_served_and_first_cancelled(backend: &mut Backend, worker: &Worker) {
    // Queued behind the stalled stream (one request at a time).
    let (parts, bytes) = post_envelope(&h1_client(), worker, "/v1/completions", 2, 1.0).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(&bytes[..], br#"{"second":true}"#);
    assert_eq!(backend.expect_dropped().await, "endless");
    let snap = assert_settled(worker).await;
    assert_eq!(
        (snap.totals.cancelled.requests, snap.totals.served.requests),
        (1, 1)
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_frees_the_gpu_after_the_send_timeout() {
    let (mut backend, worker) = endless_first_serial_worker().await;
    // A client with a small receive buffer that never reads.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(worker.local_addr()).await.unwrap();
    let body = envelope(1, 1.0, serde_json::json!({"stream": true})).to_string();
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nhost: w\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stuck.write_all(head.as_bytes()).await.unwrap();
    stuck.write_all(body.as_bytes()).await.unwrap();
    backend.next_request().await;
    assert_second_served_and_first_cancelled(&mut backend, &worker).await;
    drop(stuck);
}

#[tokio::test]
async fn an_h2_stream_the_client_stops_taking_frees_the_gpu_after_the_send_timeout() {
    let (mut backend, worker) = endless_first_serial_worker().await;
    // An h2 client that keeps its connection alive (it reads the socket and answers pings)
    // but never reads this stream, so the stream's flow-control window stays shut.
    let tcp = TcpStream::connect(worker.local_addr()).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(65_535)
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let body = envelope(1, 1.0, serde_json::json!({"stream": true})).to_string();
    let req = http::Request::post(format!("http://{}/v1/completions", worker.local_addr()))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(body)))
        .unwrap();
    let stalled = h2.send_request(req).await.unwrap();
    assert_eq!(stalled.status(), StatusCode::OK);
    backend.next_request().await;
    assert_second_served_and_first_cancelled(&mut backend, &worker).await;
    drop(stalled);
}

// ---------------------------------------------------------------- drain

async fn a_stream_in_flight_at_sigterm_arrives_whole(report_addr: Option<&str>) {
    let (backend, chunks) = streaming_backend("sse").await;
    let mut env = vec![("DRAIN_TIMEOUT", "10")];
    if let Some(url) = report_addr {
        env.extend([("REPORT_ADDR", url), ("CONTAINER_ID", "7")]);
    }
    let (mut child, addr, mut logs) = spawn_worker(&backend, &env).await;
    wait_log(&mut logs, &["state changed", "ready"]).await;
    let mut client = RawClient::post(addr, "/v1/completions", &serde_json::json!({})).await;
    chunks.send(Bytes::from_static(b"data: 1\n\n")).unwrap();
    client.read_until(b"data: 1\n\n").await;
    sigterm(&child);
    wait_log(&mut logs, &["state changed", "draining"]).await;
    chunks
        .send(Bytes::from_static(b"data: [DONE]\n\n"))
        .unwrap();
    drop(chunks);
    // Everything up to the chunked terminator, then the worker closes the connection.
    let rest = String::from_utf8(read_to_close(&mut client.stream).await).unwrap();
    assert!(rest.ends_with("data: [DONE]\n\n\r\n0\r\n\r\n"), "{rest:?}");
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("the worker exits")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_stream_in_flight_at_sigterm_arrives_whole_without_report_addr() {
    a_stream_in_flight_at_sigterm_arrives_whole(None).await;
}

#[tokio::test]
async fn a_stream_in_flight_at_sigterm_arrives_whole_with_report_addr() {
    let autoscaler = FakeAutoscaler::start(true).await;
    a_stream_in_flight_at_sigterm_arrives_whole(Some(&autoscaler.url())).await;
}

#[tokio::test]
async fn a_drain_closes_idle_keep_alive_connections_and_ends_the_accept_loop() {
    let backend = Backend::start(|_| async { json(200, serde_json::json!({})) }).await;
    let worker: Worker = start_worker(config(&backend)).await;
    let mut idle = TcpStream::connect(worker.local_addr()).await.unwrap();
    get_health(&mut idle).await;
    read_health(&mut idle).await;
    assert!(worker.drain(PATIENCE).await);
    read_to_close(&mut idle).await;
    assert!(TcpStream::connect(worker.local_addr()).await.is_err());
}

#[tokio::test]
async fn the_bind_helper_listens_with_address_reuse() {
    let listener = vespa::serve::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    assert_eq!(connected.unwrap().peer_addr().unwrap(), addr);
    drop(accepted.unwrap());
    drop(listener);
    // SO_REUSEADDR: the port can be bound again at once despite the closed connection.
    vespa::serve::bind(addr).unwrap();
}
