//! The `vespa` binary: configuration errors exit 64 before any port is bound.

use std::process::Command;

fn vespa(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vespa"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn invalid_configuration_exits_64_naming_the_variable() {
    // WORKER_PORT points at a port that is already taken: a config error must win over the
    // bind, proving validation happens before any port is bound.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let bad_profile =
        std::env::temp_dir().join(format!("vespa-bad-profile-{}.toml", std::process::id()));
    std::fs::write(&bad_profile, "name = \"x\"\n[request]\npath = \"/v1/x\"\n[workload]\nrequest = \"max_tokens\"\n[benchmark]\nmode = \"fastest\"\n").unwrap();
    let bad_profile_s = bad_profile.to_string_lossy().to_string();
    let expect_line = format!("{bad_profile_s}:7:");
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("BENCHMARK", &bad_profile_s)], &expect_line),
        (
            &[("BENCHMARK", "/no/such/profile.toml")],
            "/no/such/profile.toml",
        ),
        (&[("MAX_PERF", "lots")], "MAX_PERF"),
        (
            &[("MAX_PERF", "10"), ("BACKEND_URL", "not a url")],
            "BACKEND_URL",
        ),
        (&[("MAX_PERF", "10"), ("BENCHMARK", "quantum")], "BENCHMARK"),
        (
            &[("MAX_PERF", "10"), ("MAX_WAIT_TIME", "soon")],
            "MAX_WAIT_TIME",
        ),
        (&[("BENCHMARK", "none")], "MAX_PERF"),
        (
            &[
                ("MAX_PERF", "10"),
                ("UNSECURED", "1"),
                ("USE_SSL", "true"),
                ("TLS_CERT", "/no/such/instance.crt"),
            ],
            "/no/such/instance.crt",
        ),
        (&[("MAX_PERF", "10"), ("ENGINE", "tensorrt")], "ENGINE"),
        (
            &[
                ("MAX_PERF", "10"),
                ("UNSECURED", "1"),
                ("READINESS", "logs"),
            ],
            "READINESS",
        ),
    ];
    for (env, var) in cases {
        let mut env = env.to_vec();
        env.push(("WORKER_PORT", &port));
        let out = vespa(&env, &["worker", "--listen", &format!("127.0.0.1:{port}")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{env:?}: {stderr}");
        assert!(
            stderr.contains(var),
            "{env:?}: message should name {var}: {stderr}"
        );
    }
}

#[test]
fn help_documents_every_setting_with_its_environment_name() {
    let out = vespa(&[], &["worker", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "WORKER_PORT",
        "BACKEND_URL",
        "BENCHMARK",
        "MAX_PERF",
        "HEALTHCHECK_ENDPOINT",
        "READINESS_TIMEOUT",
        "READINESS",
        "ENGINE",
        "MODEL_LOG",
        "MODEL_LOAD_LOG_MSG",
        "MODEL_ERROR_LOG_MSGS",
        "HEALTHCHECK_PROBE_TIMEOUT",
        "TLS_CERT",
        "TLS_KEY",
        "ALLOW_PARALLEL",
        "MAX_CONCURRENCY",
        "MAX_WAIT_TIME",
        "DEFAULT_COST",
        "UNSECURED",
        "BACKEND_API_KEY",
        "MAX_BODY_SIZE",
        "RESPONSE_START_TIMEOUT",
        "IDLE_TIMEOUT",
        "WEBSOCKET_IDLE_TIMEOUT",
        "LOG_LEVEL",
        "MODEL_NAME",
        "REPORT_ADDR",
        "MASTER_TOKEN",
        "CONTAINER_ID",
        "PUBLIC_IPADDR",
        "VAST_TCP_PORT_",
        "USE_SSL",
    ] {
        assert!(
            help.contains(&format!("[env: {var}")),
            "--help misses {var}"
        );
    }
    assert!(
        help.contains("PYWORKER_"),
        "--help says PYWORKER_ aliases work"
    );
    assert!(
        help.matches("[default:").count() >= 20,
        "every setting states its default"
    );
}

#[test]
fn help_shows_each_declared_setting_with_its_variable_and_default() {
    let out = vespa(&[], &["worker", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for s in vespa::worker::config::WorkerArgs::SETTINGS {
        let env = s.env.expect("every worker setting has a variable");
        let tail = format!("[env: {env}] [default: {}]", s.default_help);
        assert!(help.contains(&tail), "--{} misses {tail}:\n{help}", s.flag);
        assert!(help.contains(&s.help_line()), "--{}", s.flag);
    }
}
