//! The worker's HTTPS side: certificate and key files, checked at start-up and re-read when
//! they change.
//!
//! On Vast, `start_server.sh` writes `/etc/instance.key` and has the console sign
//! `/etc/instance.crt` on every boot; a certificate may also be renewed while the worker
//! runs. [`load`] fails with a [`TlsError`] naming the file (missing, unreadable, no
//! certificate, no key, key not matching) so the worker can exit 64 before binding a port:
//! it must never serve plain HTTP while reporting an `https://` URL.
//!
//! After start-up, [`ReloadingCert`] serves the current pair to every new handshake and
//! [`ReloadingCert::watch`] re-reads the files periodically, swapping only a pair that loads.
//! Open connections keep the keys they negotiated, so nothing is dropped by a swap.

use super::{TlsError, pem_certificates, provider, read_file};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{Error as RustlsError, InconsistentKeys, ServerConfig};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// Default certificate path (`TLS_CERT`), where `start_server.sh` puts it on Vast.
pub const DEFAULT_CERT: &str = "/etc/instance.crt";
/// Default private key path (`TLS_KEY`).
pub const DEFAULT_KEY: &str = "/etc/instance.key";
/// How often [`ReloadingCert::watch`] looks at the files. Default is 30 s.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// The certificate chain (PEM, leaf first) and private key (PEM: PKCS#8, PKCS#1 or SEC1) the
/// worker serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain file. Default is `/etc/instance.crt`.
    pub cert: PathBuf,
    /// Private key file. Default is `/etc/instance.key`.
    pub key: PathBuf,
}

impl Default for TlsFiles {
    fn default() -> Self {
        Self {
            cert: DEFAULT_CERT.into(),
            key: DEFAULT_KEY.into(),
        }
    }
}

impl TlsFiles {
    /// The pair at `cert` and `key`.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
        }
    }

    fn read(&self) -> Result<Contents, TlsError> {
        Ok(Contents {
            cert: read_file(&self.cert)?,
            key: read_file(&self.key)?,
        })
    }

    /// Parses `contents` (read from these files) into a key rustls can serve, checking that
    /// the key belongs to the leaf certificate.
    fn certified_key(
        &self,
        contents: &Contents,
        provider: &CryptoProvider,
    ) -> Result<Arc<CertifiedKey>, TlsError> {
        let chain = pem_certificates(&self.cert, &contents.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
                path: self.key.clone(),
            },
            source => TlsError::Pem {
                path: self.key.clone(),
                source,
            },
        })?;
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|source| TlsError::Unusable {
                path: self.key.clone(),
                source,
            })?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            // Unknown: the key type cannot report its public key; rustls serves it anyway.
            Ok(()) | Err(RustlsError::InconsistentKeys(InconsistentKeys::Unknown)) => {}
            Err(RustlsError::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
                return Err(TlsError::KeyMismatch {
                    cert: self.cert.clone(),
                    key: self.key.clone(),
                });
            }
            Err(source) => {
                return Err(TlsError::Unusable {
                    path: self.cert.clone(),
                    source,
                });
            }
        }
        Ok(Arc::new(certified))
    }
}

#[derive(PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// The loaded server side: the rustls configuration and the reloading certificate behind it.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    certs: Arc<ReloadingCert>,
}

impl ServerTls {
    /// The rustls server configuration: TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, no
    /// client certificates.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// The reloading certificate: call [`ReloadingCert::watch`] on it to follow file changes.
    pub fn certs(&self) -> &Arc<ReloadingCert> {
        &self.certs
    }
}

/// Loads `files` and builds the server configuration. Call it before binding the port: an
/// error names the file at fault and should end the process with exit code 64.
pub fn load(files: &TlsFiles) -> Result<ServerTls, TlsError> {
    let provider = provider();
    let contents = files.read()?;
    let current = files.certified_key(&contents, &provider)?;
    let certs = Arc::new(ReloadingCert {
        files: files.clone(),
        provider: provider.clone(),
        current: RwLock::new(current),
        seen: Mutex::new(contents),
        generation: watch::Sender::new(0),
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(certs.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        certs,
    })
}

/// What one look at the files did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The files hold what was last seen (loaded, or already reported as unusable).
    Unchanged,
    /// The files changed and the new pair is now served.
    Swapped,
}

/// Serves the current certificate to every handshake; swapped atomically when the files
/// change and the new pair loads.
///
/// Internal: a change is detected by comparing the files' bytes with the last ones seen,
/// not their modification time and size: a renewed certificate of the same size written
/// within one timestamp tick would otherwise be missed, and two small files every 30 s cost
/// nothing to read.
pub struct ReloadingCert {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<Contents>,
    generation: watch::Sender<u64>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("files", &self.files)
            .field("generation", &*self.generation.borrow())
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// The pair served to new handshakes.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Number of swaps so far, as a channel that changes on every swap (0 at start).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Reads the files now and swaps in the pair if it changed and loads. On an error the
    /// old pair stays in use; the same unusable contents are reported once, then count as
    /// [`Reload::Unchanged`] until the files change again.
    pub fn check_now(&self) -> Result<Reload, TlsError> {
        let contents = self.files.read()?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == contents {
            return Ok(Reload::Unchanged);
        }
        let loaded = self.files.certified_key(&contents, &self.provider);
        *seen = contents;
        let key = loaded?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = key;
        self.generation.send_modify(|g| *g += 1);
        Ok(Reload::Swapped)
    }

    /// Checks the files every `interval` (see [`DEFAULT_RELOAD_INTERVAL`]) until dropped;
    /// spawn it next to the server.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let start = tokio::time::Instant::now() + interval;
        let mut ticks = tokio::time::interval_at(start, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            // Internal: two small local files; reading them inline is cheaper than a
            // blocking-pool hop.
            match self.check_now() {
                Ok(Reload::Swapped) => tracing::info!(
                    cert = %self.files.cert.display(),
                    "TLS certificate reloaded"
                ),
                Ok(Reload::Unchanged) => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    "TLS certificate files changed but cannot be loaded; keeping the current pair"
                ),
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}
