//! `vespa worker` settings.

use super::{ConfigError, Env, Raw, lookup};
use crate::profile::Profile;
use crate::signing::SignatureForm;
use http::Uri;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Flags of `vespa worker`. Each one can also be set by the environment variable named in
/// its help; the flag wins.
#[derive(Debug, Default, Clone, clap::Args)]
#[command(next_line_help = false)]
pub struct WorkerArgs {
    /// Address to listen on. [env: WORKER_PORT (port only, on 0.0.0.0)] [default: 0.0.0.0:3000]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Base URL of the model server; requests go to this URL plus their own path and query.
    /// [env: BACKEND_URL] [default: http://localhost:8000]
    #[arg(long, value_name = "URL")]
    pub backend_url: Option<String>,
    /// Backend profile: a built-in (openai, openai-chat, tgi, comfyui), a TOML file, PyWorker's
    /// benchmarks.NAME:benchmark, or none (fixed capacity from MAX_PERF).
    /// [env: BENCHMARK] [default: none when MAX_PERF is set]
    #[arg(long, value_name = "NAME")]
    pub benchmark: Option<String>,
    /// Fixed capacity in workload units per second: required with BENCHMARK=none; with a
    /// profile it skips the benchmark. [env: MAX_PERF] [default: measured by the benchmark]
    #[arg(long, value_name = "UNITS_PER_S")]
    pub max_perf: Option<String>,
    /// Backend path polled until it answers 200 before the worker is ready.
    /// [env: HEALTHCHECK_ENDPOINT] [default: /health]
    #[arg(long, value_name = "PATH")]
    pub healthcheck_endpoint: Option<String>,
    /// Seconds to wait for the backend to become healthy at start-up.
    /// [env: READY_TIMEOUT] [default: 1200]
    #[arg(long, value_name = "SECS")]
    pub ready_timeout: Option<String>,
    /// `false`: one backend request at a time, strict FIFO. [env: ALLOW_PARALLEL] [default: true]
    #[arg(long, value_name = "BOOL")]
    pub allow_parallel: Option<String>,
    /// Maximum backend requests in flight; more wait in a FIFO queue.
    /// [env: MAX_CONCURRENCY] [default: unlimited]
    #[arg(long, value_name = "N")]
    pub max_concurrency: Option<String>,
    /// Reject with 429 when the estimated wait exceeds this many seconds.
    /// [env: MAX_WAIT_TIME] [default: 10]
    #[arg(long, value_name = "SECS")]
    pub max_wait_time: Option<String>,
    /// Workload of a request that carries no usable cost. [env: DEFAULT_COST] [default: 1]
    #[arg(long, value_name = "UNITS")]
    pub default_cost: Option<String>,
    /// Skip signature checks and accept plain (non-envelope) requests. Development only.
    /// [env: UNSECURED] [default: false]
    #[arg(long, value_name = "BOOL")]
    pub unsecured: Option<String>,
    /// Sent to the backend as `Authorization: Bearer …` (vLLM `--api-key`).
    /// [env: BACKEND_API_KEY] [default: none]
    #[arg(long, value_name = "KEY")]
    pub backend_api_key: Option<String>,
    /// Largest accepted request body (bytes, or with K/M/G/KiB/MiB/GiB).
    /// [env: MAX_BODY_SIZE] [default: 64MiB]
    #[arg(long, value_name = "SIZE")]
    pub max_body_size: Option<String>,
    /// Seconds to wait for a TCP connection to the backend. [env: CONNECT_TIMEOUT] [default: 10]
    #[arg(long, value_name = "SECS")]
    pub connect_timeout: Option<String>,
    /// Seconds to wait for the backend's response headers; 504 after.
    /// [env: RESPONSE_START_TIMEOUT] [default: none]
    #[arg(long, value_name = "SECS")]
    pub response_start_timeout: Option<String>,
    /// Seconds allowed between two body frames of a response; the request errors after.
    /// [env: IDLE_TIMEOUT] [default: none]
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<String>,
    /// Seconds an idle backend connection is kept for reuse; keep it below the backend's own
    /// keep-alive (uvicorn: 5 s). [env: BACKEND_POOL_IDLE_TIMEOUT] [default: 4]
    #[arg(long, value_name = "SECS")]
    pub backend_pool_idle_timeout: Option<String>,
    /// Log level: trace, debug, info, warning, error. [env: LOG_LEVEL] [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format: text or json. [env: LOG_FORMAT] [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Model name used in benchmark requests. [env: MODEL_NAME] [default: model]
    #[arg(long, value_name = "NAME")]
    pub model_name: Option<String>,
    /// Autoscaler base URL(s), comma-separated, tried in order. Optional outside Vast.
    /// [env: REPORT_ADDR] [default: none]
    #[arg(long, value_name = "URLS")]
    pub report_addr: Option<String>,
    /// Token sent with every report. Optional outside Vast. [env: MASTER_TOKEN] [default: none]
    #[arg(long, value_name = "TOKEN")]
    pub master_token: Option<String>,
    /// This worker's id in reports (an integer). Optional outside Vast.
    /// [env: CONTAINER_ID] [default: none]
    #[arg(long, value_name = "ID")]
    pub container_id: Option<String>,
    /// Public IP address reported as part of the worker URL. Optional outside Vast.
    /// [env: PUBLIC_IPADDR] [default: none]
    #[arg(long, value_name = "IP")]
    pub public_ipaddr: Option<String>,
    /// Public port reported as part of the worker URL.
    /// [env: VAST_TCP_PORT_<WORKER_PORT>] [default: the listen port]
    #[arg(long, value_name = "PORT")]
    pub public_port: Option<String>,
    /// Whether the reported worker URL is https. [env: USE_SSL] [default: false]
    #[arg(long, value_name = "BOOL")]
    pub use_ssl: Option<String>,
    /// Which message signatures cover: url, legacy or any. [env: SIGNATURE_FORM] [default: url]
    #[arg(long, value_name = "FORM")]
    pub signature_form: Option<String>,
    /// Replay protection window in reqnums; 0 turns it off. [env: REPLAY_WINDOW] [default: 0]
    #[arg(long, value_name = "N")]
    pub replay_window: Option<String>,
    /// File caching the benchmark result per profile and backend; `none` disables it.
    /// [env: BENCHMARK_CACHE] [default: .has_benchmark]
    #[arg(long, value_name = "PATH")]
    pub benchmark_cache: Option<String>,
    /// Seconds to finish in-flight work after SIGTERM/SIGINT before exiting.
    /// [env: DRAIN_TIMEOUT] [default: 30]
    #[arg(long, value_name = "SECS")]
    pub drain_timeout: Option<String>,
}

