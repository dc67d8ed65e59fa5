//! `vespa top` flags and the validated configuration built from them.
//!
//! The endpoint flags are those of `vespa load` and `vespa proxy` (`--endpoint`,
//! `--api-key` / `VAST_API_KEY`, `--autoscaler-url`), so one shell history serves all three.

use super::model::Watched;
use crate::client::DEFAULT_AUTOSCALER_URL;
use crate::env::{Env, NoEnv, Raw};
use crate::tls::client::WorkerCa;
use crate::tls::vast_ca::default_cache_path;
use std::path::PathBuf;
use std::time::Duration;

/// Shortest and longest `--interval`, seconds.
pub const INTERVAL_RANGE: (f64, f64) = (0.1, 60.0);
/// Shortest and longest `--timeout`, seconds.
pub const TIMEOUT_RANGE: (f64, f64) = (0.1, 60.0);

crate::env::settings! {
    /// Flags of `vespa top`.
    pub struct TopArgs {
        /// Watch this worker, by its base URL (e.g. http://127.0.0.1:3000); repeat the flag
        /// for several. Instead of --endpoint.
        #[arg(long = "worker", value_name = "URL")]
        pub workers: Vec<String>,
    }

    /// Watch the workers of this endpoint, as its autoscaler lists them
    /// (/get_endpoint_workers/).
    endpoint: "endpoint" "NAME", unset "";
    /// The endpoint's API key.
    api_key: "api-key" "KEY", unset "", env "VAST_API_KEY";
    /// Autoscaler base URL.
    autoscaler_url: "autoscaler-url" "URL", default DEFAULT_AUTOSCALER_URL;
    /// The workers' master token, to read /_vespa/status (a worker's error and wait
    /// limit); without it only the open /_vespa/metrics is read.
    master_token: "master-token" "TOKEN", unset "", env "MASTER_TOKEN";
    /// CA file (PEM or DER) that https workers' certificates must chain to.
    ca_cert: "ca-cert" "FILE", unset "Vast's root CA, fetched once and cached", env "VAST_CA_CERT";
    /// Seconds between two polls of the fleet, 0.1 to 60.
    interval: "interval" "SECS", default "1";
    /// Seconds each call to the autoscaler or a worker may take, 0.1 to 60; a worker that
    /// does not answer in time shows as unreachable.
    timeout: "timeout" "SECS", default "2";
    /// Seconds the rates (requests, 429s, errors per second) and time-to-first-byte
    /// percentiles cover, from --interval to 60.
    window: "window" "SECS", default "5";
    /// Stop after this many polls (off a terminal: rounds of lines).
    count: "count" "N", unset "until q, Esc or Ctrl-C";
}

/// Where the workers come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The workers an autoscaler lists for an endpoint.
    Endpoint {
        /// Autoscaler base URL, without a trailing slash.
        autoscaler_url: String,
        /// Endpoint name.
        name: String,
        /// The endpoint's API key.
        api_key: String,
    },
    /// Workers by base URL, without trailing slashes.
    Workers(Vec<String>),
}

impl Source {
    /// What the board's title says.
    pub fn watched(&self) -> Watched {
        match self {
            Source::Endpoint {
                autoscaler_url,
                name,
                ..
            } => Watched::Endpoint {
                name: name.clone(),
                autoscaler: autoscaler_url.clone(),
            },
            Source::Workers(_) => Watched::Workers,
        }
    }
}

/// Validated `vespa top` configuration.
#[derive(Debug, Clone)]
pub struct TopConfig {
    /// What to watch.
    pub source: Source,
    /// Time between two polls. Default is 1 s.
    pub interval: Duration,
    /// Time each HTTP call may take. Default is 2 s.
    pub timeout: Duration,
    /// The span rates and time-to-first-byte percentiles cover. Default is 5 s.
    pub window: Duration,
    /// Polls before stopping. Default is `None`: until the user quits.
    pub count: Option<u64>,
    /// Sent as `Authorization: Bearer` to `/_vespa/status`. Default is `None`.
    pub master_token: Option<String>,
    /// CA of https workers. Default is `None`: Vast's root CA, fetched on the first https
    /// worker and cached in `ca_cache`.
    pub worker_ca: Option<WorkerCa>,
    /// Cache file of Vast's root CA. Default is that of the process environment.
    pub ca_cache: PathBuf,
}

impl TopConfig {
    /// Defaults for `source`: the declared defaults of [`TopArgs`].
    pub fn new(source: Source) -> TopConfig {
        let args = TopArgs::default();
        let secs = |raw: Raw| raw.secs().expect("a valid default");
        TopConfig {
            source,
            interval: secs(args.interval().get(&NoEnv)),
            timeout: secs(args.timeout().get(&NoEnv)),
            window: secs(args.window().get(&NoEnv)),
            count: None,
            master_token: None,
            worker_ca: None,
            ca_cache: default_cache_path(|name| std::env::var(name).ok()),
        }
    }

