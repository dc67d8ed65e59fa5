//! Admission: who may enter, what they weigh, and when they reach the backend.
//!
//! One call, [`Admission::admit`], makes every decision in order: the worker must be `ready`
//! (else 503), the estimated wait must be within `MAX_WAIT_TIME` (else 429; the ledger checks
//! and inserts under one lock, PROTOCOL.md §4), then the request waits in a FIFO queue for a
//! concurrency slot (tokio's semaphore is fair; the wait is cancelled by drop). It returns
//! one guard, [`Admitted`], that holds the request's place in the working set and its slot
//! until the response ends; dropping it unfinished records `cancelled` and frees the slot.
//! A WebSocket goes through [`Admission::admit_without_slot`]: the same checks, no slot.

use super::envelope::{Inbound, Payload};
use super::error::WorkerError;
use super::ledger::{Kind, Ledger, Outcome, RequestInfo, Ticket};
use super::lifecycle::{Lifecycle, State};
use crate::profile::{Profile, RequestView};
use http::header;
use http::request::Parts;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The clamp on one request's workload while the capacity is not measured yet.
pub const UNMEASURED_MAX_COST: f64 = 1e6;

/// At most one warning per this interval about workload rules that fail on requests.
const RULE_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How much work a request is, when it does not say (PROTOCOL.md §4).
#[derive(Debug, Clone)]
pub struct WorkloadRule {
    /// The backend profile, whose route rules count requests without a cost.
    pub profile: Option<Arc<Profile>>,
    /// Workload of a request neither the client nor the profile can size (`DEFAULT_COST`).
    pub default_cost: f64,
    /// The most workload one request may count for (`MAX_COST`); `None` is `MAX_WAIT_TIME`
    /// seconds of work at the current capacity.
    pub max_cost: Option<f64>,
}

/// Admission settings of one worker.
#[derive(Debug, Clone)]
pub struct AdmissionRules {
    /// Most backend requests at once; `None` is unlimited. `ALLOW_PARALLEL=false` is `Some(1)`.
    pub concurrency: Option<usize>,
    /// How requests without a cost are sized.
    pub workload: WorkloadRule,
    /// `Retry-After` for a worker that is still starting (the health poll interval).
    pub starting_retry_after: Duration,
}

/// The admission stage of one worker.
#[derive(Debug)]
pub struct Admission {
    ledger: Arc<Ledger>,
    lifecycle: Arc<Lifecycle>,
    limiter: Option<Arc<Semaphore>>,
    workload: WorkloadRule,
    starting_retry_after: u64,
    synthetic_ids: AtomicU64,
    unauthorized: AtomicU64,
    unauthorized_log: crate::logging::Every,
    rule_failures: AtomicU64,
    rule_failure_log: crate::logging::Every,
}

impl Admission {
    /// Admission into `ledger`, open while `lifecycle` is `ready`.
    pub fn new(ledger: Arc<Ledger>, lifecycle: Arc<Lifecycle>, rules: AdmissionRules) -> Self {
        Self {
            ledger,
            lifecycle,
            limiter: rules.concurrency.map(|n| Arc::new(Semaphore::new(n))),
            workload: rules.workload,
            starting_retry_after: rules.starting_retry_after.as_secs().max(1),
            synthetic_ids: AtomicU64::new(1),
            unauthorized: AtomicU64::new(0),
            unauthorized_log: crate::logging::Every::new(Duration::from_secs(1)),
            rule_failures: AtomicU64::new(0),
            rule_failure_log: crate::logging::Every::new(RULE_FAILURE_LOG_INTERVAL),
        }
    }

    /// Identity and workload of a request: the client's cost, else the workload rule of its
    /// route in the profile, else `DEFAULT_COST`, clamped to `MAX_COST`. Unsigned requests
    /// get synthetic ids. A request inside a session is sized without its `auth_data.cost`:
    /// that is the session's, which the client sends again with every request of the
    /// session. Call it only once the request passed auth: it reads the cost and the
    /// payload. `head` is the request's head (its path, its `Content-Length`).
    pub fn describe(&self, inbound: &Inbound, head: &Parts) -> Result<RequestInfo, WorkerError> {
        let cost = match inbound.session {
            Some(_) => None,
            None => inbound.cost()?,
        };
        let workload = match cost {
            Some(cost) => cost,
            None => self
                .rule_workload(inbound, head)
                .unwrap_or(self.workload.default_cost),
        };
        // Every source above is finite and >= 0 by construction; this keeps the ledger's
        // sums sound whatever an embedder puts in `default_cost`.
        let workload = if workload.is_finite() && workload >= 0.0 {
            workload
        } else {
            0.0
        };
        let workload = match self.max_cost() {
            Some(max) if workload > max => max,
            _ => workload,
        };
        Ok(match &inbound.auth {
            Some(auth) => RequestInfo {
                request_idx: auth.request_idx(),
                reqnum: auth.reqnum(),
                workload,
                kind: Kind::Request,
            },
            None => {
                let id = self.synthetic_ids.fetch_add(1, Ordering::Relaxed);
                RequestInfo {
                    request_idx: id,
                    reqnum: id,
                    workload,
                    kind: Kind::Request,
                }
            }
        })
    }

