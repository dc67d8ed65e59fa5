//! Log setup for the binary: `tracing` to stderr, text or JSON lines, coloured only when
//! stderr is a terminal (a file, a pipe or a log collector gets no escape codes).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// The target of the worker's access log lines, shown at `info` whatever the log level.
pub const ACCESS_TARGET: &str = "vespa::access";

/// Installs the global subscriber. `level` is a `tracing` filter directive (e.g. `info`);
/// `RUST_LOG`, when set, wins.
pub fn init(level: &str, json: bool) {
    init_with(level, json, false)
}

/// [`init`], with the access log ([`ACCESS_TARGET`]) at `info` when `access_log` is set.
pub fn init_with(level: &str, json: bool, access_log: bool) {
    let mut directives = format!("warn,vespa={level}");
    if access_log {
        directives.push_str(&format!(",{ACCESS_TARGET}=info"));
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// A rate limit for a log line that a client can trigger at will: at most one line per
/// interval, so a flood cannot fill the disk.
#[derive(Debug)]
pub struct Every {
    interval: std::time::Duration,
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Every {
    /// At most once per `interval`.
    pub fn new(interval: std::time::Duration) -> Self {
        Self {
            interval,
            last: std::sync::Mutex::new(None),
        }
    }

    /// Whether to log now.
    pub fn allow(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        match *last {
            Some(t) if now.duration_since(t) < self.interval => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}
