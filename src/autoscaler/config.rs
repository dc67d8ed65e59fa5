//! `vespa autoscaler` flags and the validated configuration built from them.

use super::registry::Limits;
use crate::env::{ConfigError, Env, NoEnv, Raw};
use crate::signing::{SignatureForm, SigningKey};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

crate::env::settings! {
    /// Flags of `vespa autoscaler`.
    pub struct AutoscalerArgs {
        /// An endpoint and its API key, as NAME=KEY. Repeat for more endpoints; at least one is
        /// required.
        #[arg(long = "endpoint", value_name = "NAME=KEY")]
        pub endpoints: Vec<String>,
        /// Print the public key PEM and exit.
        #[arg(long)]
        pub print_pubkey: bool,
        /// Log level: trace, debug, info, warning, error.
        #[arg(long, value_name = "LEVEL", default_value = "info")]
        pub log_level: String,
        /// Accept worker reports without a master token: anyone who can reach the port can
        /// then add workers to the pool and have clients routed to them. Development only.
        #[arg(long)]
        pub insecure: bool,
    }

    /// Address to listen on; port 0 picks a free port.
    listen: "listen" "ADDR", default DEFAULT_LISTEN;
    /// RSA private key (PEM, PKCS#8 or PKCS#1) that signs routes.
    key_file: "key-file" "PATH", unset "a fresh RSA-2048 key generated at start";
    /// What a route signature covers: `url` or `legacy` (PROTOCOL.md §3).
    signature_form: "signature-form" "FORM", default "url";
    /// Seconds of silence after which a worker is stale: kept, but not routed.
    stale_after: "stale-after" "SECS", default "30";
    /// Seconds of silence after which a worker is removed from the registry; at least
    /// --stale-after.
    prune_after: "prune-after" "SECS", default "60";
    /// Token workers must send as `mtoken` in their reports; required unless --insecure.
    master_token: "master-token" "TOKEN", unset "none: required unless --insecure",
        env "MASTER_TOKEN";
    /// Most workers kept; a new one beyond it replaces the one with the oldest report.
    max_workers: "max-workers" "N", default "1000";
    /// Most requests counted per worker between two of its reports; the oldest are
    /// dropped beyond it.
    max_routed_per_worker: "max-routed-per-worker" "N", default "1000";
    /// Largest /worker_status/ body read; larger is 413.
    max_report_body: "max-report-body" "SIZE", default "1MiB";
    /// Largest /delete_requests/ body read; larger is 413.
    max_delete_body: "max-delete-body" "SIZE", default "16MiB";
}

/// How `/worker_status/` and `/delete_requests/` are authenticated. There is no default:
/// an autoscaler that accepts anyone's reports routes clients to anyone's server, so
/// turning the check off is spelt out (`--insecure`).
#[derive(Clone, PartialEq, Eq)]
pub enum WorkerAuth {
    /// Reports must carry this token as `mtoken` (the worker's `MASTER_TOKEN`), else 401.
    MasterToken(String),
    /// Reports are not checked.
    Insecure,
}

impl std::fmt::Debug for WorkerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Internal: the token is a secret; configurations get logged with `?`.
        match self {
            Self::MasterToken(_) => f.write_str("MasterToken(..)"),
            Self::Insecure => f.write_str("Insecure"),
        }
    }
}

