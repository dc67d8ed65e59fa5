//! The worker's start-up state machine (PROTOCOL.md §6).
//!
//! `starting → waiting_for_backend → ready`, or `errored` with a message when the backend
//! never becomes healthy. Proxied requests are only admitted in `ready`; before that they get
//! 503 `not_ready` with `Retry-After`.

use super::backend::Backend;
use crate::http_util::empty;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Where the worker is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Process started, nothing checked yet.
    Starting,
    /// Polling the backend's health path.
    WaitingForBackend,
    /// Measuring the backend's capacity.
    Benchmarking,
    /// Serving.
    Ready,
    /// Cannot serve; the message says why.
    Errored(String),
    /// Shutting down: finishing in-flight work, refusing new work.
    Draining,
}

impl State {
    /// The [`State::name`] of every state, in life order (the `vespa_state` series).
    pub const NAMES: [&'static str; 6] = [
        "starting",
        "waiting_for_backend",
        "benchmarking",
        "ready",
        "errored",
        "draining",
    ];

    /// Snake-case name, as shown in `/_vespa/status`.
    pub fn name(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::WaitingForBackend => "waiting_for_backend",
            State::Benchmarking => "benchmarking",
            State::Ready => "ready",
            State::Errored(_) => "errored",
            State::Draining => "draining",
        }
    }

    /// The error message, in `errored`.
    pub fn error(&self) -> Option<&str> {
        match self {
            State::Errored(m) => Some(m),
            _ => None,
        }
    }
}

/// Shared, observable lifecycle state.
#[derive(Debug)]
pub struct Lifecycle {
    state: watch::Sender<State>,
    started: Instant,
    loaded: std::sync::OnceLock<Duration>,
    failed: std::sync::OnceLock<String>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            state: watch::channel(State::Starting).0,
            started: Instant::now(),
            loaded: Default::default(),
            failed: Default::default(),
        }
    }
}

impl Lifecycle {
    /// The current state.
    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    /// Seconds from process start to the first time the worker was ready (`loadtime`).
    pub fn loadtime(&self) -> Option<Duration> {
        self.loaded.get().copied()
    }

    /// Marks the worker errored for good (the model server reported a fatal error): it is
    /// never `ready` again, whatever the health checks say. The first message stays.
    pub fn fail(&self, msg: String) {
        let first = self.failed.set(msg.clone()).is_ok();
        if first {
            self.set_state(State::Errored(msg));
        }
    }

    /// Whether [`Lifecycle::fail`] was called.
    pub fn has_failed(&self) -> bool {
        self.failed.get().is_some()
    }

    /// Moves to `next`, logging the transition. Nothing leaves `draining`; after
    /// [`Lifecycle::fail`] only `draining` is possible.
    pub fn set(&self, next: State) {
        if self.has_failed() && next != State::Draining {
            return;
        }
        self.set_state(next);
    }

    fn set_state(&self, next: State) {
        if next == State::Ready {
            let _ = self.loaded.set(self.started.elapsed());
        }
        let mut prev = State::Draining;
        self.state.send_if_modified(|s| {
            prev = s.clone();
            if *s == State::Draining || *s == next {
                return false;
            }
            *s = next.clone();
            true
        });
        if prev == State::Draining {
            return;
        }
        if prev != next {
            match &next {
                State::Errored(msg) => {
                    tracing::error!(from = prev.name(), error = %msg, "worker state errored")
                }
                _ => tracing::info!(from = prev.name(), to = next.name(), "worker state changed"),
            }
        }
    }

    /// A receiver notified on every state change.
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.state.subscribe()
    }

    /// Time since the process started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// How the start-up health wait behaves.
#[derive(Debug, Clone)]
pub struct HealthWait {
    /// Backend path that must answer 200.
    pub path: String,
    /// Give up after this long.
    pub timeout: Duration,
    /// Pause between polls.
    pub interval: Duration,
    /// Limit on one probe (`HEALTHCHECK_PROBE_TIMEOUT`).
    pub probe_timeout: Duration,
}

/// One health probe: `GET path` answered 200 within `limit`.
pub async fn probe(backend: &Backend, path: &str, limit: Duration) -> Result<(), String> {
    let mut req = Request::new(empty());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = backend.target(path, None);
    let attempt = async {
        let resp = backend
            .send(req, Some(bytes::Bytes::new()))
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        // Read the (small) body so the connection goes back to the pool.
        let _ = resp.into_body().collect().await;
        if status == StatusCode::OK {
            Ok(())
        } else {
            Err(format!("health check answered {status}"))
        }
    };
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "health check timed out after {} s",
                limit.as_secs_f64()
            ))
        })
}

/// Polls the backend until it is healthy; marks the worker errored and returns `false` when
/// `wait.timeout` passes first.
pub async fn wait_for_backend(lifecycle: &Lifecycle, backend: &Backend, wait: &HealthWait) -> bool {
    lifecycle.set(State::WaitingForBackend);
    let deadline = tokio::time::Instant::now() + wait.timeout;
    loop {
        if lifecycle.has_failed() {
            return false;
        }
        match probe(backend, &wait.path, wait.probe_timeout).await {
            Ok(()) => return true,
            Err(e) => tracing::debug!(error = %e, "backend not healthy yet"),
        }
        if tokio::time::Instant::now() + wait.interval > deadline {
            lifecycle.set(State::Errored(format!(
                "backend at {} did not answer 200 on {} within {} s",
                backend.base().authority().map_or("", |a| a.as_str()),
                wait.path,
                wait.timeout.as_secs()
            )));
            return false;
        }
        tokio::time::sleep(wait.interval).await;
    }
}

/// Consecutive failed health checks that mark a ready worker errored.
pub const HEALTH_FAILURES: u32 = 3;

/// Checks the backend every `interval` once ready: after [`HEALTH_FAILURES`] consecutive
/// failures the worker is errored; the next success makes it ready again.
pub async fn watch_health(
    lifecycle: Arc<Lifecycle>,
    backend: Arc<Backend>,
    path: String,
    interval: Duration,
    probe_timeout: Duration,
) {
    let mut failures = 0;
    loop {
        tokio::time::sleep(interval).await;
        match probe(&backend, &path, probe_timeout).await {
            Ok(()) => {
                if failures >= HEALTH_FAILURES && matches!(lifecycle.state(), State::Errored(_)) {
                    tracing::info!("backend healthy again");
                    lifecycle.set(State::Ready);
                }
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, failures, "backend health check failed");
                if failures == HEALTH_FAILURES && lifecycle.state() == State::Ready {
                    lifecycle.set(State::Errored(format!(
                        "backend health check failed {HEALTH_FAILURES} times in a row: {e}"
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_worker_is_never_ready_again_but_can_drain() {
        let l = Lifecycle::default();
        l.set(State::WaitingForBackend);
        l.fail("RuntimeError: Engine core initialization failed".into());
        l.fail("a later error".into());
        l.set(State::Ready);
        assert_eq!(
            l.state(),
            State::Errored("RuntimeError: Engine core initialization failed".into())
        );
        assert_eq!(l.loadtime(), None);
        l.set(State::Draining);
        assert_eq!(l.state(), State::Draining);
    }
}
