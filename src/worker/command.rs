//! `vespa worker` as a command: load the configuration, start, serve until a signal, drain.

use super::config::{WorkerArgs, WorkerConfig};
use super::{StartError, Worker};
use crate::env::{ConfigError, Env};

/// Runs `vespa worker`; returns the process exit code (64 for invalid configuration,
/// before any port is bound).
pub async fn run(args: &WorkerArgs, env: &dyn Env) -> i32 {
    let config = match WorkerConfig::load(args, env) {
        Ok(c) => c,
        Err(e) => return e.eprint(),
    };
    crate::logging::init_with(&config.log_level, config.log_json, config.access_log);
    log_settings(&config);
    let worker = match Worker::start(config.clone()).await {
        Ok(w) => w,
        Err(StartError::Tls(e)) => {
            let key = config.tls.as_ref().map(|t| t.key.as_path());
            let setting = if e.path().is_some() && e.path() == key {
                "TLS_KEY"
            } else {
                "TLS_CERT"
            };
            return ConfigError::new(setting, e.to_string()).eprint();
        }
        Err(e) => {
            let msg = e.to_string();
            eprintln!("vespa: {msg}");
            return beacon(&config, msg).await;
        }
    };
    let stop = crate::serve::shutdown_signal();
    println!("listening on {}://{}", worker.scheme(), worker.local_addr());
    tokio::select! {
        () = stop => {}
        () = worker.update_requested() => {
            tracing::info!("rolling update requested (POST /pyworker/update)");
        }
    }
    tracing::info!(
        timeout_secs = config.drain_timeout.as_secs_f64(),
        "draining"
    );
    let clean = worker.drain(config.drain_timeout).await;
    tracing::info!(clean, "worker stopped");
    0
}

/// A worker that cannot start keeps telling the autoscaler why (PROTOCOL.md §5.3) until it
/// is stopped; without `REPORT_ADDR` there is no one to tell, so it exits 1.
async fn beacon(config: &WorkerConfig, msg: String) -> i32 {
    let Some(reporter) = super::beacon_reporter(config) else {
        return 1;
    };
    tracing::error!(error = %msg, "start-up failed; reporting the error every 10 s until stopped");
    tokio::select! {
        () = reporter.beacon(msg, std::time::Duration::from_secs(10)) => {}
        () = crate::serve::shutdown_signal() => {}
    }
    1
}

fn log_settings(c: &WorkerConfig) {
    let concurrency = match (c.allow_parallel, c.max_concurrency) {
        (false, _) => "1 (ALLOW_PARALLEL=false, FIFO)".to_string(),
        (true, Some(n)) => n.to_string(),
        (true, None) => "unlimited".to_string(),
    };
    tracing::info!(
        backend = %c.backend_url,
        max_perf = c.max_perf,
        max_wait_time = c.max_wait_time,
        // Derived limit: the most workload the queue holds before 429s start.
        max_queued_workload = c.max_perf * c.max_wait_time,
        concurrency = %concurrency,
        max_body_size = c.max_body_size,
        max_sessions = c.sessions.max_sessions.unwrap_or(0),
        max_session_lifetime_secs = c.sessions.max_lifetime.as_secs_f64(),
        "worker configured"
    );
    if let Some(p) = c.benchmark.profile() {
        // Which paths have a workload rule of their own; any other counts DEFAULT_COST.
        let routes: Vec<String> = p.routes.patterns().collect();
        tracing::info!(
            profile = %p.name,
            benchmarked = %p.request.path,
            routes = %if routes.is_empty() { "every path (by [workload])".to_string() } else { routes.join(",") },
            default_cost = c.default_cost,
            "workload rules"
        );
    }
    if !c.vast.report_addrs.is_empty() {
        let addrs: Vec<String> = c.vast.report_addrs.iter().map(|u| u.to_string()).collect();
        tracing::info!(
            report_addr = %addrs.join(","),
            container_id = c.vast.container_id.unwrap_or(0),
            master_token = %crate::worker::report::mask(c.vast.master_token.as_deref().unwrap_or("")),
            "reporting to the autoscaler"
        );
    }
    if c.unsecured {
        tracing::warn!(
            "UNSECURED=true: signatures are not checked; any client that reaches this port is served"
        );
    }
}
