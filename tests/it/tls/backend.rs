//! https backends: verified, then spoken to over HTTP/1.1.

use super::*;
use std::time::Duration;
use vespa::worker::backend::{Backend, BackendError};

fn https_backend(https: &Https) -> Backend {
    let base = format!("https://{}/", https.server.addr).parse().unwrap();
    Backend::new(base, Duration::from_secs(5), Duration::from_secs(4))
}

fn empty_request() -> Request<vespa::http_util::Body> {
    Request::get("/v1/models")
        .body(vespa::http_util::empty())
        .unwrap()
}

#[tokio::test]
async fn https_backend_is_reached_over_tls() {
    let https = Https::start(Ca::new(), "127.0.0.1").await;
    let mut config = https.ca.worker_ca().client_config().unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let backend = https_backend(&https).with_tls(Arc::new(config));

    let resp = backend
        .send(empty_request(), Some(Bytes::new()))
        .await
        .unwrap();
    assert_eq!(text(resp).await, (200, "HTTP/1.1".to_string()));
    // The ended body returned its connection to the pool.
    assert_eq!(backend.idle_connections(), 1);
}

#[tokio::test]
async fn https_backend_with_an_untrusted_certificate_is_refused() {
    let https = Https::start(Ca::new(), "127.0.0.1").await;
    // System roots do not include the test CA.
    let backend = https_backend(&https);

    let Err(BackendError::Connect { source, .. }) = backend.send(empty_request(), None).await
    else {
        panic!("an untrusted backend certificate was accepted");
    };
    // Without system roots the configuration itself fails; with them, the chain does.
    if vespa::tls::client::backend_client_config().is_ok() {
        assert_eq!(
            certificate_error(&source),
            rustls::CertificateError::UnknownIssuer
        );
    }
}
