//! `vespa bench`: run a profile's benchmark against a backend and print the result.

use super::bench::{Bench, BenchEvent, Counting};
use super::{BenchMode, Profile};
use crate::env::EXIT_CONFIG;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

crate::env::settings! {
    /// Flags of `vespa bench`.
    pub struct BenchArgs {
        /// Backend base URL, e.g. http://127.0.0.1:8000.
        #[arg(long, value_name = "URL")]
        pub backend: String,
        /// Profile: openai, openai-chat, tgi, comfyui, a TOML file, or benchmarks.NAME:benchmark.
        #[arg(long, value_name = "NAME|FILE")]
        pub profile: String,
        /// Model name for `{{model}}` in the request.
        #[arg(long, value_name = "NAME", default_value = "model")]
        pub model: String,
        /// Override the profile's mode: ramp (find the capacity) or rounds (PyWorker's runs x concurrency).
        #[arg(long, value_name = "MODE")]
        pub mode: Option<String>,
        /// Override the starting (ramp) or per-round (rounds) concurrency.
        #[arg(long, value_name = "N")]
        pub concurrency: Option<usize>,
        /// Override the highest ramp level.
        #[arg(long, value_name = "N")]
        pub max_concurrency: Option<usize>,
        /// Override the number of rounds (rounds mode).
        #[arg(long, value_name = "N")]
        pub runs: Option<usize>,
        /// Override the seconds each ramp level is measured.
        #[arg(long, value_name = "SECS")]
        pub window: Option<f64>,
        /// Print one JSON object (its `max_perf` field is the result) instead of text.
        #[arg(long)]
        pub json: bool,
    }
    /// Sent to the backend as `Authorization: Bearer …` (a vLLM started with `--api-key`).
    api_key: "api-key" "KEY", unset "none", env "BACKEND_API_KEY";
    /// Seconds the whole benchmark may take, warm-up included; at the bound it reports what
    /// it measured.
    max_seconds: "max-seconds" "SECS", default "30", env "BENCHMARK_MAX_SECONDS";
}

fn usage(msg: impl std::fmt::Display) -> i32 {
    eprintln!("vespa: {msg}");
    EXIT_CONFIG
}

/// Runs `vespa bench`; returns the exit code.
pub async fn run(args: &BenchArgs, env: &dyn crate::env::Env) -> i32 {
    let mut profile = match Profile::resolve(&args.profile) {
        Ok(p) => p,
        Err(e) => return usage(format!("invalid --profile: {e}")),
    };
    if !(args.backend.starts_with("http://") || args.backend.starts_with("https://")) {
        return usage(format!(
            "invalid --backend {:?}: expected an http:// or https:// URL",
            args.backend
        ));
    }
    let b = &mut profile.benchmark;
    match args.mode.as_deref() {
        None => {}
        Some("ramp") => b.mode = BenchMode::Ramp,
        Some("rounds") => b.mode = BenchMode::Rounds,
        Some(other) => return usage(format!("invalid --mode {other:?}: expected ramp or rounds")),
    }
    for (value, name, slot) in [
        (args.concurrency, "--concurrency", &mut b.concurrency),
        (
            args.max_concurrency,
            "--max-concurrency",
            &mut b.max_concurrency,
        ),
        (args.runs, "--runs", &mut b.runs),
    ] {
        match value {
            Some(0) => return usage(format!("invalid {name}: expected at least 1")),
            Some(n) => *slot = n,
            None => {}
        }
    }
    b.max_concurrency = b.max_concurrency.max(b.concurrency);
    if let Some(w) = args.window {
        if !(w.is_finite() && w > 0.0 && w <= crate::env::MAX_SECS) {
            return usage(format!(
                "invalid --window {w}: expected a number of seconds > 0"
            ));
        }
        b.window = std::time::Duration::from_secs_f64(w);
    }
    let max_time = {
        let raw = args.max_seconds().get(env);
        match raw.optional_secs() {
            Ok(Some(d)) => d,
            Ok(None) => return usage(raw.error("expected a number of seconds > 0")),
            Err(e) => return usage(e),
        }
    };

    let api_key = args.api_key().get(env).map(|r| r.value);
    let bench = Bench::new(Arc::new(profile), &args.backend, &args.model)
        .api_key(api_key.as_deref())
        .max_time(max_time);
    let progress = Progress::new(!args.json && std::io::stderr().is_terminal());
    let on_event = |e: &BenchEvent| progress.event(e, args.json);
    let result = bench.run(&on_event).await;
    progress.finish();
    match result {
        Ok(report) if args.json => {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            0
        }
        Ok(report) => {
            let counted = match report.counting {
                Counting::Stream => "streamed units",
                Counting::Whole => "whole answers",
            };
            println!(
                "max_perf: {:.1} workload units/s (profile {}, {counted}, {} levels, {:.1} s)",
                report.max_perf,
                report.profile,
                report.levels.len(),
                report.secs
            );
            if report.bounded {
                println!(
                    "note: the benchmark reached its bound of {:.0} s while throughput was still growing; max_perf is what it measured and the capacity may be higher (raise --max-seconds / BENCHMARK_MAX_SECONDS)",
                    report.max_secs
                );
            }
            0
        }
        Err(e) => {
            eprintln!("vespa: benchmark failed: {e}");
            1
        }
    }
}