    /// The workload the rule of the request's route gives, when there is one and it gives
    /// a number. A rule that fails on the request (a value missing, a division by zero, a
    /// result that is not finite or is negative) gives none, with a rate-limited warning.
    fn rule_workload(&self, inbound: &Inbound, head: &Parts) -> Option<f64> {
        let profile = self.workload.profile.as_ref()?;
        let body_bytes = match &inbound.payload {
            Payload::Json(b) | Payload::Raw(b) => Some(b.len() as u64),
            Payload::None => Some(0),
            Payload::Stream(_) => head
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.trim().parse().ok()),
        };
        let view = RequestView {
            path: head.uri.path(),
            body: inbound.body_bytes().map(|b| &b[..]),
            body_bytes,
        };
        match profile.request_workload(&view) {
            Ok(workload) => workload,
            Err(e) => {
                let n = self.rule_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if self.rule_failure_log.allow() {
                    tracing::warn!(path = %view.path, error = %e, failures = n,
                        default_cost = self.workload.default_cost,
                        "the workload rule of this route cannot size the request; it counts DEFAULT_COST");
                }
                None
            }
        }
    }

    /// The most workload one request may count for: `MAX_COST`, else `MAX_WAIT_TIME`
    /// seconds of work at the current capacity, else (capacity not measured yet, when every
    /// request is refused) [`UNMEASURED_MAX_COST`], so rejected workload stays finite.
    fn max_cost(&self) -> Option<f64> {
        self.workload.max_cost.or_else(|| {
            let max = self.ledger.max_perf() * self.ledger.max_wait_time();
            Some(if max > 0.0 { max } else { UNMEASURED_MAX_COST })
        })
    }

    /// Counts a request whose signature failed: its own counter and a rate-limited log
    /// line, nothing in the books or the reports (PROTOCOL.md §4).
    pub fn unauthorized(&self, error: &WorkerError) {
        let n = self.unauthorized.fetch_add(1, Ordering::Relaxed) + 1;
        if self.unauthorized_log.allow() {
            tracing::warn!(error = %error, total = n, "request refused: unauthorized (401)");
        }
    }

    /// Requests refused with 401 since start.
    pub fn unauthorized_total(&self) -> u64 {
        self.unauthorized.load(Ordering::Relaxed)
    }

    /// Admits the request: `ready`, within the wait limit, then its turn for a backend slot.
    /// Every refusal is counted as rejected.
    pub async fn admit(&self, info: &RequestInfo) -> Result<Admitted, WorkerError> {
        self.ready_for(info)?;
        let mut ticket = self.ledger.admit(info)?;
        // Waiting here is the queue: FIFO, and a client that leaves drops its place.
        let permit = match &self.limiter {
            Some(sem) => Some(
                Arc::clone(sem)
                    .acquire_owned()
                    .await
                    .expect("the limiter is never closed"),
            ),
            None => None,
        };
        ticket.start();
        Ok(Admitted { ticket, permit })
    }

    /// Admits work that holds no backend slot (a WebSocket): `ready`, within the wait limit,
    /// then at once in flight. Every refusal is counted as rejected.
    pub fn admit_without_slot(&self, info: &RequestInfo) -> Result<Admitted, WorkerError> {
        self.ready_for(info)?;
        let mut ticket = self.ledger.admit(info)?;
        ticket.start();
        Ok(Admitted {
            ticket,
            permit: None,
        })
    }

    /// Whether the worker takes new work (`ready`); when it does not, the refusal (503) is
    /// recorded as the rejection of `info`.
    pub fn ready_for(&self, info: &RequestInfo) -> Result<(), WorkerError> {
        self.accepting().inspect_err(|_| self.ledger.reject(info))
    }

    fn accepting(&self) -> Result<(), WorkerError> {
        match self.lifecycle.state() {
            State::Ready => Ok(()),
            State::Draining => Err(WorkerError::Draining),
            // The error's text stays with the operator (logs, reports, `/_vespa/status`).
            State::Errored(_) => Err(WorkerError::NotReady {
                reason: "errored".into(),
                retry_after: 10,
            }),
            other => Err(WorkerError::NotReady {
                reason: other.name().replace('_', " "),
                retry_after: self.starting_retry_after,
            }),
        }
    }
}

