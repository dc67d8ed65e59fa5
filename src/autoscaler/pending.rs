//! Requests routed to one worker since its last report, with a cap.
//!
//! Routing adds each request's units to the worker's reported `cur_load` until the next
//! report covers them (see [`super::registry`]). Reports come at least every 10 s, but a
//! flood of `/route/` calls in between, or a worker that stays ready while its reports stop
//! short of `stale_after`, would grow the list without limit; so it keeps at most `cap`
//! entries and drops the oldest beyond that. Dropping one only makes the worker look a
//! little less loaded until its next report.

use std::collections::BTreeMap;

/// The routed-since-report list of one worker: `request_idx` → routing units, oldest first.
#[derive(Debug, Clone)]
pub struct Pending {
    /// `request_idx` → (insertion sequence, units).
    by_idx: BTreeMap<u64, (u64, f64)>,
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
        self.by_idx.insert(request_idx, (seq, units));
        self.order.insert(seq, request_idx);
    }

    /// Forgets `request_idx` (finished, or routed again elsewhere).
    pub fn remove(&mut self, request_idx: u64) {
        if let Some((seq, _)) = self.by_idx.remove(&request_idx) {
            self.order.remove(&seq);
        }
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
        self.by_idx.values().map(|(_, u)| u).sum()
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
        p.remove(1);
        p.remove(99);
        assert_eq!((p.count(), p.units()), (1, 3.0));
    }

    #[test]
    fn huge_units_sum_to_infinity_not_nan() {
        let mut p = Pending::new(10);
        p.insert(1, f64::MAX);
        p.insert(2, f64::MAX);
        assert_eq!(p.units(), f64::INFINITY);
    }
}
