//! Why TLS material could not be loaded or fetched. Every variant about a file names it, so
//! the start-up error (exit 64) says which file to fix.

use std::path::{Path, PathBuf};

/// A certificate, key or CA that could not be loaded, fetched or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file does not exist.
    #[error("{}: file not found", .path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file exists but could not be read (permissions, a directory, I/O error).
    #[error("{}: cannot read: {source}", .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid PEM (or DER, for a CA).
    #[error("{}: invalid PEM: {source}", .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: rustls::pki_types::pem::Error,
    },
    /// The file holds no `CERTIFICATE` block.
    #[error("{}: no certificate found", .path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file holds no private key block (PKCS#8, PKCS#1 or SEC1).
    #[error("{}: no private key found", .path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The key, or a certificate, cannot be used by rustls (unsupported algorithm, bad DER).
    #[error("{}: unusable: {source}", .path.display())]
    Unusable {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: rustls::Error,
    },
    /// The private key is not the key of the certificate.
    #[error("{}: private key does not match the certificate in {}", .key.display(), .cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file (the one named first in the message).
        key: PathBuf,
    },
    /// Building a rustls configuration failed.
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
    /// Downloading the Vast root CA failed (connection, timeout or non-success status).
    #[error("cannot fetch the CA certificate from {url}: {source}")]
    Fetch {
        /// The URL asked.
        url: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// The downloaded CA is not a usable certificate.
    #[error("the CA certificate from {url} is not usable: {reason}")]
    BadDownload {
        /// The URL asked.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

impl TlsError {
    /// The file the error is about, if it is about one (for a key mismatch, the key).
    pub fn path(&self) -> Option<&Path> {
        match self {
            TlsError::Missing { path }
            | TlsError::Unreadable { path, .. }
            | TlsError::Pem { path, .. }
            | TlsError::NoCertificate { path }
            | TlsError::NoPrivateKey { path }
            | TlsError::Unusable { path, .. } => Some(path),
            TlsError::KeyMismatch { key, .. } => Some(key),
            TlsError::Config(_) | TlsError::Fetch { .. } | TlsError::BadDownload { .. } => None,
        }
    }

    /// True when a file does not exist.
    pub fn is_missing(&self) -> bool {
        matches!(self, TlsError::Missing { .. })
    }

    /// True when the private key does not belong to the certificate.
    pub fn is_key_mismatch(&self) -> bool {
        matches!(self, TlsError::KeyMismatch { .. })
    }

    /// True when the CA could not be downloaded or the download was not a certificate.
    pub fn is_fetch(&self) -> bool {
        matches!(self, TlsError::Fetch { .. } | TlsError::BadDownload { .. })
    }
}
