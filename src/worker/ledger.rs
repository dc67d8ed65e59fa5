//! Accounting: the working set, the estimated wait, and request totals.
//!
//! A request is either rejected ([`Ledger::reject`]) or admitted ([`Ledger::admit`]), which
//! checks the estimated wait and inserts the request into the working set under one lock
//! (PROTOCOL.md §4); [`super::admission`] is the only caller. Admission returns a [`Ticket`]:
//! an RAII guard that travels with the request (and later with its response body) and
//! records exactly one outcome. A ticket dropped without an outcome, because the client went
//! away and hyper dropped the future or body holding it, records `cancelled`; no disconnect
//! can leak a working-set entry or a count.
//!
//! Every event also goes to an optional [`Recorder`] (the autoscaler reports keep their own
//! interval counters and records there), so the ledger knows nothing about reporting.
//!
//! Sessions (PROTOCOL.md §8) are entries too, of their own [`Kind`], counted as the `vastai`
//! worker reports them: an open session is one working request of its cost (in `cur_load`
//! and the working `request_idx`s) that holds no backend slot and is out of the wait; a
//! request inside a session uses the backend (in the wait, queued then in flight) but shares
//! the session's `request_idx`, so it is neither a working `request_idx` nor in `cur_load`.

use super::error::WorkerError;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::Notify;

/// What an entry of the working set is, towards sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A request of its own: in `cur_load`, the wait and the working `request_idx`s; one
    /// `/delete_requests/` record when it ends.
    #[default]
    Request,
    /// An open session: in `cur_load` and the working `request_idx`s, one record when it
    /// closes, but out of the wait and never queued or in flight (it holds no backend slot).
    Session,
    /// A request inside a session: in the wait, queued then in flight, but it shares the
    /// session's `request_idx`, so it is not in `cur_load` nor a working `request_idx`, and
    /// leaves no record of its own.
    InSession,
}

impl Kind {
    /// Counted in `cur_load` and listed in the working `request_idx`s.
    pub fn reported(self) -> bool {
        self != Kind::InSession
    }

    /// Counted in the estimated wait (it uses the backend).
    pub fn waits(self) -> bool {
        self != Kind::Session
    }
}

/// Identity and workload of one request, as the envelope stage determined them.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestInfo {
    /// `auth_data.request_idx` (or a synthetic one; a session's for a request inside it).
    pub request_idx: u64,
    /// `auth_data.reqnum` (or a synthetic one; a session's for a request inside it).
    pub reqnum: u64,
    /// Workload units.
    pub workload: f64,
    /// A request, a session, or a request inside a session.
    pub kind: Kind,
}

#[cfg(test)]
impl RequestInfo {
    /// A request whose reqnum is its `request_idx`.
    pub(crate) fn numbered(idx: u64, workload: f64) -> Self {
        Self {
            request_idx: idx,
            reqnum: idx,
            workload,
            kind: Kind::Request,
        }
    }
}

/// How an admitted request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The backend answered (any status) and the body was relayed in full.
    Success,
    /// Transport error, timeout, or the backend died mid-body.
    Errored,
    /// The client went away.
    Cancelled,
}

/// A number of requests and their total workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Count {
    /// Number of requests.
    pub requests: u64,
    /// Sum of their workload.
    pub workload: f64,
}

impl Count {
    fn add(&mut self, workload: f64) {
        self.requests += 1;
        self.workload += workload;
    }
}

/// Totals since start. Invariant once the working set is empty:
/// `received = served + errored + cancelled + rejected`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Every request with a readable envelope.
    pub received: Count,
    /// Ended with [`Outcome::Success`].
    pub served: Count,
    /// Ended with [`Outcome::Errored`].
    pub errored: Count,
    /// Ended with [`Outcome::Cancelled`].
    pub cancelled: Count,
    /// Refused at admission (429, 503). A 401 is not here: it never reaches the ledger.
    pub rejected: Count,
}

/// A consistent view of the ledger.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Capacity, workload units per second.
    pub max_perf: f64,
    /// Σ workload of the working set as reported (`cur_load`): requests and open sessions,
    /// not the requests inside sessions.
    pub cur_load: f64,
    /// Estimated wait for a new request, seconds: the workload of the requests (inside
    /// sessions or not) over the capacity; open sessions are out of it.
    pub estimated_wait: f64,
    /// Admitted requests waiting for a backend slot.
    pub queued: usize,
    /// Requests being served by the backend.
    pub in_flight: usize,
    /// Open sessions.
    pub sessions: usize,
    /// `request_idx` of every request and open session in the working set (requests inside
    /// a session share its `request_idx` and are not listed again).
    #[serde(skip)]
    pub working_request_idxs: Vec<u64>,
    /// Totals since start.
    pub totals: Totals,
}

