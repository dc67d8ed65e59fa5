//! The HTTP clients for calls to workers, and the CA that https workers are verified with.
//!
//! Workers with `USE_SSL=true` present certificates signed by Vast's own root CA, which no
//! system trust store holds. The CA is the one given ([`ClientConfig::worker_ca`]: `--ca-cert`
//! / `VAST_CA_CERT`), else Vast's, fetched from the console once and cached
//! ([`crate::tls::vast_ca`]), as the Vast client does. The fetch happens on the first https
//! worker only, so a plain-http deployment (the demo, the local autoscaler) never fetches
//! anything; concurrent first requests share one fetch, and a failed fetch is tried again by
//! the next https request.
//!
//! Internal: two reqwest clients. https workers get one built with
//! `tls_backend_preconfigured`, trusting only the worker CA, and the choice is made by the
//! URL's scheme, so an https worker is never checked against the system's roots and an
//! https URL is never sent as plain http.

use super::{ClientConfig, ClientError};
use crate::tls::client::WorkerCa;
use crate::tls::vast_ca;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Idle time after which a pooled worker connection is closed: below the idle timeouts of
/// common servers, so a pooled connection is rarely one the worker has just closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Debug)]
pub(crate) struct Workers {
    /// For `http://` workers.
    http: reqwest::Client,
    /// For `https://` workers: set at construction when a CA is given, else on first use.
    https: OnceCell<reqwest::Client>,
    connect_timeout: Duration,
    console_url: String,
    ca_cache: PathBuf,
}

impl Workers {
    pub(crate) fn new(config: &ClientConfig) -> Result<Workers, ClientError> {
        let https = match &config.worker_ca {
            Some(ca) => OnceCell::new_with(Some(https_client(ca, config.connect_timeout)?)),
            None => OnceCell::new(),
        };
        Ok(Workers {
            http: build(builder(config.connect_timeout))?,
            https,
            connect_timeout: config.connect_timeout,
            console_url: config.console_url.clone(),
            ca_cache: config.ca_cache.clone(),
        })
    }

    /// The client for a worker at `url`: for https, the one trusting the worker CA, loading
    /// the CA first if needed.
    pub(crate) async fn for_url(&self, url: &str) -> Result<&reqwest::Client, ClientError> {
        if is_https(url) {
            self.https().await
        } else {
            Ok(&self.http)
        }
    }

    /// The https client, fetching (or reading the cached) Vast root CA if none was given.
    pub(super) async fn https(&self) -> Result<&reqwest::Client, ClientError> {
        self.https
            .get_or_try_init(|| async {
                let ca = vast_ca::fetch_cached(&self.console_url, &self.ca_cache)
                    .await
                    .map_err(ClientError::WorkerCa)?;
                tracing::info!(console = %self.console_url, cache = %self.ca_cache.display(),
                    "verifying https workers with Vast's root CA");
                https_client(&ca, self.connect_timeout)
            })
            .await
    }
}

fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

fn builder(connect_timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
}

fn https_client(ca: &WorkerCa, connect_timeout: Duration) -> Result<reqwest::Client, ClientError> {
    let tls = ca.client_config().map_err(ClientError::WorkerCa)?;
    build(builder(connect_timeout).tls_backend_preconfigured(tls))
}

fn build(builder: reqwest::ClientBuilder) -> Result<reqwest::Client, ClientError> {
    builder
        .build()
        .map_err(|e| ClientError::Config(format!("HTTP client: {e}")))
}

/// The TLS failure behind a failed worker call, if that is what it was: a certificate the
/// worker CA does not verify (another issuer, another address, expired), or a handshake
/// that went wrong.
pub(crate) fn tls_failure(err: &reqwest::Error) -> Option<&rustls::Error> {
    causes(err).find_map(|e| e.downcast_ref::<rustls::Error>())
}

/// `err`, then the errors behind it, innermost last.
pub(crate) fn causes<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| {
        // Internal: `io::Error::source` skips the error it wraps (and reqwest nests one
        // io::Error in another), so step into it instead.
        match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_decides_and_is_case_insensitive() {
        assert!(is_https("https://1.2.3.4:443"));
        assert!(is_https("HTTPS://1.2.3.4"));
        assert!(!is_https("http://1.2.3.4"));
        assert!(!is_https("http"));
    }
}
