//! Unit tests of the worker configuration.

use super::*;
use crate::env::ConfigError;

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
fn access_log_and_trace_context_are_read() {
    let base = [("MAX_PERF", "1"), ("UNSECURED", "1")];
    let c = load(&base).unwrap();
    assert!(c.access_log);
    assert_eq!(c.trace_context, TraceContext::Passthrough);
    let c = load(&[
        base[0],
        base[1],
        ("ACCESS_LOG", "false"),
        ("TRACE_CONTEXT", "generate"),
    ])
    .unwrap();
    assert!(!c.access_log);
    assert_eq!(c.trace_context, TraceContext::Generate);
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
        (
            &[
                ("MAX_PERF", "1"),
                ("UNSECURED", "1"),
                ("ACCESS_LOG", "maybe"),
            ],
            "ACCESS_LOG",
        ),
        (
            &[
                ("MAX_PERF", "1"),
                ("UNSECURED", "1"),
                ("TRACE_CONTEXT", "invent"),
            ],
            "TRACE_CONTEXT",
        ),
    ];
    for (env, var) in cases {
        let err = load(env).unwrap_err();
        assert_eq!(err.setting, *var, "{env:?} -> {err}");
    }
}

#[test]
fn every_declared_default_is_a_valid_value() {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: WorkerArgs,
    }
    use clap::Parser;
    // The defaults themselves: the table cannot hold a value its parser rejects.
    let c = WorkerConfig::new(Uri::from_static("http://127.0.0.1:8000"), 1.0);
    assert_eq!(c.listen.to_string(), "0.0.0.0:3000");
    assert_eq!(c.max_body_size, 64 << 20);
    assert_eq!(c.benchmark_cache, Some(PathBuf::from(".has_benchmark")));
    // And each one given as its flag.
    let env = [("MAX_PERF", "1"), ("REPORT_ADDR", "http://127.0.0.1:1")];
    for s in WorkerArgs::SETTINGS {
        let Some(default) = s.default else { continue };
        let flag = format!("--{}", s.flag);
        let cli = Cli::try_parse_from(["vespa", &flag, default]).unwrap();
        if let Err(e) = WorkerConfig::load(&cli.args, &env) {
            panic!("{flag} {default}: {e}");
        }
    }
}

#[test]
fn a_profile_health_path_applies_unless_one_is_given() {
    let (_, text) = crate::profile::BUILT_IN
        .iter()
        .find(|(n, _)| *n == "openai")
        .unwrap();
    let text = text.replace("health = \"/health\"", "health = \"/v1/models\"");
    let profile = Arc::new(Profile::parse(&text, "test").unwrap());
    let with = |args: &WorkerArgs| {
        let benchmark = Benchmark::Profile {
            profile: Arc::clone(&profile),
            measure: true,
        };
        let url = Uri::from_static("http://127.0.0.1:8000");
        WorkerConfig::from_settings(args, &NoEnv, url, benchmark, 0.0).unwrap()
    };
    assert_eq!(
        with(&WorkerArgs::default()).healthcheck_endpoint,
        "/v1/models"
    );
    let args = WorkerArgs {
        healthcheck_endpoint: Some("/ready".into()),
        ..Default::default()
    };
    assert_eq!(with(&args).healthcheck_endpoint, "/ready");
}

#[test]
fn pyworker_prefixed_names_are_aliases_and_the_plain_name_wins() {
    let c = load(&[("PYWORKER_MAX_PERF", "5"), ("PYWORKER_UNSECURED", "true")]).unwrap();
    assert_eq!(c.max_perf, 5.0);
    assert!(c.unsecured);
    let c = load(&[
        ("MAX_PERF", "7"),
        ("PYWORKER_MAX_PERF", "5"),
        ("UNSECURED", "1"),
    ])
    .unwrap();
    assert_eq!(c.max_perf, 7.0);
    let e = load(&[("PYWORKER_MAX_PERF", "fast"), ("UNSECURED", "1")]).unwrap_err();
    assert_eq!(e.setting, "PYWORKER_MAX_PERF");
}

