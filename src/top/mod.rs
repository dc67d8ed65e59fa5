//! `vespa top`: a live view of a fleet (an endpoint's workers, as its autoscaler lists
//! them) or of workers given by URL.
//!
//! It reads only what is already served: the autoscaler's `/get_endpoint_workers/`, each
//! worker's `/_vespa/metrics` (open to anyone) and `/_vespa/status` (with the master
//! token). Every second it polls them all ([`fetch`]), turns counters and histograms into
//! rates and percentiles with the last minute of each ([`model`]), and either draws the
//! full-screen view ([`screen`], [`view`]) when stdout is a terminal, or prints one line
//! per worker ([`plain`]) for logs and scripts. A worker or autoscaler that cannot be
//! reached is shown as such, with the reason, and the view goes on.

pub mod columns;
pub mod config;
pub mod fetch;
pub mod histogram;
pub mod model;
pub mod parse;
pub mod plain;
pub mod screen;
pub mod spark;
pub mod view;

pub use config::{Source, TopArgs, TopConfig};
pub use fetch::Fetcher;
pub use model::{Board, Poll};

use crate::env::{EXIT_CONFIG, Env};
use std::io::{IsTerminal, Write};
use std::time::SystemTime;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Polls `config`'s fleet every interval (the first at once), `config.count` times or
/// forever, into the receiver. The poller stops when the receiver or the set is dropped.
fn polls(mut fetcher: Fetcher, config: &TopConfig) -> (JoinSet<()>, mpsc::Receiver<Poll>) {
    let (tx, rx) = mpsc::channel(1);
    let (interval, count) = (config.interval, config.count);
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(interval);
        // A poll slower than the interval (a worker that takes its whole timeout) delays
        // the next one instead of sending a burst.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut done = 0;
        while count.is_none_or(|c| done < c) {
            tick.tick().await;
            if tx.send(fetcher.poll().await).await.is_err() {
                return;
            }
            done += 1;
        }
    });
    (tasks, rx)
}

/// Writes the plain lines of each poll to `out` until `config.count` polls (or forever).
pub async fn print_lines(
    config: &TopConfig,
    fetcher: Fetcher,
    out: &mut (dyn Write + Send),
) -> std::io::Result<()> {
    let mut board = Board::new(config.source.watched(), config.interval, config.window);
    let (_poller, mut polls) = polls(fetcher, config);
    while let Some(poll) = polls.recv().await {
        board.observe(poll);
        for line in plain::lines(&board, SystemTime::now()) {
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }
    Ok(())
}

/// Whether the view may use colours: not when `NO_COLOR` is set to anything non-empty
/// (<https://no-color.org>).
pub fn colour(env: &dyn Env) -> bool {
    env.var("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Runs `vespa top`; returns the exit code.
pub async fn run(args: &TopArgs, env: &dyn Env) -> i32 {
    let config = match TopConfig::from_args(args, env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vespa: {e}");
            return EXIT_CONFIG;
        }
    };
    let fetcher = match Fetcher::new(&config) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("vespa: {e}");
            return EXIT_CONFIG;
        }
    };
    let shown = if std::io::stdout().is_terminal() {
        screen::watch(&config, fetcher, colour(env)).await
    } else {
        print_lines(&config, fetcher, &mut std::io::stdout()).await
    };
    match shown {
        Ok(()) => 0,
        // `vespa top | head`: the reader has what it wanted.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("vespa: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_set_to_anything_turns_colour_off() {
        assert!(colour(&crate::env::NoEnv));
        assert!(colour(&[("NO_COLOR", "")]));
        assert!(!colour(&[("NO_COLOR", "1")]));
    }
}
