//! Start-up: the worker's public URL and reporter, the public key fetch, and the way to
//! `ready` (backend health, the benchmark or its cache, the key), then the periodic health
//! check.

use super::Shared;
use super::config::{Benchmark, ModelLog, WorkerConfig};
use super::lifecycle::{self, HealthWait, Lifecycle, State};
use super::model_log::{self, LogEvent};
use super::pubkey;
use super::report::{ReportTarget, Reporter};
use crate::profile::bench::{Bench, BenchEvent};
use crate::profile::{Profile, cache};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Progress of the public key fetch.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum KeyState {
    Pending,
    Loaded,
    Failed(String),
}

/// The reporter for `config`, or `None` without `REPORT_ADDR`. The worker URL is
/// `http[s]://PUBLIC_IPADDR:VAST_TCP_PORT_<port>`, defaulting to the bound address.
pub(super) fn reporter_for(config: &WorkerConfig, bound: SocketAddr) -> Option<Reporter> {
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

/// Loads the autoscaler's public key, retrying until it arrives (the worker reports
/// errored after the first attempts fail, and becomes ready once it loads); then fetches it
/// again whenever a failed signature asks (a rotated key).
pub(super) async fn fetch_key(
    shared: Arc<Shared>,
    tx: watch::Sender<KeyState>,
    backoff_unit: Duration,
) {
    let Some(verifier) = shared.auth.verifier() else {
        return;
    };
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
    let mut attempt = 0;
    loop {
        match pubkey::fetch_any(&client, &addrs).await {
            Ok(key) => {
                verifier.set_key(key);
                let _ = tx.send(KeyState::Loaded);
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt = attempt + 1, "cannot fetch the autoscaler public key");
                if attempt + 1 == pubkey::ATTEMPTS_BEFORE_ERROR {
                    let _ = tx.send(KeyState::Failed(format!(
                        "failed to get the autoscaler public key after {} attempts (still trying): {e}",
                        attempt + 1
                    )));
                }
            }
        }
        tokio::time::sleep(pubkey::pause(attempt, backoff_unit)).await;
        attempt += 1;
    }
    loop {
        verifier.refetch_requested().await;
        tracing::info!("a well-formed signature failed: fetching the autoscaler public key again");
        match pubkey::fetch_any(&client, &addrs).await {
            Ok(key) => verifier.set_key(key),
            Err(e) => tracing::warn!(error = %e, "cannot fetch the autoscaler public key again"),
        }
    }
}

/// What the model log has said so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogState {
    Loading,
    Loaded,
    Failed,
}

/// Start-up and, for the worker's life, the model log: `waiting_for_backend` → (load
/// marker, health) → `benchmarking` → (key) → `ready`, then the periodic health check.
pub(super) async fn run(shared: Arc<Shared>, key: watch::Receiver<KeyState>) {
    let (log_tx, log_rx) = watch::channel(LogState::Loading);
    let log = async {
        match &shared.config.model_log {
            Some(log) => follow_model_log(&shared.lifecycle, log, log_tx).await,
            None => std::future::pending().await,
        }
    };
    tokio::join!(log, start(&shared, key, log_rx));
}

/// Follows the model log for the worker's life: a load marker is reported on `state`, an
/// error line fails the worker for good, an info line is logged.
async fn follow_model_log(lifecycle: &Lifecycle, log: &ModelLog, state: watch::Sender<LogState>) {
    tracing::info!(model_log = %log.path.display(), "following the model log");
    let (tx, mut lines) = mpsc::channel(256);
    let follow = model_log::follow(log.path.clone(), MODEL_LOG_POLL, tx);
    let classify = async {
        while let Some(line) = lines.recv().await {
            match log.markers.classify(&line) {
                Some(LogEvent::Loaded(line)) if *state.borrow() == LogState::Loading => {
                    tracing::info!(line = %line, "model log: model loaded");
                    state.send_replace(LogState::Loaded);
                }
                // Error lines decide only while the model loads. Once it is loaded the log also
                // carries what clients send (prompts echoed, tracebacks of one bad request),
                // so a line there must not end the worker: the health checks decide.
                Some(LogEvent::Error(line)) if *state.borrow() == LogState::Loaded => {
                    tracing::warn!(line = %line, "model log: error line after load (health checks decide)");
                }
                Some(LogEvent::Error(line)) => {
                    lifecycle.fail(format!("model error: {line}"));
                    state.send_replace(LogState::Failed);
                }
                Some(LogEvent::Info(line)) => tracing::info!(line = %line, "model log"),
                Some(LogEvent::Loaded(_)) | None => {}
            }
        }
    };
    tokio::join!(follow, classify);
}