    /// Validates the flags; the error names the flag.
    pub fn from_args(args: &TopArgs, env: &dyn Env) -> Result<TopConfig, String> {
        let endpoint = args.endpoint().get(env).map(|r| r.value);
        let source = match (endpoint, args.workers.is_empty()) {
            (Some(_), false) => return Err("give --endpoint NAME or --worker URL, not both".into()),
            (None, true) => {
                return Err(
                    "give --endpoint NAME (with --api-key) or --worker URL to watch".into(),
                );
            }
            (None, false) => {
                let urls = args
                    .workers
                    .iter()
                    .map(|w| crate::client::proxy::url(raw_flag(w, "worker")))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                Source::Workers(urls)
            }
            (Some(name), true) => {
                let api_key = args.api_key().get(env).map(|r| r.value);
                let Some(api_key) = api_key else {
                    return Err("--endpoint needs --api-key (or VAST_API_KEY)".into());
                };
                let autoscaler_url = crate::client::proxy::url(args.autoscaler_url().get(env))
                    .map_err(|e| e.to_string())?;
                Source::Endpoint {
                    autoscaler_url,
                    name,
                    api_key,
                }
            }
        };
        let mut c = TopConfig::new(source);
        c.interval = within(args.interval().get(env), INTERVAL_RANGE)?;
        c.timeout = within(args.timeout().get(env), TIMEOUT_RANGE)?;
        c.window = within(
            args.window().get(env),
            (
                c.interval.as_secs_f64(),
                super::model::HISTORY.as_secs_f64(),
            ),
        )?;
        c.count = args
            .count()
            .get(env)
            .map(|raw| raw.u64_min(1))
            .transpose()
            .map_err(|e| e.to_string())?;
        c.master_token = args.master_token().get(env).map(|r| r.value);
        c.worker_ca = args
            .ca_cert()
            .get(env)
            .map(|raw| crate::client::proxy::ca_file(&raw))
            .transpose()
            .map_err(|e| e.to_string())?;
        c.ca_cache = default_cache_path(|name| env.var(name));
        Ok(c)
    }
}

fn raw_flag(value: &str, flag: &str) -> Raw {
    Raw::flag(Some(value), flag).expect("a value was given")
}

/// Seconds from `range.0` to `range.1`.
fn within(raw: Raw, (min, max): (f64, f64)) -> Result<Duration, String> {
    let secs = raw.f64_min(0.0).map_err(|e| e.to_string())?;
    if !(min..=max).contains(&secs) {
        return Err(raw
            .error(format!("expected seconds from {min} to {max}"))
            .to_string());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: TopArgs,
    }

    fn config(argv: &[&str], env: &dyn Env) -> Result<TopConfig, String> {
        let cli = Cli::try_parse_from(std::iter::once("top").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        TopConfig::from_args(&cli.args, env)
    }

    #[test]
    fn workers_are_repeatable_and_lose_their_trailing_slash() {
        let c = config(
            &["--worker", "http://a:3000/", "--worker", "https://b"],
            &NoEnv,
        )
        .unwrap();
        assert_eq!(
            c.source,
            Source::Workers(vec!["http://a:3000".into(), "https://b".into()])
        );
        assert_eq!(
            (c.interval, c.timeout, c.window, c.count),
            (
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(5),
                None
            )
        );
    }

    #[test]
    fn an_endpoint_takes_its_key_from_the_environment_like_vespa_load() {
        let env = [("VAST_API_KEY", "k"), ("MASTER_TOKEN", "t")];
        let c = config(
            &["--endpoint", "demo", "--autoscaler-url", "http://as:8081/"],
            &env,
        )
        .unwrap();
        assert_eq!(
            c.source,
            Source::Endpoint {
                autoscaler_url: "http://as:8081".into(),
                name: "demo".into(),
                api_key: "k".into()
            }
        );
        assert_eq!(c.master_token.as_deref(), Some("t"));
    }

    #[test]
    fn bad_flags_are_refused_with_the_flag_named() {
        for (argv, want) in [
            (&[][..], "give --endpoint NAME"),
            (&["--endpoint", "e", "--worker", "http://a"][..], "not both"),
            (&["--endpoint", "e"][..], "--endpoint needs --api-key"),
            (&["--worker", "a:3000"][..], "--worker"),
            (
                &["--worker", "http://a", "--interval", "0"][..],
                "--interval",
            ),
            (
                &["--worker", "http://a", "--interval", "61"][..],
                "from 0.1 to 60",
            ),
            (&["--worker", "http://a", "--timeout", "x"][..], "--timeout"),
            (
                &["--worker", "http://a", "--interval", "5", "--window", "2"][..],
                "--window",
            ),
            (&["--worker", "http://a", "--count", "0"][..], "--count"),
            (
                &["--worker", "http://a", "--ca-cert", "/nonexistent"][..],
                "--ca-cert",
            ),
        ] {
            let e = config(argv, &NoEnv).unwrap_err();
            assert!(e.contains(want), "{argv:?}: {e}");
        }
    }
}
