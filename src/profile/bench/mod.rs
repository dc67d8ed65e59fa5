//! The start-up benchmark: measures the backend's capacity (`max_perf`, workload units/s)
//! in bounded time.
//!
//! PyWorker's algorithm fires `concurrency` requests at once, `runs` times, and keeps the best
//! round. A backend that decodes 64 sequences together is then measured at 10 of them: the
//! result is low by the ratio, and the autoscaler scales out too early. The default here
//! (`ramp`, in [`ramp`]) runs closed-loop levels of 8, 16, 32, … requests in flight, each for
//! a fixed window, and stops when a level no longer beats the best by 5 %. A profile that
//! streams counts work as it arrives (tokens within the window), so a level's length does
//! not depend on how long one answer takes; otherwise whole answers are counted. The whole
//! benchmark is bounded (`BENCHMARK_MAX_SECONDS`); one that reaches the bound reports what it
//! measured and says so.

mod ramp;
mod request;

use super::template::RenderContext;
use super::{Profile, StreamCount};
use request::RequestError;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A level stops growing the ramp when it beats the best so far by less than this.
const MIN_GAIN: f64 = 1.05;

/// Default bound on the whole benchmark (`BENCHMARK_MAX_SECONDS`).
pub const DEFAULT_MAX_TIME: Duration = Duration::from_secs(30);

/// How often a running level reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Why a benchmark failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BenchError {
    /// The warm-up request failed.
    #[error("warm-up request failed: {0}")]
    Warmup(String),
    /// No request of the measurement succeeded.
    #[error("no successful benchmark responses (last error: {0})")]
    NoSuccess(String),
    /// The bound passed before anything could be measured.
    #[error(
        "nothing measured within the benchmark's bound of {0:.0} s (raise BENCHMARK_MAX_SECONDS, or make the profile's request shorter)"
    )]
    Bound(f64),
}

/// How a level's work is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Counting {
    /// Units of streamed answers, as they arrive within the window.
    Stream,
    /// Whole answers completed within the window.
    Whole,
}

/// Progress of a running benchmark.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum BenchEvent {
    /// The warm-up request is being sent.
    WarmupStarted,
    /// The backend refused the streamed request; whole answers are counted instead.
    StreamRefused {
        /// The backend's answer.
        reason: String,
    },
    /// A level or round is starting with this many requests in flight.
    Started {
        /// Requests in flight.
        concurrency: usize,
        /// Measured window, seconds.
        window_secs: f64,
        /// The benchmark ends within this many seconds (an upper bound: the ramp stops as
        /// soon as throughput stops growing).
        eta_secs: f64,
    },
    /// A running level, every quarter second.
    Progress(Progress),
    /// A level or round finished.
    Finished(Level),
}

/// Where a running level stands.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// Requests in flight.
    pub concurrency: usize,
    /// True while the level's new requests are still starting (before its window).
    pub settling: bool,
    /// Seconds of the window measured so far.
    pub elapsed_secs: f64,
    /// The window, seconds.
    pub window_secs: f64,
    /// Throughput over the window so far, workload units per second.
    pub throughput: f64,
    /// Upper bound on the seconds left in the benchmark.
    pub eta_secs: f64,
}

/// The result of one level (ramp) or round (rounds).
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    /// Requests in flight.
    pub concurrency: usize,
    /// Workload units per second.
    pub throughput: f64,
    /// Requests that completed within the window.
    pub requests: usize,
    /// Failed requests.
    pub errors: usize,
    /// Seconds the throughput was measured over.
    pub window_secs: f64,
    /// Wall time of the level, seconds.
    pub secs: f64,
    /// The bound cut this level short.
    pub cut: bool,
    /// How a streamed level's throughput was found; `None` for whole answers.
    pub streamed: Option<Streamed>,
}

