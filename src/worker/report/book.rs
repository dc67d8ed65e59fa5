//! What the reports carry between two sends: workload counters since the last successful
//! `worker_status` (PROTOCOL.md §5.1), distinct reqnums, and ended requests waiting for
//! `/delete_requests/` (§5.2). The [`Book`] is the ledger's [`Recorder`].
//!
//! A request inside a session counts in the workload counters but shares the session's
//! `request_idx` and `reqnum`: it is no new reqnum and leaves no record of its own (the
//! session leaves one when it closes), as the `vastai` worker reports it.

use super::wire::{Finished, FinishedStatus};
use crate::worker::ledger::{Ended, Kind, Outcome, Recorder, RequestInfo};
use serde::Serialize;
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

/// Most records kept while the autoscaler is unreachable.
pub const MAX_FINISHED: usize = 10_000;
/// Recent reqnums remembered to count distinct ones without growing without bound.
const REQNUM_MEMORY: usize = 65_536;

/// Workload counted since the last successful `worker_status` report (PROTOCOL.md §5.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Interval {
    /// Workload received (admitted or rejected).
    pub received: f64,
    /// Workload cancelled.
    pub cancelled: f64,
    /// Workload rejected.
    pub rejected: f64,
    /// Workload served.
    pub served: f64,
}

