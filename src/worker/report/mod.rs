//! Reports to the autoscaler (PROTOCOL.md §5): `/worker_status/` on a 1 s tick when
//! anything changed and every 10 s otherwise, `/delete_requests/` every tick while requests
//! ended, and the failure beacon of a worker that cannot start.
//!
//! Every send tries the `REPORT_ADDR` list in order (failover, not fan-out): up to 3
//! attempts per address, 10 s timeout each, 2 s pause after a failed attempt. Interval
//! counters are settled only by a successful send, so an unreachable autoscaler loses no
//! workload; the deletion list is bounded ([`book::MAX_FINISHED`]).
//!
//! What the reports read: the ledger (working set, capacity), the lifecycle (state,
//! `loadtime`) and the [`Book`] (interval counters, reqnums, ended requests), handed over as
//! one [`Sources`].

pub mod book;
pub mod wire;

use crate::worker::ledger::Ledger;
use crate::worker::lifecycle::{Lifecycle, State};
use crate::worker::observe::{
    ReportCounters, ReportKind, ReportLabels, ReportResult, report_counters,
};
pub use book::{Book, Interval};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use wire::{DeleteRequests, WorkerStatus};

/// Worker version sent as `version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Heartbeat: a `worker_status` goes out at least this often.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// Most records in one `/delete_requests/` post.
const DELETE_BATCH: usize = 1000;

/// Where and how reports are sent.
#[derive(Debug, Clone)]
pub struct ReportTarget {
    /// Autoscaler base URLs, in failover order.
    pub addrs: Vec<String>,
    /// `id`.
    pub id: i64,
    /// `mtoken`.
    pub mtoken: String,
    /// The worker's public URL (`url`).
    pub url: String,
    /// Attempts per address. Default is 3.
    pub attempts: u32,
    /// Timeout per attempt. Default is 10 s.
    pub timeout: Duration,
    /// Pause after a failed attempt. Default is 2 s.
    pub pause: Duration,
}

impl ReportTarget {
    /// A target with the protocol's retry settings.
    pub fn new(addrs: Vec<String>, id: i64, mtoken: String, url: String) -> Self {
        Self {
            addrs,
            id,
            mtoken,
            url,
            attempts: 3,
            timeout: Duration::from_secs(10),
            pause: Duration::from_secs(2),
        }
    }
}

/// `MASTER_TOKEN` as it may appear in logs: never in full.
pub fn mask(token: &str) -> String {
    let shown: String = token.chars().take(4).collect();
    if token.chars().count() <= 8 {
        "****".into()
    } else {
        format!("{shown}…")
    }
}

/// The outcome of the latest report, shown in `/_vespa/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReportOutcome {
    /// Unix seconds of the last successful `worker_status`.
    pub last_success_at: Option<f64>,
    /// Address that took it.
    pub last_success_addr: Option<String>,
    /// Error of the last failed send, cleared by a success.
    pub last_error: Option<String>,
    /// Successful `worker_status` sends.
    pub sent: u64,
    /// Failed `worker_status` sends (every address failed).
    pub failed: u64,
}

/// What the reports read.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Working set and capacity.
    pub ledger: Arc<Ledger>,
    /// State and load time.
    pub lifecycle: Arc<Lifecycle>,
    /// Interval counters, reqnums and ended requests.
    pub book: Arc<Book>,
}

