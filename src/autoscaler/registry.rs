//! The worker pool: last reports, readiness, and the routing choice.
//!
//! Pure bookkeeping with the clock passed in (`now`), so readiness and staleness are tested
//! without sleeping. The server keeps one [`Registry`] behind a mutex and never holds it
//! across an `.await`.
//!
//! Routing picks the ready worker with the least estimated wait,
//! `(cur_load + Σ cost routed since its last report) / max_perf`, ties broken by fewest
//! requests routed since the report, then lowest id. The routed sum matters: reports come
//! once a second at best, so without it a burst between two reports would all land on the
//! worker that looked idlest at the last report.

use super::messages::{Finished, Report};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// Where a worker stands, as routing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Loaded, capacity known, no error, reported recently: routable.
    Ready,
    /// Not loaded yet (never reported `loadtime > 0`), or no capacity or URL yet.
    Loading,
    /// Reported a non-empty `error_msg`.
    Error,
    /// Silent for `stale_after` or longer: out of the pool until it reports again.
    Stale,
}

impl Status {
    /// Lowercase name used on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Loading => "loading",
            Self::Error => "error",
            Self::Stale => "stale",
        }
    }
}

/// Counts of an endpoint's workers by status: the `status` of a "no worker ready" answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Census {
    /// Routable workers.
    pub ready: usize,
    /// Workers still loading.
    pub loading: usize,
    /// Workers reporting an error.
    pub error: usize,
    /// Workers that stopped reporting.
    pub stale: usize,
}

/// The worker a request was routed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Worker id.
    pub worker_id: u64,
    /// The worker's URL (goes into `auth_data.url`).
    pub url: String,
    /// This worker's next `reqnum`: strictly increasing per worker, from 1.
    pub reqnum: u64,
}

#[derive(Debug)]
struct WorkerRecord {
    report: Report,
    received_at: Instant,
    ever_loaded: bool,
    last_reqnum: u64,
    /// Requests routed since the last report: `request_idx` → routing units.
    pending: BTreeMap<u64, f64>,
    routed: u64,
    finished: BTreeMap<String, u64>,
}

impl WorkerRecord {
    fn serves(&self, endpoint: &str) -> bool {
        self.report
            .endpoint
            .as_deref()
            .is_none_or(|e| e == endpoint)
    }

    fn estimated_wait(&self) -> f64 {
        let load = self.report.cur_load + self.pending.values().sum::<f64>();
        load / self.report.max_perf.max(1e-5)
    }
}

/// Every worker that has reported, keyed by id.
#[derive(Debug)]
pub struct Registry {
    workers: BTreeMap<u64, WorkerRecord>,
    stale_after: Duration,
    last_request_idx: u64,
    unknown_worker_deletes: u64,
}

impl Registry {
    /// An empty pool. A worker silent for `stale_after` or longer is [`Status::Stale`]
    /// (so `Duration::ZERO` makes every worker stale at once).
    pub fn new(stale_after: Duration) -> Registry {
        Registry {
            workers: BTreeMap::new(),
            stale_after,
            last_request_idx: 0,
            unknown_worker_deletes: 0,
        }
    }

    /// Records a `worker_status` report received at `now`. Returns `true` for a worker not
    /// seen before. The routed-since-report bookkeeping restarts: the report's `cur_load`
    /// now covers what was routed before it.
    pub fn report(&mut self, report: Report, now: Instant) -> bool {
        let loaded = report.loadtime > 0.0;
        match self.workers.get_mut(&report.id) {
            Some(w) => {
                w.ever_loaded |= loaded;
                w.report = report;
                w.received_at = now;
                w.pending.clear();
                false
            }
            None => {
                let record = WorkerRecord {
                    report,
                    received_at: now,
                    ever_loaded: loaded,
                    last_reqnum: 0,
                    pending: BTreeMap::new(),
                    routed: 0,
                    finished: BTreeMap::new(),
                };
                self.workers.insert(record.report.id, record);
                true
            }
        }
    }

    /// Records finished requests of `worker_id`: counted by status, and no longer counted as
    /// routed-since-report. Returns `false` (and only counts them) for a worker that never
    /// reported.
    pub fn finished(&mut self, worker_id: u64, requests: &[Finished]) -> bool {
        let Some(w) = self.workers.get_mut(&worker_id) else {
            self.unknown_worker_deletes += requests.len() as u64;
            return false;
        };
        for r in requests {
            *w.finished.entry(r.status.clone()).or_default() += 1;
            if let Some(idx) = r.request_idx {
                w.pending.remove(&idx);
            }
        }
        true
    }

