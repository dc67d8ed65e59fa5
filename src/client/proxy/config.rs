//! `vespa proxy` flags and the validated configuration built from them.

use crate::client::discovery::DEFAULT_CONSOLE_URL;
use crate::client::{ClientConfig, DEFAULT_AUTOSCALER_URL, SessionSpec};
use crate::env::{ConfigError, Env, NoEnv, Raw};
use crate::profile::Profile;
use crate::tls::client::WorkerCa;
use crate::tls::vast_ca::default_cache_path;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Default listen address (PyWorker's `client.py` proxy port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8010";

crate::env::settings! {
    /// Flags of `vespa proxy`.
    pub struct ProxyArgs {
        /// Log level: trace, debug, info, warning, error.
        #[arg(long, value_name = "LEVEL", default_value = "info")]
        pub log_level: String,
    }

    /// Address to listen on; port 0 picks a free port.
    listen: "listen" "ADDR", default DEFAULT_LISTEN;
    /// Name of the endpoint to call. Required, except with --debug-worker-url.
    endpoint: "endpoint" "NAME", unset "";
    /// The endpoint's API key.
    api_key: "api-key" "KEY", unset "", env "VAST_API_KEY";
    /// Account API key: look the endpoint's key up at the console (used when no
    /// --api-key / VAST_API_KEY is given).
    account_key: "account-key" "KEY", unset "";
    /// Autoscaler base URL.
    autoscaler_url: "autoscaler-url" "URL", default DEFAULT_AUTOSCALER_URL;
    /// Console base URL for --account-key, and to fetch Vast's root CA from.
    console_url: "console-url" "URL", default DEFAULT_CONSOLE_URL;
    /// CA file (PEM or DER) that https workers' certificates must chain to.
    ca_cert: "ca-cert" "FILE", unset "Vast's root CA, fetched from the console once and cached", env "VAST_CA_CERT";
    /// Send every request to this worker without routing, with an unsigned auth_data (the
    /// worker must run with UNSECURED=true).
    debug_worker_url: "debug-worker-url" "URL", unset "route through the autoscaler";
    /// Backend profile (built-in name or TOML file) whose rule for the request's route sets
    /// its cost when it has no X-Serverless-Cost header.
    profile: "profile" "NAME|FILE", unset "none; cost 1";
    /// Seconds to wait for a ready worker before answering 503 no_worker.
    route_timeout: "route-timeout" "SECS", default "60";
    /// Workers tried per request when one is unreachable or answers 429/503 before
    /// responding.
    max_attempts: "max-attempts" "N", default "3";
    /// Largest request body (held in memory for retries), e.g. 64MiB.
    max_body_size: "max-body-size" "BYTES", default "256MiB";
    /// Pin requests without an X-Vespa-Session header to the session of this name (opened
    /// on the first request, reopened if it ends).
    session: "session" "NAME", unset "only requests with an X-Vespa-Session header use sessions";
    /// Workload each session holds on its worker while open (the cost of its route call).
    session_cost: "session-cost" "UNITS", unset "the profile's or default cost of 1";
    /// Seconds a session lives without requests; each request extends it.
    session_lifetime: "session-lifetime" "SECS", default "60";
    /// Most sessions the proxy holds open at once; a request naming one more gets 429.
    max_sessions: "max-sessions" "N", default "256";
}

/// Where to look up the endpoint's API key at start.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// Console base URL. Default is `https://console.vast.ai`.
    pub console_url: String,
    /// The account API key.
    pub account_key: String,
}

/// Validated `vespa proxy` configuration.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Address to listen on. Default is `127.0.0.1:8010`.
    pub listen: SocketAddr,
    /// The client requests go through. With `discovery`, its `api_key` is filled in at
    /// start.
    pub client: ClientConfig,
    /// Find the API key from an account key at start. Default is `None`.
    pub discovery: Option<Discovery>,
    /// Largest request body, bytes; larger ones get 413. Default is 256 MiB.
    pub max_body_size: u64,
    /// Sessions requests are pinned to. Default is [`SessionsConfig::default`].
    pub sessions: SessionsConfig,
}

/// How `vespa proxy` uses sessions (the `X-Vespa-Session` header).
#[derive(Debug, Clone)]
pub struct SessionsConfig {
    /// Session of requests without the header. Default is `None`: no session.
    pub default: Option<String>,
    /// What each session asks for. Default is [`SessionSpec::default`] (lifetime 60 s).
    pub spec: SessionSpec,
    /// Most sessions held at once. Default is 256.
    pub max: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            default: None,
            spec: SessionSpec::default(),
            max: 256,
        }
    }
}

impl ProxyConfig {
    /// Defaults around `client`: the declared defaults of [`ProxyArgs`].
    pub fn new(client: ClientConfig) -> ProxyConfig {
        let args = ProxyArgs::default();
        ProxyConfig {
            listen: listen(&args.listen().get(&NoEnv)).expect("a valid default"),
            client,
            discovery: None,
            max_body_size: args
                .max_body_size()
                .get(&NoEnv)
                .bytes()
                .expect("a valid default"),
            sessions: SessionsConfig::default(),
        }
    }

