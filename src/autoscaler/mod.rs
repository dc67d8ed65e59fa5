//! `vespa autoscaler`: a local control plane speaking the Vast autoscaler's protocol.
//!
//! It is what a client and a fleet of workers need to run without Vast: clients ask
//! `/route/` for a worker and get a signed `auth_data` (PROTOCOL.md §1, §3); workers fetch
//! `/pubkey/` and report to `/worker_status/` and `/delete_requests/` (§5). It routes, it does
//! not scale: the pool is whatever workers report. For development, tests and small fixed
//! fleets.
//!
//! Endpoints and workers: a worker serves every configured endpoint unless its report names
//! one in an extra `endpoint` field (a Vespa extension; Vast's workers never send it), so with
//! a single endpoint every worker serves it. [`registry`] holds the pool and the routing
//! choice; [`routes`] the handlers; [`messages`] the wire formats.
//!
//! Hardened for an open port: worker reports need the master token unless `--insecure` is
//! given explicitly; workers that stop reporting are pruned; every map it keeps is capped
//! and every body it reads is limited (see [`AutoscalerConfig`] for the defaults); numbers
//! from clients and workers are checked before any arithmetic, which saturates.

mod config;
pub mod error;
pub mod messages;
pub mod metrics;
mod pending;
pub mod registry;
pub mod routes;

pub use config::{AutoscalerArgs, AutoscalerConfig, DEFAULT_LISTEN, WorkerAuth};

use registry::Registry;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// State shared by every request of one autoscaler.
#[derive(Debug)]
pub struct Shared {
    config: AutoscalerConfig,
    registry: Mutex<Registry>,
    metrics: metrics::Metrics,
    request_ids: AtomicU64,
    /// Random per-process prefix of `__request_id`, so ids stay unique across restarts.
    nonce: String,
}

impl Shared {
    fn new(config: AutoscalerConfig) -> Shared {
        let mut bytes = [0u8; 6];
        // Internal: a failed RNG only weakens uniqueness across restarts, not within one run.
        let _ = aws_lc_rs::rand::fill(&mut bytes);
        Shared {
            registry: Mutex::new(Registry::new(config.limits())),
            metrics: metrics::Metrics::new(config.endpoints.keys()),
            config,
            request_ids: AtomicU64::new(1),
            nonce: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// The configuration the autoscaler was started with.
    pub fn config(&self) -> &AutoscalerConfig {
        &self.config
    }

    /// The live counters served at `GET /metrics`.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    /// The worker pool. Never hold the guard across an `.await`.
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic elsewhere cannot leave the registry half-updated in a way that matters more
        // than refusing every later request would.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_request_id(&self) -> String {
        let n = self.request_ids.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.nonce)
    }
}

/// A running autoscaler. Dropping it closes the listener and every open connection.
#[derive(Debug)]
pub struct Autoscaler {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Autoscaler {
    /// Binds `config.listen` and starts serving.
    pub async fn start(config: AutoscalerConfig) -> std::io::Result<Autoscaler> {
        let listener = crate::serve::bind(config.listen)?;
        Ok(Self::serve(listener, config))
    }

    /// Starts serving on an already bound listener.
    pub fn serve(listener: TcpListener, config: AutoscalerConfig) -> Autoscaler {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let shared = Arc::new(Shared::new(config));
        let handler_shared = Arc::clone(&shared);
        let task = tokio::spawn(crate::serve::accept_loop(listener, move |req| {
            let shared = Arc::clone(&handler_shared);
            async move { routes::handle(&shared, req).await }
        }));
        Autoscaler { addr, shared, task }
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the base URL workers and clients use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The public key served at `/pubkey/` (SubjectPublicKeyInfo PEM).
    pub fn public_key_pem(&self) -> &str {
        self.shared.config.signing_key.public_key_pem()
    }

    /// Shared state, for status and tests.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Drop for Autoscaler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs the autoscaler until interrupted; returns the exit code (64 for invalid flags).
pub async fn run(args: &AutoscalerArgs) -> i32 {
    let config = match AutoscalerConfig::from_args(args, &crate::env::ProcessEnv) {
        Ok(c) => c,
        Err(e) => return e.eprint(),
    };
    if args.print_pubkey {
        if args.key_file.is_none() {
            eprintln!("vespa: no --key-file given: this is a fresh key that nothing will use");
        }
        print!("{}", config.signing_key.public_key_pem());
        let _ = std::io::stdout().flush();
        return 0;
    }
    crate::logging::init(&args.log_level, false);
    if args.key_file.is_none() {
        tracing::warn!(
            "no --key-file: signing with a key generated now; workers must fetch /pubkey/ again after a restart"
        );
    }
    if config.worker_auth == WorkerAuth::Insecure {
        tracing::warn!(
            "--insecure: worker reports are not authenticated; anyone who reaches this port can add workers"
        );
    }
    tracing::info!(
        endpoints = ?config.endpoints.keys().collect::<Vec<_>>(),
        signature_form = ?config.signature_form,
        stale_after_secs = config.stale_after.as_secs_f64(),
        prune_after_secs = config.prune_after.as_secs_f64(),
        master_token = matches!(config.worker_auth, WorkerAuth::MasterToken(_)),
        max_workers = config.max_workers,
        max_routed_per_worker = config.max_routed_per_worker,
        max_report_body = config.max_report_body,
        max_delete_body = config.max_delete_body,
        "autoscaler configured"
    );
    let listen = config.listen;
    let autoscaler = match Autoscaler::start(config).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vespa: cannot listen on {listen}: {e}");
            return 1;
        }
    };
    let stop = crate::serve::shutdown_signal();
    println!("listening on {}", autoscaler.url());
    stop.await;
    0
}
