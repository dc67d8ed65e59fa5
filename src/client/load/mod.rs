//! `vespa load`: a load tester for an endpoint (through the autoscaler), one worker, or any
//! HTTP URL (such as `vespa proxy`).
//!
//! Closed loop (`-c N`: N requests always in flight) or open loop (`-r R`: R requests per
//! second whatever the latency, which is how real traffic arrives), for a count (`-n`) or a
//! duration (`-d`). Bodies come from a backend profile, so every request differs. The report
//! gives throughput, latency and time-to-first-byte percentiles, status counts, errors by
//! class and the spread over workers. Each closed-loop task keeps its samples to itself, so
//! measuring costs no shared lock on the hot path.

pub mod report;
pub mod target;

pub use report::{LoadReport, Percentiles, Sample};
pub use target::{Job, Target};

use crate::client::{Client, ClientConfig};
use crate::env::{EXIT_CONFIG, Env};
use crate::profile::Profile;
use crate::profile::template::RenderContext;
use crate::tls::vast_ca::default_cache_path;
use bytes::Bytes;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

crate::env::settings! {
    /// Flags of `vespa load`.
    pub struct LoadArgs {
        /// Ask for streamed answers (`"stream": true` in the body), for time to first byte.
        #[arg(long)]
        pub stream: bool,
        /// Requests in flight (closed loop). [default: 8, unless --rate]
        #[arg(short = 'c', long, value_name = "N")]
        pub concurrency: Option<usize>,
        /// Requests per second (open loop).
        #[arg(short = 'r', long, value_name = "PER_SEC")]
        pub rate: Option<f64>,
        /// Number of requests. [default: 100, unless --duration]
        #[arg(short = 'n', long, value_name = "N")]
        pub requests: Option<u64>,
        /// Seconds to send for.
        #[arg(short = 'd', long, value_name = "SECS")]
        pub duration: Option<f64>,
        /// Per-request timeout, seconds.
        #[arg(long, value_name = "SECS", default_value_t = 600.0)]
        pub timeout: f64,
        /// Print one JSON object instead of text.
        #[arg(long)]
        pub json: bool,
    }

    /// Load one worker directly (it must be UNSECURED): its base URL.
    worker: "worker" "URL", unset "";
    /// Load any HTTP server with plain requests, e.g. `vespa proxy` at http://127.0.0.1:8010.
    url: "url" "URL", unset "";
    /// Load an endpoint through its autoscaler: the endpoint name.
    endpoint: "endpoint" "NAME", unset "";
    /// The endpoint's API key.
    api_key: "api-key" "KEY", unset "", env "VAST_API_KEY";
    /// Autoscaler base URL.
    autoscaler_url: "autoscaler-url" "URL", default crate::client::DEFAULT_AUTOSCALER_URL;
    /// Profile whose benchmark request is sent (body regenerated for every request).
    profile: "profile" "NAME|FILE", default "openai";
    /// Model name for `{{model}}`.
    model: "model" "NAME", default "model";
    /// CA file (PEM or DER) that https workers' certificates must chain to; with an https
    /// --url, the server's.
    ca_cert: "ca-cert" "FILE", unset "Vast's root CA for workers (fetched once and cached), system roots for --url", env "VAST_CA_CERT";
}

/// How much load, for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// N requests always in flight.
    Concurrency(usize),
    /// Requests started per second.
    Rate(f64),
}

/// A validated load run.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Closed or open loop.
    pub pace: Pace,
    /// Stop after this many requests.
    pub requests: Option<u64>,
    /// Stop sending after this long.
    pub duration: Option<Duration>,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Makes the requests of a run from a profile.
#[derive(Debug, Clone)]
pub struct Generator {
    profile: Arc<Profile>,
    ctx: RenderContext,
    stream: bool,
    /// The body, rendered once, when the template has no generators.
    fixed: Option<Option<Bytes>>,
}

impl Generator {
    /// Requests like `profile`'s benchmark request; `stream` adds `"stream": true`.
    pub fn new(profile: Arc<Profile>, model: &str, stream: bool) -> Self {
        let ctx = RenderContext {
            model: model.to_string(),
        };
        let mut g = Self {
            profile,
            ctx,
            stream,
            fixed: None,
        };
        if g.profile
            .request
            .body
            .as_ref()
            .is_none_or(|t| t.is_static())
        {
            g.fixed = Some(g.render());
        }
        g
    }

