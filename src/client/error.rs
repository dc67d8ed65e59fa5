//! What can go wrong when calling an endpoint, and whose fault it is.
//!
//! One variant per cause a caller acts on differently: a refused key or an unknown
//! endpoint is the caller's to fix, no worker in time is worth retrying later, an
//! unreachable autoscaler or worker is the platform's. Callers branch on the predicates
//! (`is_auth()`, `is_no_worker()`, …), never on message text. The `vespa proxy` turns each
//! into an HTTP status in one place (`proxy::error_response`).

use crate::tls::TlsError;
use serde_json::Value;
use std::time::Duration;

/// Why a request through [`Client`](super::Client) failed before its response started.
/// Errors after that (a worker that dies mid-stream) surface from the response body.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The client configuration cannot be used (a URL that does not parse, zero attempts).
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// `/route/` refused the API key (401 or 403): the caller's key is wrong for this
    /// endpoint.
    #[error(
        "the autoscaler refused the API key for endpoint {endpoint:?} (HTTP {status}): {message}; check --api-key / VAST_API_KEY"
    )]
    Auth {
        /// The endpoint name.
        endpoint: String,
        /// 401 or 403.
        status: u16,
        /// The autoscaler's explanation.
        message: String,
    },
    /// `/route/` does not know the endpoint (404): a typo in the endpoint name, or an
    /// endpoint that was deleted.
    #[error("the autoscaler does not know endpoint {endpoint:?} (HTTP 404): {message}")]
    UnknownEndpoint {
        /// The endpoint name.
        endpoint: String,
        /// The autoscaler's explanation.
        message: String,
    },
    /// `/route/` refused the request with another 4xx: the request the client built is
    /// wrong (a Vespa bug, or an autoscaler speaking another protocol version).
    #[error("the autoscaler rejected the route request (HTTP {status}): {message}")]
    RouteRejected {
        /// The status.
        status: u16,
        /// The autoscaler's explanation.
        message: String,
    },
    /// The autoscaler could not be reached, answered 5xx, or answered something that is
    /// not a route, on every attempt.
    #[error("autoscaler unavailable at {url}: {reason}")]
    AutoscalerUnavailable {
        /// The `/route/` URL.
        url: String,
        /// What happened on the last attempt.
        reason: String,
        /// The transport error, when there was one.
        #[source]
        source: Option<reqwest::Error>,
    },
    /// No worker of the endpoint became ready within the route timeout.
    #[error(
        "no worker of endpoint {endpoint:?} was ready within {:.1} s (workers: {status})",
        waited.as_secs_f64()
    )]
    NoWorker {
        /// The endpoint name.
        endpoint: String,
        /// How long the client polled.
        waited: Duration,
        /// The autoscaler's last census of the endpoint's workers (`null` if none given).
        status: Value,
    },
    /// Every attempt to reach a worker failed before a response started (connection
    /// refused or reset).
    #[error("worker unavailable: {attempts} attempt(s) failed, the last at {url}")]
    WorkerUnavailable {
        /// The worker URL of the last attempt.
        url: String,
        /// How many workers were tried.
        attempts: u32,
        /// The last transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The TLS handshake with an https worker failed on every attempt, most often because
    /// its certificate does not verify against the worker CA (another issuer, or issued for
    /// another address).
    #[error(
        "TLS with worker {url} failed after {attempts} attempt(s): {reason} (https workers are verified against --ca-cert / VAST_CA_CERT, else Vast's root CA)"
    )]
    WorkerTls {
        /// The worker URL of the last attempt.
        url: String,
        /// How many workers were tried.
        attempts: u32,
        /// The TLS error, e.g. `invalid peer certificate: UnknownIssuer`.
        reason: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// No CA to verify https workers with: Vast's root CA could not be fetched from the
    /// console (or the CA given cannot be used).
    #[error("no CA to verify https workers with: {0}; give one with --ca-cert or VAST_CA_CERT")]
    WorkerCa(#[source] TlsError),
    /// The worker refused a session call: `/session/create` on every attempt (at
    /// `MAX_SESSIONS`, draining), or `/session/health` / `/session/end` with an error.
    #[error("the worker at {url} refused the session call (HTTP {status}): {message}")]
    SessionRefused {
        /// The worker URL.
        url: String,
        /// Its status.
        status: u16,
        /// Its explanation.
        message: String,
    },
}

impl ClientError {
    /// The same error, counting `n` attempts when it counts them.
    pub(crate) fn after_attempts(mut self, n: u32) -> Self {
        if let Self::WorkerUnavailable { attempts, .. } | Self::WorkerTls { attempts, .. } =
            &mut self
        {
            *attempts = n;
        }
        self
    }

    /// The configuration is invalid.
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Config(_))
    }

    /// The autoscaler refused the API key.
    pub fn is_auth(&self) -> bool {
        matches!(self, Self::Auth { .. })
    }

    /// The autoscaler does not know the endpoint.
    pub fn is_unknown_endpoint(&self) -> bool {
        matches!(self, Self::UnknownEndpoint { .. })
    }

    /// The autoscaler rejected the route request for another reason (4xx).
    pub fn is_route_rejected(&self) -> bool {
        matches!(self, Self::RouteRejected { .. })
    }

    /// The autoscaler could not be reached or did not answer usefully.
    pub fn is_autoscaler_unavailable(&self) -> bool {
        matches!(self, Self::AutoscalerUnavailable { .. })
    }

    /// No worker became ready within the route timeout; worth retrying later.
    pub fn is_no_worker(&self) -> bool {
        matches!(self, Self::NoWorker { .. })
    }

    /// No worker could be reached, after every retry.
    pub fn is_worker_unavailable(&self) -> bool {
        matches!(self, Self::WorkerUnavailable { .. })
    }

    /// The TLS handshake with an https worker failed (e.g. a certificate the worker CA does
    /// not verify), after every retry.
    pub fn is_worker_tls(&self) -> bool {
        matches!(self, Self::WorkerTls { .. })
    }

    /// A worker refused a session call.
    pub fn is_session_refused(&self) -> bool {
        matches!(self, Self::SessionRefused { .. })
    }

    /// There is no CA to verify https workers with (the download failed).
    pub fn is_worker_ca(&self) -> bool {
        matches!(self, Self::WorkerCa(_))
    }
}
