//! `vespa worker`: the proxy in front of a model server.
//!
//! Data flows one way: accept ([`crate::serve`]) → envelope ([`envelope`]) → auth ([`auth`]) →
//! admission ([`ledger`]) → forward ([`forward`], [`backend`]) → relay ([`relay`]). Start-up
//! readiness is [`lifecycle`]; the worker's own routes are [`routes`].

pub mod auth;
pub mod backend;
pub mod command;
pub mod config;
pub mod envelope;
pub mod error;
pub mod forward;
mod handler;
pub mod ledger;
pub mod lifecycle;
pub mod pubkey;
pub mod relay;
pub mod routes;

use crate::profile::bench::{self, Bench, BenchEvent};
use crate::profile::{Profile, cache};
use crate::report::{ReportTarget, Reporter};
use crate::worker::config::{Benchmark, WorkerConfig};
use auth::{Auth, Verifier};
use backend::Backend;
use http::HeaderValue;
use ledger::Ledger;
use lifecycle::{HealthWait, Lifecycle, State};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
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
    /// Reports to the autoscaler, when `REPORT_ADDR` is set.
    pub reporter: Option<Reporter>,
}

/// Progress of the public key fetch.
#[derive(Debug, Clone, PartialEq)]
enum KeyState {
    Pending,
    Loaded,
    Failed(String),
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
        let reporter = reporter_for(&config, addr);
        let shared = Arc::new(Shared::new(config, reporter));
        let mut tasks = vec![tokio::spawn(crate::serve::accept_loop(listener, {
            let shared = Arc::clone(&shared);
            move |req| handler::handle(Arc::clone(&shared), req)
        }))];
        let (key_tx, key_rx) = watch::channel(KeyState::Pending);
        if shared.auth.verifier().is_some() {
            let unit = shared.config.pubkey_backoff_unit;
            tasks.push(tokio::spawn(fetch_key(Arc::clone(&shared), key_tx, unit)));
        }
        if let Some(r) = &shared.reporter {
            let tick = shared.config.report_tick;
            tasks.push(tokio::spawn(
                r.clone().status_loop(Arc::clone(&shared), tick),
            ));
            tasks.push(tokio::spawn(
                r.clone().delete_loop(Arc::clone(&shared), tick),
            ));
        }
        tasks.push(tokio::spawn(startup(Arc::clone(&shared), key_rx)));
        Worker {
            addr,
            shared,
            tasks,
        }
    }

    /// Graceful shutdown (PROTOCOL.md §6): refuse new work with 503 `draining`, wait up to
    /// `timeout` for the working set to empty, then send a last report. Returns whether
    /// all in-flight work finished in time.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.shared.lifecycle.set(State::Draining);
        let ledger = &self.shared.ledger;
        let mut changes = ledger.subscribe();
        let emptied = tokio::time::timeout(timeout, async {
            while ledger.snapshot().working() > 0 {
                if changes.changed().await.is_err() {
                    break;
                }
            }
        })
        .await
        .is_ok();
        if !emptied {
            tracing::warn!(
                left = ledger.snapshot().working(),
                "drain timeout passed with requests still in flight"
            );
        }
        if let Some(r) = &self.shared.reporter {
            r.send_status(&self.shared, &mut crate::report::Disk::default())
                .await;
            r.send_deletions(&self.shared).await;
        }
        emptied
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

/// The reporter for `config`, or `None` without `REPORT_ADDR`. The worker URL is
/// `http[s]://PUBLIC_IPADDR:VAST_TCP_PORT_<port>`, defaulting to the bound address.
fn reporter_for(config: &WorkerConfig, bound: SocketAddr) -> Option<Reporter> {
    if config.vast.report_addrs.is_empty() {
        return None;
    }
    let addrs = config
        .vast
        .report_addrs
        .iter()
        .map(|u| u.to_string().trim_end_matches('/').to_string())
        .collect();
    let target = ReportTarget::new(
        addrs,
        config.vast.container_id.unwrap_or(0),
        config.vast.master_token.clone().unwrap_or_default(),
        worker_url(config, bound),
    );
    let target = ReportTarget {
        pause: config.report_retry_pause,
        ..target
    };
    Some(Reporter::new(target, reqwest::Client::new()))
}

/// A reporter for the failure beacon of a worker that could not bind its port.
pub fn beacon_reporter(config: &WorkerConfig) -> Option<Reporter> {
    reporter_for(config, config.listen)
}

