//! The command line: one binary, one subcommand per role.

use crate::env::Env;
use crate::worker::config::WorkerArgs;
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
    /// Watch a fleet or workers live: state, load, requests per second, 429s, errors and
    /// time to first byte per worker, with the last minute of each.
    ///
    /// On a terminal, a full-screen view (q, Esc or Ctrl-C quits); otherwise one plain line
    /// per worker per poll, to log.
    Top(crate::top::TopArgs),
}

impl Cli {
    /// The runtime the command runs on. `vespa worker` runs on `WORKER_THREADS` threads
    /// (one by default: a current-thread runtime, where a request's client connection, its
    /// backend connection and their wake-ups never cross threads); the other commands use
    /// every core (`vespa load` and `vespa demo` generate load). An invalid
    /// `WORKER_THREADS` gets one thread here and is reported by the worker's configuration.
    pub fn runtime(&self, env: &dyn Env) -> std::io::Result<tokio::runtime::Runtime> {
        let threads = match &self.command {
            Command::Worker(args) => crate::worker::config::worker_threads(args, env).unwrap_or(1),
            _ => 0,
        };
        let mut builder = match threads {
            1 => tokio::runtime::Builder::new_current_thread(),
            0 => tokio::runtime::Builder::new_multi_thread(),
            n => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(n);
                b
            }
        };
        builder.enable_all().build()
    }
}

/// Runs the parsed command line; returns the process exit code.
pub async fn run(cli: Cli, env: &dyn Env) -> i32 {
    match cli.command {
        Command::Worker(args) => crate::worker::command::run(&args, env).await,
        Command::Autoscaler(args) => crate::autoscaler::run(&args).await,
        Command::Bench(args) => crate::profile::command::run(&args, env).await,
        Command::Sim(args) => crate::sim::run(&args).await,
        Command::Proxy(args) => crate::client::proxy::run(&args, env).await,
        Command::Load(args) => crate::client::load::run(&args, env).await,
        Command::Demo(args) => crate::demo::run(&args).await,
        Command::Top(args) => crate::top::run(&args, env).await,
    }
}
