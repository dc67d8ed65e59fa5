//! `vespa worker` configuration: the settings declared in `args.rs` ([`WorkerArgs`]),
//! validated once into a [`WorkerConfig`].

mod args;
mod parse;
#[cfg(test)]
mod tests;

pub use args::WorkerArgs;

use crate::env::{ConfigError, Env, NoEnv, Source};
use crate::profile::Profile;
use crate::serve::ServeLimits;
use crate::signing::SignatureForm;
use crate::tls::server::TlsFiles;
use crate::worker::model_log::{Engine, Markers, marker_list};
use crate::worker::observe::TraceContext;
use crate::worker::session::SessionRules;
use crate::worker::session::listener::HttpPort;
use http::Uri;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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

/// How the worker decides the model is loaded (`READINESS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The health path answers 200.
    Healthcheck,
    /// A load marker appears in `MODEL_LOG`.
    Logs,
    /// Both: the load marker, then the health path.
    Both,
}

impl Readiness {
    /// Whether the model log decides.
    pub fn uses_logs(self) -> bool {
        self != Readiness::Healthcheck
    }

    /// Whether the health path decides.
    pub fn uses_health(self) -> bool {
        self != Readiness::Logs
    }
}

/// The model server's log and what to look for in it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLog {
    /// The file, followed like `tail -F`.
    pub path: PathBuf,
    /// Load, error and info markers.
    pub markers: Markers,
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
    /// How loading is detected. Default is [`Readiness::Healthcheck`], or
    /// [`Readiness::Both`] with a model log.
    pub readiness: Readiness,
    /// The model log to follow. Default is none (the engine's log with `ENGINE`).
    pub model_log: Option<ModelLog>,
    /// Start-up wait for the model to load. Default is 1800 s.
    pub ready_timeout: Duration,
    /// Limit on one health probe. Default is 30 s.
    pub health_probe_timeout: Duration,
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
    /// Clamp on one request's workload. Default is none: `MAX_WAIT_TIME` seconds of work
    /// at `max_perf`.
    pub max_cost: Option<f64>,
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
    /// Limit on a relayed WebSocket's silence, both directions together. Default is 300 s.
    pub websocket_idle_timeout: Option<Duration>,
    /// How long idle backend connections are kept. Default is 4 s.
    pub pool_idle_timeout: Duration,
    /// Threads serving requests (`WORKER_THREADS`, 1 to [`MAX_WORKER_THREADS`]); read by
    /// the binary when it builds its runtime ([`crate::cli::Cli::runtime`]). Default is 1.
    pub worker_threads: usize,
    /// `tracing` filter directive. Default is `info`.
    pub log_level: String,
    /// Emit JSON log lines. Default is `false`.
    pub log_json: bool,
    /// One log line per finished proxied request. Default is `true`.
    pub access_log: bool,
    /// Create a `traceparent` for requests without one. Default is
    /// [`TraceContext::Passthrough`].
    pub trace_context: TraceContext,
    /// Model name for benchmark payloads. Default is `model`.
    pub model_name: String,
    /// Vast.ai identity and reporting settings.
    pub vast: VastSettings,
    /// Signed message form. Default is [`SignatureForm::Url`].
    pub signature_form: SignatureForm,
    /// Replay window in reqnums; 0 is off. Default is 0.
    pub replay_window: u64,
    /// Refuse url-form signatures for another worker's URL. Default is `true`.
    pub check_signed_url: bool,
    /// Time allowed for in-flight work on shutdown. Default is 30 s.
    pub drain_timeout: Duration,
    /// Certificate and key served over HTTPS; `Some` exactly when `USE_SSL=true`.
    pub tls: Option<TlsFiles>,
    /// Written on `POST /pyworker/update` before the drain. Default is `/.force_update`.
    pub force_update_file: PathBuf,
    /// Interval of the periodic backend health check once ready. Default is 10 s.
    pub health_interval: Duration,
    /// Interval of the 1 s report tick. Default is 1 s.
    pub report_tick: Duration,
    /// Benchmark cache file; `None` disables it. Default is `.has_benchmark`.
    pub benchmark_cache: Option<PathBuf>,
    /// Bound on the start-up benchmark. Default is 30 s.
    pub benchmark_max_time: Duration,
    /// Pause after a failed report attempt. Default is 2 s.
    pub report_retry_pause: Duration,
    /// Unit of the public key fetch back-off (1, 2, 4, 8 units). Default is 1 s.
    pub pubkey_backoff_unit: Duration,
    /// Limits on client connections: `HEADER_READ_TIMEOUT`, `SEND_TIMEOUT`,
    /// `MAX_CONNECTIONS`, `H2_MAX_CONCURRENT_STREAMS`, and HTTP/2's header list size and
    /// keep-alive pings ([`ServeLimits::default`]).
    pub serve_limits: ServeLimits,
    /// Limit on the wait for the next piece of a request body; 408 after. Default is 60 s.
    pub body_read_timeout: Option<Duration>,
    /// Bytes all buffered request bodies may hold at once. Default is 1 GiB.
    pub max_buffered_bytes: u64,
    /// `MAX_SESSIONS`, `MAX_SESSION_LIFETIME`, `SESSION_ON_CLOSE_TIMEOUT`
    /// ([`SessionRules::default`]).
    pub sessions: SessionRules,
    /// The plain-HTTP `/session/end` listener (`WORKER_HTTP_PORT`). Default is
    /// [`HttpPort::Next`].
    pub worker_http_port: HttpPort,
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
    /// Defaults for a backend at `backend_url` with a fixed capacity `max_perf`: every
    /// setting at its declared default ([`WorkerArgs::SETTINGS`]).
    pub fn new(backend_url: Uri, max_perf: f64) -> Self {
        Self::from_settings(
            &WorkerArgs::default(),
            &NoEnv,
            backend_url,
            Benchmark::None,
            max_perf,
        )
        .expect("the declared defaults are valid")
    }

    /// Builds the configuration from flags and the environment, validating every value.
    pub fn load(args: &WorkerArgs, env: &dyn Env) -> Result<Self, ConfigError> {
        let backend_url = parse::backend_url(&args.backend_url().get(env))?;
        let engine = match args.engine().get(env) {
            Some(raw) => Some(raw.value.parse::<Engine>().map_err(|e| raw.error(e))?),
            None => None,
        };
        let (benchmark, max_perf) = capacity(args, env, engine)?;
        let mut cfg = Self::from_settings(args, env, backend_url, benchmark, max_perf)?;
        if let Some(engine) = engine
            && args.healthcheck_endpoint().get(env).source == Source::Default
        {
            cfg.healthcheck_endpoint = engine.health_path().to_string();
        }
        cfg.model_log = model_log(args, env, engine);
        cfg.readiness = match args.readiness().get(env) {
            Some(raw) => parse::readiness(&raw)?,
            None if cfg.model_log.is_some() => Readiness::Both,
            None => Readiness::Healthcheck,
        };
        match &cfg.model_log {
            None if cfg.readiness.uses_logs() => {
                return Err(ConfigError::new(
                    "READINESS",
                    "logs readiness needs MODEL_LOG (or ENGINE) to name the model server's log",
                ));
            }
            Some(log) if cfg.readiness.uses_logs() && log.markers.load.is_empty() => {
                return Err(ConfigError::new(
                    "MODEL_LOAD_LOG_MSG",
                    "not set: logs readiness needs the line that means loaded (or ENGINE)",
                ));
            }
            _ => {}
        }
        if !cfg.unsecured && cfg.vast.report_addrs.is_empty() {
            return Err(ConfigError::new(
                "REPORT_ADDR",
                "not set: signed requests need the autoscaler's public key from REPORT_ADDR/pubkey/ (set UNSECURED=true for local development)",
            ));
        }
        Ok(cfg)
    }

    /// Every setting but the backend and the capacity, which the caller has settled.
    fn from_settings(
        args: &WorkerArgs,
        env: &dyn Env,
        backend_url: Uri,
        benchmark: Benchmark,
        max_perf: f64,
    ) -> Result<Self, ConfigError> {
        let benchmark_cache = args.benchmark_cache().get(env).value;
        let benchmark_cache = (!benchmark_cache.trim().eq_ignore_ascii_case("none"))
            .then(|| PathBuf::from(benchmark_cache.trim()));
        let listen = parse::listen(&args.listen().get(env))?;
        let raw = args.healthcheck_endpoint().get(env);
        let healthcheck_endpoint = match benchmark.profile().and_then(|p| p.health.clone()) {
            Some(path) if raw.source == Source::Default => path,
            _ if !raw.value.starts_with('/') => {
                return Err(raw.error("expected a path starting with /"));
            }
            _ => raw.value,
        };
        let raw = args.ready_timeout().get(env);
        let raw = match raw.source {
            // READY_TIMEOUT is the name earlier Vespa releases and PyWorker's seed read.
            Source::Default => args
                .ready_timeout()
                .get_from(env, "READY_TIMEOUT")
                .unwrap_or(raw),
            _ => raw,
        };
        let ready_timeout = raw.secs()?;
        let health_probe_timeout = {
            let raw = args.healthcheck_probe_timeout().get(env);
            raw.optional_secs()?
                .ok_or_else(|| raw.error("expected a number of seconds > 0"))?
        };
        let allow_parallel = args.allow_parallel().get(env).bool()?;
        let max_concurrency = match args.max_concurrency().get(env) {
            Some(raw) => Some(raw.u64_min(1)? as usize),
            None => None,
        };
        let max_wait_time = args.max_wait_time().get(env).f64_min(0.0)?;
        let default_cost = args.default_cost().get(env).f64_min(0.0)?;
        let max_cost = match args.max_cost().get(env) {
            Some(raw) => Some(raw.f64_min(0.0)?).filter(|c| *c > 0.0),
            None => None,
        };
        let unsecured = args.unsecured().get(env).bool()?;
        let backend_api_key = args.backend_api_key().get(env).map(|r| r.value);
        let max_body_size = args.max_body_size().get(env).bytes()?;
        let raw = args.connect_timeout().get(env);
        let connect_timeout = raw
            .optional_secs()?
            .ok_or_else(|| raw.error("expected a number of seconds > 0"))?;
        let response_start_timeout = args.response_start_timeout().get(env).optional_secs()?;
        let idle_timeout = args.idle_timeout().get(env).optional_secs()?;
        let websocket_idle_timeout = args.websocket_idle_timeout().get(env).optional_secs()?;
        let pool_idle_timeout = args.backend_pool_idle_timeout().get(env).secs()?;
        let worker_threads = worker_threads(args, env)?;
        let log_level = parse::log_level(&args.log_level().get(env))?;
        let raw = args.log_format().get(env);
        let log_json = match raw.value.trim().to_ascii_lowercase().as_str() {
            "json" => true,
            "text" => false,
            _ => return Err(raw.error("expected text or json")),
        };
        let access_log = args.access_log().get(env).bool()?;
        let trace_context = parse::trace_context(&args.trace_context().get(env))?;
        let model_name = {
            let raw = args.model_name().get(env);
            match raw.source {
                // Vast's templates name the served model in the engine's own variable.
                Source::Default => {
                    ["VLLM_MODEL", "SGLANG_MODEL", "LLAMA_MODEL"]
                        .iter()
                        .find_map(|var| args.model_name().get_from(env, var))
                        .unwrap_or(raw)
                        .value
                }
                _ => raw.value,
            }
        };
        let vast = load_vast(args, env, listen.port())?;
        let raw = args.signature_form().get(env);
        let signature_form = raw.value.parse().map_err(|e: String| raw.error(e))?;
        let replay_window = args.replay_window().get(env).u64_min(0)?;
        let check_signed_url = args.check_signed_url().get(env).bool()?;
        let drain_timeout = args.drain_timeout().get(env).secs()?;
        let benchmark_max_time = {
            let raw = args.benchmark_max_seconds().get(env);
            raw.optional_secs()?
                .ok_or_else(|| raw.error("expected a number of seconds > 0"))?
        };
        let tls = vast.use_ssl.then(|| {
            TlsFiles::new(
                args.tls_cert().get(env).value.trim(),
                args.tls_key().get(env).value.trim(),
            )
        });
        let force_update_file = PathBuf::from(args.force_update_file().get(env).value.trim());
        let serve_limits = serve_limits(args, env)?;
        let body_read_timeout = args.body_read_timeout().get(env).optional_secs()?;
        let max_buffered_bytes = args.max_buffered_bytes().get(env).bytes()?;
        let sessions = session_rules(args, env)?;
        let worker_http_port = match args.worker_http_port().get(env) {
            Some(raw) => parse::http_port(&raw)?,
            None => HttpPort::Next,
        };
        Ok(Self {
            listen,
            backend_url,
            benchmark,
            max_perf,
            healthcheck_endpoint,
            readiness: Readiness::Healthcheck,
            model_log: None,
            ready_timeout,
            health_probe_timeout,
            ready_poll_interval: Duration::from_secs(5),
            allow_parallel,
            max_concurrency,
            max_wait_time,
            default_cost,
            max_cost,
            unsecured,
            backend_api_key,
            max_body_size,
            connect_timeout,
            response_start_timeout,
            idle_timeout,
            websocket_idle_timeout,
            pool_idle_timeout,
            worker_threads,
            log_level,
            log_json,
            access_log,
            trace_context,
            model_name,
            vast,
            signature_form,
            replay_window,
            check_signed_url,
            drain_timeout,
            tls,
            force_update_file,
            health_interval: Duration::from_secs(10),
            report_tick: Duration::from_secs(1),
            benchmark_cache,
            benchmark_max_time,
            report_retry_pause: Duration::from_secs(2),
            pubkey_backoff_unit: Duration::from_secs(1),
            serve_limits,
            body_read_timeout,
            max_buffered_bytes,
            sessions,
            worker_http_port,
        })
    }
}

