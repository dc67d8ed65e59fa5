//! `vespa top` as a process off a terminal: plain lines from live workers and a local
//! autoscaler on 127.0.0.1:0, a dead worker or autoscaler shown as unreachable while the
//! lines go on, and bad flags refused.

use crate::support::*;
use serde_json::json;
use std::process::Output;
use vespa::autoscaler::Autoscaler;

/// Runs `vespa top ARGS` with stdout piped (so off a terminal) and an empty environment.
async fn top(args: &[&str]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_vespa"))
        .arg("top")
        .args(args)
        .env_clear()
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(PATIENCE, run)
        .await
        .expect("vespa top ends after --count polls")
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `vespa top` on endpoint `ep` of the autoscaler at `autoscaler` with `key`, polled
/// `count` times 0.1 s apart; it must exit 0. Its lines.
async fn watch_endpoint(autoscaler: &str, key: &str, count: &str) -> String {
    let out = top(&[
        "--endpoint",
        "ep",
        "--api-key",
        key,
        "--autoscaler-url",
        autoscaler,
        "--count",
        count,
        "--interval",
        "0.1",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    stdout(&out)
}

/// The `key=value` of `line`.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let prefix = format!(" {key}=");
    let at = line
        .find(&prefix)
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    let rest = &line[at + prefix.len()..];
    let end = match rest.strip_prefix('"') {
        Some(quoted) => quoted.find('"').map_or(rest.len(), |i| i + 2),
        None => rest.find(' ').unwrap_or(rest.len()),
    };
    &rest[..end]
}

/// An in-process worker in front of a backend that answers at once.
async fn live_worker() -> (Backend, vespa::worker::Worker) {
    let backend = Backend::start(|_| async { json(200, json!({"ok": true})) }).await;
    let worker = start_worker(config(&backend)).await;
    (backend, worker)
}

#[tokio::test]
async fn a_live_worker_gets_one_line_per_poll_with_its_figures() {
    let (_backend, worker) = live_worker().await;
    let client = h1_client();
    for _ in 0..3 {
        let (head, _) = send(&client, request("POST", &url(&worker, "/v1/x"), "{}")).await;
        assert_eq!(head.status, 200);
    }
    let base = url(&worker, "");
    let out = top(&["--worker", &base, "--count", "2", "--interval", "0.1"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "one line per poll: {text}");
    for line in &lines {
        assert!(line.contains(&format!(" worker={base} ")), "{line}");
        assert_eq!(field(line, "state"), "ready");
        assert_eq!(field(line, "max_perf"), "1000");
        assert_eq!(field(line, "in_flight"), "0");
        assert!(!line.contains("problem="), "{line}");
    }
    // The first poll has no earlier one to take a rate from; its percentiles are of the
    // three requests since start. The second has a rate.
    assert_eq!(field(lines[0], "req_s"), "-");
    assert!(
        field(lines[0], "ttfb_p50_ms").parse::<f64>().is_ok(),
        "{}",
        lines[0]
    );
    assert!(
        field(lines[1], "req_s").parse::<f64>().is_ok(),
        "{}",
        lines[1]
    );
}

#[tokio::test]
async fn a_fleet_with_a_dead_worker_shows_it_unreachable_and_goes_on() {
    let autoscaler = Autoscaler::start(local_autoscaler("ep", KEY))
        .await
        .unwrap();
    let (_backend, worker) = live_worker().await;
    let (live, dead) = (url(&worker, ""), refused_url().await);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for (id, worker_url) in [(1, &live), (2, &dead)] {
        let report = json!({
            "id": id, "mtoken": LOCAL_MASTER_TOKEN, "loadtime": 1.0, "max_perf": 1000.0,
            "cur_load": 0.0, "error_msg": "", "url": worker_url,
        });
        let resp = http
            .post(format!("{}/worker_status/", autoscaler.url()))
            .json(&report)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let text = watch_endpoint(&autoscaler.url(), KEY, "3").await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        9,
        "three rounds of endpoint + 2 workers: {text}"
    );
    for round in lines.chunks(3) {
        assert!(
            round[0].contains(" endpoint=ep workers=2 ready=1 "),
            "{}",
            round[0]
        );
        assert!(!round[0].contains("problem="), "{}", round[0]);
        assert_eq!(
            field(round[0], "max_perf"),
            "1000",
            "only the live one counts"
        );
        assert!(
            round[1].contains(&format!(" worker={live} id=1 state=ready ")),
            "{}",
            round[1]
        );
        assert!(
            round[2].contains(&format!(" worker={dead} id=2 state=unreachable ")),
            "{}",
            round[2]
        );
        let problem = field(round[2], "problem");
        assert!(problem.contains("refused"), "{problem}");
        assert_eq!(field(round[2], "max_perf"), "-");
    }
}

#[tokio::test]
async fn an_unreachable_autoscaler_is_a_problem_on_each_line_not_an_exit() {
    let dead = refused_url().await;
    let text = watch_endpoint(&dead, "k", "2").await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for line in lines {
        assert!(line.contains(" endpoint=ep workers=0 ready=0 "), "{line}");
        let problem = field(line, "problem");
        assert!(
            problem.contains("autoscaler: ") && problem.contains("/get_endpoint_workers/"),
            "{problem}"
        );
    }
}

#[tokio::test]
async fn bad_flags_exit_64_with_the_reason() {
    for (args, reason) in [
        (&[][..], "give --endpoint NAME"),
        (&["--endpoint", "ep"][..], "--api-key"),
        (&["--worker", "localhost:3000"][..], "--worker"),
        (
            &["--worker", "http://a", "--interval", "0"][..],
            "--interval",
        ),
        (&["--worker", "http://a", "--count", "none"][..], "--count"),
    ] {
        let out = top(args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test]
async fn help_documents_every_flag() {
    let out = top(&["--help"]).await;
    let help = stdout(&out);
    assert!(help.contains("--worker <URL>"), "{help}");
    for s in vespa::top::TopArgs::SETTINGS {
        assert!(
            help.contains(&format!("--{}", s.flag)),
            "--{} in {help}",
            s.flag
        );
    }
    for var in ["VAST_API_KEY", "MASTER_TOKEN", "[default: 1]"] {
        assert!(help.contains(var), "{var} in {help}");
    }
}

/// `vespa top ARGS` on a 120×20 pseudo-terminal (util-linux `script`), then the
/// terminal's settings (`stty -a`). Everything the terminal received.
async fn on_a_terminal(args: &str, env: &[(&str, &str)]) -> String {
    let vespa = env!("CARGO_BIN_EXE_vespa");
    let shell = format!("stty cols 120 rows 20; {vespa} top {args}; echo \"exit=$?\"; stty -a");
    let run = tokio::process::Command::new("script")
        .args(["-qfec", &shell, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TERM", "xterm-256color")
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(PATIENCE, run)
        .await
        .expect("the view ends after --count polls")
        .expect("util-linux `script` runs a command on a pseudo-terminal");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn on_a_terminal_the_view_draws_in_colour_and_gives_the_terminal_back() {
    let (_backend, worker) = live_worker().await;
    let args = format!("--worker {} --count 2 --interval 0.1", url(&worker, ""));
    let screen = on_a_terminal(&args, &[]).await;
    let enter = screen.find("\x1b[?1049h").expect("the alternate screen");
    let leave = screen.find("\x1b[?1049l").expect("the main screen back");
    let drawn = &screen[enter..leave];
    let label = worker.local_addr().to_string();
    // The worker's row and the table's headings (the title line is drawn before any poll).
    for shown in [label.as_str(), "req/s", "ttfb p99"] {
        assert!(drawn.contains(shown), "{shown:?} in {drawn:?}");
    }
    assert!(drawn.contains("\x1b[38;5;"), "colours: {drawn:?}");
    let after = &screen[leave..];
    assert!(
        after.contains("\x1b[?25h"),
        "the cursor shown again: {after:?}"
    );
    assert!(after.contains("exit=0"), "{after:?}");
    // Raw mode is off again: the line discipline is back to canonical input with echo.
    assert!(
        after.contains(" icanon") && after.contains(" echo "),
        "{after:?}"
    );
}

#[tokio::test]
async fn no_color_draws_the_view_without_colours() {
    let (_backend, worker) = live_worker().await;
    let args = format!("--worker {} --count 1", url(&worker, ""));
    let screen = on_a_terminal(&args, &[("NO_COLOR", "1")]).await;
    let label = worker.local_addr().to_string();
    assert!(screen.contains(&label), "the worker's row: {screen:?}");
    assert!(!screen.contains("\x1b[38;5;"), "{screen:?}");
}