/// Validated `vespa autoscaler` configuration. Build it with [`AutoscalerConfig::new`] and
/// the builder methods (tests, embedders) or with [`AutoscalerConfig::from_args`].
#[derive(Debug, Clone)]
pub struct AutoscalerConfig {
    /// Address to listen on. Default is `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Endpoint name → API key. Default is none (every route is then a 404).
    pub endpoints: BTreeMap<String, String>,
    /// The key that signs routes; its public half is served at `/pubkey/`.
    pub signing_key: Arc<SigningKey>,
    /// What a signature covers. Default is [`SignatureForm::Url`]; `Any` is not a signing
    /// form and signs like `Url`.
    pub signature_form: SignatureForm,
    /// A worker silent this long is stale and not routed. Default is 30 s;
    /// `Duration::ZERO` makes every worker stale at once (for tests).
    pub stale_after: Duration,
    /// A worker silent this long is removed from the registry. Default is 60 s; at least
    /// `stale_after`.
    pub prune_after: Duration,
    /// How worker reports are authenticated; given to [`AutoscalerConfig::new`].
    pub worker_auth: WorkerAuth,
    /// Most workers kept. Default is 1000.
    pub max_workers: usize,
    /// Most requests counted per worker between two of its reports. Default is 1000.
    pub max_routed_per_worker: usize,
    /// Largest `/worker_status/` body, bytes. Default is 1 MiB.
    pub max_report_body: usize,
    /// Largest `/delete_requests/` body, bytes. Default is 16 MiB (a worker sends at most
    /// 10 000 records at once).
    pub max_delete_body: usize,
}

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

impl AutoscalerConfig {
    /// Defaults (those declared by [`AutoscalerArgs`]), signing with `signing_key`, checking
    /// worker reports as `worker_auth` says.
    pub fn new(signing_key: SigningKey, worker_auth: WorkerAuth) -> AutoscalerConfig {
        Self::with_settings(&AutoscalerArgs::default(), &NoEnv, signing_key, worker_auth)
            .expect("the declared defaults are valid")
    }

    /// The registry's limits.
    pub fn limits(&self) -> Limits {
        Limits {
            stale_after: self.stale_after,
            prune_after: self.prune_after,
            max_workers: self.max_workers,
            max_routed_per_worker: self.max_routed_per_worker,
        }
    }

    /// Adds an endpoint and its API key.
    #[must_use]
    pub fn endpoint(mut self, name: impl Into<String>, api_key: impl Into<String>) -> Self {
        self.endpoints.insert(name.into(), api_key.into());
        self
    }

    /// Validates the flags (and `MASTER_TOKEN` from `env`); loads the key file or generates
    /// a key. Every error names its flag (the binary exits 64 on it).
    pub fn from_args(
        args: &AutoscalerArgs,
        env: &dyn Env,
    ) -> Result<AutoscalerConfig, ConfigError> {
        let token = args
            .master_token()
            .get(env)
            .map(|r| r.value)
            .filter(|t| !t.is_empty());
        let worker_auth = match (token, args.insecure) {
            (Some(_), true) => {
                return Err(ConfigError::new(
                    "--insecure",
                    "give either --master-token (MASTER_TOKEN) or --insecure, not both",
                ));
            }
            (Some(t), false) => WorkerAuth::MasterToken(t),
            (None, true) => WorkerAuth::Insecure,
            (None, false) if args.print_pubkey => WorkerAuth::Insecure,
            (None, false) => {
                return Err(ConfigError::new(
                    "--master-token",
                    "required (or MASTER_TOKEN): the token workers send as mtoken; --insecure accepts reports from anyone",
                ));
            }
        };
        let key = match args.key_file().get(&NoEnv) {
            Some(raw) => {
                let path = &raw.value;
                let pem = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::new("--key-file", format!("{path}: {e}")))?;
                SigningKey::from_pem(&pem)
                    .map_err(|e| ConfigError::new("--key-file", format!("{path}: {e}")))?
            }
            None => SigningKey::generate()
                .map_err(|e| ConfigError::new("--key-file", format!("cannot generate: {e}")))?,
        };
        let mut c = Self::with_settings(args, env, key, worker_auth)?;
        for spec in &args.endpoints {
            let (name, key) = parse_endpoint(spec)?;
            if c.endpoints.insert(name.clone(), key).is_some() {
                return Err(ConfigError::new(
                    "--endpoint",
                    format!("endpoint {name:?} is given twice"),
                ));
            }
        }
        if c.endpoints.is_empty() && !args.print_pubkey {
            return Err(ConfigError::new(
                "--endpoint",
                "at least one --endpoint NAME=KEY is required",
            ));
        }
        Ok(c)
    }

    /// The declared settings of `args`, without endpoints.
    fn with_settings(
        args: &AutoscalerArgs,
        env: &dyn Env,
        signing_key: SigningKey,
        worker_auth: WorkerAuth,
    ) -> Result<AutoscalerConfig, ConfigError> {
        let raw = args.listen().get(env);
        let listen = raw
            .value
            .trim()
            .parse()
            .map_err(|_| raw.error("expected IP:PORT"))?;
        let raw = args.signature_form().get(env);
        let signature_form = match raw.value.parse() {
            Ok(f @ (SignatureForm::Url | SignatureForm::Legacy)) => f,
            _ => return Err(raw.error("expected url or legacy")),
        };
        let stale_after = secs(&args.stale_after().get(env))?;
        let raw = args.prune_after().get(env);
        let prune_after = secs(&raw)?;
        if prune_after < stale_after {
            return Err(raw.error(format!(
                "expected at least --stale-after ({} s)",
                stale_after.as_secs_f64()
            )));
        }
        Ok(AutoscalerConfig {
            listen,
            endpoints: BTreeMap::new(),
            signing_key: Arc::new(signing_key),
            signature_form,
            stale_after,
            prune_after,
            worker_auth,
            max_workers: count(&args.max_workers().get(env))?,
            max_routed_per_worker: count(&args.max_routed_per_worker().get(env))?,
            max_report_body: size(&args.max_report_body().get(env))?,
            max_delete_body: size(&args.max_delete_body().get(env))?,
        })
    }
}

