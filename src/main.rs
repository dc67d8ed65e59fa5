use clap::Parser;
use vespa::cli::{Cli, run};
use vespa::env::ProcessEnv;

/// jemalloc, with a background thread that hands freed memory back to the system about a
/// second after it is freed (`.cargo/config.toml` sets the decay): a worker's memory
/// returns to its resting size after a burst of connections. With the system allocator,
/// a single-threaded worker kept the peak's memory for good.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let cli = Cli::parse();
    let runtime = match cli.runtime(&ProcessEnv) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vespa: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(run(cli, &ProcessEnv));
    vespa::logging::flush();
    std::process::exit(code);
}
