//! `vespa autoscaler`: a local control plane speaking the Vast autoscaler's protocol.

/// Flags of `vespa autoscaler`.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct AutoscalerArgs {}

/// Runs the autoscaler until interrupted; returns the exit code.
pub async fn run(_args: &AutoscalerArgs) -> i32 {
    eprintln!("vespa: autoscaler is not built yet");
    1
}