    /// The `request_idx` of a `/route/` call: `given` when non-zero (a poll or retry of an
    /// earlier request), else a new id, increasing. New ids never collide with a given one.
    pub fn request_idx(&mut self, given: u64) -> u64 {
        if given != 0 {
            self.last_request_idx = self.last_request_idx.max(given);
            return given;
        }
        self.last_request_idx += 1;
        self.last_request_idx
    }

    /// Routes one request of `endpoint`: picks the worker (see the module docs), counts
    /// `units` against it until its next report and assigns its next `reqnum`. When no
    /// worker is ready, returns the endpoint's census instead.
    pub fn route(
        &mut self,
        endpoint: &str,
        request_idx: u64,
        units: f64,
        now: Instant,
    ) -> Result<Assignment, Census> {
        let chosen = self
            .workers
            .values()
            .filter(|w| w.serves(endpoint) && self.status(w, now) == Status::Ready)
            .min_by(|a, b| {
                a.estimated_wait()
                    .total_cmp(&b.estimated_wait())
                    .then(a.pending.len().cmp(&b.pending.len()))
                    .then(a.report.id.cmp(&b.report.id))
            })
            .map(|w| w.report.id);
        let Some(id) = chosen else {
            return Err(self.census(endpoint, now));
        };
        // A retried request counts on the worker it goes to now, not where it went before.
        for w in self.workers.values_mut() {
            w.pending.remove(&request_idx);
        }
        let w = self.workers.get_mut(&id).expect("chosen from the map");
        w.pending.insert(request_idx, units);
        w.routed += 1;
        w.last_reqnum += 1;
        Ok(Assignment {
            worker_id: id,
            url: w.report.url.clone(),
            reqnum: w.last_reqnum,
        })
    }

    /// Counts of `endpoint`'s workers by status.
    pub fn census(&self, endpoint: &str, now: Instant) -> Census {
        let mut c = Census::default();
        for w in self.workers.values().filter(|w| w.serves(endpoint)) {
            match self.status(w, now) {
                Status::Ready => c.ready += 1,
                Status::Loading => c.loading += 1,
                Status::Error => c.error += 1,
                Status::Stale => c.stale += 1,
            }
        }
        c
    }

    /// The `get_endpoint_workers` list for `endpoint`, by id.
    pub fn list(&self, endpoint: &str, now: Instant) -> Vec<Value> {
        self.workers
            .values()
            .filter(|w| w.serves(endpoint))
            .map(|w| {
                json!({
                    "id": w.report.id,
                    "url": w.report.url,
                    "endpoint": w.report.endpoint,
                    "status": self.status(w, now).name(),
                    "last_report": w.report.body,
                    "seconds_since_report": now.saturating_duration_since(w.received_at).as_secs_f64(),
                    "routed": w.routed,
                    "routed_since_report": w.pending.len(),
                    "finished": w.finished,
                })
            })
            .collect()
    }

    /// Finished requests reported by workers that never sent a `worker_status`.
    pub fn unknown_worker_deletes(&self) -> u64 {
        self.unknown_worker_deletes
    }

