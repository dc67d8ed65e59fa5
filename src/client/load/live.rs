//! Counters a live view reads while a load run goes on.
//!
//! Every request task counts its outcome here as it finishes: a handful of relaxed atomic
//! additions, no lock, no allocation, so measuring does not slow what it measures. The exact
//! samples stay with each task for the final report; the live view makes do with counts and
//! a bucketed latency histogram.

use super::histogram::{AtomicHistogram, Histogram};
use super::report::Sample;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Keys a [`Tally`] counts separately; more count as `other`.
pub const TALLY_SLOTS: usize = 16;

/// Counts by key (status code, error class) without a lock: a key claims the first free
/// slot the first time it is seen, and keeps it.
#[derive(Debug)]
pub struct Tally<K> {
    slots: [(OnceLock<K>, AtomicU64); TALLY_SLOTS],
    other: AtomicU64,
}

impl<K> Default for Tally<K> {
    fn default() -> Self {
        Self {
            slots: std::array::from_fn(|_| (OnceLock::new(), AtomicU64::new(0))),
            other: AtomicU64::new(0),
        }
    }
}

impl<K: Copy + Ord> Tally<K> {
    /// Counts one `key`.
    pub fn add(&self, key: K) {
        for (k, n) in &self.slots {
            // Internal: two tasks claiming the same free slot both read back the winner's
            // key, so a key never holds two slots.
            if *k.get_or_init(|| key) == key {
                n.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.other.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts so far by key, in key order, and the count of keys beyond the slots.
    pub fn counts(&self) -> (Vec<(K, u64)>, u64) {
        let mut counts: Vec<(K, u64)> = self
            .slots
            .iter()
            .filter_map(|(k, n)| Some((*k.get()?, n.load(Ordering::Relaxed))))
            .filter(|(_, n)| *n > 0)
            .collect();
        counts.sort_unstable();
        (counts, self.other.load(Ordering::Relaxed))
    }

    /// Everything counted.
    pub fn total(&self) -> u64 {
        let (counts, other) = self.counts();
        counts.iter().map(|(_, n)| n).sum::<u64>() + other
    }
}

/// Counters of a load run, shared by its request tasks and whoever watches them.
#[derive(Debug, Default)]
pub struct Live {
    /// Requests started.
    pub started: AtomicU64,
    /// Requests finished (any outcome).
    pub done: AtomicU64,
    /// Responses by status code.
    pub status: Tally<u16>,
    /// Failures by class (as in the report's `errors`).
    pub errors: Tally<&'static str>,
    /// Latency of responses read whole (the report's `latency_ms`).
    pub latency: AtomicHistogram,
}

impl Live {
    /// Counts a finished request, the way the report will.
    pub fn record(&self, s: &Sample) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if let Some(e) = s.error {
            self.errors.add(e);
        }
        if let Some(code) = s.status {
            self.status.add(code);
            if s.error.is_none() {
                self.latency.record(s.latency);
            }
        }
    }

    /// What has been counted so far.
    pub fn snapshot(&self) -> Counts {
        let (status, other_status) = self.status.counts();
        let (errors, other_errors) = self.errors.counts();
        Counts {
            started: self.started.load(Ordering::Relaxed),
            done: self.done.load(Ordering::Relaxed),
            status,
            other_status,
            errors,
            other_errors,
            latency: self.latency.snapshot(),
        }
    }
}

/// A snapshot of [`Live`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Requests started.
    pub started: u64,
    /// Requests finished.
    pub done: u64,
    /// Responses by status code.
    pub status: Vec<(u16, u64)>,
    /// Responses whose status found no free slot.
    pub other_status: u64,
    /// Failures by class.
    pub errors: Vec<(&'static str, u64)>,
    /// Failures whose class found no free slot.
    pub other_errors: u64,
    /// Latency of responses read whole.
    pub latency: Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_tally_counts_each_key_once_and_the_overflow_as_other() {
        let t = Tally::default();
        for code in [503, 200, 200, 429] {
            t.add(code);
        }
        assert_eq!(t.counts(), (vec![(200, 2), (429, 1), (503, 1)], 0));
        for code in 0..20u16 {
            t.add(1000 + code);
        }
        let (counts, other) = t.counts();
        assert_eq!(counts.len(), TALLY_SLOTS);
        assert_eq!(other, 20 - (TALLY_SLOTS as u64 - 3));
        assert_eq!(t.total(), 24);
    }

    #[test]
    fn a_tally_shared_by_threads_loses_no_count_and_gives_each_key_one_slot() {
        let t = Arc::new(Tally::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        t.add(["a", "b", "c"][i % 3]);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(t.counts(), (vec![("a", 1336), ("b", 1332), ("c", 1332)], 0));
    }

    #[test]
    fn live_counts_samples_as_the_report_does() {
        let s = |status: Option<u16>, error: Option<&'static str>| Sample {
            latency: Duration::from_millis(10),
            ttfb: None,
            status,
            error,
            worker: None,
        };
        let live = Live::default();
        for sample in [
            s(Some(200), None),
            s(Some(429), None),
            s(None, Some("connect")),
            s(Some(200), Some("body")),
        ] {
            live.record(&sample);
        }
        let c = live.snapshot();
        assert_eq!(c.done, 4);
        assert_eq!(c.status, [(200, 2), (429, 1)]);
        assert_eq!(c.errors, [("body", 1), ("connect", 1)]);
        // A body cut short has a status but no latency, as in the report.
        assert_eq!(c.latency.total(), 2);
    }
}
