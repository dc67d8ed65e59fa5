//! The start-up benchmark: measures the backend's capacity (`max_perf`, workload units/s).
//!
//! PyWorker's algorithm fires `concurrency` requests at once, `runs` times, and keeps the best
//! round. A backend that decodes 64 sequences together is then measured at 10 of them: the
//! result is low by the ratio, and the autoscaler scales out too early. The default here
//! (`ramp`) runs closed-loop levels of 8, 16, 32, … requests in flight and stops when a level
//! no longer beats the best by 5 %. Each level keeps `c` requests in flight (a finished one
//! is replaced at once) until `c` have completed, and counts throughput as the completed
//! workload over the time of the last completion, so a batch that is not a power of two is
//! still filled, and the tail of a round does not dilute the figure.

use super::Profile;
use super::template::RenderContext;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// A level stops growing the ramp when it beats the best so far by less than this.
const MIN_GAIN: f64 = 1.05;

/// Why a benchmark failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BenchError {
    /// The warm-up request failed.
    #[error("warm-up request failed: {0}")]
    Warmup(String),
    /// No request of the measurement succeeded.
    #[error("no successful benchmark responses (last error: {0})")]
    NoSuccess(String),
}

/// Progress of a running benchmark.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum BenchEvent {
    /// The warm-up request is being sent.
    WarmupStarted,
    /// A level or round is starting with this many requests in flight.
    Started {
        /// Requests in flight.
        concurrency: usize,
    },
    /// A level or round finished.
    Finished(Level),
}

/// The result of one level (ramp) or round (rounds).
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    /// Requests in flight.
    pub concurrency: usize,
    /// Workload units per second.
    pub throughput: f64,
    /// Successful requests counted.
    pub requests: usize,
    /// Failed requests.
    pub errors: usize,
    /// Wall time, seconds.
    pub secs: f64,
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
    /// Every level or round, in order.
    pub levels: Vec<Level>,
    /// Total time, seconds (warm-up included).
    pub secs: f64,
}

/// Runs a profile's benchmark.
#[derive(Clone)]
pub struct Bench {
    profile: Arc<Profile>,
    backend: String,
    ctx: RenderContext,
    client: reqwest::Client,
    api_key: Option<String>,
}

