//! The worker pool: last reports, readiness, and the routing choice.
//!
//! Pure bookkeeping with the clock passed in (`now`), so readiness and staleness are tested
//! without sleeping. The server keeps one [`Registry`] behind a mutex and never holds it
//! across an `.await`.
//!
//! Routing picks the ready worker with the least estimated wait, its load over its
//! `max_perf`, ties broken by fewest requests routed and not yet reported, then lowest id.
//! The load is what the worker holds as far as the autoscaler can tell:
//!
//! - the last report's `cur_load`,
//! - minus the cost of the requests that report counted and that have finished since
//!   (`delete_requests` names them),
//! - plus the cost of the requests routed to it that no report has counted yet ([`Pending`]).
//!
//! Reports come once a second at best, so without the routed sum a burst between two
//! reports would all land on the worker that looked idlest at the last report; without the
//! finished sum a worker that has just emptied would look full until its next report. A
//! report counts only the requests its `working_request_idxs` lists: one made while a
//! routed request was still on its way to the worker does not clear that request from the
//! estimate (it stays through one report that misses it, see [`Pending`]). A report without
//! the list is taken to count everything routed before it.
//!
//! Memory is bounded: a worker silent for `prune_after` leaves the registry (it is only
//! *stale*, kept but not routed, from `stale_after`); at most `max_workers` are kept, the
//! one with the oldest report leaving first; each worker's routed-since-report list holds at
//! most `max_routed_per_worker` entries ([`Pending`]); finished requests are counts over a
//! fixed set of statuses; nothing a client or worker sends is added to a counter without
//! saturating.

use super::messages::{Finished, Report};
use super::pending::Pending;
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

/// How long workers are kept and how much of them. See [`AutoscalerConfig`] for the
/// defaults.
///
/// [`AutoscalerConfig`]: super::AutoscalerConfig
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A worker silent this long is [`Status::Stale`] (`Duration::ZERO`: at once).
    pub stale_after: Duration,
    /// A worker silent this long is removed.
    pub prune_after: Duration,
    /// Most workers kept; a new one beyond it replaces the one with the oldest report.
    pub max_workers: usize,
    /// Most requests counted per worker between two of its reports.
    pub max_routed_per_worker: usize,
}

/// Largest client-given `request_idx` that moves the counter new ids come from: 2^53 − 1,
/// the largest integer every JSON client (JavaScript, Python floats) keeps exact. A larger
/// one is echoed for its request but not followed, so no client can push the counter to
/// `u64::MAX`.
pub const MAX_FOLLOWED_REQUEST_IDX: u64 = (1 << 53) - 1;

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
    /// Requests routed and not yet counted by a report.
    pending: Pending,
    /// Requests the last report counted that the autoscaler routed: `request_idx` → units.
    covered: BTreeMap<u64, f64>,
    /// Units of `covered` requests that finished since the last report.
    finished_units: f64,
    routed: u64,
    /// Finished requests by status; the keys are the fixed set of [`Finished::status`].
    finished: BTreeMap<&'static str, u64>,
}

impl WorkerRecord {
    fn serves(&self, endpoint: &str) -> bool {
        self.report
            .endpoint
            .as_deref()
            .is_none_or(|e| e == endpoint)
    }

    /// The load the worker holds as far as the autoscaler can tell (see the module docs).
    fn load(&self) -> f64 {
        // Internal: every term is finite or +inf and >= 0 (messages.rs rejects the rest),
        // and `max` keeps an inf − inf NaN out: `f64::max` returns the other operand.
        (self.report.cur_load - self.finished_units).max(0.0) + self.pending.units()
    }

    fn estimated_wait(&self) -> f64 {
        // Internal: the load is >= 0 and at worst +inf, which `total_cmp` orders last.
        self.load() / self.report.max_perf.max(1e-5)
    }

    /// Takes a new report: what it counts leaves the routed list (see the module docs). The
    /// list of working requests is not kept.
    fn take_report(&mut self, mut report: Report) -> u64 {
        let (covered, dropped) = match report.working.take() {
            Some(working) => self.pending.reconcile(&working),
            None => (BTreeMap::new(), self.pending.clear()),
        };
        self.covered = covered;
        self.finished_units = 0.0;
        self.report = report;
        dropped
    }
}

/// Every worker that has reported, keyed by id.
#[derive(Debug)]
pub struct Registry {
    workers: BTreeMap<u64, WorkerRecord>,
    limits: Limits,
    last_request_idx: u64,
    unknown_worker_deletes: u64,
    pruned: u64,
    evicted: u64,
}

