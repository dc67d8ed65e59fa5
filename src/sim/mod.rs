//! `vespa sim`: a simulated model server with a known capacity and fault knobs.
//!
//! It speaks the APIs the worker fronts (OpenAI completions and chat, embeddings, rerank,
//! images and audio; TGI; the ComfyUI API wrapper) and takes exactly as long as a GPU server of the configured size would, so a
//! benchmark run against it must find `decode_tps × max_batch` tokens per second (or
//! [`SimConfig::comfyui_units_per_sec`]). That makes the worker's benchmark, admission and
//! cancellation testable without a GPU, and a whole deployment runnable on a laptop.
//!
//! - [`model`]: batch slots and timing (the capacity model);
//! - [`openai`], [`tgi`], [`comfyui`]: one API each; [`embeddings`] (and rerank),
//!   [`images`], [`audio`] (transcriptions, read with [`multipart`], and speech): the other
//!   OpenAI routes a multi-route worker serves;
//! - [`prompt`], [`ws`]: ComfyUI's own queue (`POST /prompt`, `/history`) and its progress
//!   socket (`GET /ws?clientId=ID`), so a job's progress can be followed over a WebSocket;
//! - [`stream`]: the token-by-token SSE body;
//! - [`faults`]: start-up delay, health switch, injected errors, hangs, broken streams;
//! - [`stats`]: the counters at `GET /_sim/stats`, kept by guards that travel with each
//!   request, so a client that leaves frees its slot at once;
//! - [`metrics`]: the same counters by API, and the slot gauges, at `GET /_sim/metrics`
//!   (OpenMetrics text);
//! - [`echo`] (`--echo`): no model at all, a fixed answer at once (or after a set delay,
//!   or as SSE events), the cheapest backend for measuring a proxy in front of it.

mod audio;
mod comfyui;
mod config;
mod echo;
mod embeddings;
mod error;
mod faults;
mod images;
mod metrics;
mod model;
mod multipart;
mod openai;
mod prompt;
mod routes;
mod stats;
mod stream;
mod tgi;
mod ws;

pub use comfyui::PNG;
pub use config::{DEFAULT_IMAGE_UNITS, DEFAULT_LISTEN, SimArgs, SimConfig};
pub use echo::{Echo, EchoConfig, MAX_ECHO_BODY};
pub use error::SimError;
pub use openai::DEFAULT_MAX_TOKENS;
pub use stats::SimStats;
pub use stream::Died;
pub use tgi::DEFAULT_MAX_NEW_TOKENS;

use faults::Faults;
use model::Model;
use stats::Stats;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// State shared by every request of one simulated server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: SimConfig,
    pub(crate) model: Model,
    pub(crate) stats: Arc<Stats>,
    pub(crate) faults: Faults,
    /// Unix time of start, the `created` of the listed model.
    pub(crate) created: u64,
    /// ComfyUI's prompt queue and history.
    pub(crate) queue: prompt::Queue,
    /// ComfyUI's progress sockets.
    pub(crate) sockets: ws::Sockets,
    /// Set when the sim stops: its sockets and running prompts end.
    pub(crate) stopped: watch::Sender<bool>,
    ids: AtomicU64,
}

impl Shared {
    /// Resolves when the sim stops.
    pub(crate) async fn stopping(&self) {
        let mut stopped = self.stopped.subscribe();
        let _ = stopped.wait_for(|s| *s).await;
    }

    /// A number for response ids, unique within this server.
    pub(crate) fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }
}

/// Milliseconds since the Unix epoch (ComfyUI's message timestamps).
pub(crate) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A running simulated server. Dropping it closes the listener and every open connection.
#[derive(Debug)]
pub struct Sim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    seed: u64,
    task: JoinHandle<()>,
}

impl Sim {
    /// Binds `config.listen` and starts serving. The start-up delay counts from here.
    /// The configuration is trusted; see [`SimConfig::validate`].
    pub async fn start(config: SimConfig) -> std::io::Result<Sim> {
        let listener = crate::serve::bind(config.listen)?;
        Ok(Self::serve(listener, config))
    }