/// The figures behind a streamed level's throughput (see [`ramp`]).
#[derive(Debug, Clone, Serialize)]
pub struct Streamed {
    /// Units per second that arrived within the window.
    pub decode_throughput: f64,
    /// Requests that produced units within the window (the backend's running batch).
    pub streams: usize,
    /// Requests whose first unit arrived within the window (prefills the window saw).
    pub first_units: usize,
    /// Time to first unit of a request that did not queue, seconds: the prefill each
    /// answer costs its stream.
    pub prefill_secs: f64,
    /// Units of one answer: the mean of completed answers, else the request rule's.
    pub answer_units: f64,
}

/// The outcome of a benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Profile name.
    pub profile: String,
    /// Backend base URL.
    pub backend: String,
    /// Capacity: the best level's throughput, workload units per second.
    pub max_perf: f64,
    /// How work was counted.
    pub counting: Counting,
    /// Every level or round, in order.
    pub levels: Vec<Level>,
    /// Total time, seconds (warm-up included).
    pub secs: f64,
    /// The bound, seconds.
    pub max_secs: f64,
    /// The bound ended the benchmark while throughput was still growing: `max_perf` is
    /// what was measured, and the capacity may be higher.
    pub bounded: bool,
}

/// Runs a profile's benchmark.
#[derive(Clone)]
pub struct Bench {
    profile: Arc<Profile>,
    backend: String,
    ctx: RenderContext,
    client: reqwest::Client,
    api_key: Option<String>,
    max_time: Duration,
}

impl Bench {
    /// A benchmark of `backend` (base URL) with `profile`; `model` fills `{{model}}`.
    pub fn new(profile: Arc<Profile>, backend: &str, model: &str) -> Self {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        Self {
            profile,
            backend: backend.trim_end_matches('/').to_string(),
            ctx: RenderContext {
                model: model.into(),
            },
            client,
            api_key: None,
            max_time: DEFAULT_MAX_TIME,
        }
    }

    /// Sends `Authorization: Bearer KEY` with every request (a vLLM started with
    /// `--api-key`). Default is none.
    #[must_use]
    pub fn api_key(mut self, key: Option<&str>) -> Self {
        self.api_key = key.map(str::to_string);
        self
    }

    /// Bounds the whole benchmark, warm-up included. Default is [`DEFAULT_MAX_TIME`].
    #[must_use]
    pub fn max_time(mut self, max: Duration) -> Self {
        self.max_time = max;
        self
    }

    /// The bound on the whole benchmark.
    pub fn bound(&self) -> Duration {
        self.max_time
    }

    /// Runs the whole benchmark, reporting progress to `on_event`.
    pub async fn run(
        &self,
        on_event: &(dyn Fn(&BenchEvent) + Send + Sync),
    ) -> Result<BenchReport, BenchError> {
        let started = Instant::now();
        let deadline = started + self.max_time;
        let settings = &self.profile.benchmark;
        let mut stream = settings.stream.clone();
        if settings.warmup {
            on_event(&BenchEvent::WarmupStarted);
            stream = self.warmup(stream, deadline, on_event).await?;
        }
        let counting = if stream.is_some() {
            Counting::Stream
        } else {
            Counting::Whole
        };
        let run = match settings.mode {
            super::BenchMode::Ramp => {
                ramp::Ramp::new(self, stream.as_ref(), deadline, on_event)
                    .run()
                    .await
            }
            super::BenchMode::Rounds => self.rounds(deadline, on_event).await,
        };
        let max_perf = run.levels.iter().map(|l| l.throughput).fold(0.0, f64::max);
        if max_perf <= 0.0 {
            return Err(match run.last_error {
                Some(e) => BenchError::NoSuccess(e),
                None => BenchError::Bound(self.max_time.as_secs_f64()),
            });
        }
        Ok(BenchReport {
            profile: self.profile.name.clone(),
            backend: self.backend.clone(),
            max_perf,
            counting,
            levels: run.levels,
            secs: started.elapsed().as_secs_f64(),
            max_secs: self.max_time.as_secs_f64(),
            bounded: run.bounded,
        })
    }

