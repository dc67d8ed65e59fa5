//! `vespa worker`: the proxy in front of a model server.
//!
//! Data flows one way: accept ([`crate::serve`]) → envelope ([`envelope`]) → auth ([`auth`]) →
//! admission ([`admission`], over the [`ledger`]) → forward ([`forward`], [`backend`]) →
//! relay ([`relay`]). Start-up is [`startup`] with its states in [`lifecycle`]; reports to
//! the autoscaler are [`report`]; the worker's own routes are [`routes`]; sessions are
//! [`session`]. This file wires the parts together.

pub mod admission;
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
pub mod model_log;
pub mod observe;
pub mod pubkey;
pub mod relay;
pub mod report;
pub mod routes;
pub mod session;
mod startup;
pub mod websocket;

use crate::tls::server::ServerTls;
use admission::{Admission, AdmissionRules, WorkloadRule};
use auth::{Auth, Verifier};
use backend::Backend;
use config::WorkerConfig;
use forward::Forward;
use ledger::{Ledger, Recorder};
use lifecycle::{Lifecycle, State};
use observe::{Metrics, Observer};
use report::{Book, Reporter, Sources};
use session::{CloseReason, Sessions};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use startup::{beacon_reporter, worker_url};

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
    /// Interval counters and ended requests for the reports.
    pub book: Arc<Book>,
    /// Metrics, request ids and the access log.
    pub observer: Arc<Observer>,
    /// Open sessions.
    pub sessions: Arc<Sessions>,
    /// Open WebSockets, which the drain closes.
    pub websockets: websocket::Sockets,
    admission: Admission,
    auth: Auth,
    forward: Forward,
    /// Reports to the autoscaler, when `REPORT_ADDR` is set.
    pub reporter: Option<Reporter>,
    /// Set by `POST /pyworker/update`: drain and exit for the restart.
    update: watch::Sender<bool>,
    /// `MAX_BUFFERED_BYTES` in KiB permits, shared by every buffered request body.
    buffered: Arc<tokio::sync::Semaphore>,
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The TLS certificate or key cannot be used; the message names the file.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running worker. Dropping it stops accepting connections and the background tasks.
#[derive(Debug)]
pub struct Worker {
    addr: SocketAddr,
    /// The plain-HTTP `/session/end` listener's address, when it is bound.
    session_end_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    /// Set to stop accepting and close every connection gracefully.
    stop: watch::Sender<bool>,
    /// Becomes true when the accept loop has stopped and every connection has closed.
    closed: watch::Receiver<bool>,
}

/// Time connections get, past the drain timeout, to write out what they were handed: the
/// working set can empty just as the timeout ends, with the last frames not yet on the wire.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

impl Worker {
    /// Loads the TLS certificate and key (with `USE_SSL`), binds the listen address and
    /// starts serving; readiness follows in the background. Bad TLS files fail before any
    /// port is bound.
    pub async fn start(config: WorkerConfig) -> Result<Worker, StartError> {
        let tls = config
            .tls
            .as_ref()
            .map(crate::tls::server::load)
            .transpose()?;
        let listener = crate::serve::bind(config.listen).map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        Ok(Self::serve(listener, config, tls))
    }