/// `MAX_SESSIONS` (0 is unlimited), `MAX_SESSION_LIFETIME`, `SESSION_ON_CLOSE_TIMEOUT`.
fn session_rules(args: &WorkerArgs, env: &dyn Env) -> Result<SessionRules, ConfigError> {
    let max_sessions = match args.max_sessions().get(env) {
        Some(raw) => Some(raw.u64_min(0)?)
            .filter(|n| *n > 0)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        None => None,
    };
    let raw = args.max_session_lifetime().get(env);
    let max_lifetime = raw
        .optional_secs()?
        .ok_or_else(|| raw.error("expected a number of seconds > 0"))?;
    let raw = args.session_on_close_timeout().get(env);
    let on_close_timeout = raw
        .optional_secs()?
        .ok_or_else(|| raw.error("expected a number of seconds > 0"))?;
    Ok(SessionRules {
        max_sessions,
        max_lifetime,
        on_close_timeout,
    })
}

/// The most threads `WORKER_THREADS` may ask for.
pub const MAX_WORKER_THREADS: u64 = 1024;

/// `WORKER_THREADS`: 1 to [`MAX_WORKER_THREADS`].
pub(crate) fn worker_threads(args: &WorkerArgs, env: &dyn Env) -> Result<usize, ConfigError> {
    let raw = args.worker_threads().get(env);
    match raw.u64_min(1)? {
        n if n > MAX_WORKER_THREADS => {
            Err(raw.error(format!("expected at most {MAX_WORKER_THREADS}")))
        }
        n => Ok(n as usize),
    }
}

