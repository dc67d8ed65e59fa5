use clap::Parser;
use vespa::cli::{Cli, run};
use vespa::env::ProcessEnv;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let code = run(cli, &ProcessEnv).await;
    std::process::exit(code);
}