    /// Validates the flags; errors name the flag.
    pub fn from_args(args: &ProxyArgs, env: &dyn Env) -> Result<ProxyConfig, ConfigError> {
        let listen = listen(&args.listen().get(env))?;
        let debug_worker_url = args.debug_worker_url().get(env).map(url).transpose()?;
        let endpoint = match args.endpoint().get(env) {
            Some(raw) if raw.value.trim().is_empty() => return Err(raw.error("must not be empty")),
            Some(raw) => raw.value.trim().to_string(),
            None if debug_worker_url.is_some() => "debug".to_string(),
            None => {
                return Err(ConfigError::new(
                    "--endpoint",
                    "required: the name of the endpoint to call",
                ));
            }
        };
        let console_url = url(args.console_url().get(env))?;
        let worker_ca = args
            .ca_cert()
            .get(env)
            .map(|raw| ca_file(&raw))
            .transpose()?;
        let (api_key, discovery) = match (args.api_key().get(env), args.account_key().get(env)) {
            (Some(key), _) => (key.value.trim().to_string(), None),
            (None, Some(account)) => (
                String::new(),
                Some(Discovery {
                    console_url: console_url.clone(),
                    account_key: account.value.trim().to_string(),
                }),
            ),
            (None, None) if debug_worker_url.is_some() => (String::new(), None),
            (None, None) => {
                return Err(ConfigError::new(
                    "--api-key",
                    "required: give --api-key, VAST_API_KEY, or --account-key",
                ));
            }
        };
        let autoscaler_url = url(args.autoscaler_url().get(env))?;
        let mut client = ClientConfig::new(autoscaler_url, endpoint, api_key);
        client.debug_worker_url = debug_worker_url;
        client.worker_ca = worker_ca;
        client.console_url = console_url;
        client.ca_cache = default_cache_path(|name| env.var(name));
        if let Some(raw) = args.profile().get(env) {
            let profile = Profile::resolve(&raw.value).map_err(|e| raw.error(e))?;
            client.profile = Some(Arc::new(profile));
        }
        let raw = args.route_timeout().get(env);
        let secs = raw.f64_min(0.0)?;
        if secs <= 0.0 {
            return Err(raw.error("expected a number of seconds > 0"));
        }
        client.route_timeout = Duration::from_secs_f64(secs);
        let raw = args.max_attempts().get(env);
        client.max_attempts = u32::try_from(raw.u64_min(1)?)
            .map_err(|_| raw.error("expected a small whole number"))?;
        let max_body_size = args.max_body_size().get(env).bytes()?;
        let sessions = sessions(args, env)?;
        Ok(ProxyConfig {
            listen,
            client,
            discovery,
            max_body_size,
            sessions,
        })
    }
}

fn sessions(args: &ProxyArgs, env: &dyn Env) -> Result<SessionsConfig, ConfigError> {
    let default = match args.session().get(env) {
        Some(raw) if raw.value.trim().is_empty() => return Err(raw.error("must not be empty")),
        Some(raw) => Some(raw.value.trim().to_string()),
        None => None,
    };
    let cost = match args.session_cost().get(env) {
        Some(raw) => Some(raw.f64_min(0.0)?),
        None => None,
    };
    let raw = args.session_lifetime().get(env);
    let lifetime = raw.f64_min(0.0)?;
    if lifetime <= 0.0 {
        return Err(raw.error("expected a number of seconds > 0"));
    }
    let raw = args.max_sessions().get(env);
    let max = usize::try_from(raw.u64_min(1)?).map_err(|_| raw.error("too large"))?;
    Ok(SessionsConfig {
        default,
        spec: SessionSpec {
            cost,
            lifetime,
            ..SessionSpec::default()
        },
        max,
    })
}

fn listen(raw: &Raw) -> Result<SocketAddr, ConfigError> {
    raw.value
        .trim()
        .parse()
        .map_err(|_| raw.error("expected an address like 127.0.0.1:8010"))
}

/// The CA in the file `raw` names; an error naming the file when it is missing, unreadable
/// or holds no usable certificate.
pub(crate) fn ca_file(raw: &Raw) -> Result<WorkerCa, ConfigError> {
    WorkerCa::from_file(Path::new(raw.value.trim())).map_err(|e| raw.error(e))
}