/// Seconds >= 0 that fit a `Duration`.
fn secs(raw: &Raw) -> Result<Duration, ConfigError> {
    raw.f64_min(0.0)
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| raw.error("expected seconds >= 0"))
}

/// A whole number >= 1 that fits a `usize`.
fn count(raw: &Raw) -> Result<usize, ConfigError> {
    usize::try_from(raw.u64_min(1)?).map_err(|_| raw.error("too large"))
}

/// A byte size that fits a `usize`.
fn size(raw: &Raw) -> Result<usize, ConfigError> {
    usize::try_from(raw.bytes()?).map_err(|_| raw.error("too large"))
}

fn parse_endpoint(spec: &str) -> Result<(String, String), ConfigError> {
    match spec.split_once('=') {
        Some((name, key)) if !name.trim().is_empty() && !key.is_empty() => {
            Ok((name.trim().to_string(), key.to_string()))
        }
        _ => Err(ConfigError::new(
            "--endpoint",
            format!("expected NAME=KEY with both non-empty (got {spec:?})"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(endpoints: &[&str]) -> AutoscalerArgs {
        AutoscalerArgs {
            endpoints: endpoints.iter().map(|s| s.to_string()).collect(),
            key_file: Some(
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rsa_key.pem").into(),
            ),
            master_token: Some("tok".into()),
            ..AutoscalerArgs::default()
        }
    }

    #[test]
    fn defaults_apply_and_an_endpoint_key_may_contain_equals() {
        let c = AutoscalerConfig::from_args(&args(&["llm=abc=def"]), &NoEnv).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.endpoints["llm"], "abc=def");
        assert_eq!(c.signature_form, SignatureForm::Url);
        assert_eq!(c.stale_after, Duration::from_secs(30));
        assert_eq!(c.prune_after, Duration::from_secs(60));
        assert_eq!(c.worker_auth, WorkerAuth::MasterToken("tok".into()));
        assert_eq!((c.max_workers, c.max_routed_per_worker), (1000, 1000));
        assert_eq!((c.max_report_body, c.max_delete_body), (1 << 20, 16 << 20));
    }

    #[test]
    fn the_master_token_comes_from_the_flag_or_master_token_and_is_required() {
        let no_token = AutoscalerArgs {
            master_token: None,
            ..args(&["a=1"])
        };
        let e = AutoscalerConfig::from_args(&no_token, &NoEnv).unwrap_err();
        assert_eq!(e.setting, "--master-token");
        assert!(e.to_string().contains("--insecure"), "{e}");
        let c = AutoscalerConfig::from_args(&no_token, &[("MASTER_TOKEN", "env-tok")]).unwrap();
        assert_eq!(c.worker_auth, WorkerAuth::MasterToken("env-tok".into()));
        let c = AutoscalerConfig::from_args(&args(&["a=1"]), &[("MASTER_TOKEN", "env")]).unwrap();
        assert_eq!(
            c.worker_auth,
            WorkerAuth::MasterToken("tok".into()),
            "the flag wins"
        );
        let empty = AutoscalerConfig::from_args(&no_token, &[("MASTER_TOKEN", "")]);
        assert_eq!(empty.unwrap_err().setting, "--master-token");
        let insecure = AutoscalerArgs {
            insecure: true,
            ..no_token.clone()
        };
        let c = AutoscalerConfig::from_args(&insecure, &NoEnv).unwrap();
        assert_eq!(c.worker_auth, WorkerAuth::Insecure);
        let both = AutoscalerArgs {
            insecure: true,
            ..args(&["a=1"])
        };
        let e = AutoscalerConfig::from_args(&both, &NoEnv).unwrap_err();
        assert_eq!(e.setting, "--insecure");
        assert!(!format!("{:?}", WorkerAuth::MasterToken("s3cret".into())).contains("s3cret"));
    }

    #[test]
    fn each_bad_flag_is_named() {
        let cases: Vec<(AutoscalerArgs, &str)> = vec![
            (args(&[]), "--endpoint"),
            (args(&["noequals"]), "--endpoint"),
            (args(&["=key"]), "--endpoint"),
            (args(&["a=1", "a=2"]), "--endpoint"),
            (
                AutoscalerArgs {
                    listen: Some("localhost".into()),
                    ..args(&["a=1"])
                },
                "--listen",
            ),
            (
                AutoscalerArgs {
                    signature_form: Some("any".into()),
                    ..args(&["a=1"])
                },
                "--signature-form",
            ),
            (
                AutoscalerArgs {
                    stale_after: Some("-1".into()),
                    ..args(&["a=1"])
                },
                "--stale-after",
            ),
            (
                AutoscalerArgs {
                    stale_after: Some("1e30".into()),
                    ..args(&["a=1"])
                },
                "--stale-after",
            ),
            (
                AutoscalerArgs {
                    prune_after: Some("10".into()),
                    ..args(&["a=1"])
                },
                "--prune-after",
            ),
            (
                AutoscalerArgs {
                    max_workers: Some("0".into()),
                    ..args(&["a=1"])
                },
                "--max-workers",
            ),
            (
                AutoscalerArgs {
                    max_routed_per_worker: Some("many".into()),
                    ..args(&["a=1"])
                },
                "--max-routed-per-worker",
            ),
            (
                AutoscalerArgs {
                    max_report_body: Some("0".into()),
                    ..args(&["a=1"])
                },
                "--max-report-body",
            ),
            (
                AutoscalerArgs {
                    max_delete_body: Some("lots".into()),
                    ..args(&["a=1"])
                },
                "--max-delete-body",
            ),
            (
                AutoscalerArgs {
                    key_file: Some("/nonexistent/key.pem".into()),
                    ..args(&["a=1"])
                },
                "--key-file",
            ),
        ];
        for (a, flag) in cases {
            let e = AutoscalerConfig::from_args(&a, &NoEnv).unwrap_err();
            assert_eq!(e.setting, flag, "{a:?}: {e}");
        }
    }
}