impl Snapshot {
    /// Requests in the working set (queued + in flight), open sessions not included: what a
    /// drain waits for.
    pub fn working(&self) -> usize {
        self.queued + self.in_flight
    }
}

#[derive(Debug)]
struct Entry {
    request_idx: u64,
    workload: f64,
    kind: Kind,
    started: bool,
}

#[derive(Debug, Default)]
struct Inner {
    working: HashMap<u64, Entry>,
    /// Σ workload of the entries that are [`Kind::reported`].
    cur_load: f64,
    /// Σ workload of the entries that [`Kind::waits`].
    wait_load: f64,
    in_flight: usize,
    sessions: usize,
    in_session: usize,
    next_id: u64,
    totals: Totals,
}

/// An ended request, as a [`Recorder`] sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ended {
    /// `request_idx` of the request.
    pub request_idx: u64,
    /// A request, a session, or a request inside a session.
    pub kind: Kind,
    /// Its workload.
    pub workload: f64,
    /// How it ended.
    pub outcome: Outcome,
    /// When it entered the working set.
    pub entered_queue_at: SystemTime,
    /// When it was sent to the backend, if it was.
    pub work_started_at: Option<SystemTime>,
    /// When it ended.
    pub completed_at: SystemTime,
}

/// Sees every event of a [`Ledger`], after the ledger recorded it.
pub trait Recorder: std::fmt::Debug + Send + Sync {
    /// A request was received (it is then either rejected or admitted).
    fn received(&self, info: &RequestInfo);
    /// A received request was refused before admission.
    fn rejected(&self, info: &RequestInfo);
    /// An admitted request left the working set.
    fn ended(&self, ended: &Ended);
}

impl Inner {
    fn wait(&self, max_perf: f64) -> f64 {
        if self.working.len() == self.sessions {
            0.0
        } else {
            self.wait_load / max_perf.max(1e-5)
        }
    }

    fn insert(&mut self, info: &RequestInfo) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.working.insert(
            id,
            Entry {
                request_idx: info.request_idx,
                workload: info.workload,
                kind: info.kind,
                started: false,
            },
        );
        match info.kind {
            Kind::Request => {}
            Kind::Session => self.sessions += 1,
            Kind::InSession => self.in_session += 1,
        }
        if info.kind.reported() {
            self.cur_load += info.workload;
        }
        if info.kind.waits() {
            self.wait_load += info.workload;
        }
        self.totals.received.add(info.workload);
        id
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.working.remove(&id)?;
        if entry.started {
            self.in_flight -= 1;
        }
        match entry.kind {
            Kind::Request => {}
            Kind::Session => self.sessions -= 1,
            Kind::InSession => self.in_session -= 1,
        }
        // Internal: reset each running sum when nothing is left in it, so float drift
        // cannot accumulate into a phantom load.
        let n = self.working.len();
        self.cur_load = match n == self.in_session {
            true => 0.0,
            false if entry.kind.reported() => self.cur_load - entry.workload,
            false => self.cur_load,
        };
        self.wait_load = match n == self.sessions {
            true => 0.0,
            false if entry.kind.waits() => self.wait_load - entry.workload,
            false => self.wait_load,
        };
        Some(entry)
    }
}

/// The working set and request totals of one worker.
#[derive(Debug)]
pub struct Ledger {
    inner: Mutex<Inner>,
    // Internal: the bits of an f64, read on every request (the cost clamp) without the lock;
    // it only changes once, when the benchmark ends.
    max_perf: AtomicU64,
    max_wait_time: f64,
    recorder: Option<Arc<dyn Recorder>>,
    /// Counts changes; read by the reporter to see whether anything changed.
    changes: AtomicU64,
    /// Tasks in [`Ledger::wait_until`]. Internal: a change notifies only when someone
    /// waits, so a request's three changes cost three atomic steps, not three wake-up rounds.
    waiters: AtomicUsize,
    changed: Notify,
}