    /// Starts serving on an already bound listener.
    pub fn serve(listener: TcpListener, config: SimConfig) -> Sim {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let seed = config.seed.unwrap_or_else(faults::clock_seed);
        let shared = Arc::new(Shared {
            model: Model::new(&config),
            stats: Arc::new(Stats::new()),
            faults: Faults::new(&config, seed),
            created: unix_now(),
            queue: prompt::Queue::default(),
            sockets: ws::Sockets::default(),
            stopped: watch::Sender::new(false),
            ids: AtomicU64::new(1),
            config,
        });
        let handler_shared = Arc::clone(&shared);
        let task = tokio::spawn(crate::serve::accept_loop(listener, move |req| {
            let shared = Arc::clone(&handler_shared);
            async move { routes::handle(&shared, req).await }
        }));
        Sim {
            addr,
            shared,
            seed,
            task,
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the base URL to use as a worker's `BACKEND_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The configuration the server was started with.
    pub fn config(&self) -> &SimConfig {
        &self.shared.config
    }

    /// The seed of the fault generator (the configured one, or the one drawn at start).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The counters now (the body of `GET /_sim/stats`).
    pub fn stats(&self) -> SimStats {
        self.shared.stats.snapshot()
    }

    /// A receiver that sees every change of the counters, to wait for a condition without
    /// polling.
    pub fn watch_stats(&self) -> watch::Receiver<SimStats> {
        self.shared.stats.subscribe()
    }

    /// Switches what `/health` answers, like `POST /_sim/health`.
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.faults.set_healthy(healthy);
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shared.stopped.send_replace(true);
        self.task.abort();
    }
}

/// A number as `capacity:` prints it: no decimals when whole, else at most six, trimmed.
pub fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Runs the sim until interrupted; returns the exit code (64 for invalid flags).
///
/// Prints `listening on http://ADDR` and `capacity: N tokens/s` on stdout (with `--echo`,
/// the first line only).
pub async fn run(args: &SimArgs) -> i32 {
    match EchoConfig::from_args(args) {
        Ok(None) => {}
        Ok(Some(echo)) => {
            crate::logging::init(&args.log_level, false);
            return echo::run(echo).await;
        }
        Err(e) => return e.eprint(),
    }
    let config = match SimConfig::from_args(args) {
        Ok(c) => c,
        Err(e) => return e.eprint(),
    };
    crate::logging::init(&args.log_level, false);
    let listen = config.listen;
    let sim = match Sim::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vespa: cannot listen on {listen}: {e}");
            return 1;
        }
    };
    let c = sim.config();
    tracing::info!(
        model = %c.model,
        decode_tps = c.decode_tps,
        max_batch = c.max_batch,
        // Derived limits, computed in one place (SimConfig) and logged once.
        capacity_tokens_per_sec = c.capacity_tokens_per_sec(),
        comfyui_units_per_sec = c.comfyui_units_per_sec(),
        prefill_ms_per_token = c.prefill_ms_per_token,
        embed_tps = c.embed_tps,
        audio_secs = c.audio_secs,
        startup_delay_secs = c.startup_delay.as_secs_f64(),
        error_rate = c.error_rate,
        hang_rate = c.hang_rate,
        die_after_chunks = ?c.die_after_chunks,
        seed = sim.seed(),
        "sim configured"
    );
    let stop = crate::serve::shutdown_signal();
    println!("listening on {}", sim.url());
    println!(
        "capacity: {} tokens/s",
        format_number(c.capacity_tokens_per_sec())
    );
    stop.await;
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_numbers_print_plainly() {
        assert_eq!(format_number(800.0), "800");
        assert_eq!(format_number(12.5), "12.5");
        assert_eq!(format_number(0.1 * 3.0), "0.3");
        assert_eq!(format_number(0.001), "0.001");
    }
}