#[test]
fn engine_sets_log_markers_health_and_profile_and_explicit_settings_win() {
    let c = load(&[("ENGINE", "vllm"), ("UNSECURED", "1")]).unwrap();
    let log = c.model_log.as_ref().unwrap();
    assert_eq!(log.path, PathBuf::from("/var/log/portal/vllm.log"));
    assert_eq!(log.markers.load, vec!["Application startup complete."]);
    assert_eq!(c.readiness, Readiness::Both);
    assert_eq!(c.healthcheck_endpoint, "/health");
    assert_eq!(c.benchmark.profile().unwrap().name, "openai");

    let c = load(&[
        ("ENGINE", "llama.cpp"),
        ("UNSECURED", "1"),
        ("MODEL_LOG", "/tmp/llama.log"),
        ("MODEL_LOAD_LOG_MSG", "ready to serve\nall slots idle"),
        ("READINESS", "logs"),
        ("BENCHMARK", "none"),
        ("MAX_PERF", "3"),
        ("HEALTHCHECK_ENDPOINT", "/v1/models"),
    ])
    .unwrap();
    let log = c.model_log.as_ref().unwrap();
    assert_eq!(log.path, PathBuf::from("/tmp/llama.log"));
    assert_eq!(log.markers.load, vec!["ready to serve", "all slots idle"]);
    assert!(
        log.markers
            .error
            .iter()
            .any(|m| m == "failed to load model")
    );
    assert_eq!(c.readiness, Readiness::Logs);
    assert_eq!(c.healthcheck_endpoint, "/v1/models");
    assert!(matches!(c.benchmark, Benchmark::None));
}

#[test]
fn readiness_defaults_to_healthcheck_without_a_model_log() {
    let c = load(&[("MAX_PERF", "1"), ("UNSECURED", "1")]).unwrap();
    assert_eq!(c.readiness, Readiness::Healthcheck);
    assert_eq!(c.ready_timeout, Duration::from_secs(1800));
    assert_eq!(c.health_probe_timeout, Duration::from_secs(30));
    let c = load(&[
        ("MAX_PERF", "1"),
        ("UNSECURED", "1"),
        ("READY_TIMEOUT", "60"),
    ])
    .unwrap();
    assert_eq!(c.ready_timeout, Duration::from_secs(60), "the older name");
    let c = load(&[
        ("MAX_PERF", "1"),
        ("UNSECURED", "1"),
        ("MODEL_LOG", "/tmp/m.log"),
    ]);
    assert_eq!(c.unwrap_err().setting, "MODEL_LOAD_LOG_MSG");
}

#[test]
fn use_ssl_serves_the_instance_certificate_by_default() {
    let c = load(&[("MAX_PERF", "1"), ("UNSECURED", "1"), ("USE_SSL", "true")]).unwrap();
    let tls = c.tls.unwrap();
    assert_eq!(tls.cert, PathBuf::from("/etc/instance.crt"));
    assert_eq!(tls.key, PathBuf::from("/etc/instance.key"));
    let c = load(&[("MAX_PERF", "1"), ("UNSECURED", "1")]).unwrap();
    assert!(c.tls.is_none());
    let c = load(&[
        ("MAX_PERF", "1"),
        ("UNSECURED", "1"),
        ("BACKEND_URL", "https://models.internal:8443/base"),
    ])
    .unwrap();
    assert_eq!(c.backend_url.scheme_str(), Some("https"));
}

#[test]
fn model_name_falls_back_to_the_engines_variable() {
    let base = [("MAX_PERF", "1"), ("UNSECURED", "1")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut env = base.to_vec();
        env.extend_from_slice(extra);
        load(&env).unwrap().model_name
    };
    assert_eq!(with(&[]), "model");
    assert_eq!(with(&[("VLLM_MODEL", "Qwen/Qwen3-8B")]), "Qwen/Qwen3-8B");
    assert_eq!(with(&[("LLAMA_MODEL", "smollm2")]), "smollm2");
    assert_eq!(
        with(&[("MODEL_NAME", "served"), ("VLLM_MODEL", "Qwen/Qwen3-8B")]),
        "served"
    );
}