impl Ledger {
    /// A ledger for capacity `max_perf` that rejects when the wait exceeds `max_wait_time` s.
    pub fn new(max_perf: f64, max_wait_time: f64) -> Arc<Self> {
        Self::with_recorder(max_perf, max_wait_time, None)
    }

    /// Like [`Ledger::new`], telling `recorder` of every event.
    pub fn with_recorder(
        max_perf: f64,
        max_wait_time: f64,
        recorder: Option<Arc<dyn Recorder>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            max_perf: AtomicU64::new(max_perf.to_bits()),
            max_wait_time,
            recorder,
            changes: AtomicU64::new(0),
            waiters: AtomicUsize::new(0),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Internal: every critical section is a few arithmetic steps that cannot panic, so a
        // poisoned lock still holds consistent data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }

    /// A counter that changes with every change of the ledger.
    pub fn version(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// Waits until a snapshot of the ledger satisfies `pred` (checked at once, then after
    /// every change), and returns that snapshot.
    pub async fn wait_until(&self, pred: impl Fn(&Snapshot) -> bool) -> Snapshot {
        /// Counts this task in `waiters` while it waits.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiters);
        loop {
            // Internal: registered before the snapshot, so a change made after it is seen.
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let snap = self.snapshot();
            if pred(&snap) {
                return snap;
            }
            notified.await;
        }
    }

    /// The capacity, workload units per second.
    pub fn max_perf(&self) -> f64 {
        f64::from_bits(self.max_perf.load(Ordering::Relaxed))
    }

    /// The wait limit, seconds.
    pub fn max_wait_time(&self) -> f64 {
        self.max_wait_time
    }

    /// Sets the capacity (after a benchmark).
    pub fn set_max_perf(&self, max_perf: f64) {
        self.max_perf.store(max_perf.to_bits(), Ordering::Relaxed);
        self.bump();
    }

    /// Records a request refused before admission.
    pub fn reject(&self, info: &RequestInfo) {
        let mut inner = self.lock();
        inner.totals.received.add(info.workload);
        inner.totals.rejected.add(info.workload);
        drop(inner);
        if let Some(r) = &self.recorder {
            r.received(info);
            r.rejected(info);
        }
        self.bump();
    }

    /// Admits the request into the working set, or refuses it with
    /// [`WorkerError::QueueFull`] (and records the rejection) when the estimated wait is above
    /// the limit. The check and the insertion happen under one lock.
    pub fn admit(self: &Arc<Self>, info: &RequestInfo) -> Result<Ticket, WorkerError> {
        let mut inner = self.lock();
        let wait = inner.wait(self.max_perf());
        if wait > self.max_wait_time {
            drop(inner);
            self.reject(info);
            // Time until the backlog, drained at max_perf, brings the wait under the limit.
            let retry_after = (wait - self.max_wait_time).ceil().max(1.0) as u64;
            return Err(WorkerError::QueueFull {
                wait,
                limit: self.max_wait_time,
                retry_after,
            });
        }
        let id = inner.insert(info);
        drop(inner);
        Ok(self.ticket(info, id))
    }

    /// Enters an open session into the working set, whatever the wait (a session is out of
    /// it, as it holds no backend slot). Its ticket lives as long as the session.
    /// The session's work starts at once (`work_started_at` is its creation, as the
    /// `vastai` worker reports it).
    pub fn open_session(self: &Arc<Self>, info: &RequestInfo) -> Ticket {
        let info = RequestInfo {
            kind: Kind::Session,
            ..info.clone()
        };
        let id = self.lock().insert(&info);
        let mut ticket = self.ticket(&info, id);
        ticket.work_started_at = Some(ticket.entered_queue_at);
        ticket
    }

    fn ticket(self: &Arc<Self>, info: &RequestInfo, id: u64) -> Ticket {
        if let Some(r) = &self.recorder {
            r.received(info);
        }
        self.bump();
        Ticket {
            ledger: Arc::clone(self),
            id,
            entered_queue_at: SystemTime::now(),
            work_started_at: None,
            done: false,
        }
    }

    /// A consistent view of the working set and totals.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            max_perf: self.max_perf(),
            cur_load: inner.cur_load,
            estimated_wait: inner.wait(self.max_perf()),
            queued: inner.working.len() - inner.in_flight - inner.sessions,
            in_flight: inner.in_flight,
            sessions: inner.sessions,
            working_request_idxs: inner
                .working
                .values()
                .filter(|e| e.kind.reported())
                .map(|e| e.request_idx)
                .collect(),
            totals: inner.totals,
        }
    }

