//! `vespa worker`: the proxy in front of a model server.
//!
//! Data flows one way: accept ([`server`]) → envelope ([`envelope`]) → auth ([`auth`]) →
//! admission ([`ledger`]) → forward ([`forward`], [`backend`]) → relay ([`relay`]). Start-up
//! readiness is [`lifecycle`]; the worker's own routes are [`routes`].

pub mod auth;
pub mod backend;
pub mod envelope;
pub mod error;
pub mod forward;
mod handler;
pub mod ledger;
pub mod lifecycle;
pub mod relay;
pub mod routes;
mod server;

use crate::config::WorkerConfig;
use auth::Auth;
use backend::Backend;
use http::HeaderValue;
use ledger::Ledger;
use lifecycle::{HealthWait, Lifecycle};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// State shared by every request of one worker.
#[derive(Debug)]
pub struct Shared {
    /// The configuration the worker was started with.
    pub config: WorkerConfig,
    /// Working set and totals.
    pub ledger: Arc<Ledger>,
    /// Start-up state.
    pub lifecycle: Arc<Lifecycle>,
    /// The model server.
    pub backend: Arc<Backend>,
    limiter: Option<Arc<Semaphore>>,
    auth: Auth,
    backend_auth: Option<HeaderValue>,
    synthetic_ids: AtomicU64,
}

/// A running worker. Dropping it stops accepting connections and the background tasks.
#[derive(Debug)]
pub struct Worker {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Worker {
    /// Binds the listen address at once and starts serving; readiness follows in the
    /// background.
    pub async fn start(config: WorkerConfig) -> std::io::Result<Worker> {
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Self::serve(listener, config))
    }

    /// Starts serving on an already bound listener.
    pub fn serve(listener: TcpListener, config: WorkerConfig) -> Worker {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let shared = Arc::new(Shared::new(config));
        let accept = tokio::spawn(server::accept_loop(listener, Arc::clone(&shared)));
        let wait = HealthWait {
            path: shared.config.healthcheck_endpoint.clone(),
            timeout: shared.config.ready_timeout,
            interval: shared.config.ready_poll_interval,
        };
        let startup = tokio::spawn(lifecycle::wait_for_backend(
            Arc::clone(&shared.lifecycle),
            Arc::clone(&shared.backend),
            wait,
        ));
        Worker {
            addr,
            shared,
            tasks: vec![accept, startup],
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shared state, for status and tests.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Shared {
    fn new(config: WorkerConfig) -> Self {
        let limit = match (config.allow_parallel, config.max_concurrency) {
            (false, _) => Some(1),
            (true, n) => n,
        };
        let backend = Backend::new(
            config.backend_url.clone(),
            config.connect_timeout,
            config.pool_idle_timeout,
        );
        let auth = if config.unsecured {
            Auth::Unsecured
        } else {
            Auth::Envelope
        };
        let backend_auth = config
            .backend_api_key
            .as_ref()
            .and_then(|k| HeaderValue::from_str(&format!("Bearer {k}")).ok())
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        Self {
            ledger: Ledger::new(config.max_perf, config.max_wait_time),
            lifecycle: Arc::new(Lifecycle::default()),
            backend: Arc::new(backend),
            limiter: limit.map(|n| Arc::new(Semaphore::new(n))),
            auth,
            backend_auth,
            synthetic_ids: AtomicU64::new(1),
            config,
        }
    }
}