impl Registry {
    /// An empty pool with these limits.
    pub fn new(limits: Limits) -> Registry {
        Registry {
            workers: BTreeMap::new(),
            limits,
            last_request_idx: 0,
            unknown_worker_deletes: 0,
            pruned: 0,
            evicted: 0,
        }
    }

    /// Records a `worker_status` report received at `now`. Returns `true` for a worker not
    /// seen before. The routed requests the report counts leave the routed list (all of
    /// them when it does not list its working requests; see the module docs).
    pub fn report(&mut self, mut report: Report, now: Instant) -> bool {
        self.prune(now);
        let loaded = report.loadtime > 0.0;
        if let Some(w) = self.workers.get_mut(&report.id) {
            w.ever_loaded |= loaded;
            w.received_at = now;
            let dropped = w.take_report(report);
            if dropped > 0 {
                tracing::warn!(
                    worker = w.report.id,
                    dropped,
                    max_routed_per_worker = self.limits.max_routed_per_worker,
                    "more requests routed between two reports than are counted; the oldest were dropped from the count"
                );
            }
            return false;
        }
        while self.workers.len() >= self.limits.max_workers.max(1) {
            let Some(oldest) = self
                .workers
                .values()
                .min_by_key(|w| (w.received_at, w.report.id))
                .map(|w| w.report.id)
            else {
                break;
            };
            self.workers.remove(&oldest);
            self.evicted = self.evicted.saturating_add(1);
            tracing::warn!(
                worker = oldest,
                evicted_total = self.evicted,
                max_workers = self.limits.max_workers,
                "registry full: the worker with the oldest report was dropped"
            );
        }
        // A new worker has nothing routed to reconcile with the list.
        report.working = None;
        let record = WorkerRecord {
            report,
            received_at: now,
            ever_loaded: loaded,
            last_reqnum: 0,
            pending: Pending::new(self.limits.max_routed_per_worker),
            covered: BTreeMap::new(),
            finished_units: 0.0,
            routed: 0,
            finished: BTreeMap::new(),
        };
        self.workers.insert(record.report.id, record);
        true
    }

    /// Removes every worker silent for `prune_after` or longer; returns how many left.
    /// Called by every other method that is given the time, so a registry nobody asks
    /// anything holds nothing it could have pruned that matters.
    pub fn prune(&mut self, now: Instant) -> usize {
        let prune_after = self.limits.prune_after;
        let before = self.workers.len();
        self.workers.retain(|id, w| {
            let silent = now.saturating_duration_since(w.received_at);
            let keep = silent < prune_after;
            if !keep {
                tracing::info!(
                    worker = id,
                    silent_secs = silent.as_secs_f64(),
                    "worker pruned: no report for --prune-after"
                );
            }
            keep
        });
        let pruned = before - self.workers.len();
        self.pruned = self.pruned.saturating_add(pruned as u64);
        pruned
    }

    /// Records finished requests of `worker_id`: counted by status, and no longer counted in
    /// its load, whether a report counted them yet or not. Returns `false` (and only counts
    /// them) for a worker that never reported.
    pub fn finished(&mut self, worker_id: u64, requests: &[Finished]) -> bool {
        let Some(w) = self.workers.get_mut(&worker_id) else {
            let n = u64::try_from(requests.len()).unwrap_or(u64::MAX);
            self.unknown_worker_deletes = self.unknown_worker_deletes.saturating_add(n);
            return false;
        };
        for r in requests {
            let count = w.finished.entry(r.status).or_default();
            *count = count.saturating_add(1);
            if let Some(idx) = r.request_idx
                && w.pending.remove(idx).is_none()
                && let Some(units) = w.covered.remove(&idx)
            {
                w.finished_units += units;
            }
        }
        true
    }