    /// The next request.
    pub fn job(&self) -> Job {
        let req = &self.profile.request;
        let body = match &self.fixed {
            Some(b) => b.clone(),
            None => self.render(),
        };
        Job {
            method: req.method.clone(),
            path: req.path.clone(),
            body,
        }
    }

    fn render(&self) -> Option<Bytes> {
        self.profile.request.body.as_ref().map(|t| {
            let mut v = t.render(&self.ctx);
            if self.stream
                && let Some(o) = v.as_object_mut()
            {
                o.insert("stream".into(), serde_json::Value::Bool(true));
            }
            Bytes::from(v.to_string())
        })
    }
}

/// Counters a progress line reads while the run goes on.
#[derive(Debug, Default)]
pub struct Live {
    /// Requests started.
    pub started: AtomicU64,
    /// Requests finished (any outcome).
    pub done: AtomicU64,
    /// Finished with an error.
    pub failed: AtomicU64,
}

/// Runs a load plan against `target`.
pub async fn run_load(
    target: Target,
    generator: Generator,
    plan: LoadPlan,
    live: Arc<Live>,
) -> LoadReport {
    let t0 = Instant::now();
    let deadline = plan.duration.map(|d| t0 + d);
    let may_start = {
        let live = Arc::clone(&live);
        move || {
            let n = live.started.fetch_add(1, Ordering::Relaxed);
            let under_count = plan.requests.is_none_or(|max| n < max);
            let in_time = deadline.is_none_or(|d| Instant::now() < d);
            if !(under_count && in_time) {
                live.started.fetch_sub(1, Ordering::Relaxed);
            }
            under_count && in_time
        }
    };
    let record = |live: &Live, s: &Sample| {
        live.done.fetch_add(1, Ordering::Relaxed);
        if s.error.is_some() {
            live.failed.fetch_add(1, Ordering::Relaxed);
        }
    };
    let mut samples = Vec::new();
    match plan.pace {
        Pace::Concurrency(c) => {
            let mut tasks = JoinSet::new();
            for _ in 0..c {
                let (target, generator, live, may_start) = (
                    target.clone(),
                    generator.clone(),
                    Arc::clone(&live),
                    may_start.clone(),
                );
                tasks.spawn(async move {
                    let mut mine = Vec::new();
                    while may_start() {
                        let s = target.run(generator.job(), plan.timeout).await;
                        record(&live, &s);
                        mine.push(s);
                    }
                    mine
                });
            }
            while let Some(r) = tasks.join_next().await {
                samples.extend(r.unwrap_or_default());
            }
        }
        Pace::Rate(rate) => {
            let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut tasks = JoinSet::new();
            loop {
                tokio::select! {
                    _ = ticker.tick() => {
                        if !may_start() {
                            break;
                        }
                        let (target, job, live) = (target.clone(), generator.job(), Arc::clone(&live));
                        tasks.spawn(async move {
                            let s = target.run(job, plan.timeout).await;
                            record(&live, &s);
                            s
                        });
                    }
                    Some(r) = tasks.join_next() => samples.extend(r.ok()),
                }
            }
            while let Some(r) = tasks.join_next().await {
                samples.extend(r.ok());
            }
        }
    }
    LoadReport::from_samples(samples, t0.elapsed())
}

fn usage(msg: impl std::fmt::Display) -> i32 {
    eprintln!("vespa: {msg}");
    EXIT_CONFIG
}

