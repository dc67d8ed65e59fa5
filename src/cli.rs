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
    /// Run a local autoscaler: /route/, /pubkey/, /worker_status/, /delete_requests/.
    Autoscaler(crate::autoscaler::AutoscalerArgs),
}

/// Runs the parsed command line; returns the process exit code.
pub async fn run(cli: Cli, env: &dyn Env) -> i32 {
    match cli.command {
        Command::Worker(args) => run_worker(&args, env).await,
        Command::Autoscaler(args) => crate::autoscaler::run(&args).await,
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
            eprintln!("vespa: cannot listen on {}: {e}", config.listen);
            return 1;
        }
    };
    println!("listening on http://{}", worker.local_addr());
    let _ = tokio::signal::ctrl_c().await;
    0
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
    if c.unsecured {
        tracing::warn!(
            "UNSECURED=true: signatures are not checked; any client that reaches this port is served"
        );
    }
}
