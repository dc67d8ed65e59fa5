//! `vespa load`: a load tester for an endpoint (through the autoscaler), one worker, or any
//! HTTP URL (such as `vespa proxy`).
//!
//! Closed loop (`-c N`: N requests always in flight) or open loop (`-r R`: R requests per
//! second whatever the latency, which is how real traffic arrives), for a count (`-n`) or a
//! duration (`-d`). Bodies come from a backend profile, so every request differs. The report
//! gives throughput, latency and time-to-first-byte percentiles, status counts, errors by
//! class and the spread over workers. Each closed-loop task keeps its samples to itself, so
//! measuring costs no shared lock on the hot path; the live view on a terminal reads counters
//! that the tasks bump with a few atomic additions (`live`, `view`).

pub mod histogram;
pub mod live;
pub mod report;
pub mod target;
pub mod view;

pub use live::Live;
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
use std::sync::atomic::Ordering;
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
        /// Seconds between redraws of the live view (on a terminal; at least 0.05).
        #[arg(long, value_name = "SECS", default_value_t = view::DEFAULT_REFRESH.as_secs_f64())]
        pub refresh: f64,
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
                        live.record(&s);
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
                            live.record(&s);
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

/// The live view's redraw interval (`--refresh`).
pub fn refresh_from_args(args: &LoadArgs) -> Result<Duration, String> {
    let min = view::MIN_REFRESH.as_secs_f64();
    if args.refresh.is_finite() && args.refresh >= min {
        Ok(Duration::from_secs_f64(args.refresh))
    } else {
        Err(format!(
            "invalid --refresh {}: expected seconds >= {min}",
            args.refresh
        ))
    }
}

/// Runs `vespa load`; returns the exit code (1 when no request succeeded).
pub async fn run(args: &LoadArgs, env: &dyn Env) -> i32 {
    let (target, generator, plan) = match plan_from_args(args, env) {
        Ok(p) => p,
        Err(e) => return usage(e),
    };
    let refresh = match refresh_from_args(args) {
        Ok(r) => r,
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
    let goal = view::Goal {
        requests: plan.requests,
        duration: plan.duration,
    };
    let view = (!args.json && std::io::stderr().is_terminal())
        .then(|| view::View::start(Arc::clone(&live), goal, refresh));
    let report = run_load(target, generator, plan, live).await;
    if let Some(v) = view {
        v.finish().await;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        print!("{}", report.text());
        if std::io::stdout().is_terminal() {
            print!(
                "{}",
                report.histogram_text(view::HISTOGRAM_ROWS, view::WIDTH)
            );
        }
    }
    if report.ok > 0 { 0 } else { 1 }
}