/// How often the model log is read.
const MODEL_LOG_POLL: Duration = Duration::from_millis(100);

async fn start(
    shared: &Arc<Shared>,
    mut key: watch::Receiver<KeyState>,
    mut log: watch::Receiver<LogState>,
) {
    let cfg = &shared.config;
    let deadline = tokio::time::Instant::now() + cfg.ready_timeout;
    shared.lifecycle.set(State::WaitingForBackend);
    if let (Some(model_log), true) = (&cfg.model_log, cfg.readiness.uses_logs()) {
        let waited = tokio::time::timeout_at(deadline, log.wait_for(|s| *s != LogState::Loading))
            .await
            .map(|r| r.map(|s| *s));
        match waited {
            Ok(Ok(LogState::Loaded)) => {}
            Ok(_) => return,
            Err(_) => {
                shared.lifecycle.set(State::Errored(format!(
                    "no load marker in {} within {} s",
                    model_log.path.display(),
                    cfg.ready_timeout.as_secs()
                )));
                return;
            }
        }
    }
    if cfg.readiness.uses_health() {
        let wait = HealthWait {
            path: cfg.healthcheck_endpoint.clone(),
            timeout: deadline.saturating_duration_since(tokio::time::Instant::now()),
            interval: cfg.ready_poll_interval,
            probe_timeout: cfg.health_probe_timeout,
        };
        if !lifecycle::wait_for_backend(&shared.lifecycle, &shared.backend, &wait).await {
            return;
        }
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
            // Errored while the key cannot be had; ready as soon as it arrives.
            shared.lifecycle.set(State::Errored(e));
            if key.wait_for(|k| *k == KeyState::Loaded).await.is_err() {
                return;
            }
        }
    }
    shared.lifecycle.set(State::Ready);
    lifecycle::watch_health(
        Arc::clone(&shared.lifecycle),
        Arc::clone(&shared.backend),
        cfg.healthcheck_endpoint.clone(),
        cfg.health_interval,
        cfg.health_probe_timeout,
    )
    .await;
}

/// Slack over the benchmark's own bound before start-up gives up on it.
const GUARD: Duration = Duration::from_secs(10);

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
    let bench = Bench::new(Arc::clone(profile), &backend, &cfg.model_name)
        .api_key(cfg.backend_api_key.as_deref())
        .max_time(cfg.benchmark_max_time);
    let log = |e: &BenchEvent| match e {
        BenchEvent::Finished(l) => tracing::info!(
            concurrency = l.concurrency,
            throughput = l.throughput,
            window_secs = l.window_secs,
            requests = l.requests,
            errors = l.errors,
            decode_throughput = l.streamed.as_ref().map(|s| s.decode_throughput),
            streams = l.streamed.as_ref().map(|s| s.streams),
            prefill_secs = l.streamed.as_ref().map(|s| s.prefill_secs),
            "benchmark level"
        ),
        BenchEvent::StreamRefused { reason } => tracing::warn!(
            %reason,
            "the backend refused the streamed benchmark request; counting whole answers"
        ),
        _ => {}
    };
    // The benchmark keeps its own bound; this one only guards against a bug in it.
    let guard = bench.bound() + GUARD;
    let report = tokio::time::timeout(guard, bench.run(&log))
        .await
        .map_err(|_| "the benchmark did not finish in time".to_string())?
        .map_err(|e| e.to_string())?;
    if report.bounded {
        tracing::warn!(
            max_perf = report.max_perf,
            secs = report.secs,
            "the benchmark reached BENCHMARK_MAX_SECONDS ({:.0} s) while throughput was still growing: max_perf is what it measured, and the capacity may be higher",
            report.max_secs
        );
    } else {
        tracing::info!(
            max_perf = report.max_perf,
            secs = report.secs,
            "benchmark done"
        );
    }
    if report.bounded {
        // Measured again at the next start, which may have the time to find the capacity.
        return Ok(report.max_perf);
    }
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