#[test]
fn connection_limits_have_defaults_and_can_be_set_or_turned_off() {
    let base = [("UNSECURED", "true"), ("MAX_PERF", "1")];
    let c = load(&base).unwrap();
    assert_eq!(c.serve_limits, crate::serve::ServeLimits::default());
    assert_eq!(c.body_read_timeout, Some(Duration::from_secs(60)));
    let c = load(&[
        base[0],
        base[1],
        ("HEADER_READ_TIMEOUT", "none"),
        ("BODY_READ_TIMEOUT", "0"),
        ("SEND_TIMEOUT", "0.5"),
        ("MAX_CONNECTIONS", "2"),
        ("H2_MAX_CONCURRENT_STREAMS", "8"),
    ])
    .unwrap();
    let l = c.serve_limits;
    assert_eq!(l.header_read_timeout, None);
    assert_eq!(c.body_read_timeout, None);
    assert_eq!(l.send_timeout, Some(Duration::from_millis(500)));
    assert_eq!((l.max_connections, l.h2_max_concurrent_streams), (2, 8));
    for (var, value) in [("MAX_CONNECTIONS", "0"), ("H2_MAX_CONCURRENT_STREAMS", "0")] {
        let e = load(&[base[0], base[1], (var, value)]).unwrap_err();
        assert!(e.to_string().contains(var), "{e}");
    }
}

#[test]
fn session_settings_have_defaults_and_can_be_set() {
    let base = [("UNSECURED", "true"), ("MAX_PERF", "1")];
    let c = load(&base).unwrap();
    assert_eq!(c.sessions, SessionRules::default());
    assert_eq!(c.sessions.max_sessions, None);
    assert_eq!(c.worker_http_port, HttpPort::Next);
    let c = load(&[
        base[0],
        base[1],
        ("MAX_SESSIONS", "3"),
        ("MAX_SESSION_LIFETIME", "600"),
        ("SESSION_ON_CLOSE_TIMEOUT", "2.5"),
        ("WORKER_HTTP_PORT", "off"),
    ])
    .unwrap();
    assert_eq!(c.sessions.max_sessions, Some(3));
    assert_eq!(c.sessions.max_lifetime, Duration::from_secs(600));
    assert_eq!(c.sessions.on_close_timeout, Duration::from_millis(2500));
    assert_eq!(c.worker_http_port, HttpPort::Off);
    let c = load(&[
        base[0],
        base[1],
        ("MAX_SESSIONS", "0"),
        ("WORKER_HTTP_PORT", "4001"),
    ])
    .unwrap();
    assert_eq!(c.sessions.max_sessions, None, "0 is unlimited, as vastai");
    assert_eq!(c.worker_http_port, HttpPort::Port(4001));
    for (var, value) in [
        ("MAX_SESSIONS", "-1"),
        ("MAX_SESSION_LIFETIME", "0"),
        ("SESSION_ON_CLOSE_TIMEOUT", "none"),
        ("WORKER_HTTP_PORT", "70000"),
    ] {
        let e = load(&[base[0], base[1], (var, value)]).unwrap_err();
        assert_eq!(e.setting, var, "{e}");
    }
}

#[test]
fn websocket_idle_timeout_defaults_to_five_minutes_and_can_be_turned_off() {
    let base = [("UNSECURED", "true"), ("MAX_PERF", "1")];
    let c = load(&base).unwrap();
    assert_eq!(c.websocket_idle_timeout, Some(Duration::from_secs(300)));
    let c = load(&[base[0], base[1], ("WEBSOCKET_IDLE_TIMEOUT", "2.5")]).unwrap();
    assert_eq!(c.websocket_idle_timeout, Some(Duration::from_millis(2500)));
    for off in ["0", "none"] {
        let c = load(&[base[0], base[1], ("WEBSOCKET_IDLE_TIMEOUT", off)]).unwrap();
        assert_eq!(c.websocket_idle_timeout, None, "{off}");
    }
    let e = load(&[base[0], base[1], ("WEBSOCKET_IDLE_TIMEOUT", "soon")]).unwrap_err();
    assert!(e.to_string().contains("WEBSOCKET_IDLE_TIMEOUT"), "{e}");
}
