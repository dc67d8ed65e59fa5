//! Forwarding: what reaches the backend and what comes back.

use crate::support::*;
use bytes::Bytes;
use http::Response;
use serde_json::json;
use std::time::Instant;

#[tokio::test]
async fn envelope_payload_reaches_backend_and_json_answer_passes_through() {
    let mut backend = Backend::start(|_| async {
        let mut r = json(201, json!({"id": "cmpl-1", "n": 1.50}));
        r.headers_mut().insert("x-backend", "yes".parse().unwrap());
        r
    })
    .await;
    let worker = start_worker(config(&backend)).await;
    let payload = json!({"model": "m", "max_tokens": 5, "temperature": 0.7});
    let body = envelope(41, 5.0, payload.clone()).to_string();
    let (head, bytes) = send(
        &h1_client(),
        request("POST", &url(&worker, "/v1/completions"), body),
    )
    .await;

    assert_eq!(head.status, 201);
    assert_eq!(head.headers["x-backend"], "yes");
    assert_eq!(head.headers["content-type"], "application/json");
    assert_eq!(
        &bytes[..],
        json!({"id": "cmpl-1", "n": 1.50}).to_string().as_bytes()
    );
    let seen = backend.next_request().await;
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.uri, "/v1/completions");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&seen.body).unwrap(),
        payload
    );
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(seen.headers["content-length"], seen.body.len().to_string());
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.totals.served.requests, 1);
    assert_eq!(snap.totals.served.workload, 5.0);
}

#[tokio::test]
async fn payload_bytes_are_forwarded_exactly_as_sent() {
    let mut backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let worker = start_worker(config(&backend)).await;
    let raw = r#"{"auth_data":{"cost":1,"endpoint":"e","reqnum":1,"request_idx":1,"signature":"","url":"u"},"payload":{"z":1.10,"a":"\u00e9"}}"#;
    send(&h1_client(), request("POST", &url(&worker, "/x"), raw)).await;
    assert_eq!(
        &backend.next_request().await.body[..],
        br#"{"z":1.10,"a":"\u00e9"}"#
    );
}

#[tokio::test]
async fn binary_response_passes_byte_for_byte() {
    let blob: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let expected = Bytes::from(blob);
    let reply = expected.clone();
    let _backend = Backend::start(move |_| {
        let reply = reply.clone();
        async move {
            let mut r = Response::new(vespa::http_util::full(reply));
            r.headers_mut()
                .insert("content-type", "image/png".parse().unwrap());
            r
        }
    })
    .await;
    let worker = start_worker(config(&_backend)).await;
    let (head, bytes) = send(
        &h1_client(),
        request("GET", &url(&worker, "/image.png"), ""),
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-type"], "image/png");
    assert_eq!(head.headers["content-length"], "300000");
    assert_eq!(bytes, expected);
    assert_settled(&worker).await;
}

#[tokio::test]
async fn unsecured_passthrough_forwards_plain_json_and_other_bodies_unchanged() {
    let mut backend = Backend::start(|_| async { json(200, json!({"ok": true})) }).await;
    let worker = start_worker(config(&backend)).await;
    let client = h1_client();
    let plain = r#"{"prompt": "hi", "max_tokens": 3}"#;
    let (head, _) = send(
        &client,
        request("POST", &url(&worker, "/v1/completions"), plain),
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(&backend.next_request().await.body[..], plain.as_bytes());

    let form = http::Request::builder()
        .method("POST")
        .uri(url(&worker, "/upload"))
        .header("content-type", "multipart/form-data; boundary=x")
        .body(http_body_util::Full::new(Bytes::from_static(
            b"--x\r\nraw \xff bytes\r\n--x--",
        )))
        .unwrap();
    send(&client, form).await;
    let seen = backend.next_request().await;
    assert_eq!(&seen.body[..], b"--x\r\nraw \xff bytes\r\n--x--");
    assert_eq!(
        seen.headers["content-type"],
        "multipart/form-data; boundary=x"
    );
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.totals.served.requests, 2);
}

#[tokio::test]
async fn path_and_query_are_forwarded_without_auth_parameters() {
    let mut backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let mut cfg = config(&backend);
    cfg.backend_url = format!("http://{}/prefix/", backend.addr).parse().unwrap();
    let worker = start_worker(cfg).await;
    let q = "a=1&serverless_cost=2.5&serverless_endpoint=e&serverless_reqnum=3&serverless_request_idx=4&serverless_signature=s&serverless_url=u&api_key=secret&b=x%20y";
    let (head, _) = send(
        &h1_client(),
        request("GET", &url(&worker, &format!("/v1/models?{q}")), ""),
    )
    .await;
    assert_eq!(head.status, 200);
    let seen = backend.next_request().await;
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri, "/prefix/v1/models?a=1&b=x%20y");
    let snap = assert_settled(&worker).await;
    assert_eq!(snap.totals.served.workload, 2.5);
}

