//! TLS for every Vespa connection, on one stack: rustls with aws-lc-rs.
//!
//! - [`server`]: the worker's HTTPS listener (`USE_SSL=true`). The certificate and key are
//!   loaded and checked before any port is bound, and re-read when the files change.
//! - [`client`]: verifying https workers against Vast's root CA (which has a Key Usage quirk,
//!   see there), and system roots for https backends.
//! - [`vast_ca`]: fetching Vast's root CA once from the console and caching it.

pub mod client;
mod error;
pub mod server;
pub mod vast_ca;

pub use error::TlsError;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;

/// The aws-lc-rs crypto provider, passed explicitly to every rustls builder so no
/// process-wide default has to be installed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads a whole file, telling a missing file from an unreadable one.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            TlsError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            TlsError::Unreadable {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Every `CERTIFICATE` block of a PEM file, in order; an error when there is none.
pub(crate) fn pem_certificates(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}