    /// The `request_idx` of a `/route/` call: `given` when non-zero (a poll or retry of an
    /// earlier request), else a new id, increasing. New ids never collide with a given one
    /// up to [`MAX_FOLLOWED_REQUEST_IDX`]; a larger given id is kept for its request but
    /// does not move the counter.
    pub fn request_idx(&mut self, given: u64) -> u64 {
        if given != 0 {
            if given <= MAX_FOLLOWED_REQUEST_IDX {
                self.last_request_idx = self.last_request_idx.max(given);
            }
            return given;
        }
        // Internal: at most 2^53 − 1 plus one per call, so this does not saturate in practice;
        // if it ever did, ids would repeat rather than the process panic.
        self.last_request_idx = self.last_request_idx.saturating_add(1);
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
        self.prune(now);
        let chosen = self
            .workers
            .values()
            .filter(|w| w.serves(endpoint) && self.status(w, now) == Status::Ready)
            .min_by(|a, b| {
                a.estimated_wait()
                    .total_cmp(&b.estimated_wait())
                    .then(a.pending.count().cmp(&b.pending.count()))
                    .then(a.report.id.cmp(&b.report.id))
            })
            .map(|w| w.report.id);
        let Some(id) = chosen else {
            return Err(self.census(endpoint, now));
        };
        // A retried request counts on the worker it goes to now, not where it went before.
        for w in self.workers.values_mut() {
            w.pending.remove(request_idx);
        }
        let w = self.workers.get_mut(&id).expect("chosen from the map");
        w.pending.insert(request_idx, units);
        w.routed = w.routed.saturating_add(1);
        // Internal: one per route, so u64::MAX is out of reach; saturating keeps it a
        // non-decreasing counter rather than a panic if it were not.
        w.last_reqnum = w.last_reqnum.saturating_add(1);
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

    /// Load and capacity of `endpoint`'s ready workers: the sum of their loads as routing
    /// estimates them (see the module docs), and the sum of their `max_perf`.
    /// Their ratio is the wait routing works from, taken over the whole endpoint.
    pub fn ready_load(&self, endpoint: &str, now: Instant) -> (f64, f64) {
        self.workers
            .values()
            .filter(|w| w.serves(endpoint) && self.status(w, now) == Status::Ready)
            .fold((0.0, 0.0), |(load, perf), w| {
                (load + w.load(), perf + w.report.max_perf)
            })
    }

    /// The `get_endpoint_workers` list for `endpoint`, by id (after pruning).
    pub fn list(&mut self, endpoint: &str, now: Instant) -> Vec<Value> {
        self.prune(now);
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
                    "routed_since_report": w.pending.count(),
                    "finished": w.finished,
                })
            })
            .collect()
    }

    /// Finished requests reported by workers that never sent a `worker_status`.
    pub fn unknown_worker_deletes(&self) -> u64 {
        self.unknown_worker_deletes
    }

    /// Workers kept now.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether no worker is kept.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Workers removed so far for silence (`prune_after`) and for room (`max_workers`).
    pub fn removed(&self) -> (u64, u64) {
        (self.pruned, self.evicted)
    }

    fn status(&self, w: &WorkerRecord, now: Instant) -> Status {
        if now.saturating_duration_since(w.received_at) >= self.limits.stale_after {
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
    const LIMITS: Limits = Limits {
        stale_after: STALE,
        prune_after: Duration::from_secs(60),
        max_workers: 1000,
        max_routed_per_worker: 1000,
    };

    fn report(id: u64, cur_load: f64, max_perf: f64) -> Report {
        Report {
            id,
            url: format!("http://w{id}"),
            loadtime: 1.0,
            max_perf,
            cur_load,
            error_msg: String::new(),
            working: None,
            endpoint: None,
            body: Map::new(),
        }
    }

    fn pool(reports: Vec<Report>, now: Instant) -> Registry {
        let mut r = Registry::new(LIMITS);
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
            status: "Success",
        };
        assert!(r.finished(1, std::slice::from_ref(&done)));
        assert_eq!(pick(&mut r, now), 1, "worker 1 is idle again");
        assert!(!r.finished(99, &[done]));
        assert_eq!(r.unknown_worker_deletes(), 1);
        let listed = r.list("e", now);
        assert_eq!(listed[0]["finished"]["Success"], 1);
        assert_eq!(listed[0]["routed"], 2);
    }

    /// A report of worker `id` that lists `working` as its working set, each request of
    /// `units`.
    fn listing(id: u64, working: &[u64], units: f64, max_perf: f64) -> Report {
        let mut r = report(id, working.len() as f64 * units, max_perf);
        r.working = Some(working.to_vec());
        r
    }

    /// The demo's fleet (3 200 and 6 400 units/s; 8 and 16 requests of 500 units fill a
    /// batch, 1.25 s of work) under a burst of 24 requests, with both workers reporting in
    /// the middle of it: when one reports, only the first requests routed to it have reached
    /// it; the others are still on their way. Those reports must not clear them from the
    /// estimate, or the rest of the burst piles onto the worker that reported while the other
    /// has room.
    #[test]
    fn a_report_made_while_routed_requests_are_on_their_way_still_counts_them() {
        let now = Instant::now();
        let mut r = pool(
            vec![
                listing(1, &[], 500.0, 3200.0),
                listing(2, &[], 500.0, 6400.0),
            ],
            now,
        );
        let mut on = BTreeMap::<u64, Vec<u64>>::new();
        for idx in 1..=24 {
            let w = r.route("e", idx, 500.0, now).unwrap().worker_id;
            on.entry(w).or_default().push(idx);
            // Reports in between, each listing the requests that have reached the worker:
            // all but the last few routed to it (each reached it before its next report).
            let (id, on_the_way, perf) = match idx {
                9 => (1, 2, 3200.0),
                15 => (1, 3, 3200.0),
                18 => (2, 1, 6400.0),
                21 => (1, 2, 3200.0),
                _ => continue,
            };
            let arrived = &on[&id][..on[&id].len() - on_the_way];
            r.report(listing(id, arrived, 500.0, perf), now);
        }
        let split: Vec<usize> = on.values().map(Vec::len).collect();
        assert_eq!(split, [8, 16], "each worker holds exactly its batch");
        for (id, perf) in [(1, 3200.0), (2, 6400.0)] {
            let wait = on[&id].len() as f64 * 500.0 / perf;
            assert!(wait <= 1.25, "worker {id} routed past one batch: {wait} s");
        }
        // The next report lists everything: nothing is counted twice.
        r.report(listing(1, &on[&1], 500.0, 3200.0), now);
        assert_eq!(r.ready_load("e", now), (12_000.0, 9_600.0));
    }

    #[test]
    fn a_routed_request_no_report_ever_lists_leaves_at_the_second_report() {
        let now = Instant::now();
        let mut r = pool(vec![listing(1, &[], 1.0, 10.0)], now);
        r.route("e", 5, 4.0, now).unwrap();
        r.report(listing(1, &[], 1.0, 10.0), now);
        assert_eq!(r.ready_load("e", now).0, 4.0, "maybe still on its way");
        r.report(listing(1, &[], 1.0, 10.0), now);
        assert_eq!(
            r.ready_load("e", now).0,
            0.0,
            "never arrived: not counted for ever"
        );
    }

    #[test]
    fn requests_a_report_counted_leave_the_estimate_when_they_finish() {
        let now = Instant::now();
        let mut r = pool(
            vec![listing(1, &[], 3.0, 10.0), listing(2, &[], 3.0, 10.0)],
            now,
        );
        for idx in 1..=4 {
            r.route("e", idx, 3.0, now).unwrap();
        }
        r.report(listing(1, &[1, 3], 3.0, 10.0), now);
        r.report(listing(2, &[2, 4], 3.0, 10.0), now);
        let done = |idx| Finished {
            request_idx: Some(idx),
            status: "Success",
        };
        assert!(r.finished(1, &[done(1), done(3)]));
        assert_eq!(
            r.ready_load("e", now).0,
            6.0,
            "worker 1 is empty, worker 2 holds 6"
        );
        assert_eq!(pick(&mut r, now), 1);
        // A later report that no longer lists them does not subtract them again, and one
        // that omits the list altogether is taken whole.
        r.report(listing(1, &[], 3.0, 10.0), now);
        let mut plain = report(2, 6.0, 10.0);
        plain.working = None;
        r.report(plain, now);
        assert!(r.finished(2, &[done(2)]));
        assert_eq!(
            r.ready_load("e", now).0,
            1.0 + 6.0,
            "the one routed to 1 (1 unit), and 2's report"
        );
    }

    #[test]
    fn a_worker_whose_load_is_unknown_cost_finishing_never_goes_below_zero() {
        let now = Instant::now();
        let mut r = pool(vec![listing(1, &[], 1.0, 10.0)], now);
        r.route("e", 1, 50.0, now).unwrap();
        let mut rep = report(1, 2.0, 10.0); // the worker weighs it 2, the client said 50
        rep.working = Some(vec![1]);
        r.report(rep, now);
        r.finished(
            1,
            &[Finished {
                request_idx: Some(1),
                status: "Success",
            }],
        );
        assert_eq!(r.ready_load("e", now).0, 0.0);
    }

    #[test]
    fn ready_load_sums_ready_workers_and_what_was_routed_to_them() {
        let now = Instant::now();
        let mut errored = report(3, 40.0, 10.0);
        errored.error_msg = "down".into();
        let mut r = pool(
            vec![report(1, 5.0, 10.0), report(2, 0.0, 30.0), errored],
            now,
        );
        r.route("e", 1, 7.0, now).unwrap(); // worker 2: the least wait
        assert_eq!(r.ready_load("e", now), (12.0, 40.0));
        assert_eq!(
            r.ready_load("e", now + STALE),
            (0.0, 0.0),
            "stale is not ready"
        );
    }

    fn limits() -> Limits {
        Limits {
            stale_after: Duration::from_secs(1),
            prune_after: Duration::from_secs(3),
            max_workers: 1000,
            max_routed_per_worker: 1000,
        }
    }

    fn ids(r: &mut Registry, now: Instant) -> Vec<u64> {
        r.list("e", now)
            .iter()
            .map(|w| w["id"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn a_silent_worker_goes_stale_then_is_pruned_while_a_reporting_one_stays() {
        let t0 = Instant::now();
        let mut r = Registry::new(limits());
        r.report(report(1, 0.0, 10.0), t0);
        r.report(report(2, 0.0, 10.0), t0);
        let t2 = t0 + Duration::from_secs(2);
        r.report(report(2, 0.0, 10.0), t2);
        assert_eq!(r.census("e", t2).stale, 1, "worker 1 is stale, still kept");
        assert_eq!(ids(&mut r, t2), [1, 2]);
        let t3 = t0 + Duration::from_secs(3);
        assert_eq!(ids(&mut r, t3), [2], "worker 1 silent for prune_after");
        assert_eq!(r.removed(), (1, 0));
        assert!(
            r.report(report(1, 0.0, 10.0), t3),
            "a pruned worker that reports is new again"
        );
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn routing_prunes_too() {
        let t0 = Instant::now();
        let mut r = Registry::new(limits());
        r.report(report(1, 0.0, 10.0), t0);
        let later = t0 + Duration::from_secs(60);
        let census = r.route("e", 1, 1.0, later).unwrap_err();
        assert_eq!(census, Census::default());
        assert!(r.is_empty());
    }

    #[test]
    fn beyond_max_workers_the_worker_with_the_oldest_report_leaves() {
        let t0 = Instant::now();
        let mut r = Registry::new(Limits {
            max_workers: 2,
            ..limits()
        });
        r.report(report(1, 0.0, 10.0), t0);
        r.report(report(2, 0.0, 10.0), t0 + Duration::from_millis(1));
        r.report(report(1, 0.0, 10.0), t0 + Duration::from_millis(2)); // 2 is now the oldest
        r.report(report(3, 0.0, 10.0), t0 + Duration::from_millis(3));
        let now = t0 + Duration::from_millis(3);
        assert_eq!(ids(&mut r, now), [1, 3]);
        assert_eq!(r.removed(), (0, 1));
    }

    #[test]
    fn routed_since_report_is_capped_per_worker() {
        let now = Instant::now();
        let mut r = Registry::new(Limits {
            max_routed_per_worker: 3,
            ..limits()
        });
        r.report(report(1, 0.0, 10.0), now);
        for idx in 1..=10 {
            r.route("e", idx, 1.0, now).unwrap();
        }
        let listed = r.list("e", now);
        assert_eq!(listed[0]["routed_since_report"], 3);
        assert_eq!(listed[0]["routed"], 10);
    }

    #[test]
    fn a_client_request_idx_of_u64_max_is_echoed_and_new_ids_still_count_up() {
        let mut r = Registry::new(limits());
        assert_eq!(r.request_idx(u64::MAX), u64::MAX);
        assert_eq!(r.request_idx(0), 1);
        assert_eq!(
            r.request_idx(MAX_FOLLOWED_REQUEST_IDX),
            MAX_FOLLOWED_REQUEST_IDX
        );
        assert_eq!(r.request_idx(0), MAX_FOLLOWED_REQUEST_IDX + 1);
        let now = Instant::now();
        r.report(report(1, 0.0, 10.0), now);
        let a = r.route("e", u64::MAX, f64::MAX, now).unwrap();
        let b = r.route("e", u64::MAX - 1, f64::MAX, now).unwrap();
        assert_eq!((a.reqnum, b.reqnum), (1, 2), "huge costs route, no panic");
        assert!(r.finished(
            1,
            &[Finished {
                request_idx: Some(u64::MAX),
                status: "Success",
            }]
        ));
    }

    #[test]
    fn counters_saturate_instead_of_overflowing() {
        let now = Instant::now();
        let mut r = Registry::new(limits());
        r.report(report(1, 0.0, 10.0), now);
        let w = r.workers.get_mut(&1).unwrap();
        w.last_reqnum = u64::MAX;
        w.routed = u64::MAX;
        w.finished.insert("Success", u64::MAX);
        r.unknown_worker_deletes = u64::MAX;
        let a = r.route("e", 1, 1.0, now).unwrap();
        assert_eq!(a.reqnum, u64::MAX);
        let done = Finished {
            request_idx: Some(1),
            status: "Success",
        };
        r.finished(1, std::slice::from_ref(&done));
        r.finished(2, &[done]);
        assert_eq!(r.unknown_worker_deletes(), u64::MAX);
        assert_eq!(r.list("e", now)[0]["finished"]["Success"], u64::MAX);
    }
}
