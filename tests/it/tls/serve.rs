//! The accept loop over TLS: ALPN, verification by the client, handshake timeout.

use super::*;
use std::time::Duration;
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn https_serves_http1_to_a_client_trusting_the_ca() {
    let https = Https::start(Ca::new(), "127.0.0.1").await;

    let stream = https.connect().await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let resp = h1(stream).await.send_request(get("/")).await.unwrap();
    assert_eq!(text(resp).await, (200, "HTTP/1.1".to_string()));
}

#[tokio::test]
async fn https_serves_h2_when_the_client_negotiates_it_by_alpn() {
    let https = Https::start(Ca::new(), "127.0.0.1").await;
    let addr = https.server.addr;

    let stream = connect(addr, &https.ca.worker_ca(), &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut sender = h2(stream).await;
    let resp = sender
        .send_request(get(&format!("https://{addr}/")))
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(text(resp).await, (200, "HTTP/2.0".to_string()));
}

#[tokio::test]
async fn https_serves_a_client_that_offers_no_alpn() {
    let https = Https::start(Ca::new(), "127.0.0.1").await;

    let stream = connect(https.server.addr, &https.ca.worker_ca(), &[])
        .await
        .unwrap();
    assert_eq!(get_status(stream).await, 200);
}

#[tokio::test]
async fn client_trusting_another_ca_is_refused() {
    let https = Https::start(Ca::new(), "127.0.0.1").await;

    let err = connect(https.server.addr, &Ca::new().worker_ca(), &[b"http/1.1"])
        .await
        .unwrap_err();
    assert_eq!(
        certificate_error(&err),
        rustls::CertificateError::UnknownIssuer
    );
}

#[tokio::test]
async fn certificate_for_another_address_is_refused_with_either_ca() {
    for (ca, name) in [
        (Ca::new(), "10.1.2.3"),
        (Ca::new(), "worker.example"),
        (Ca::vast_quirk(), "10.1.2.3"),
    ] {
        let trusted = ca.worker_ca();
        let https = Https::start(ca, name).await;

        let err = connect(https.server.addr, &trusted, &[b"http/1.1"])
            .await
            .unwrap_err();
        assert!(is_wrong_name(&err), "{name}: {err}");
    }
}

/// Vast's root CA sets a path length but lacks keyCertSign; webpki ignores Key Usage on CA
/// certificates, so the standard verifier accepts it while still checking the chain and name.
#[tokio::test]
async fn quirky_ca_is_accepted() {
    let https = Https::start(Ca::vast_quirk(), "127.0.0.1").await;

    assert_eq!(get_status(https.connect().await).await, 200);
}

#[tokio::test]
async fn handshake_timeout_closes_a_silent_connection() {
    tokio::time::pause();
    let https = Https::start(Ca::new(), "127.0.0.1").await;
    let tls = Tls::new(https.tls.config()).handshake_timeout(Duration::from_secs(5));
    let server = serve_with(tls).await;

    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 1];
    // Time auto-advances while every task waits, so the timeout fires without real waiting.
    let read = silent.read(&mut buf).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "connection still open: {read:?}"
    );
}
