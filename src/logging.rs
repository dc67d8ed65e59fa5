//! Log setup for the binary: `tracing` to stderr, text or JSON lines.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `level` is a `tracing` filter directive (e.g. `info`);
/// `RUST_LOG`, when set, wins.
pub fn init(level: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,vespa={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