/// `HEADER_READ_TIMEOUT`, `SEND_TIMEOUT`, `MAX_CONNECTIONS` and
/// `H2_MAX_CONCURRENT_STREAMS`; the other limits keep their defaults.
fn serve_limits(args: &WorkerArgs, env: &dyn Env) -> Result<ServeLimits, ConfigError> {
    let raw = args.h2_max_concurrent_streams().get(env);
    let h2_max_concurrent_streams =
        u32::try_from(raw.u64_min(1)?).map_err(|_| raw.error("expected at most 4294967295"))?;
    Ok(ServeLimits {
        header_read_timeout: args.header_read_timeout().get(env).optional_secs()?,
        send_timeout: args.send_timeout().get(env).optional_secs()?,
        max_connections: args.max_connections().get(env).u64_min(1)? as usize,
        h2_max_concurrent_streams,
        ..ServeLimits::default()
    })
}

/// `BENCHMARK` and `MAX_PERF`: the capacity source, and the capacity (0 until measured).
fn capacity(
    args: &WorkerArgs,
    env: &dyn Env,
    engine: Option<Engine>,
) -> Result<(Benchmark, f64), ConfigError> {
    let max_perf = args
        .max_perf()
        .get(env)
        .map(|r| r.f64_min(0.0))
        .transpose()?;
    let benchmark = match args.benchmark().get(env) {
        Some(raw) => parse::benchmark(&raw)?,
        None if max_perf.is_some() => Benchmark::None,
        None if let Some(engine) = engine => Benchmark::Profile {
            profile: Arc::new(
                Profile::built_in(engine.profile()).expect("engines name built-in profiles"),
            ),
            measure: true,
        },
        None => {
            return Err(ConfigError::new(
                "BENCHMARK",
                "not set: use BENCHMARK=none with MAX_PERF=<workload units per second>",
            ));
        }
    };
    match (benchmark, max_perf) {
        (Benchmark::None, Some(p)) if p > 0.0 => Ok((Benchmark::None, p)),
        (Benchmark::None, _) => Err(ConfigError::new(
            "MAX_PERF",
            "BENCHMARK=none needs MAX_PERF, the capacity in workload units per second (> 0)",
        )),
        (Benchmark::Profile { profile, .. }, Some(p)) if p > 0.0 => Ok((
            Benchmark::Profile {
                profile,
                measure: false,
            },
            p,
        )),
        (Benchmark::Profile { profile, .. }, _) => Ok((
            Benchmark::Profile {
                profile,
                measure: true,
            },
            0.0,
        )),
    }
}

