//! The command line: one binary, one subcommand per role.

use crate::config::{ConfigError, EXIT_CONFIG, Env, WorkerArgs, WorkerConfig};
use crate::worker::Worker;
use clap::{Parser, Subcommand};

/// Vespa: the worker-side proxy for serverless GPU inference.
#[derive(Debug, Parser)]
#[command(name = "vespa", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
pub enum Command {
    /// Run the worker proxy in front of a model server (the main job).
    ///
    /// Every setting is a flag or the PyWorker environment variable named in its help.
    Worker(WorkerArgs),
    /// Benchmark a backend with a profile and print its capacity (max_perf).
    Bench(crate::profile::command::BenchArgs),
    /// Run a local autoscaler: /route/, /pubkey/, /worker_status/, /delete_requests/.
    Autoscaler(crate::autoscaler::AutoscalerArgs),
    /// Run a simulated model server (OpenAI, TGI, ComfyUI APIs) with a known capacity.
    Sim(crate::sim::SimArgs),
    /// Run a local proxy that routes and signs plain HTTP requests to an endpoint.
    Proxy(crate::client::proxy::ProxyArgs),
    /// Send load to an endpoint, a worker or a URL and report throughput and latency.
    Load(crate::client::load::LoadArgs),
    /// Run the whole flow on this machine: simulated backends, autoscaler, workers, proxy.
    Demo(crate::demo::DemoArgs),
}

/// Runs the parsed command line; returns the process exit code.
pub async fn run(cli: Cli, env: &dyn Env) -> i32 {
    match cli.command {
        Command::Worker(args) => run_worker(&args, env).await,
        Command::Autoscaler(args) => crate::autoscaler::run(&args).await,
        Command::Bench(args) => crate::profile::command::run(&args).await,
        Command::Sim(args) => crate::sim::run(&args).await,
        Command::Proxy(args) => crate::client::proxy::run(&args, env).await,
        Command::Load(args) => crate::client::load::run(&args, env).await,
        Command::Demo(args) => crate::demo::run(&args).await,
    }
}

fn config_error(e: &ConfigError) -> i32 {
    eprintln!("vespa: {e}");
    EXIT_CONFIG
}

async fn run_worker(args: &WorkerArgs, env: &dyn Env) -> i32 {
    let config = match WorkerConfig::load(args, env) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    crate::logging::init(&config.log_level, config.log_json);
    log_settings(&config);
    let worker = match Worker::start(config.clone()).await {
        Ok(w) => w,
        Err(e) => {
            let msg = format!("cannot listen on {}: {e}", config.listen);
            eprintln!("vespa: {msg}");
            return beacon(&config, msg).await;
        }
    };
    println!("listening on http://{}", worker.local_addr());
    crate::serve::shutdown_signal().await;
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
    let Some(reporter) = crate::worker::beacon_reporter(config) else {
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
        "worker configured"
    );
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