/// A spinner on a terminal, plain lines otherwise.
struct Progress {
    bar: Mutex<Option<indicatif::ProgressBar>>,
    terminal: bool,
}

impl Progress {
    fn new(terminal: bool) -> Self {
        Self {
            bar: Mutex::new(None),
            terminal,
        }
    }

    fn event(&self, e: &BenchEvent, quiet: bool) {
        let mut bar = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        let status = match e {
            BenchEvent::WarmupStarted => Some("warm-up request".to_string()),
            BenchEvent::StreamRefused { reason } => {
                if !quiet {
                    self.line(&mut bar, &format!(
                        "the backend refused the streamed request ({reason}); counting whole answers"
                    ));
                }
                None
            }
            BenchEvent::Started {
                concurrency,
                window_secs,
                eta_secs,
            } => Some(format!(
                "concurrency {concurrency}: starting, window {window_secs:.1} s, ETA ≤ {eta_secs:.0} s"
            )),
            BenchEvent::Progress(p) => {
                if let Some(b) = bar.as_ref() {
                    b.set_message(if p.settling {
                        format!(
                            "concurrency {}: starting requests, window {:.1} s, ETA ≤ {:.0} s",
                            p.concurrency, p.window_secs, p.eta_secs
                        )
                    } else {
                        format!(
                            "concurrency {}: {:.1}/{:.1} s, {:.1} units/s so far, ETA ≤ {:.0} s",
                            p.concurrency,
                            p.elapsed_secs.min(p.window_secs),
                            p.window_secs,
                            p.throughput,
                            p.eta_secs
                        )
                    });
                }
                None
            }
            BenchEvent::Finished(l) => {
                if !quiet {
                    let cut = if l.cut { ", cut by the bound" } else { "" };
                    let how = match &l.streamed {
                        Some(s) => format!(
                            "{:.1} units/s from {} streams, {:.2} s prefill per {:.0}-unit answer; ",
                            s.decode_throughput, s.streams, s.prefill_secs, s.answer_units
                        ),
                        None => String::new(),
                    };
                    self.line(&mut bar, &format!(
                        "concurrency {:>4}: {:>12.1} units/s over {:.2} s  ({how}{} done, {} errors, {:.2} s{cut})",
                        l.concurrency, l.throughput, l.window_secs, l.requests, l.errors, l.secs
                    ));
                }
                None
            }
        };
        if let (Some(msg), true) = (status, self.terminal) {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b.set_message(msg);
            *bar = Some(b);
        }
    }

    /// Prints a line above the spinner (plain when there is none).
    fn line(&self, bar: &mut Option<indicatif::ProgressBar>, text: &str) {
        match bar.as_ref() {
            Some(b) => b.suspend(|| println!("{text}")),
            None => println!("{text}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
            b.finish_and_clear();
        }
    }
}