/// `MODEL_LOG` and its markers, each defaulting to the engine's.
fn model_log(args: &WorkerArgs, env: &dyn Env, engine: Option<Engine>) -> Option<ModelLog> {
    let path = match args.model_log().get(env) {
        Some(raw) => PathBuf::from(raw.value.trim()),
        None => PathBuf::from(engine?.log_path()),
    };
    let defaults = engine.map(Engine::markers).unwrap_or_default();
    let list = |raw: Option<crate::env::Raw>, default: Vec<String>| match raw {
        Some(raw) => marker_list(&raw.value),
        None => default,
    };
    let markers = Markers {
        load: list(args.model_load_log_msg().get(env), defaults.load),
        error: list(args.model_error_log_msgs().get(env), defaults.error),
        info: list(args.model_info_log_msgs().get(env), defaults.info),
    };
    Some(ModelLog { path, markers })
}

fn load_vast(
    args: &WorkerArgs,
    env: &dyn Env,
    worker_port: u16,
) -> Result<VastSettings, ConfigError> {
    let report_addrs = match args.report_addr().get(env) {
        Some(raw) => raw
            .value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| parse::http_url(&raw, s))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let master_token = args.master_token().get(env).map(|r| r.value);
    let container_id = match args.container_id().get(env) {
        Some(raw) => Some(
            raw.value
                .trim()
                .parse()
                .map_err(|_| raw.error("expected an integer"))?,
        ),
        None => None,
    };
    let public_ipaddr = args
        .public_ipaddr()
        .get(env)
        .map(|r| r.value.trim().to_string());
    let port_var = format!("VAST_TCP_PORT_{worker_port}");
    let public_port = match args.public_port().get_from(env, &port_var) {
        Some(raw) => {
            Some(u16::try_from(raw.u64_min(1)?).map_err(|_| raw.error("expected a port number"))?)
        }
        None => None,
    };
    let use_ssl = args.use_ssl().get(env).bool()?;
    Ok(VastSettings {
        report_addrs,
        master_token,
        container_id,
        public_ipaddr,
        public_port,
        use_ssl,
    })
}