/// Distinct reqnums received: a count plus a bounded memory of recent ones, so a retried
/// request is not counted twice.
#[derive(Debug, Default)]
struct Reqnums {
    count: u64,
    recent: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Reqnums {
    fn see(&mut self, reqnum: u64) {
        if !self.recent.insert(reqnum) {
            return;
        }
        self.count += 1;
        self.order.push_back(reqnum);
        if self.order.len() > REQNUM_MEMORY
            && let Some(old) = self.order.pop_front()
        {
            self.recent.remove(&old);
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    interval: Interval,
    reqnums: Reqnums,
    /// Ended requests not yet reported, each with its sequence number.
    finished: VecDeque<(u64, Finished)>,
    finished_seq: u64,
    finished_dropped: u64,
}

/// The reports' book of one worker.
#[derive(Debug, Default)]
pub struct Book {
    inner: Mutex<Inner>,
    reports: bool,
}

pub(crate) fn unix(t: SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Book {
    /// A book; with `reports` (a worker that reports), ended requests are kept (at most
    /// [`MAX_FINISHED`]) for `/delete_requests/` and the recent reqnums are remembered to
    /// count distinct ones. A worker that does not report keeps neither (the reqnum memory
    /// alone is over a megabyte once full).
    pub fn new(reports: bool) -> Self {
        Self {
            inner: Mutex::default(),
            reports,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Internal: every critical section is a few steps that cannot panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push_finished(&self, rec: Finished) {
        if !self.reports {
            return;
        }
        let mut inner = self.lock();
        inner.finished_seq += 1;
        let seq = inner.finished_seq;
        inner.finished.push_back((seq, rec));
        if inner.finished.len() > MAX_FINISHED {
            inner.finished.pop_front();
            inner.finished_dropped += 1;
        }
    }

    /// Workload counted since the last successful report.
    pub fn interval(&self) -> Interval {
        self.lock().interval
    }

    /// Subtracts what a successful report carried, keeping what arrived meanwhile.
    pub fn settle_interval(&self, sent: &Interval) {
        let mut inner = self.lock();
        let i = &mut inner.interval;
        i.received = (i.received - sent.received).max(0.0);
        i.cancelled = (i.cancelled - sent.cancelled).max(0.0);
        i.rejected = (i.rejected - sent.rejected).max(0.0);
        i.served = (i.served - sent.served).max(0.0);
    }

    /// Count of distinct reqnums received since start (0 in a book that does not report).
    pub fn distinct_reqnums(&self) -> u64 {
        self.lock().reqnums.count
    }

    /// Up to `max` of the oldest ended requests not yet reported with the sequence number of
    /// the last one, and how many were dropped (oldest first) because the list was full
    /// since the last call.
    pub fn pending_finished(&self, max: usize) -> (Vec<Finished>, Option<u64>, u64) {
        let mut inner = self.lock();
        let dropped = std::mem::take(&mut inner.finished_dropped);
        let batch: Vec<_> = inner.finished.iter().take(max).collect();
        let last = batch.last().map(|(seq, _)| *seq);
        let records = batch.into_iter().map(|(_, f)| f.clone()).collect();
        (records, last, dropped)
    }

    /// Removes reported records, up to and including sequence `last_seq`.
    pub fn ack_finished(&self, last_seq: u64) {
        let mut inner = self.lock();
        while inner
            .finished
            .front()
            .is_some_and(|(seq, _)| *seq <= last_seq)
        {
            inner.finished.pop_front();
        }
    }
}

impl Recorder for Book {
    fn received(&self, info: &RequestInfo) {
        let mut inner = self.lock();
        inner.interval.received += info.workload;
        if self.reports && info.kind != Kind::InSession {
            inner.reqnums.see(info.reqnum);
        }
    }

    fn rejected(&self, info: &RequestInfo) {
        self.lock().interval.rejected += info.workload;
        if info.kind == Kind::InSession {
            return;
        }
        let now = Some(unix(SystemTime::now()));
        self.push_finished(Finished {
            request_idx: info.request_idx,
            success: false,
            status: FinishedStatus::Rejected,
            entered_queue_at: now,
            work_started_at: None,
            work_completed_at: now,
        });
    }

    fn ended(&self, e: &Ended) {
        let status = match e.outcome {
            Outcome::Success => {
                self.lock().interval.served += e.workload;
                FinishedStatus::Success
            }
            Outcome::Cancelled => {
                self.lock().interval.cancelled += e.workload;
                FinishedStatus::Cancelled
            }
            Outcome::Errored => FinishedStatus::Error,
        };
        if e.kind == Kind::InSession {
            return;
        }
        self.push_finished(Finished {
            request_idx: e.request_idx,
            success: e.outcome != Outcome::Errored,
            status,
            entered_queue_at: Some(unix(e.entered_queue_at)),
            work_started_at: e.work_started_at.map(unix),
            work_completed_at: Some(unix(e.completed_at)),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(idx: u64, workload: f64) -> RequestInfo {
        RequestInfo::numbered(idx, workload)
    }

    #[test]
    fn a_retried_reqnum_is_counted_once() {
        let book = Book::new(true);
        book.received(&info(1, 2.0));
        book.received(&info(1, 2.0));
        book.received(&info(2, 2.0));
        assert_eq!(book.distinct_reqnums(), 2);
        assert_eq!(book.interval().received, 6.0);
    }

    #[test]
    fn settling_keeps_what_arrived_after_the_report_was_built() {
        let book = Book::new(false);
        book.received(&info(1, 3.0));
        let sent = book.interval();
        book.received(&info(2, 4.0));
        book.settle_interval(&sent);
        assert_eq!(book.interval().received, 4.0);
    }

    #[test]
    fn a_full_list_drops_the_oldest_records_and_says_how_many() {
        let book = Book::new(true);
        for i in 0..(MAX_FINISHED as u64 + 3) {
            book.rejected(&info(i, 1.0));
        }
        let (batch, last, dropped) = book.pending_finished(2);
        assert_eq!(dropped, 3);
        assert_eq!(batch[0].request_idx, 3);
        book.ack_finished(last.unwrap());
        let (batch, _, dropped) = book.pending_finished(1);
        assert_eq!((batch[0].request_idx, dropped), (5, 0));
    }

    #[test]
    fn a_request_inside_a_session_counts_its_workload_but_leaves_no_record_or_reqnum() {
        let book = Book::new(true);
        let session = RequestInfo {
            kind: Kind::Session,
            ..info(7, 100.0)
        };
        let inside = RequestInfo {
            kind: Kind::InSession,
            ..info(7, 3.0)
        };
        book.received(&session);
        book.received(&inside);
        book.rejected(&inside);
        let ended = |kind| Ended {
            request_idx: 7,
            kind,
            workload: 3.0,
            outcome: Outcome::Success,
            entered_queue_at: SystemTime::UNIX_EPOCH,
            work_started_at: None,
            completed_at: SystemTime::UNIX_EPOCH,
        };
        book.ended(&ended(Kind::InSession));
        assert!(book.pending_finished(10).0.is_empty());
        book.ended(&ended(Kind::Session));
        let (records, _, _) = book.pending_finished(10);
        assert_eq!(records.len(), 1, "one record, for the session");
        assert_eq!(records[0].status, FinishedStatus::Success);
        assert_eq!(book.distinct_reqnums(), 1);
        let i = book.interval();
        assert_eq!((i.received, i.rejected, i.served), (103.0, 3.0, 6.0));
    }

    #[test]
    fn a_worker_that_does_not_report_keeps_no_records_and_no_reqnums() {
        let book = Book::new(false);
        book.received(&info(1, 1.0));
        book.rejected(&info(1, 1.0));
        assert!(book.pending_finished(10).0.is_empty());
        assert_eq!(book.interval().rejected, 1.0);
        assert_eq!(book.distinct_reqnums(), 0);
        assert!(book.lock().reqnums.recent.is_empty());
    }
}