/// Validates the flags into a target, a generator and a plan.
pub fn plan_from_args(
    args: &LoadArgs,
    env: &dyn Env,
) -> Result<(Target, Generator, LoadPlan), String> {
    let (worker, url, endpoint) = (
        args.worker().get(env).map(|r| r.value),
        args.url().get(env).map(|r| r.value),
        args.endpoint().get(env).map(|r| r.value),
    );
    let targets = [worker.is_some(), url.is_some(), endpoint.is_some()];
    if targets.iter().filter(|t| **t).count() != 1 {
        return Err("give exactly one of --worker URL, --url URL or --endpoint NAME".into());
    }
    let profile = args.profile().get(env).value;
    let profile =
        Arc::new(Profile::resolve(&profile).map_err(|e| format!("invalid --profile: {e}"))?);
    let pace = match (args.concurrency, args.rate) {
        (Some(_), Some(_)) => return Err("give --concurrency or --rate, not both".into()),
        (Some(0), _) => return Err("invalid --concurrency: expected at least 1".into()),
        (Some(c), None) => Pace::Concurrency(c),
        (None, Some(r)) if r.is_finite() && r > 0.0 => Pace::Rate(r),
        (None, Some(r)) => return Err(format!("invalid --rate {r}: expected a number > 0")),
        (None, None) => Pace::Concurrency(8),
    };
    let duration = match args.duration {
        Some(d) if d.is_finite() && d > 0.0 => Some(Duration::from_secs_f64(d)),
        Some(d) => return Err(format!("invalid --duration {d}: expected seconds > 0")),
        None => None,
    };
    let requests = match (args.requests, duration) {
        (Some(0), _) => return Err("invalid --requests: expected at least 1".into()),
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(100),
    };
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err(format!(
            "invalid --timeout {}: expected seconds > 0",
            args.timeout
        ));
    }
    let ca = args
        .ca_cert()
        .get(env)
        .map(|raw| crate::client::proxy::ca_file(&raw))
        .transpose()
        .map_err(|e| e.to_string())?;
    let target = if let Some(url) = &url {
        let base = url.trim_end_matches('/').to_string();
        if url.starts_with("http://") {
            Target::Plain {
                http: target::plain_client(),
                base,
            }
        } else if url.starts_with("https://") {
            let http = target::https_client(ca.as_ref()).map_err(|e| e.to_string())?;
            Target::Https { http, base }
        } else {
            return Err(format!(
                "invalid --url {url:?}: expected an http:// or https:// URL"
            ));
        }
    } else {
        let mut c = match (&worker, &endpoint) {
            (Some(worker), _) => {
                let mut c = ClientConfig::new(worker.clone(), "load", "");
                c.debug_worker_url = Some(worker.clone());
                c
            }
            (None, Some(endpoint)) => {
                let key = args.api_key().get(env).map(|r| r.value).unwrap_or_default();
                if key.is_empty() {
                    return Err("--endpoint needs --api-key (or VAST_API_KEY)".into());
                }
                let autoscaler_url = args.autoscaler_url().get(env).value;
                ClientConfig::new(autoscaler_url, endpoint.clone(), key)
            }
            (None, None) => unreachable!("exactly one target was checked above"),
        };
        c.profile = Some(Arc::clone(&profile));
        c.worker_ca = ca;
        c.ca_cache = default_cache_path(|name| env.var(name));
        Target::Client(Client::new(c).map_err(|e| e.to_string())?)
    };
    let generator = Generator::new(profile, &args.model().get(env).value, args.stream);
    Ok((
        target,
        generator,
        LoadPlan {
            pace,
            requests,
            duration,
            timeout: Duration::from_secs_f64(args.timeout),
        },
    ))
}

/// Runs `vespa load`; returns the exit code (1 when no request succeeded).
pub async fn run(args: &LoadArgs, env: &dyn Env) -> i32 {
    let (target, generator, plan) = match plan_from_args(args, env) {
        Ok(p) => p,
        Err(e) => return usage(e),
    };
    // An https worker needs its CA: load it now rather than fail every request.
    if let Target::Client(c) = &target
        && c.config()
            .debug_worker_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
        && let Err(e) = c.load_worker_ca().await
    {
        eprintln!("vespa: {e}");
        return 1;
    }
    let live = Arc::new(Live::default());
    let progress = (!args.json && std::io::stderr().is_terminal()).then(|| {
        let live = Arc::clone(&live);
        tokio::spawn(async move {
            let t0 = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let (started, done, failed) = (
                    live.started.load(Ordering::Relaxed),
                    live.done.load(Ordering::Relaxed),
                    live.failed.load(Ordering::Relaxed),
                );
                let secs = t0.elapsed().as_secs_f64();
                eprint!(
                    "\r{secs:6.1} s  done {done}  failed {failed}  in flight {}  {:.1} req/s   ",
                    started.saturating_sub(done),
                    done as f64 / secs.max(1e-3)
                );
            }
        })
    });
    let report = run_load(target, generator, plan, live).await;
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
    if args.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        print!("{}", report.text());
    }
    if report.ok > 0 { 0 } else { 1 }
}
