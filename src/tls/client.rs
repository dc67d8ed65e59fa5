//! The client side: verifying https workers against Vast's root CA, and https backends
//! against the system's roots.
//!
//! Internal: Vast's root CA has `pathLenConstraint` set in Basic Constraints but no
//! `keyCertSign` in Key Usage, which OpenSSL 3's strict mode rejects (the Vast SDK clears
//! `VERIFY_X509_STRICT` for it). rustls-webpki needs no workaround: a trust anchor is only
//! the certificate's subject, public key and name constraints (`anchor_from_trusted_cert`
//! reads nothing else), and webpki ignores Key Usage on CA certificates altogether (Basic
//! Constraints `cA` decides). The standard `WebPkiServerVerifier` is therefore used as is,
//! keeping chain, signature, expiry and name (DNS or IP SAN) checks; the
//! `quirky_ca_is_accepted` test pins this with a CA built the same way.

use super::{TlsError, pem_certificates, provider, read_file};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The CA that https workers' certificates are checked against (Vast's root CA, or the file
/// given with `--ca-cert` / `VAST_CA_CERT`).
#[derive(Debug, Clone)]
pub struct WorkerCa {
    roots: Arc<RootCertStore>,
}

impl WorkerCa {
    /// Reads a CA file: PEM with one or more certificates, or one DER certificate.
    pub fn from_file(path: &Path) -> Result<Self, TlsError> {
        Self::from_bytes(path, &read_file(path)?)
    }

    /// Parses CA certificates read from `path` (used only to name it in errors).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, TlsError> {
        // A DER certificate is an ASN.1 SEQUENCE; anything else is taken as PEM.
        let certs = if bytes.first() == Some(&0x30) {
            vec![CertificateDer::from(bytes.to_vec())]
        } else {
            pem_certificates(path, bytes)?
        };
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots.add(cert).map_err(|source| TlsError::Unusable {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Ok(Self {
            roots: Arc::new(roots),
        })
    }

    /// A client configuration trusting only this CA, with ALPN `h2` then `http/1.1` (what
    /// reqwest offers by default). For the client library's worker calls, pass it to
    /// `reqwest::ClientBuilder::tls_backend_preconfigured`.
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// A client configuration for https backends (`BACKEND_URL=https://…`): the system's root
/// certificates, through rustls-platform-verifier as reqwest uses, and ALPN `http/1.1` (the
/// backend connection is HTTP/1.1). Fails when the system has no root certificates.
pub fn backend_client_config() -> Result<ClientConfig, TlsError> {
    let verifier = rustls_platform_verifier::Verifier::new(provider()).map_err(TlsError::Config)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Runs the TLS handshake on `stream`, checking the certificate against `host` (a DNS name
/// or an IP address, IPv6 with or without brackets).
pub async fn connect(
    config: Arc<ClientConfig>,
    host: &str,
    stream: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("invalid TLS server name {host:?}: {e}"),
        )
    })?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
}