/// How the worker learns its capacity (`max_perf`) and counts workload.
#[derive(Debug, Clone)]
pub enum Benchmark {
    /// No profile: `MAX_PERF` is the capacity, `DEFAULT_COST` the workload of requests
    /// without a cost.
    None,
    /// A backend profile: its workload rule counts requests without a cost, and, unless
    /// `MAX_PERF` fixes the capacity, its benchmark measures it at start-up.
    Profile {
        /// The profile.
        profile: Arc<Profile>,
        /// Run the benchmark (false when `MAX_PERF` is given).
        measure: bool,
    },
}

impl Benchmark {
    /// The profile, if any.
    pub fn profile(&self) -> Option<&Arc<Profile>> {
        match self {
            Benchmark::Profile { profile, .. } => Some(profile),
            Benchmark::None => None,
        }
    }
}

/// Validated `vespa worker` configuration. Build it with [`WorkerConfig::load`], or with
/// [`WorkerConfig::new`] and field updates in tests and embedders.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Listen address. Default is `0.0.0.0:3000`.
    pub listen: SocketAddr,
    /// Backend base URL (scheme http, no query). Default is `http://localhost:8000`.
    pub backend_url: Uri,
    /// Capacity source. Default is [`Benchmark::None`].
    pub benchmark: Benchmark,
    /// Capacity in workload units per second.
    pub max_perf: f64,
    /// Backend health path. Default is `/health`.
    pub healthcheck_endpoint: String,
    /// Start-up health wait limit. Default is 1200 s.
    pub ready_timeout: Duration,
    /// Interval between start-up health polls. Default is 5 s.
    pub ready_poll_interval: Duration,
    /// `false` serialises backend requests. Default is `true`.
    pub allow_parallel: bool,
    /// Cap on parallel backend requests. Default is none.
    pub max_concurrency: Option<usize>,
    /// 429 threshold on the estimated wait, seconds. Default is 10.
    pub max_wait_time: f64,
    /// Workload of requests without a cost. Default is 1.
    pub default_cost: f64,
    /// Skip signature checks. Default is `false`.
    pub unsecured: bool,
    /// Bearer token for the backend. Default is none.
    pub backend_api_key: Option<String>,
    /// Request body limit in bytes. Default is 64 MiB.
    pub max_body_size: u64,
    /// Backend TCP connect timeout. Default is 10 s.
    pub connect_timeout: Duration,
    /// Limit on the wait for backend response headers. Default is none.
    pub response_start_timeout: Option<Duration>,
    /// Limit on the gap between response body frames. Default is none.
    pub idle_timeout: Option<Duration>,
    /// How long idle backend connections are kept. Default is 4 s.
    pub pool_idle_timeout: Duration,
    /// `tracing` filter directive. Default is `info`.
    pub log_level: String,
    /// Emit JSON log lines. Default is `false`.
    pub log_json: bool,
    /// Model name for benchmark payloads. Default is `model`.
    pub model_name: String,
    /// Vast.ai identity and reporting settings.
    pub vast: VastSettings,
    /// Signed message form. Default is [`SignatureForm::Url`].
    pub signature_form: SignatureForm,
    /// Replay window in reqnums; 0 is off. Default is 0.
    pub replay_window: u64,
    /// Time allowed for in-flight work on shutdown. Default is 30 s.
    pub drain_timeout: Duration,
    /// Interval of the periodic backend health check once ready. Default is 10 s.
    pub health_interval: Duration,
    /// Interval of the 1 s report tick. Default is 1 s.
    pub report_tick: Duration,
    /// Benchmark cache file; `None` disables it. Default is `.has_benchmark`.
    pub benchmark_cache: Option<PathBuf>,
    /// Pause after a failed report attempt. Default is 2 s.
    pub report_retry_pause: Duration,
    /// Unit of the public key fetch back-off (1, 2, 4, 8 units). Default is 1 s.
    pub pubkey_backoff_unit: Duration,
}