    /// The warm-up request. A streamed one ends at its first counted unit: it proves the
    /// request and the counting work without waiting for a whole answer. A backend that
    /// refuses the streamed form (4xx) is warmed up and measured with whole answers.
    async fn warmup(
        &self,
        stream: Option<StreamCount>,
        deadline: Instant,
        on_event: &(dyn Fn(&BenchEvent) + Send + Sync),
    ) -> Result<Option<StreamCount>, BenchError> {
        let bound = || {
            BenchError::Warmup(format!(
                "no answer within the benchmark's bound of {:.0} s (BENCHMARK_MAX_SECONDS)",
                self.max_time.as_secs_f64()
            ))
        };
        let first_unit = async |s: Option<&StreamCount>| {
            let mut stop = |_| false;
            tokio::time::timeout_at(deadline, self.request(s, &mut stop)).await
        };
        match first_unit(stream.as_ref()).await {
            Err(_) => Err(bound()),
            Ok(Ok(())) => Ok(stream),
            Ok(Err(RequestError::Status(status, reason)))
                if stream.is_some() && status.is_client_error() =>
            {
                on_event(&BenchEvent::StreamRefused { reason });
                match first_unit(None).await {
                    Err(_) => Err(bound()),
                    Ok(Ok(())) => Ok(None),
                    Ok(Err(e)) => Err(BenchError::Warmup(e.to_string())),
                }
            }
            Ok(Err(e)) => Err(BenchError::Warmup(e.to_string())),
        }
    }

    /// PyWorker's rounds: `c` requests at once; throughput over each round's wall time.
    async fn rounds(
        &self,
        deadline: Instant,
        on_event: &(dyn Fn(&BenchEvent) + Send + Sync),
    ) -> Run {
        let settings = &self.profile.benchmark;
        let c = settings.concurrency;
        let mut run = Run::default();
        for _ in 0..settings.runs {
            let now = Instant::now();
            let eta = deadline.saturating_duration_since(now).as_secs_f64();
            on_event(&BenchEvent::Started {
                concurrency: c,
                window_secs: eta,
                eta_secs: eta,
            });
            let mut set = JoinSet::new();
            for _ in 0..c {
                let me = self.clone();
                set.spawn(async move {
                    let mut total = 0.0;
                    me.request(None, &mut |u| {
                        total += u;
                        true
                    })
                    .await
                    .map(|()| total)
                });
            }
            let (mut total, mut requests, mut errors) = (0.0, 0, 0);
            let mut cut = false;
            loop {
                match tokio::time::timeout_at(deadline, set.join_next()).await {
                    Err(_) => {
                        cut = true;
                        break;
                    }
                    Ok(None) => break,
                    Ok(Some(Ok(Ok(w)))) => {
                        total += w;
                        requests += 1;
                    }
                    Ok(Some(Ok(Err(e)))) => {
                        errors += 1;
                        run.last_error = Some(e.to_string());
                    }
                    Ok(Some(Err(e))) => {
                        errors += 1;
                        run.last_error = Some(e.to_string());
                    }
                }
            }
            set.abort_all();
            let secs = now.elapsed().as_secs_f64();
            let level = Level {
                concurrency: c,
                throughput: if cut || secs <= 0.0 {
                    0.0
                } else {
                    total / secs
                },
                requests,
                errors,
                window_secs: secs,
                secs,
                cut,
                streamed: None,
            };
            on_event(&BenchEvent::Finished(level.clone()));
            run.levels.push(level);
            if cut {
                run.bounded = true;
                break;
            }
        }
        run
    }
}

/// What a ramp or the rounds measured.
#[derive(Debug, Default)]
struct Run {
    levels: Vec<Level>,
    bounded: bool,
    last_error: Option<String>,
}