/// An admitted request: its place in the working set and its backend slot, held until the
/// response ends. Records exactly one outcome: the one given to [`Admitted::finish`], or
/// `cancelled` when dropped unfinished.
#[derive(Debug)]
pub struct Admitted {
    ticket: Ticket,
    permit: Option<OwnedSemaphorePermit>,
}

impl Admitted {
    /// Records the outcome, leaves the working set and frees the slot.
    pub fn finish(mut self, outcome: Outcome) {
        self.ticket.finish(outcome);
        drop(self.permit.take());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An admission stage of a ready worker, and its ledger.
    pub(crate) fn ready_admission(concurrency: Option<usize>) -> (Admission, Arc<Ledger>) {
        admission_with(concurrency, None, 1.0)
    }

    fn admission_with(
        concurrency: Option<usize>,
        profile: Option<Profile>,
        default_cost: f64,
    ) -> (Admission, Arc<Ledger>) {
        let ledger = Ledger::new(10.0, 100.0);
        let lifecycle = Arc::new(Lifecycle::default());
        lifecycle.set(State::Ready);
        let rules = AdmissionRules {
            concurrency,
            workload: WorkloadRule {
                profile: profile.map(Arc::new),
                default_cost,
                max_cost: None,
            },
            starting_retry_after: Duration::from_secs(5),
        };
        (
            Admission::new(Arc::clone(&ledger), lifecycle, rules),
            ledger,
        )
    }

    /// An unsigned request to `path` with a JSON `body` held in memory.
    fn json_request(path: &str, body: &str) -> (Inbound, Parts) {
        let inbound = Inbound {
            held: None,
            auth: None,
            query: None,
            payload: Payload::Json(bytes::Bytes::copy_from_slice(body.as_bytes())),
            body_len: None,
            session: None,
        };
        let head = http::Request::post(path).body(()).unwrap().into_parts().0;
        (inbound, head)
    }

    #[tokio::test]
    async fn rules_that_fail_count_the_default_and_never_reach_the_load() {
        let profile = Profile::parse(
            r#"name = "t"
[request]
path = "/bench"
[workload]
constant = 1
[routes."/inf"]
formula = "big * 10"
vars = { big = "big" }
[routes."/nan"]
formula = "big * 10 - big * 10"
vars = { big = "big" }
[routes."/negative"]
formula = "0 - n"
vars = { n = "n" }
[routes."/division"]
formula = "n / (n - n)"
vars = { n = "n" }
[routes."/missing"]
request = "absent"
[routes."/ok"]
formula = "n * 2"
vars = { n = "n" }
"#,
            "t.toml",
        )
        .unwrap();
        let (adm, ledger) = admission_with(None, Some(profile), 3.0);
        let body = r#"{"big": 1e308, "n": 4}"#;
        let mut held = Vec::new();
        for (path, want) in [
            ("/inf", 3.0),
            ("/nan", 3.0),
            ("/negative", 3.0),
            ("/division", 3.0),
            ("/missing", 3.0),
            ("/unknown", 3.0),
            ("/ok", 8.0),
            ("/bench", 1.0),
        ] {
            let (inbound, head) = json_request(path, body);
            let info = adm.describe(&inbound, &head).unwrap();
            assert_eq!(info.workload, want, "{path}");
            held.push(adm.admit(&info).await.unwrap());
        }
        let s = ledger.snapshot();
        assert_eq!(s.cur_load, 6.0 * 3.0 + 8.0 + 1.0);
        assert!(s.estimated_wait.is_finite());
        assert_eq!(adm.rule_failures.load(Ordering::Relaxed), 5);
    }

    fn info(idx: u64) -> RequestInfo {
        RequestInfo::numbered(idx, 1.0)
    }

    #[tokio::test]
    async fn a_full_slot_queues_the_next_request_until_the_first_finishes() {
        let (adm, ledger) = ready_admission(Some(1));
        let first = adm.admit(&info(1)).await.unwrap();
        let second_info = info(2);
        let second = adm.admit(&second_info);
        tokio::pin!(second);
        assert!(futures_poll_once(second.as_mut()).await.is_none());
        let s = ledger.snapshot();
        assert_eq!((s.in_flight, s.queued), (1, 1));
        first.finish(Outcome::Success);
        let second = second.await.unwrap();
        assert_eq!(ledger.snapshot().in_flight, 1);
        drop(second);
        let t = ledger.snapshot().totals;
        assert_eq!((t.served.requests, t.cancelled.requests), (1, 1));
    }

    #[tokio::test]
    async fn a_worker_not_ready_refuses_and_counts_the_rejection() {
        let (adm, ledger) = ready_admission(None);
        adm.lifecycle.set(State::Draining);
        assert!(matches!(
            adm.admit(&info(1)).await,
            Err(WorkerError::Draining)
        ));
        assert_eq!(ledger.snapshot().totals.rejected.requests, 1);
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