/// Settings that only matter on Vast.ai (all optional elsewhere).
#[derive(Debug, Clone, Default)]
pub struct VastSettings {
    /// Autoscaler base URLs, in failover order.
    pub report_addrs: Vec<Uri>,
    /// Report token (`mtoken`).
    pub master_token: Option<String>,
    /// Worker id (`id`).
    pub container_id: Option<i64>,
    /// Public IP of the worker URL.
    pub public_ipaddr: Option<String>,
    /// Public port of the worker URL.
    pub public_port: Option<u16>,
    /// Report an https worker URL.
    pub use_ssl: bool,
}

impl WorkerConfig {
    /// Defaults for a backend at `backend_url` with a fixed capacity `max_perf`.
    pub fn new(backend_url: Uri, max_perf: f64) -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 3000),
            backend_url,
            benchmark: Benchmark::None,
            max_perf,
            healthcheck_endpoint: "/health".into(),
            ready_timeout: Duration::from_secs(1200),
            ready_poll_interval: Duration::from_secs(5),
            allow_parallel: true,
            max_concurrency: None,
            max_wait_time: 10.0,
            default_cost: 1.0,
            unsecured: false,
            backend_api_key: None,
            max_body_size: 64 << 20,
            connect_timeout: Duration::from_secs(10),
            response_start_timeout: None,
            idle_timeout: None,
            pool_idle_timeout: Duration::from_secs(4),
            log_level: "info".into(),
            log_json: false,
            model_name: "model".into(),
            vast: VastSettings::default(),
            signature_form: SignatureForm::Url,
            replay_window: 0,
            drain_timeout: Duration::from_secs(30),
            health_interval: Duration::from_secs(10),
            report_tick: Duration::from_secs(1),
            benchmark_cache: Some(PathBuf::from(".has_benchmark")),
            report_retry_pause: Duration::from_secs(2),
            pubkey_backoff_unit: Duration::from_secs(1),
        }
    }

    /// Builds the configuration from flags and the environment, validating every value.
    pub fn load(args: &WorkerArgs, env: &dyn Env) -> Result<Self, ConfigError> {
        let get = |flag: &Option<String>, name: &str, var: &str| lookup(flag, name, env, var);

        let backend_url = match get(&args.backend_url, "backend-url", "BACKEND_URL") {
            Some(raw) => parse_backend_url(&raw)?,
            None => Uri::from_static("http://localhost:8000"),
        };
        let max_perf = get(&args.max_perf, "max-perf", "MAX_PERF")
            .map(|r| r.f64_min(0.0))
            .transpose()?;
        let benchmark = match get(&args.benchmark, "benchmark", "BENCHMARK") {
            Some(raw) => parse_benchmark(&raw)?,
            None if max_perf.is_some() => Benchmark::None,
            None => {
                return Err(ConfigError::new(
                    "BENCHMARK",
                    "not set: use BENCHMARK=none with MAX_PERF=<workload units per second>",
                ));
            }
        };
        let (benchmark, max_perf) = match (benchmark, max_perf) {
            (Benchmark::None, Some(p)) if p > 0.0 => (Benchmark::None, p),
            (Benchmark::None, _) => {
                return Err(ConfigError::new(
                    "MAX_PERF",
                    "BENCHMARK=none needs MAX_PERF, the capacity in workload units per second (> 0)",
                ));
            }
            (Benchmark::Profile { profile, .. }, Some(p)) if p > 0.0 => (
                Benchmark::Profile {
                    profile,
                    measure: false,
                },
                p,
            ),
            (Benchmark::Profile { profile, .. }, _) => (
                Benchmark::Profile {
                    profile,
                    measure: true,
                },
                0.0,
            ),
        };
        let profile_health = benchmark.profile().and_then(|p| p.health.clone());
        let mut cfg = Self::new(backend_url, max_perf);
        cfg.benchmark = benchmark;
        if let Some(h) = profile_health {
            cfg.healthcheck_endpoint = h;
        }
        if let Some(raw) = get(&args.benchmark_cache, "benchmark-cache", "BENCHMARK_CACHE") {
            cfg.benchmark_cache = (!raw.value.trim().eq_ignore_ascii_case("none"))
                .then(|| PathBuf::from(raw.value.trim()));
        }

        let port_raw = get(&None, "", "WORKER_PORT");
        cfg.listen = match get(&args.listen, "listen", "") {
            Some(raw) => parse_listen(&raw)?,
            None => match &port_raw {
                Some(raw) => SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    u16::try_from(raw.u64_min(0)?)
                        .map_err(|_| raw.error("expected a port number"))?,
                ),
                None => cfg.listen,
            },
        };
        if let Some(raw) = get(
            &args.healthcheck_endpoint,
            "healthcheck-endpoint",
            "HEALTHCHECK_ENDPOINT",
        ) {
            if !raw.value.starts_with('/') {
                return Err(raw.error("expected a path starting with /"));
            }
            cfg.healthcheck_endpoint = raw.value;
        }
        if let Some(raw) = get(&args.ready_timeout, "ready-timeout", "READY_TIMEOUT") {
            cfg.ready_timeout = raw.secs()?;
        }
        if let Some(raw) = get(&args.allow_parallel, "allow-parallel", "ALLOW_PARALLEL") {
            cfg.allow_parallel = raw.bool()?;
        }
        if let Some(raw) = get(&args.max_concurrency, "max-concurrency", "MAX_CONCURRENCY") {
            cfg.max_concurrency = Some(raw.u64_min(1)? as usize);
        }
        if let Some(raw) = get(&args.max_wait_time, "max-wait-time", "MAX_WAIT_TIME") {
            cfg.max_wait_time = raw.f64_min(0.0)?;
        }
        if let Some(raw) = get(&args.default_cost, "default-cost", "DEFAULT_COST") {
            cfg.default_cost = raw.f64_min(0.0)?;
        }
        if let Some(raw) = get(&args.unsecured, "unsecured", "UNSECURED") {
            cfg.unsecured = raw.bool()?;
        }
        cfg.backend_api_key =
            get(&args.backend_api_key, "backend-api-key", "BACKEND_API_KEY").map(|r| r.value);
        if let Some(raw) = get(&args.max_body_size, "max-body-size", "MAX_BODY_SIZE") {
            cfg.max_body_size = raw.bytes()?;
        }
        if let Some(raw) = get(&args.connect_timeout, "connect-timeout", "CONNECT_TIMEOUT") {
            cfg.connect_timeout = raw
                .optional_secs()?
                .ok_or_else(|| raw.error("expected a number of seconds > 0"))?;
        }
        if let Some(raw) = get(
            &args.response_start_timeout,
            "response-start-timeout",
            "RESPONSE_START_TIMEOUT",
        ) {
            cfg.response_start_timeout = raw.optional_secs()?;
        }
        if let Some(raw) = get(&args.idle_timeout, "idle-timeout", "IDLE_TIMEOUT") {
            cfg.idle_timeout = raw.optional_secs()?;
        }
        if let Some(raw) = get(
            &args.backend_pool_idle_timeout,
            "backend-pool-idle-timeout",
            "BACKEND_POOL_IDLE_TIMEOUT",
        ) {
            cfg.pool_idle_timeout = raw.secs()?;
        }
        if let Some(raw) = get(&args.log_level, "log-level", "LOG_LEVEL") {
            cfg.log_level = parse_log_level(&raw)?;
        }
        if let Some(raw) = get(&args.log_format, "log-format", "LOG_FORMAT") {
            cfg.log_json = match raw.value.trim().to_ascii_lowercase().as_str() {
                "json" => true,
                "text" => false,
                _ => return Err(raw.error("expected text or json")),
            };
        }
        if let Some(raw) = get(&args.model_name, "model-name", "MODEL_NAME") {
            cfg.model_name = raw.value;
        }
        cfg.vast = load_vast(args, env, cfg.listen.port())?;
        if let Some(raw) = get(&args.signature_form, "signature-form", "SIGNATURE_FORM") {
            cfg.signature_form = raw.value.parse().map_err(|e: String| raw.error(e))?;
        }
        if let Some(raw) = get(&args.replay_window, "replay-window", "REPLAY_WINDOW") {
            cfg.replay_window = raw.u64_min(0)?;
        }
        if let Some(raw) = get(&args.drain_timeout, "drain-timeout", "DRAIN_TIMEOUT") {
            cfg.drain_timeout = raw.secs()?;
        }
        if !cfg.unsecured && cfg.vast.report_addrs.is_empty() {
            return Err(ConfigError::new(
                "REPORT_ADDR",
                "not set: signed requests need the autoscaler's public key from REPORT_ADDR/pubkey/ (set UNSECURED=true for local development)",
            ));
        }
        Ok(cfg)
    }
}

