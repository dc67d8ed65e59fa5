use clap::Parser;
use vespa::cli::{Cli, run};
use vespa::env::ProcessEnv;

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
