//! `vespa autoscaler` flags and the validated configuration built from them.

use crate::env::{ConfigError, NoEnv};
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
    }

    /// Address to listen on; port 0 picks a free port.
    listen: "listen" "ADDR", default DEFAULT_LISTEN;
    /// RSA private key (PEM, PKCS#8 or PKCS#1) that signs routes.
    key_file: "key-file" "PATH", unset "a fresh RSA-2048 key generated at start";
    /// What a route signature covers: `url` or `legacy` (PROTOCOL.md §3).
    signature_form: "signature-form" "FORM", default "url";
    /// Seconds of silence after which a worker leaves the pool.
    stale_after: "stale-after" "SECS", default "30";
    /// Token workers must send as `mtoken` in their reports.
    master_token: "master-token" "TOKEN", unset "none, not checked";
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
    /// When set, `/worker_status/` and `/delete_requests/` must carry it as `mtoken`, else
    /// 401. Default is `None` (not checked).
    pub master_token: Option<String>,
}

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

impl AutoscalerConfig {
    /// Defaults (those declared by [`AutoscalerArgs`]), signing with `signing_key`.
    pub fn new(signing_key: SigningKey) -> AutoscalerConfig {
        Self::with_settings(&AutoscalerArgs::default(), signing_key)
            .expect("the declared defaults are valid")
    }

    /// Adds an endpoint and its API key.
    #[must_use]
    pub fn endpoint(mut self, name: impl Into<String>, api_key: impl Into<String>) -> Self {
        self.endpoints.insert(name.into(), api_key.into());
        self
    }

    /// Validates the flags; loads the key file or generates a key. Every error names its
    /// flag (the binary exits 64 on it).
    pub fn from_args(args: &AutoscalerArgs) -> Result<AutoscalerConfig, ConfigError> {
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
        let mut c = Self::with_settings(args, key)?;
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
        signing_key: SigningKey,
    ) -> Result<AutoscalerConfig, ConfigError> {
        let env = &NoEnv;
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
        let raw = args.stale_after().get(env);
        let stale_after = raw.secs().map_err(|_| raw.error("expected seconds >= 0"))?;
        let master_token = args
            .master_token()
            .get(env)
            .map(|r| r.value)
            .filter(|t| !t.is_empty());
        Ok(AutoscalerConfig {
            listen,
            endpoints: BTreeMap::new(),
            signing_key: Arc::new(signing_key),
            signature_form,
            stale_after,
            master_token,
        })
    }
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
            ..AutoscalerArgs::default()
        }
    }

    #[test]
    fn defaults_apply_and_an_endpoint_key_may_contain_equals() {
        let c = AutoscalerConfig::from_args(&args(&["llm=abc=def"])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.endpoints["llm"], "abc=def");
        assert_eq!(c.signature_form, SignatureForm::Url);
        assert_eq!(c.stale_after, Duration::from_secs(30));
        assert_eq!(c.master_token, None);
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
                    key_file: Some("/nonexistent/key.pem".into()),
                    ..args(&["a=1"])
                },
                "--key-file",
            ),
        ];
        for (a, flag) in cases {
            let e = AutoscalerConfig::from_args(&a).unwrap_err();
            assert_eq!(e.setting, flag, "{a:?}: {e}");
        }
    }
}