fn load_vast(
    args: &WorkerArgs,
    env: &dyn Env,
    worker_port: u16,
) -> Result<VastSettings, ConfigError> {
    let get = |flag: &Option<String>, name: &str, var: &str| lookup(flag, name, env, var);
    let mut vast = VastSettings::default();
    if let Some(raw) = get(&args.report_addr, "report-addr", "REPORT_ADDR") {
        vast.report_addrs = raw
            .value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| parse_http_url(&raw, s))
            .collect::<Result<_, _>>()?;
    }
    vast.master_token = get(&args.master_token, "master-token", "MASTER_TOKEN").map(|r| r.value);
    if let Some(raw) = get(&args.container_id, "container-id", "CONTAINER_ID") {
        vast.container_id = Some(
            raw.value
                .trim()
                .parse()
                .map_err(|_| raw.error("expected an integer"))?,
        );
    }
    vast.public_ipaddr = get(&args.public_ipaddr, "public-ipaddr", "PUBLIC_IPADDR")
        .map(|r| r.value.trim().to_string());
    let port_var = format!("VAST_TCP_PORT_{worker_port}");
    if let Some(raw) = get(&args.public_port, "public-port", &port_var) {
        vast.public_port =
            Some(u16::try_from(raw.u64_min(1)?).map_err(|_| raw.error("expected a port number"))?);
    }
    if let Some(raw) = get(&args.use_ssl, "use-ssl", "USE_SSL") {
        vast.use_ssl = raw.bool()?;
    }
    Ok(vast)
}