    fn status(&self, w: &WorkerRecord, now: Instant) -> Status {
        if now.saturating_duration_since(w.received_at) >= self.stale_after {
            Status::Stale
        } else if !w.report.error_msg.is_empty() {
            Status::Error
        } else if w.ever_loaded && w.report.max_perf > 0.0 && !w.report.url.is_empty() {
            Status::Ready
        } else {
            Status::Loading
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    const STALE: Duration = Duration::from_secs(30);

    fn report(id: u64, cur_load: f64, max_perf: f64) -> Report {
        Report {
            id,
            url: format!("http://w{id}"),
            loadtime: 1.0,
            max_perf,
            cur_load,
            error_msg: String::new(),
            endpoint: None,
            body: Map::new(),
        }
    }

    fn pool(reports: Vec<Report>, now: Instant) -> Registry {
        let mut r = Registry::new(STALE);
        for rep in reports {
            r.report(rep, now);
        }
        r
    }

    fn pick(r: &mut Registry, now: Instant) -> u64 {
        let idx = r.request_idx(0);
        r.route("e", idx, 1.0, now).unwrap().worker_id
    }

    #[test]
    fn least_estimated_wait_wins_even_against_a_lower_id() {
        let now = Instant::now();
        let mut r = pool(vec![report(1, 50.0, 10.0), report(2, 10.0, 10.0)], now);
        assert_eq!(pick(&mut r, now), 2);
    }

    #[test]
    fn wait_is_load_over_capacity_not_load_alone() {
        let now = Instant::now();
        // 100 units at 100/s is 1 s; 20 units at 10/s is 2 s.
        let mut r = pool(vec![report(1, 20.0, 10.0), report(2, 100.0, 100.0)], now);
        assert_eq!(pick(&mut r, now), 2);
    }

    #[test]
    fn a_burst_alternates_between_equal_workers() {
        let now = Instant::now();
        let mut r = pool(vec![report(2, 0.0, 10.0), report(1, 0.0, 10.0)], now);
        let picks: Vec<u64> = (0..6).map(|_| pick(&mut r, now)).collect();
        assert_eq!(picks, [1, 2, 1, 2, 1, 2]);
    }

    #[test]
    fn a_new_report_resets_what_was_routed_since_the_last_one() {
        let now = Instant::now();
        let mut r = pool(vec![report(1, 0.0, 10.0), report(2, 5.0, 10.0)], now);
        for _ in 0..10 {
            pick(&mut r, now);
        }
        r.report(report(1, 0.0, 10.0), now);
        r.report(report(2, 0.0, 10.0), now);
        assert_eq!(pick(&mut r, now), 1);
    }

    #[test]
    fn reqnum_increases_per_worker_and_request_idx_is_kept_when_given() {
        let now = Instant::now();
        let mut r = pool(vec![report(1, 0.0, 10.0)], now);
        let a = r.route("e", 1, 1.0, now).unwrap();
        let b = r.route("e", 2, 1.0, now).unwrap();
        assert_eq!((a.reqnum, b.reqnum), (1, 2));
        assert_eq!(r.request_idx(40), 40);
        assert_eq!(
            r.request_idx(0),
            41,
            "new ids never collide with given ones"
        );
    }

    #[test]
    fn errored_stale_and_unloaded_workers_are_not_routed() {
        let t0 = Instant::now();
        let mut errored = report(1, 0.0, 10.0);
        errored.error_msg = "backend down".into();
        let mut loading = report(2, 0.0, 10.0);
        loading.loadtime = 0.0;
        let mut no_perf = report(3, 0.0, 0.0);
        no_perf.loadtime = 2.0;
        let mut r = pool(vec![errored, loading, no_perf], t0);
        let census = r.route("e", 1, 1.0, t0).unwrap_err();
        assert_eq!(
            census,
            Census {
                ready: 0,
                loading: 2,
                error: 1,
                stale: 0
            }
        );
        r.report(report(4, 0.0, 10.0), t0);
        assert_eq!(pick(&mut r, t0 + STALE - Duration::from_millis(1)), 4);
        let census = r.route("e", 2, 1.0, t0 + STALE).unwrap_err();
        assert_eq!(census.stale, 4);
    }

    #[test]
    fn a_worker_once_loaded_stays_loaded_when_later_reports_omit_loadtime() {
        let now = Instant::now();
        let mut r = pool(vec![report(1, 0.0, 10.0)], now);
        let mut later = report(1, 3.0, 10.0);
        later.loadtime = 0.0;
        r.report(later, now);
        assert_eq!(pick(&mut r, now), 1);
    }

    #[test]
    fn a_worker_bound_to_an_endpoint_serves_only_that_one() {
        let now = Instant::now();
        let mut bound = report(1, 0.0, 10.0);
        bound.endpoint = Some("other".into());
        let mut r = pool(vec![bound], now);
        assert!(r.route("e", 1, 1.0, now).is_err());
        assert_eq!(r.route("other", 1, 1.0, now).unwrap().worker_id, 1);
        assert_eq!(r.list("e", now).len(), 0);
    }

    #[test]
    fn finished_requests_are_counted_and_leave_the_routed_sum() {
        let now = Instant::now();
        let mut r = pool(vec![report(1, 0.0, 1.0), report(2, 0.0, 1.0)], now);
        r.route("e", 7, 100.0, now).unwrap(); // worker 1
        let done = Finished {
            request_idx: Some(7),
            status: "Success".into(),
        };
        assert!(r.finished(1, std::slice::from_ref(&done)));
        assert_eq!(pick(&mut r, now), 1, "worker 1 is idle again");
        assert!(!r.finished(99, &[done]));
        assert_eq!(r.unknown_worker_deletes(), 1);
        let listed = r.list("e", now);
        assert_eq!(listed[0]["finished"]["Success"], 1);
        assert_eq!(listed[0]["routed"], 2);
    }
}