/// An http(s) base URL, without its trailing slash.
pub(crate) fn url(raw: Raw) -> Result<String, ConfigError> {
    match reqwest::Url::parse(raw.value.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {
            Ok(raw.value.trim().trim_end_matches('/').to_string())
        }
        _ => Err(raw.error("expected an http:// or https:// URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut ProxyArgs)) -> ProxyArgs {
        let mut a = ProxyArgs {
            endpoint: Some("ep".into()),
            log_level: "info".into(),
            ..ProxyArgs::default()
        };
        f(&mut a);
        a
    }

    #[test]
    fn the_api_key_comes_from_the_flag_else_vast_api_key() {
        let env = [("VAST_API_KEY", "from-env")];
        let c = ProxyConfig::from_args(&args(|_| {}), &env).unwrap();
        assert_eq!(c.client.api_key, "from-env");
        assert_eq!(c.client.autoscaler_url, "https://run.vast.ai");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8010");
        let c = ProxyConfig::from_args(&args(|a| a.api_key = Some("flag".into())), &env).unwrap();
        assert_eq!(c.client.api_key, "flag");
        let c =
            ProxyConfig::from_args(&args(|a| a.account_key = Some("acct".into())), &[("X", "")])
                .unwrap();
        let d = c.discovery.unwrap();
        assert_eq!(
            (d.account_key.as_str(), d.console_url.as_str()),
            ("acct", "https://console.vast.ai")
        );
    }

    #[test]
    fn vast_ca_is_fetched_from_the_console_url_and_cached_under_the_cache_home() {
        let env = [("VAST_API_KEY", "k"), ("XDG_CACHE_HOME", "/cache")];
        let a = args(|a| a.console_url = Some("http://127.0.0.1:9/".into()));
        let c = ProxyConfig::from_args(&a, &env).unwrap();
        assert!(c.client.worker_ca.is_none());
        assert_eq!(c.client.console_url, "http://127.0.0.1:9");
        assert_eq!(
            c.client.ca_cache,
            Path::new("/cache/vespa/vast_root_ca.cer")
        );
    }

    #[test]
    fn an_unusable_ca_file_is_an_error_naming_the_setting_and_the_file() {
        let dir = std::env::temp_dir().join(format!("vespa-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let missing = dir.join("missing.pem");
        let key = [("VAST_API_KEY", "k")];
        for (file, problem) in [(&missing, "not found"), (&garbage, "no certificate")] {
            let path = file.to_str().unwrap();
            let e =
                ProxyConfig::from_args(&args(|a| a.ca_cert = Some(path.into())), &key).unwrap_err();
            assert_eq!(e.setting, "--ca-cert", "{e}");
            assert!(
                e.problem.contains(path) && e.problem.contains(problem),
                "{e}"
            );
            let env = [("VAST_API_KEY", "k"), ("VAST_CA_CERT", path)];
            let e = ProxyConfig::from_args(&args(|_| {}), &env).unwrap_err();
            assert_eq!(e.setting, "VAST_CA_CERT", "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_flags_name_the_flag() {
        let none: [(&str, &str); 0] = [];
        let key = |a: &mut ProxyArgs| a.api_key = Some("k".into());
        let cases: Vec<(ProxyArgs, &str)> = vec![
            (args(|_| {}), "--api-key"),
            (args(|a| a.endpoint = None), "--endpoint"),
            (
                args(|a| {
                    key(a);
                    a.listen = Some("nowhere".into())
                }),
                "--listen",
            ),
            (
                args(|a| {
                    key(a);
                    a.autoscaler_url = Some("ftp://x".into())
                }),
                "--autoscaler-url",
            ),
            (
                args(|a| {
                    key(a);
                    a.debug_worker_url = Some("::".into())
                }),
                "--debug-worker-url",
            ),
            (
                args(|a| {
                    key(a);
                    a.route_timeout = Some("0".into())
                }),
                "--route-timeout",
            ),
            (
                args(|a| {
                    key(a);
                    a.max_attempts = Some("0".into())
                }),
                "--max-attempts",
            ),
            (
                args(|a| {
                    key(a);
                    a.profile = Some("/no/such.toml".into())
                }),
                "--profile",
            ),
            (
                args(|a| {
                    key(a);
                    a.session_lifetime = Some("0".into())
                }),
                "--session-lifetime",
            ),
            (
                args(|a| {
                    key(a);
                    a.session_cost = Some("-1".into())
                }),
                "--session-cost",
            ),
            (
                args(|a| {
                    key(a);
                    a.max_sessions = Some("0".into())
                }),
                "--max-sessions",
            ),
            (
                args(|a| {
                    key(a);
                    a.session = Some(" ".into())
                }),
                "--session",
            ),
        ];
        for (a, flag) in cases {
            let e = ProxyConfig::from_args(&a, &none).unwrap_err();
            assert_eq!(e.setting, flag, "{e}");
        }
    }

    #[test]
    fn a_debug_worker_needs_no_endpoint_or_key() {
        let none: [(&str, &str); 0] = [];
        let a = ProxyArgs {
            debug_worker_url: Some("http://127.0.0.1:3000/".into()),
            ..ProxyArgs::default()
        };
        let c = ProxyConfig::from_args(&a, &none).unwrap();
        assert_eq!(
            c.client.debug_worker_url.as_deref(),
            Some("http://127.0.0.1:3000")
        );
        assert_eq!(c.client.endpoint, "debug");
    }
}