fn parse_benchmark(raw: &Raw) -> Result<Benchmark, ConfigError> {
    match raw.value.trim() {
        "none" | "NONE" | "None" => Ok(Benchmark::None),
        spec => match Profile::resolve(spec) {
            Ok(p) => Ok(Benchmark::Profile {
                profile: Arc::new(p),
                measure: true,
            }),
            Err(e) => Err(ConfigError::new(raw.origin.clone(), e.to_string())),
        },
    }
}

fn parse_listen(raw: &Raw) -> Result<SocketAddr, ConfigError> {
    let v = raw.value.trim();
    if let Ok(port) = v.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    let v = v
        .strip_prefix("localhost:")
        .map(|p| format!("127.0.0.1:{p}"));
    let v = v.as_deref().unwrap_or(raw.value.trim());
    v.parse()
        .map_err(|_| raw.error("expected HOST:PORT, e.g. 127.0.0.1:3000, or a port"))
}

fn parse_http_url(raw: &Raw, s: &str) -> Result<Uri, ConfigError> {
    let uri: Uri = s
        .parse()
        .map_err(|_| raw.error(format!("{s:?} is not a URL")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(raw.error(format!("{s:?} must start with http:// or https://"))),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(raw.error(format!("{s:?} has no host")));
    }
    Ok(uri)
}

fn parse_backend_url(raw: &Raw) -> Result<Uri, ConfigError> {
    let uri = parse_http_url(raw, raw.value.trim())?;
    if uri.scheme_str() != Some("http") {
        return Err(
            raw.error("only http:// backends are supported (the backend runs on the same machine)")
        );
    }
    if uri.query().is_some() {
        return Err(raw.error("must not contain a query string"));
    }
    Ok(uri)
}

fn parse_log_level(raw: &Raw) -> Result<String, ConfigError> {
    let level = match raw.value.trim().to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "critical" | "fatal" => "error",
        _ => return Err(raw.error("expected trace, debug, info, warning or error")),
    };
    Ok(level.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<WorkerConfig, ConfigError> {
        let map: std::collections::HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        WorkerConfig::load(&WorkerArgs::default(), &map)
    }

    #[test]
    fn minimal_unsecured_fixed_capacity() {
        let c = load(&[
            ("UNSECURED", "true"),
            ("BENCHMARK", "none"),
            ("MAX_PERF", "1000"),
            ("BACKEND_URL", "http://127.0.0.1:8000"),
        ])
        .unwrap();
        assert!(c.unsecured);
        assert_eq!(c.max_perf, 1000.0);
        assert_eq!(c.listen.port(), 3000);
        assert_eq!(c.backend_url, "http://127.0.0.1:8000/");
    }

    #[test]
    fn worker_port_selects_the_vast_public_port_variable() {
        let c = load(&[
            ("MAX_PERF", "5"),
            ("WORKER_PORT", "3001"),
            ("VAST_TCP_PORT_3001", "41234"),
            ("CONTAINER_ID", "17"),
            ("REPORT_ADDR", "https://run.vast.ai"),
        ])
        .unwrap();
        assert_eq!(c.listen.port(), 3001);
        assert_eq!(c.vast.public_port, Some(41234));
        assert_eq!(c.vast.container_id, Some(17));
    }

    #[test]
    fn flags_win_over_environment() {
        let args = WorkerArgs {
            max_perf: Some("7".into()),
            ..Default::default()
        };
        let env = [("MAX_PERF", "5"), ("UNSECURED", "1")];
        assert_eq!(WorkerConfig::load(&args, &env).unwrap().max_perf, 7.0);
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("MAX_PERF", "fast")], "MAX_PERF"),
            (
                &[("MAX_PERF", "1"), ("BACKEND_URL", "localhost:8000")],
                "BACKEND_URL",
            ),
            (&[("MAX_PERF", "1"), ("BENCHMARK", "quantum")], "BENCHMARK"),
            (&[("BENCHMARK", "none")], "MAX_PERF"),
            (&[], "BENCHMARK"),
            (
                &[("MAX_PERF", "1"), ("MAX_WAIT_TIME", "-3")],
                "MAX_WAIT_TIME",
            ),
            (
                &[("MAX_PERF", "1"), ("ALLOW_PARALLEL", "sometimes")],
                "ALLOW_PARALLEL",
            ),
            (
                &[("MAX_PERF", "1"), ("CONTAINER_ID", "abc")],
                "CONTAINER_ID",
            ),
            (
                &[("MAX_PERF", "1"), ("WORKER_PORT", "70000")],
                "WORKER_PORT",
            ),
            (
                &[
                    ("MAX_PERF", "1"),
                    ("REPORT_ADDR", "https://ok.example,ftp://x"),
                ],
                "REPORT_ADDR",
            ),
            (
                &[("MAX_PERF", "1"), ("MAX_CONCURRENCY", "0")],
                "MAX_CONCURRENCY",
            ),
            (&[("MAX_PERF", "1"), ("LOG_LEVEL", "loud")], "LOG_LEVEL"),
            (
                &[
                    ("MAX_PERF", "1"),
                    ("UNSECURED", "1"),
                    ("SIGNATURE_FORM", "rot13"),
                ],
                "SIGNATURE_FORM",
            ),
            (&[("MAX_PERF", "1")], "REPORT_ADDR"),
        ];
        for (env, var) in cases {
            let err = load(env).unwrap_err();
            assert_eq!(err.setting, *var, "{env:?} -> {err}");
        }
    }
}
