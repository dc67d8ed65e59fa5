//! Calling a serverless endpoint: the client half of the protocol (PROTOCOL.md §1, §2).
//!
//! A request to an endpoint takes two hops. First `POST {autoscaler}/route/` with the
//! endpoint name, API key and a workload estimate (`cost`); the answer is a signed
//! `auth_data` naming a worker, or "no worker ready" (the client polls). Then the request
//! goes to `{worker url}{path}`, carrying that `auth_data` unchanged: inside a JSON
//! envelope `{"auth_data", "payload"}` for JSON bodies, or in `serverless_*` query
//! parameters for GET/HEAD/DELETE and non-JSON bodies (which then travel unchanged).
//!
//! [`Client`] does both hops, retries on another worker when a worker is unreachable or
//! answers 429/503 *before* its response starts, and never replays a request whose
//! response has begun streaming (the model may already have produced tokens, and the
//! caller may already have seen them). [`proxy`] puts it behind a local HTTP port so any
//! HTTP client (the OpenAI SDK, curl) can call an endpoint unchanged; [`discovery`] finds an
//! endpoint's API key from the account key as PyWorker's `utils/endpoint_util.py` does.
//! https workers are verified against Vast's root CA (or the CA given), never the system's
//! roots: see [`ClientConfig::worker_ca`].
//!
//! Internal: request bodies are held in memory ([`bytes::Bytes`]) because a retry on
//! another worker must send them again; response bodies are streamed, never buffered.

mod backoff;
pub mod discovery;
mod envelope;
mod error;
pub mod load;
pub mod proxy;
mod route;
pub(crate) use route::error_message;
mod send;
mod session;
mod websocket;
pub(crate) mod workers;

pub use backoff::Backoff;
pub use error::ClientError;
pub use route::RouteAnswer;
pub use send::{ClientRequest, SERVED_BY_HEADER, ServedBy};
pub use session::{Session, SessionSpec};

use crate::profile::Profile;
use crate::tls::client::WorkerCa;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Vast's hosted autoscaler.
pub const DEFAULT_AUTOSCALER_URL: &str = "https://run.vast.ai";
/// Request header that carries the caller's workload estimate (PyWorker's client reads it).
pub const COST_HEADER: &str = "x-serverless-cost";
/// `replay_timeout` sent to `/route/`, seconds (the official client's value).
pub const REPLAY_TIMEOUT_SECS: u64 = 60;

/// Settings of a [`Client`]. Build with [`ClientConfig::new`], then set fields.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL of the autoscaler. Default is [`DEFAULT_AUTOSCALER_URL`].
    pub autoscaler_url: String,
    /// Endpoint name, e.g. `vLLM-Qwen3-8B`.
    pub endpoint: String,
    /// The endpoint's API key (or an account key the autoscaler accepts).
    pub api_key: String,
    /// Send every request to this worker without routing, with an unsigned synthetic
    /// `auth_data`: only an `UNSECURED=true` worker accepts it. Default is `None`.
    pub debug_worker_url: Option<String>,
    /// How long to poll `/route/` for a ready worker before [`ClientError::NoWorker`].
    /// Default is 60 s.
    pub route_timeout: Duration,
    /// Workers tried per request (the first try included), and `/route/` calls tried while
    /// the autoscaler is unreachable. Default is 3.
    pub max_attempts: u32,
    /// Delay between `/route/` polls while no worker is ready. Default is
    /// [`Backoff::default`]: the official client's 0.1–5 s growing jitter.
    pub poll_backoff: Backoff,
    /// Delay before retrying on another worker, or the autoscaler after a failure. Default
    /// is 0.1 s – min(0.25 s × (2^n + U), 2 s).
    pub retry_backoff: Backoff,
    /// Profile whose workload rules estimate `cost` when the caller gives none: the rule of
    /// the request's route, on its JSON body or its size. Default is `None`.
    pub profile: Option<Arc<Profile>>,
    /// `cost` when neither the caller nor a profile gives one. Default is 1.
    pub default_cost: f64,
    /// Timeout of one `/route/` call. Default is 10 s.
    pub route_call_timeout: Duration,
    /// Timeout for connecting to a worker. Default is 10 s. There is no overall timeout:
    /// a generation may stream for as long as it takes.
    pub connect_timeout: Duration,
    /// The CA that https workers' certificates must chain to (`--ca-cert`). Default is
    /// `None`: Vast's root CA, fetched from `console_url` on the first https worker and
    /// cached in `ca_cache`. http workers never need it.
    pub worker_ca: Option<WorkerCa>,
    /// Console base URL that Vast's root CA is fetched from. Default is
    /// [`discovery::DEFAULT_CONSOLE_URL`].
    pub console_url: String,
    /// Cache file of the fetched Vast root CA. Default is
    /// [`default_cache_path`](crate::tls::vast_ca::default_cache_path) of the process
    /// environment (`~/.cache/vespa/vast_root_ca.cer`).
    pub ca_cache: PathBuf,
}