/// Sends reports with failover.
#[derive(Debug, Clone)]
pub struct Reporter {
    target: ReportTarget,
    client: reqwest::Client,
    outcome: Arc<Mutex<ReportOutcome>>,
    counters: ReportCounters,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Reporter {
    /// A reporter for `target`.
    pub fn new(target: ReportTarget, client: reqwest::Client) -> Self {
        Self {
            target,
            client,
            outcome: Arc::default(),
            counters: report_counters(),
        }
    }

    /// `vespa_reports_total`: every report sent, by kind and result.
    pub fn counters(&self) -> &ReportCounters {
        &self.counters
    }

    fn count(&self, kind: ReportKind, ok: bool) {
        let result = if ok {
            ReportResult::Ok
        } else {
            ReportResult::Error
        };
        self.counters
            .get_or_create(&ReportLabels { kind, result })
            .inc();
    }

    /// The HTTP client used for control-plane calls (reports and the public key).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The latest outcome.
    pub fn outcome(&self) -> ReportOutcome {
        self.outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Posts `body` to `{addr}{path}` for each address in order until one takes it.
    pub async fn post(&self, path: &str, body: &impl Serialize) -> Result<String, String> {
        let mut last = String::from("no REPORT_ADDR");
        for addr in &self.target.addrs {
            let url = format!("{}{}", addr.trim_end_matches('/'), path);
            for attempt in 1..=self.target.attempts {
                let sent = self
                    .client
                    .post(&url)
                    .timeout(self.target.timeout)
                    .json(body)
                    .send()
                    .await;
                match sent {
                    Ok(resp) if resp.status().is_success() => return Ok(addr.clone()),
                    Ok(resp) => last = format!("{url} answered {}", resp.status()),
                    Err(e) => last = format!("{url}: {}", crate::http_util::error_chain(&e)),
                }
                tracing::debug!(error = %last, attempt, "report attempt failed");
                tokio::time::sleep(self.target.pause).await;
            }
        }
        Err(last)
    }

    fn record(&self, result: &Result<String, String>) {
        self.count(ReportKind::Status, result.is_ok());
        let mut o = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(addr) => {
                o.last_success_at = Some(unix_now());
                o.last_success_addr = Some(addr.clone());
                o.last_error = None;
                o.sent += 1;
            }
            Err(e) => {
                o.last_error = Some(e.clone());
                o.failed += 1;
            }
        }
    }

    /// Sends one `worker_status` built from `src`; settles the interval on success.
    pub async fn send_status(&self, src: &Sources, disk: &mut Disk) -> bool {
        let interval = src.book.interval();
        let snap = src.ledger.snapshot();
        let state = src.lifecycle.state();
        let loadtime = src.lifecycle.loadtime();
        let (disk_usage, additional_disk_usage) = disk.read();
        let body = WorkerStatus {
            loadtime: loadtime.map(|d| d.as_secs_f64()).unwrap_or(0.0),
            new_load: (interval.received - interval.cancelled).max(0.0),
            cur_load: snap.cur_load,
            rej_load: interval.rejected,
            max_perf: if loadtime.is_some() {
                snap.max_perf
            } else {
                0.0
            },
            cur_perf: interval.served,
            error_msg: state.error().unwrap_or(""),
            // Requests and open sessions, as `vastai` counts them (PROTOCOL.md §8).
            num_requests_working: snap.working_request_idxs.len(),
            num_requests_recieved: src.book.distinct_reqnums(),
            additional_disk_usage,
            working_request_idxs: snap.working_request_idxs,
            ..beacon(
                self.target.id,
                &self.target.mtoken,
                &self.target.url,
                disk_usage,
            )
        };
        let result = self.post("/worker_status/", &body).await;
        match &result {
            Ok(_) => src.book.settle_interval(&interval),
            Err(e) => tracing::warn!(error = %e, "worker_status report failed on every address"),
        }
        self.record(&result);
        result.is_ok()
    }

    /// Sends the oldest unreported ended requests; removes them only once sent.
    pub async fn send_deletions(&self, book: &Book) {
        let (batch, last, dropped) = book.pending_finished(DELETE_BATCH);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "deletion list full while the autoscaler was unreachable; oldest records dropped"
            );
        }
        let Some(last) = last else {
            return;
        };
        let body = DeleteRequests {
            worker_id: self.target.id,
            mtoken: &self.target.mtoken,
            requests: &batch,
        };
        let sent = self.post("/delete_requests/", &body).await;
        self.count(ReportKind::DeleteRequests, sent.is_ok());
        match sent {
            Ok(_) => book.ack_finished(last),
            Err(e) => tracing::warn!(error = %e, "delete_requests report failed on every address"),
        }
    }

    /// The `worker_status` loop: a tick every `tick`; a send when the ledger or the state
    /// changed since the last successful send, or after [`HEARTBEAT`]. A change of state
    /// (ready, errored, draining) is sent at once rather than at the next tick: the
    /// autoscaler routes to a worker only once it has read that the worker is ready, and
    /// stops routing to one only once it has read otherwise.
    pub async fn status_loop(self, src: Sources, tick: Duration) {
        let mut disk = Disk::default();
        let mut cadence = Cadence::default();
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut states = Some(src.lifecycle.subscribe());
        loop {
            match &mut states {
                Some(rx) => tokio::select! {
                    _ = ticker.tick() => {}
                    changed = rx.changed() => {
                        if changed.is_err() {
                            // The lifecycle is gone: ticks only from now on.
                            states = None;
                        }
                    }
                },
                None => {
                    ticker.tick().await;
                }
            }
            let version = src.ledger.version();
            let state = src.lifecycle.state();
            if cadence.due(version, &state) && self.send_status(&src, &mut disk).await {
                cadence.sent(version, state);
            }
        }
    }

    /// The `/delete_requests/` loop.
    pub async fn delete_loop(self, book: Arc<Book>, tick: Duration) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.send_deletions(&book).await;
        }
    }

    /// The failure beacon: a worker that cannot start reports `error_msg` every `every`
    /// forever, so the autoscaler marks it errored instead of waiting for it.
    pub async fn beacon(self, error_msg: String, every: Duration) {
        loop {
            let body = WorkerStatus {
                error_msg: &error_msg,
                ..beacon(
                    self.target.id,
                    &self.target.mtoken,
                    &self.target.url,
                    disk_used_gb().unwrap_or(0.0),
                )
            };
            let result = self.post("/worker_status/", &body).await;
            if let Err(e) = &result {
                tracing::warn!(error = %e, "failure beacon could not be delivered");
            }
            self.record(&result);
            tokio::time::sleep(every).await;
        }
    }
}

