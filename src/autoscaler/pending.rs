//! Requests routed to one worker that no report has covered yet, with a cap.
//!
//! Routing adds each request's units to the worker's reported `cur_load` until a report
//! covers them (see [`super::registry`]). A report covers a request when its
//! `working_request_idxs` lists it. One that does not list it may simply have been made
//! before the request reached the worker (the client is still connecting): such a request
//! stays counted through one report that misses it and leaves at the second, by which time
//! it has either arrived (and is listed) or finished (and `delete_requests` says so).
//!
//! Reports come at least every 10 s, but a flood of `/route/` calls in between, or a worker
//! that stays ready while its reports stop short of `stale_after`, would grow the list
//! without limit; so it keeps at most `cap` entries and drops the oldest beyond that.
//! Dropping one only makes the worker look a little less loaded until its next report.

use std::collections::BTreeMap;

/// The routed-since-report list of one worker: `request_idx` → routing units, oldest first.
#[derive(Debug, Clone)]
pub struct Pending {
    /// `request_idx` → (insertion sequence, units, reports that did not list it).
    by_idx: BTreeMap<u64, (u64, f64, u8)>,
    /// Insertion sequence → `request_idx`: the order in which to drop.
    order: BTreeMap<u64, u64>,
    next_seq: u64,
    cap: usize,
    dropped: u64,
}

impl Pending {
    /// An empty list holding at most `cap` requests (at least 1).
    pub fn new(cap: usize) -> Pending {
        Pending {
            by_idx: BTreeMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            cap: cap.max(1),
            dropped: 0,
        }
    }

    /// Counts `units` for `request_idx` (replacing an earlier entry of the same request),
    /// dropping the oldest entry when the list is full.
    pub fn insert(&mut self, request_idx: u64, units: f64) {
        self.remove(request_idx);
        while self.by_idx.len() >= self.cap {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.by_idx.remove(&oldest);
            self.dropped = self.dropped.saturating_add(1);
        }
        let seq = self.next_seq;
        // Internal: one increment per route; u64 does not wrap in practice, and wrapping
        // would only misorder which entry is dropped first.
        self.next_seq = self.next_seq.wrapping_add(1);
        self.by_idx.insert(request_idx, (seq, units, 0));
        self.order.insert(seq, request_idx);
    }

    /// Forgets `request_idx` (finished, or routed again elsewhere); returns its units when
    /// it was counted.
    pub fn remove(&mut self, request_idx: u64) -> Option<f64> {
        let (seq, units, _) = self.by_idx.remove(&request_idx)?;
        self.order.remove(&seq);
        Some(units)
    }

    /// Applies a report that lists `working` (sorted) as the worker's working set: the
    /// entries it lists leave the list and are returned (`request_idx` → units), as the
    /// report's `cur_load` now counts them; those it does not list stay for one more report
    /// (still on their way to the worker) and leave at the second that misses them. Also
    /// returns how many entries were dropped for the cap since the last call.
    pub fn reconcile(&mut self, working: &[u64]) -> (BTreeMap<u64, f64>, u64) {
        let mut covered = BTreeMap::new();
        let order = &mut self.order;
        self.by_idx.retain(|idx, (seq, units, missed)| {
            let keep = if working.binary_search(idx).is_ok() {
                covered.insert(*idx, *units);
                false
            } else {
                *missed += 1;
                *missed < 2
            };
            if !keep {
                order.remove(seq);
            }
            keep
        });
        (covered, std::mem::take(&mut self.dropped))
    }

    /// Forgets everything (a new report covers it) and returns how many entries were
    /// dropped for the cap since the last call.
    pub fn clear(&mut self) -> u64 {
        self.by_idx.clear();
        self.order.clear();
        std::mem::take(&mut self.dropped)
    }

    /// Σ units. Never NaN: units are finite and non-negative, so the sum is at worst `+inf`.
    pub fn units(&self) -> f64 {
        self.by_idx.values().map(|(_, u, _)| u).sum()
    }

    /// Number of requests in the list.
    pub fn count(&self) -> usize {
        self.by_idx.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_the_cap_the_oldest_entries_are_dropped_and_counted() {
        let mut p = Pending::new(3);
        for idx in 1..=5 {
            p.insert(idx, idx as f64);
        }
        assert_eq!(p.count(), 3);
        assert_eq!(p.units(), 3.0 + 4.0 + 5.0);
        assert_eq!(p.clear(), 2);
        assert_eq!(p.count(), 0);
        assert_eq!(p.clear(), 0, "the count restarts");
    }

    #[test]
    fn reinserting_a_request_refreshes_it_instead_of_counting_twice() {
        let mut p = Pending::new(2);
        p.insert(1, 1.0);
        p.insert(2, 2.0);
        p.insert(1, 10.0); // 1 is now the newest
        p.insert(3, 3.0); // drops 2
        assert_eq!(p.units(), 13.0);
        assert_eq!(p.remove(1), Some(10.0));
        assert_eq!(p.remove(99), None);
        assert_eq!((p.count(), p.units()), (1, 3.0));
    }

    #[test]
    fn a_report_takes_what_it_lists_and_what_two_reports_missed() {
        let mut p = Pending::new(10);
        p.insert(1, 1.0);
        p.insert(2, 2.0);
        p.insert(3, 3.0);
        let (covered, dropped) = p.reconcile(&[1, 9]);
        assert_eq!(covered, BTreeMap::from([(1, 1.0)]));
        assert_eq!(dropped, 0);
        assert_eq!((p.count(), p.units()), (2, 5.0), "2 and 3 still in transit");
        p.insert(4, 4.0);
        let (covered, _) = p.reconcile(&[3]);
        assert_eq!(covered, BTreeMap::from([(3, 3.0)]));
        assert_eq!(
            (p.count(), p.units()),
            (1, 4.0),
            "2 missed two reports and left; 4 missed its first"
        );
        p.insert(5, 5.0);
        assert_eq!(p.order.len(), p.by_idx.len(), "the drop order follows");
    }

    #[test]
    fn huge_units_sum_to_infinity_not_nan() {
        let mut p = Pending::new(10);
        p.insert(1, f64::MAX);
        p.insert(2, f64::MAX);
        assert_eq!(p.units(), f64::INFINITY);
    }
}