/// The URL clients reach this worker at.
pub fn worker_url(config: &WorkerConfig, bound: SocketAddr) -> String {
    let scheme = if config.vast.use_ssl { "https" } else { "http" };
    let host = match &config.vast.public_ipaddr {
        Some(ip) => ip.clone(),
        None if bound.ip().is_unspecified() => "127.0.0.1".to_string(),
        None => bound.ip().to_string(),
    };
    let port = config.vast.public_port.unwrap_or(bound.port());
    if host.contains(':') {
        format!("{scheme}://[{host}]:{port}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

async fn fetch_key(shared: Arc<Shared>, tx: watch::Sender<KeyState>, backoff_unit: Duration) {
    let addrs: Vec<String> = shared
        .config
        .vast
        .report_addrs
        .iter()
        .map(|u| u.to_string())
        .collect();
    // One control-plane client per worker: the reporter's when there is one.
    let client = shared
        .reporter
        .as_ref()
        .map(|r| r.client().clone())
        .unwrap_or_default();
    let state = match pubkey::fetch(&client, &addrs, backoff_unit).await {
        Ok(key) => {
            if let Some(v) = shared.auth.verifier() {
                v.set_key(key);
            }
            KeyState::Loaded
        }
        Err(e) => KeyState::Failed(e),
    };
    let _ = tx.send(state);
}

/// `waiting_for_backend` → (key) → `ready`, then the periodic health check.
async fn startup(shared: Arc<Shared>, mut key: watch::Receiver<KeyState>) {
    let cfg = &shared.config;
    let wait = HealthWait {
        path: cfg.healthcheck_endpoint.clone(),
        timeout: cfg.ready_timeout,
        interval: cfg.ready_poll_interval,
    };
    if !lifecycle::wait_for_backend(&shared.lifecycle, &shared.backend, &wait).await {
        return;
    }
    if let Benchmark::Profile {
        profile,
        measure: true,
    } = &cfg.benchmark
    {
        shared.lifecycle.set(State::Benchmarking);
        match capacity(cfg, profile).await {
            Ok(max_perf) => shared.ledger.set_max_perf(max_perf),
            Err(e) => {
                shared
                    .lifecycle
                    .set(State::Errored(format!("benchmark failed: {e}")));
                return;
            }
        }
    }
    if shared.auth.verifier().is_some() {
        let state = key
            .wait_for(|k| *k != KeyState::Pending)
            .await
            .map(|k| k.clone());
        if let Ok(KeyState::Failed(e)) = state {
            shared.lifecycle.set(State::Errored(e));
            return;
        }
    }
    shared.lifecycle.set(State::Ready);
    lifecycle::watch_health(
        Arc::clone(&shared.lifecycle),
        Arc::clone(&shared.backend),
        cfg.healthcheck_endpoint.clone(),
        cfg.health_interval,
    )
    .await;
}

/// The backend's capacity: from the cache when it holds a result for this profile and
/// backend, else measured (and cached).
async fn capacity(cfg: &WorkerConfig, profile: &Arc<Profile>) -> Result<f64, String> {
    let backend = cfg.backend_url.to_string();
    if let Some(path) = &cfg.benchmark_cache
        && let Some(max_perf) = cache::read(path, &profile.name, &backend)
    {
        tracing::info!(max_perf, cache = %path.display(), "capacity from the benchmark cache");
        return Ok(max_perf);
    }
    tracing::info!(profile = %profile.name, %backend, "benchmarking the backend");
    let bench = Bench::new(Arc::clone(profile), &backend, &cfg.model_name);
    let log = |e: &BenchEvent| {
        if let BenchEvent::Finished(l) = e {
            tracing::info!(
                concurrency = l.concurrency,
                throughput = l.throughput,
                requests = l.requests,
                errors = l.errors,
                "benchmark level"
            );
        }
    };
    let report = tokio::time::timeout(bench::overall_limit(profile), bench.run(&log))
        .await
        .map_err(|_| "the benchmark did not finish in time".to_string())?
        .map_err(|e| e.to_string())?;
    tracing::info!(
        max_perf = report.max_perf,
        secs = report.secs,
        "benchmark done"
    );
    if let Some(path) = &cfg.benchmark_cache {
        let entry = cache::Cached {
            max_perf: report.max_perf,
            profile: profile.name.clone(),
            backend,
        };
        if let Err(e) = cache::write(path, &entry) {
            tracing::warn!(error = %e, cache = %path.display(), "cannot write the benchmark cache");
        }
    }
    Ok(report.max_perf)
}

impl Shared {
    /// The public-key verifier, in signed mode.
    pub fn verifier(&self) -> Option<&Verifier> {
        self.auth.verifier()
    }

    fn new(config: WorkerConfig, reporter: Option<Reporter>) -> Self {
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
            Auth::Signed(Verifier::new(config.signature_form, config.replay_window))
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
            ledger: Ledger::with_reporting(
                config.max_perf,
                config.max_wait_time,
                reporter.is_some(),
            ),
            reporter,
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