#[tokio::test]
async fn get_envelope_payload_becomes_query_and_head_stays_head() {
    let mut backend = Backend::start(|_| async { json(200, json!({"x": 1})) }).await;
    let worker = start_worker(config(&backend)).await;
    let client = h1_client();
    let body = envelope(1, 1.0, json!({"q": "a b"})).to_string();
    send(
        &client,
        request("GET", &url(&worker, "/search?page=2"), body),
    )
    .await;
    let seen = backend.next_request().await;
    assert_eq!(seen.uri, "/search?page=2&q=a+b");
    assert!(seen.body.is_empty());

    let (head, bytes) = send(&client, request("HEAD", &url(&worker, "/v1/models"), "")).await;
    assert_eq!(head.status, 200);
    assert!(bytes.is_empty());
    assert_eq!(backend.next_request().await.method, "HEAD");
    assert_settled(&worker).await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let mut backend = Backend::start(|_| async {
        let mut r = json(200, json!({}));
        let h = r.headers_mut();
        h.insert("connection", "x-backend-hop".parse().unwrap());
        h.insert("x-backend-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-end-to-end", "kept".parse().unwrap());
        r
    })
    .await;
    let mut cfg = config(&backend);
    cfg.backend_api_key = Some("backend-key".into());
    let worker = start_worker(cfg).await;
    let req = http::Request::builder()
        .method("POST")
        .uri(url(&worker, "/v1/chat/completions?api_key=client-key"))
        .header("connection", "x-client-hop")
        .header("x-client-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic abc")
        .header("te", "trailers")
        .header("authorization", "Bearer client-key")
        .header("x-request-id", "r-1")
        .body(http_body_util::Full::new(Bytes::from(
            envelope(1, 1.0, json!({})).to_string(),
        )))
        .unwrap();
    let (head, _) = send(&h1_client(), req).await;
    let seen = backend.next_request().await;
    for name in ["x-client-hop", "keep-alive", "proxy-authorization", "te"] {
        assert!(
            !seen.headers.contains_key(name),
            "{name} reached the backend"
        );
    }
    assert_eq!(seen.headers["authorization"], "Bearer backend-key");
    assert_eq!(seen.headers["x-request-id"], "r-1");
    assert_eq!(seen.uri, "/v1/chat/completions");
    assert_eq!(seen.headers["host"], backend.addr.to_string());
    assert!(!head.headers.contains_key("x-backend-hop"));
    assert!(!head.headers.contains_key("keep-alive"));
    assert_eq!(head.headers["x-end-to-end"], "kept");
    assert_settled(&worker).await;
}

#[tokio::test]
async fn http2_client_reaches_http1_backend() {
    let mut backend = Backend::start(|_| async { json(200, json!({"via": "h1"})) }).await;
    let worker = start_worker(config(&backend)).await;
    let body = envelope(3, 1.0, json!({"prompt": "x"})).to_string();
    let (head, bytes) = send(
        &h2_client(),
        request("POST", &url(&worker, "/v1/completions"), body),
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.version, http::Version::HTTP_2);
    assert_eq!(&bytes[..], br#"{"via":"h1"}"#);
    assert_eq!(backend.next_request().await.version, http::Version::HTTP_11);
    assert_settled(&worker).await;
}

/// Each SSE event reaches the client before the backend produces the next one: the relay
/// never buffers. The backend is gated by the test, so this holds on any machine speed.
#[tokio::test]
async fn sse_events_are_relayed_one_by_one() {
    let (mut backend, chunks_tx) = streaming_backend("sse").await;
    let worker = start_worker(config(&backend)).await;

    let body = envelope(9, 1.0, json!({"stream": true})).to_string();
    let resp = h1_client()
        .request(request("POST", &url(&worker, "/v1/chat/completions"), body))
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut sent_at = Vec::new();
    let mut gaps = Vec::new();
    for i in 0..5 {
        let event = format!("data: {{\"i\": {i}}}\n\n");
        sent_at.push(Instant::now());
        chunks_tx.send(Bytes::from(event.clone())).unwrap();
        let frame = next_data(&mut body).await;
        gaps.push(sent_at[i].elapsed());
        assert_eq!(frame, event.as_bytes(), "event {i} arrives whole and alone");
    }
    drop(chunks_tx);
    assert!(next_frame_or_end(&mut body).await.is_none());
    backend.next_request().await;
    // Arrival times: every event arrived before the next was produced (checked above), and
    // none waited on a timer such as Nagle's (40 ms) or a flush interval.
    let median = {
        let mut g = gaps.clone();
        g.sort();
        g[g.len() / 2]
    };
    assert!(
        median < std::time::Duration::from_millis(40),
        "per-event latency {gaps:?}"
    );
    assert_settled(&worker).await;
}

async fn next_data(body: &mut hyper::body::Incoming) -> Bytes {
    next_frame_or_end(body).await.expect("a data frame")
}

async fn next_frame_or_end(body: &mut hyper::body::Incoming) -> Option<Bytes> {
    use http_body_util::BodyExt;
    loop {
        let frame = tokio::time::timeout(PATIENCE, body.frame())
            .await
            .expect("frame in time")?;
        if let Ok(data) = frame.unwrap().into_data() {
            return Some(data);
        }
    }
}