/// When the status loop sends: first at once, then when the ledger or the state changed
/// since the last successful send, or [`HEARTBEAT`] after it.
#[derive(Debug, Default)]
struct Cadence {
    last: Option<(Instant, u64, State)>,
}

impl Cadence {
    fn due(&self, ledger_version: u64, state: &State) -> bool {
        match &self.last {
            None => true,
            Some((at, v, s)) => *v != ledger_version || s != state || at.elapsed() >= HEARTBEAT,
        }
    }

    fn sent(&mut self, ledger_version: u64, state: State) {
        self.last = Some((Instant::now(), ledger_version, state));
    }
}

/// Disk usage of `/` in GB (2^30 bytes), and the previous reading for the delta.
#[derive(Debug, Default)]
pub struct Disk {
    previous: Option<f64>,
}

impl Disk {
    /// `(disk_usage, additional_disk_usage)` now.
    pub fn read(&mut self) -> (f64, f64) {
        let now = disk_used_gb().unwrap_or(0.0);
        let delta = self.previous.map(|p| now - p).unwrap_or(0.0);
        self.previous = Some(now);
        (now, delta)
    }
}

fn disk_used_gb() -> Option<f64> {
    let s = rustix::fs::statvfs("/").ok()?;
    let used = s.f_blocks.saturating_sub(s.f_bfree) as f64 * s.f_frsize as f64;
    Some(used / (1u64 << 30) as f64)
}

/// A `worker_status` with no load, no capacity and no error: the failure beacon's body
/// once `error_msg` is set, and the base of every report.
pub fn beacon<'a>(id: i64, mtoken: &'a str, url: &'a str, disk_usage: f64) -> WorkerStatus<'a> {
    WorkerStatus {
        id,
        mtoken,
        version: VERSION,
        loadtime: 0.0,
        new_load: 0.0,
        cur_load: 0.0,
        rej_load: 0.0,
        max_perf: 0.0,
        cur_perf: 0.0,
        error_msg: "",
        num_requests_working: 0,
        num_requests_recieved: 0,
        additional_disk_usage: 0.0,
        disk_usage,
        working_request_idxs: Vec::new(),
        cur_capacity: 0,
        max_capacity: 0,
        url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn status_is_sent_on_change_or_after_the_heartbeat_only() {
        let mut c = Cadence::default();
        assert!(c.due(0, &State::Starting), "the first tick sends");
        c.sent(0, State::Starting);
        assert!(!c.due(0, &State::Starting));
        assert!(c.due(1, &State::Starting), "the ledger changed");
        assert!(c.due(0, &State::Ready), "the state changed");
        tokio::time::advance(HEARTBEAT - Duration::from_millis(1)).await;
        assert!(!c.due(0, &State::Starting));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(c.due(0, &State::Starting), "heartbeat");
        c.sent(0, State::Starting);
        assert!(!c.due(0, &State::Starting));
    }

    #[test]
    fn master_token_is_never_shown_in_full() {
        assert_eq!(mask("abcdefghijklmnop"), "abcd…");
        assert_eq!(mask("short"), "****");
    }
}