    fn serve(
        listener: tokio::net::TcpListener,
        config: WorkerConfig,
        tls: Option<ServerTls>,
    ) -> Worker {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let reporter = startup::reporter_for(&config, addr);
        let url = worker_url(&config, addr);
        let shared = Arc::new(Shared::new(config, reporter, &url));
        let handler = {
            let shared = Arc::clone(&shared);
            move |req, client| handler::handle(Arc::clone(&shared), req, client)
        };
        let mut tasks = Vec::new();
        let tls = tls.map(|tls| {
            tasks.push(tokio::spawn(
                Arc::clone(tls.certs()).watch(crate::tls::server::DEFAULT_RELOAD_INTERVAL),
            ));
            crate::serve::Tls::new(tls.config())
        });
        let (stop, mut stop_rx) = watch::channel(false);
        let (closed_tx, closed) = watch::channel(false);
        let limits = shared.config.serve_limits;
        let session_end_addr = session_end_listener(&shared, stop.subscribe(), &mut tasks);
        let accept = async move {
            let stopped = async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            };
            crate::serve::serve(listener, tls, limits, stopped, handler).await;
            let _ = closed_tx.send(true);
        };
        tasks.push(tokio::spawn(accept));
        tasks.push(tokio::spawn(
            Arc::clone(&shared.backend).reap_idle_forever(),
        ));
        tasks.push(tokio::spawn(Arc::clone(&shared.sessions).expire_forever()));
        let (key_tx, key_rx) = watch::channel(startup::KeyState::Pending);
        if shared.auth.verifier().is_some() {
            let unit = shared.config.pubkey_backoff_unit;
            tasks.push(tokio::spawn(startup::fetch_key(
                Arc::clone(&shared),
                key_tx,
                unit,
            )));
        }
        if let Some(r) = &shared.reporter {
            let tick = shared.config.report_tick;
            tasks.push(tokio::spawn(r.clone().status_loop(shared.sources(), tick)));
            tasks.push(tokio::spawn(
                r.clone().delete_loop(Arc::clone(&shared.book), tick),
            ));
        }
        tasks.push(tokio::spawn(startup::run(Arc::clone(&shared), key_rx)));
        Worker {
            addr,
            session_end_addr,
            shared,
            tasks,
            stop,
            closed,
        }
    }

    /// Resolves once Vast's rolling update asked the worker to drain and exit
    /// (`POST /pyworker/update`).
    pub async fn update_requested(&self) {
        let mut rx = self.shared.update.subscribe();
        let _ = rx.wait_for(|asked| *asked).await;
    }

    /// The scheme clients use: `https` with `USE_SSL`.
    pub fn scheme(&self) -> &'static str {
        if self.shared.config.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Graceful shutdown (PROTOCOL.md §6): refuse new work with 503 `draining`, wait up to
    /// `timeout` for the working set's requests to end (open sessions are not waited for),
    /// close the sessions still open (their on-close callbacks run, each within
    /// `SESSION_ON_CLOSE_TIMEOUT`), stop accepting and close every connection gracefully
    /// (each response in progress is written to its last byte, chunked terminator
    /// included; [`CLOSE_GRACE`] past the timeout at most), then send a last report.
    /// Returns whether all in-flight work finished and was written out in time.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        self.shared.lifecycle.set(State::Draining);
        let ledger = &self.shared.ledger;
        let emptied = tokio::time::timeout(timeout, ledger.wait_until(|s| s.working() == 0))
            .await
            .is_ok();
        if !emptied {
            tracing::warn!(
                left = ledger.snapshot().working(),
                websockets = self.shared.websockets.open(),
                "drain timeout passed with requests still in flight"
            );
        }
        self.shared.sessions.close_all(CloseReason::Drained).await;
        // Open WebSockets get a close frame 1001 each way and CLOSE_GRACE to answer it.
        let sockets = &self.shared.websockets;
        sockets.close_all();
        let grace = tokio::time::Instant::now() + CLOSE_GRACE;
        let (closed, _) = tokio::join!(
            self.close(deadline.max(grace)),
            tokio::time::timeout_at(grace + CLOSE_GRACE, sockets.all_closed())
        );
        if let Some(r) = &self.shared.reporter {
            r.send_status(&self.shared.sources(), &mut report::Disk::default())
                .await;
            r.send_deletions(&self.shared.book).await;
        }
        emptied && closed
    }

    /// Stops accepting and shuts every connection down gracefully; returns whether they all
    /// closed before `deadline`.
    async fn close(&self, deadline: tokio::time::Instant) -> bool {
        let _ = self.stop.send(true);
        let mut closed = self.closed.clone();
        let done = tokio::time::timeout_at(deadline, closed.wait_for(|c| *c)).await;
        if done.is_err() {
            tracing::warn!("connections still open after the drain; closing them");
        }
        done.is_ok()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The plain-HTTP `/session/end` listener's address (`WORKER_HTTP_PORT`), when bound.
    pub fn session_end_addr(&self) -> Option<SocketAddr> {
        self.session_end_addr
    }

    /// Shared state, for status and tests.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

/// Binds and serves the plain-HTTP `/session/end` listener beside the worker, when
/// `WORKER_HTTP_PORT` asks for one; a port that cannot be bound is logged, the
/// worker runs on without it. Returns the bound address.
fn session_end_listener(
    shared: &Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Option<SocketAddr> {
    // The configured port, not the bound one: beside an ephemeral port there is no default.
    let wanted = shared
        .config
        .worker_http_port
        .resolve(shared.config.listen)?;
    let listener = match crate::serve::bind(wanted) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(addr = %wanted, error = %e, "cannot listen for POST /session/end on plain HTTP (WORKER_HTTP_PORT); running without it");
            return None;
        }
    };
    let bound = listener.local_addr().ok()?;
    tracing::info!(addr = %bound, "POST /session/end also served on plain HTTP (WORKER_HTTP_PORT)");
    let handler = {
        let shared = Arc::clone(shared);
        move |req, client| session::listener::handle(Arc::clone(&shared), req, client)
    };
    let limits = shared.config.serve_limits;
    tasks.push(tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        crate::serve::serve(listener, None, limits, stopped, handler).await;
    }));
    Some(bound)
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shared.websockets.close_all();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Shared {
    /// The public-key verifier, in signed mode.
    pub fn verifier(&self) -> Option<&Verifier> {
        self.auth.verifier()
    }

    /// Requests refused with 401 since start (never in the ledger or the reports).
    pub fn unauthorized_total(&self) -> u64 {
        self.admission.unauthorized_total()
    }

    /// What the reports read.
    pub fn sources(&self) -> Sources {
        Sources {
            ledger: Arc::clone(&self.ledger),
            lifecycle: Arc::clone(&self.lifecycle),
            book: Arc::clone(&self.book),
        }
    }

    fn new(config: WorkerConfig, reporter: Option<Reporter>, url: &str) -> Self {
        let backend = Arc::new(
            Backend::new(
                config.backend_url.clone(),
                config.connect_timeout,
                config.pool_idle_timeout,
            )
            .with_api_key(config.backend_api_key.as_deref()),
        );
        let book = Arc::new(Book::new(reporter.is_some()));
        let reports = match &reporter {
            Some(r) => r.counters().clone(),
            None => observe::report_counters(),
        };
        let observer = Arc::new(Observer::new(
            Metrics::new(reports),
            config.access_log,
            config.trace_context,
        ));
        let auth = if config.unsecured {
            Auth::Unsecured
        } else {
            let verifier = Verifier::new(config.signature_form, config.replay_window)
                .counting_in(observer.metrics.rsa_verifications());
            Auth::Signed(Box::new(match config.check_signed_url {
                true => verifier.own_url(url),
                false => verifier,
            }))
        };
        let recorder: Arc<dyn Recorder> = Arc::clone(&book) as Arc<dyn Recorder>;
        let ledger = Ledger::with_recorder(config.max_perf, config.max_wait_time, Some(recorder));
        let sessions = Arc::new(Sessions::new(
            config.sessions,
            Arc::clone(&ledger),
            Arc::clone(&backend),
            Arc::clone(&observer),
        ));
        let lifecycle = Arc::new(Lifecycle::default());
        let rules = AdmissionRules {
            concurrency: match (config.allow_parallel, config.max_concurrency) {
                (false, _) => Some(1),
                (true, n) => n,
            },
            workload: WorkloadRule {
                profile: config.benchmark.profile().cloned(),
                default_cost: config.default_cost,
                max_cost: config.max_cost,
            },
            starting_retry_after: config.ready_poll_interval,
        };
        let forward = Forward {
            backend: Arc::clone(&backend),
            max_body_size: config.max_body_size,
            response_start_timeout: config.response_start_timeout,
        };
        Self {
            admission: Admission::new(Arc::clone(&ledger), Arc::clone(&lifecycle), rules),
            ledger,
            lifecycle,
            backend,
            book,
            observer,
            sessions,
            websockets: websocket::Sockets::default(),
            auth,
            forward,
            reporter,
            update: watch::channel(false).0,
            buffered: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(config.max_buffered_bytes.div_ceil(1024))
                    .unwrap_or(usize::MAX)
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            config,
        }
    }
}