struct Done {
    workload: f64,
    at: Duration,
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
        }
    }

    /// Sends `Authorization: Bearer KEY` with every request (a vLLM started with
    /// `--api-key`). Default is none.
    #[must_use]
    pub fn api_key(mut self, key: Option<&str>) -> Self {
        self.api_key = key.map(str::to_string);
        self
    }

    /// One request; its workload by the profile's rule.
    async fn one(&self) -> Result<f64, String> {
        let req = &self.profile.request;
        let payload = req.body.as_ref().map(|t| t.render(&self.ctx));
        let url = format!("{}{}", self.backend, req.path);
        let mut builder = self
            .client
            .request(req.method.clone(), &url)
            .timeout(req.timeout);
        if let Some(p) = &payload {
            builder = builder.json(p);
        }
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
        }
        let resp = builder
            .send()
            .await
            .map_err(|e| format!("{url}: {}", crate::http_util::error_chain(&e)))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| {
            format!(
                "{url}: reading the answer: {}",
                crate::http_util::error_chain(&e)
            )
        })?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).to_string();
            return Err(format!("{url} answered {status}: {text}"));
        }
        let response: Option<Value> = serde_json::from_slice(&bytes).ok();
        self.profile
            .workload
            .measured(payload.as_ref().unwrap_or(&Value::Null), response.as_ref())
            .ok_or_else(|| {
                format!("{url}: the workload rule found no workload in the request or answer")
            })
    }

    /// Runs the whole benchmark, reporting progress to `on_event`.
    pub async fn run(
        &self,
        on_event: &(dyn Fn(&BenchEvent) + Send + Sync),
    ) -> Result<BenchReport, BenchError> {
        let started = Instant::now();
        let settings = &self.profile.benchmark;
        if settings.warmup {
            on_event(&BenchEvent::WarmupStarted);
            self.one().await.map_err(BenchError::Warmup)?;
        }
        let mut levels = Vec::new();
        let mut last_error = String::from("none");
        match settings.mode {
            super::BenchMode::Ramp => {
                let mut c = settings.concurrency;
                let mut best = 0.0_f64;
                loop {
                    on_event(&BenchEvent::Started { concurrency: c });
                    let (level, err) = self.level(c).await;
                    on_event(&BenchEvent::Finished(level.clone()));
                    if let Some(e) = err {
                        last_error = e;
                    }
                    let t = level.throughput;
                    levels.push(level);
                    if t <= 0.0 || t < best * MIN_GAIN || c >= settings.max_concurrency {
                        break;
                    }
                    best = best.max(t);
                    c = (c * 2).min(settings.max_concurrency);
                }
            }
            super::BenchMode::Rounds => {
                for _ in 0..settings.runs {
                    on_event(&BenchEvent::Started {
                        concurrency: settings.concurrency,
                    });
                    let (level, err) = self.round(settings.concurrency).await;
                    on_event(&BenchEvent::Finished(level.clone()));
                    if let Some(e) = err {
                        last_error = e;
                    }
                    levels.push(level);
                }
            }
        }
        let max_perf = levels.iter().map(|l| l.throughput).fold(0.0, f64::max);
        if max_perf <= 0.0 {
            return Err(BenchError::NoSuccess(last_error));
        }
        Ok(BenchReport {
            profile: self.profile.name.clone(),
            backend: self.backend.clone(),
            max_perf,
            levels,
            secs: started.elapsed().as_secs_f64(),
        })
    }

    /// A closed-loop level: `c` in flight until `c` completed (or `c` failed).
    async fn level(&self, c: usize) -> (Level, Option<String>) {
        let t0 = Instant::now();
        let (tx, mut rx) = mpsc::unbounded_channel::<Result<Done, String>>();
        let mut loops = JoinSet::new();
        for _ in 0..c {
            let (me, tx) = (self.clone(), tx.clone());
            loops.spawn(async move {
                loop {
                    let r = me.one().await.map(|workload| Done {
                        workload,
                        at: t0.elapsed(),
                    });
                    if tx.send(r).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let (mut ok, mut errors, mut last_error) = (Vec::new(), 0, None);
        while ok.len() < c && errors < c {
            match rx.recv().await {
                Some(Ok(d)) => ok.push(d),
                Some(Err(e)) => {
                    errors += 1;
                    last_error = Some(e);
                }
                None => break,
            }
        }
        // Completions that land together with the c-th (a batch finishing as one wave) belong
        // to the same instant: count them too, or the level under-reads a full wave.
        if let Some(cut) = ok.iter().map(|d| d.at).max() {
            let grace = (cut / 50).max(Duration::from_millis(20));
            let deadline = tokio::time::Instant::from_std(t0 + cut + grace);
            while let Ok(Some(r)) = tokio::time::timeout_at(deadline, rx.recv()).await {
                match r {
                    Ok(d) if d.at <= cut + grace => ok.push(d),
                    Ok(_) => break,
                    Err(_) => errors += 1,
                }
            }
        }
        // Requests still in flight are dropped: their connections close, the backend stops.
        loops.abort_all();
        let span = ok
            .iter()
            .map(|d| d.at)
            .max()
            .unwrap_or_default()
            .as_secs_f64();
        let total: f64 = ok.iter().map(|d| d.workload).sum();
        let throughput = if span > 0.0 { total / span } else { 0.0 };
        let level = Level {
            concurrency: c,
            throughput,
            requests: ok.len(),
            errors,
            secs: t0.elapsed().as_secs_f64(),
        };
        (level, last_error)
    }

    /// A PyWorker round: `c` requests at once; throughput over the round's wall time.
    async fn round(&self, c: usize) -> (Level, Option<String>) {
        let t0 = Instant::now();
        let mut set = JoinSet::new();
        for _ in 0..c {
            let me = self.clone();
            set.spawn(async move { me.one().await });
        }
        let (mut total, mut requests, mut errors, mut last_error) = (0.0, 0, 0, None);
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(w)) => {
                    total += w;
                    requests += 1;
                }
                Ok(Err(e)) => {
                    errors += 1;
                    last_error = Some(e);
                }
                Err(e) => {
                    errors += 1;
                    last_error = Some(e.to_string());
                }
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let throughput = if secs > 0.0 { total / secs } else { 0.0 };
        (
            Level {
                concurrency: c,
                throughput,
                requests,
                errors,
                secs,
            },
            last_error,
        )
    }
}

/// How long a benchmark may take before the worker gives up on it: generous, since a
/// real model may need minutes; a failing backend fails much earlier through errors.
pub fn overall_limit(profile: &Profile) -> Duration {
    profile.request.timeout * 8
}