impl ClientConfig {
    /// Defaults for `endpoint` at `autoscaler_url` with `api_key`.
    pub fn new(
        autoscaler_url: impl Into<String>,
        endpoint: impl Into<String>,
        api_key: impl Into<String>,
    ) -> ClientConfig {
        ClientConfig {
            autoscaler_url: autoscaler_url.into(),
            endpoint: endpoint.into(),
            api_key: api_key.into(),
            debug_worker_url: None,
            route_timeout: Duration::from_secs(60),
            max_attempts: 3,
            poll_backoff: Backoff::default(),
            retry_backoff: Backoff {
                floor: Duration::from_millis(100),
                base: Duration::from_millis(250),
                cap: Duration::from_secs(2),
            },
            profile: None,
            default_cost: 1.0,
            route_call_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            worker_ca: None,
            console_url: discovery::DEFAULT_CONSOLE_URL.to_string(),
            ca_cache: crate::tls::vast_ca::default_cache_path(|name| std::env::var(name).ok()),
        }
    }
}

/// A client of one endpoint. Cheap to clone; clones share connection pools.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    /// `{autoscaler}/route/`.
    route_url: String,
    /// Control-plane calls (`/route/`).
    control: reqwest::Client,
    /// Calls to workers: no redirects followed, no overall timeout.
    workers: workers::Workers,
    /// reqnum / request_idx of synthetic `auth_data` (debug mode); never 0.
    synthetic: AtomicU64,
}

impl Client {
    /// A client with `config`; fails when a URL does not parse or `max_attempts` is 0.
    pub fn new(mut config: ClientConfig) -> Result<Client, ClientError> {
        check_url("autoscaler URL", &config.autoscaler_url)?;
        if let Some(url) = &config.debug_worker_url {
            check_url("debug worker URL", url)?;
            config.debug_worker_url = Some(url.trim_end_matches('/').to_string());
        }
        if config.max_attempts == 0 {
            return Err(ClientError::Config(
                "max_attempts must be at least 1".into(),
            ));
        }
        let route_url = format!("{}/route/", config.autoscaler_url.trim_end_matches('/'));
        check_url("console URL", &config.console_url)?;
        let control = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .no_proxy()
            .build()
            .map_err(|e| ClientError::Config(format!("HTTP client: {e}")))?;
        let workers = workers::Workers::new(&config)?;
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                route_url,
                control,
                workers,
                synthetic: AtomicU64::new(1),
            }),
        })
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Loads the CA for https workers now (fetching Vast's root CA unless one was given or
    /// it is cached), instead of on the first https worker: for tools that know they will
    /// call https workers and would rather fail at start.
    pub async fn load_worker_ca(&self) -> Result<(), ClientError> {
        self.inner.workers.https().await.map(|_| ())
    }
}

fn check_url(what: &str, url: &str) -> Result<(), ClientError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(()),
        Ok(_) => Err(ClientError::Config(format!(
            "{what} must be an http:// or https:// URL (got {url:?})"
        ))),
        Err(e) => Err(ClientError::Config(format!("{what} {url:?}: {e}"))),
    }
}