    fn start(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(e) = inner.working.get_mut(&id)
            && !e.started
            && e.kind != Kind::Session
        {
            e.started = true;
            inner.in_flight += 1;
        }
        drop(inner);
        self.bump();
    }

    fn end(&self, id: u64, outcome: Outcome, times: (SystemTime, Option<SystemTime>)) {
        let mut inner = self.lock();
        let Some(entry) = inner.remove(id) else {
            return;
        };
        let count = match outcome {
            Outcome::Success => &mut inner.totals.served,
            Outcome::Errored => &mut inner.totals.errored,
            Outcome::Cancelled => &mut inner.totals.cancelled,
        };
        count.add(entry.workload);
        drop(inner);
        if let Some(r) = &self.recorder {
            r.ended(&Ended {
                request_idx: entry.request_idx,
                kind: entry.kind,
                workload: entry.workload,
                outcome,
                entered_queue_at: times.0,
                work_started_at: times.1,
                completed_at: SystemTime::now(),
            });
        }
        self.bump();
    }
}

/// An admitted request's place in the working set. Records exactly one [`Outcome`]:
/// the one given to [`Ticket::finish`], or `Cancelled` when dropped unfinished.
#[derive(Debug)]
pub struct Ticket {
    ledger: Arc<Ledger>,
    id: u64,
    entered_queue_at: SystemTime,
    work_started_at: Option<SystemTime>,
    done: bool,
}

impl Ticket {
    /// Marks the request as sent to the backend (it leaves the queue, joins in-flight).
    pub fn start(&mut self) {
        if self.work_started_at.is_none() {
            self.work_started_at = Some(SystemTime::now());
            self.ledger.start(self.id);
        }
    }

    /// Records the outcome and leaves the working set. Later calls do nothing.
    pub fn finish(&mut self, outcome: Outcome) {
        if !self.done {
            self.done = true;
            self.ledger.end(
                self.id,
                outcome,
                (self.entered_queue_at, self.work_started_at),
            );
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.finish(Outcome::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use RequestInfo as R;

    fn assert_balanced(l: &Ledger) {
        let s = l.snapshot();
        let t = s.totals;
        assert_eq!(s.working(), 0);
        assert_eq!(
            t.received.requests,
            t.served.requests + t.errored.requests + t.cancelled.requests + t.rejected.requests
        );
    }

    #[test]
    fn first_request_is_always_admitted_then_wait_grows_with_load() {
        let l = Ledger::new(10.0, 1.0);
        let a = l.admit(&R::numbered(1, 100.0)).unwrap();
        assert_eq!(l.snapshot().estimated_wait, 10.0);
        let err = l.admit(&R::numbered(2, 1.0)).unwrap_err();
        match err {
            // wait 10 s, limit 1 s: under the limit after 9 s at max_perf.
            WorkerError::QueueFull { retry_after, .. } => assert_eq!(retry_after, 9),
            other => panic!("{other:?}"),
        }
        drop(a);
        assert_balanced(&l);
        let t = l.snapshot().totals;
        assert_eq!(t.rejected.requests, 1);
        assert_eq!(t.cancelled.requests, 1);
    }

    #[test]
    fn wait_equal_to_limit_is_admitted() {
        let l = Ledger::new(10.0, 1.0);
        let _a = l.admit(&R::numbered(1, 10.0)).unwrap();
        assert!(l.admit(&R::numbered(2, 1.0)).is_ok());
    }

    #[test]
    fn ticket_records_one_outcome_and_tracks_in_flight() {
        let l = Ledger::new(10.0, 100.0);
        let mut t = l.admit(&R::numbered(7, 3.0)).unwrap();
        assert_eq!(l.snapshot().queued, 1);
        t.start();
        let s = l.snapshot();
        assert_eq!((s.queued, s.in_flight, s.cur_load), (0, 1, 3.0));
        assert_eq!(s.working_request_idxs, vec![7]);
        t.finish(Outcome::Success);
        t.finish(Outcome::Errored);
        drop(t);
        let s = l.snapshot();
        assert_eq!(
            s.totals.served,
            Count {
                requests: 1,
                workload: 3.0
            }
        );
        assert_eq!(s.totals.errored.requests, 0);
        assert_eq!(s.totals.cancelled.requests, 0);
        assert_eq!(s.cur_load, 0.0);
        assert_balanced(&l);
    }
}
