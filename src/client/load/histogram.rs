//! The latency histogram of a load run: fixed, log-spaced buckets, and their text bars.
//!
//! Buckets are log-linear in microseconds (eight per power of two, as in HdrHistogram with
//! three significant bits), so a latency's bucket is a few integer operations and no bucket
//! is wider than 12.5 % of its lower bound, from microseconds to days. The live view counts
//! into an [`AtomicHistogram`] from every request task without a lock; the final report
//! builds a [`Histogram`] from its exact samples. Both render the same bars.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bits of a latency kept below its leading one: 2^3 = 8 buckets per power of two.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Buckets up to 2^40 µs (about 12.7 days); anything longer counts in the last one.
const TOP_BIT: usize = 40;
/// Number of buckets.
pub const BUCKETS: usize = (TOP_BIT - SUB_BITS as usize + 1) * SUB;

/// The bucket of a latency of `us` microseconds.
pub fn bucket_of(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let top = 63 - us.leading_zeros();
    let sub = (us >> (top - SUB_BITS)) as usize & (SUB - 1);
    ((top - SUB_BITS + 1) as usize * SUB + sub).min(BUCKETS - 1)
}

/// The smallest latency, in microseconds, that falls in bucket `i`.
pub fn lower_bound(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    ((SUB + i % SUB) as u64) << (i / SUB - 1)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Counts of latencies per bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    counts: Vec<u64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
        }
    }
}

/// One line of [`Histogram::rows`]: latencies from `lower` (inclusive) to `upper`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// Smallest latency of the row.
    pub lower: Duration,
    /// First latency past the row.
    pub upper: Duration,
    /// Latencies in the row.
    pub count: u64,
}

impl Histogram {
    /// The histogram of `latencies`.
    pub fn of<'a>(latencies: impl IntoIterator<Item = &'a Duration>) -> Self {
        let mut h = Self::default();
        for d in latencies {
            h.counts[bucket_of(micros(*d))] += 1;
        }
        h
    }

    /// Latencies counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The nearest-rank `q` quantile (0 < q ≤ 1), as the middle of its bucket (within
    /// 6.25 % of the exact value); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        let i = self.counts.iter().position(|n| {
            seen += n;
            seen >= rank
        })?;
        let mid = (lower_bound(i) + lower_bound(i + 1)) as f64 / 2.0;
        Some(Duration::from_secs_f64(mid / 1e6))
    }

    /// At most `max_rows` rows over the non-empty buckets, fastest first. Neighbours
    /// closest together (in log latency; then the fewest latencies) are joined first, so
    /// rows stay narrow where latencies crowd, a cluster far from the rest (fast errors)
    /// keeps a row of its own, and an empty range takes no row. Empty when empty.
    pub fn rows(&self, max_rows: usize) -> Vec<Row> {
        // (first bucket, last bucket, count) of each row.
        let mut rows: Vec<(usize, usize, u64)> = (0..BUCKETS)
            .filter(|i| self.counts[*i] > 0)
            .map(|i| (i, i, self.counts[i]))
            .collect();
        while rows.len() > max_rows.max(1) {
            let at = (0..rows.len() - 1)
                .min_by_key(|&i| (rows[i + 1].1 - rows[i].0, rows[i].2 + rows[i + 1].2))
                .expect("two rows or more");
            let (_, last, count) = rows.remove(at + 1);
            rows[at].1 = last;
            rows[at].2 += count;
        }
        rows.into_iter()
            .map(|(first, last, count)| Row {
                lower: Duration::from_micros(lower_bound(first)),
                upper: Duration::from_micros(lower_bound(last + 1)),
                count,
            })
            .collect()
    }

    /// The rows as text bars `width` characters wide in all, one line each: the row's
    /// range in milliseconds, a bar as long as its share of the fullest row, and its count.
    pub fn bars(&self, max_rows: usize, width: usize) -> String {
        let rows = self.rows(max_rows);
        let fullest = rows.iter().map(|r| r.count).max().unwrap_or(0);
        let count_width = fullest.to_string().len();
        // "  lower – upper  │" before the bar (18 characters), " count" after.
        let bar_width = width.saturating_sub(18 + 1 + count_width).max(1);
        let mut out = String::new();
        for r in rows {
            out.push_str(&format!(
                "{:>7} – {:<7}│{:<bar_width$} {:>count_width$}\n",
                fmt_ms(r.lower),
                fmt_ms(r.upper),
                bar(r.count as f64 / fullest as f64, bar_width),
                r.count,
            ));
        }
        out
    }
}

/// `d` in milliseconds, with three significant figures or more.
pub fn fmt_ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{ms:.3}")
    } else if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// A bar `fraction` (0 to 1) of `width` cells long, to an eighth of a cell; anything above
/// zero shows at least an eighth.
pub fn bar(fraction: f64, width: usize) -> String {
    const PARTIAL: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let f = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mut eighths = (f * (width * 8) as f64).round() as usize;
    if f > 0.0 {
        eighths = eighths.max(1);
    }
    let mut out = "█".repeat(eighths / 8);
    let partial = eighths % 8;
    if partial > 0 {
        out.push(PARTIAL[partial]);
    }
    out
}

/// A [`Histogram`] that many tasks count into at once, without a lock.
#[derive(Debug)]
pub struct AtomicHistogram {
    counts: Box<[AtomicU64]>,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl AtomicHistogram {
    /// Counts one latency.
    pub fn record(&self, latency: Duration) {
        self.counts[bucket_of(micros(latency))].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> Histogram {
        Histogram {
            counts: self
                .counts
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_below_eight_microseconds_then_eight_per_power_of_two() {
        for us in 0..16 {
            assert_eq!(bucket_of(us), us as usize);
        }
        assert_eq!(bucket_of(16), 16);
        assert_eq!(bucket_of(17), 16);
        assert_eq!(bucket_of(18), 17);
        assert_eq!(bucket_of(31), 23);
        assert_eq!(bucket_of(32), 24);
        // 100 ms = 100 000 µs: 2^16 · (1 + 4/8 + …), so bucket (16 - 2) · 8 + 4.
        assert_eq!(bucket_of(100_000), 116);
        assert_eq!(lower_bound(116), 98_304);
        assert_eq!(lower_bound(117), 106_496);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_of(1 << 40), BUCKETS - 1);
        assert_eq!(bucket_of((1 << 40) - 1), BUCKETS - 1);
    }

    #[test]
    fn every_latency_lies_in_its_bucket_and_buckets_are_at_most_an_eighth_wide() {
        for i in 1..BUCKETS - 1 {
            let (lo, hi) = (lower_bound(i), lower_bound(i + 1));
            assert!(hi > lo, "bucket {i}");
            assert_eq!(bucket_of(lo), i);
            assert_eq!(bucket_of(hi - 1), i);
            assert!((hi - lo) * 8 <= lo.max(8), "bucket {i}: {lo}..{hi}");
        }
    }

    #[test]
    fn quantiles_are_the_middle_of_the_nearest_rank_bucket() {
        let ms = |v: u64| Duration::from_millis(v);
        let all: Vec<Duration> = (1..=100).map(ms).collect();
        let h = Histogram::of(&all);
        assert_eq!(h.total(), 100);
        // 50 ms = 50 000 µs lies in [49 152, 53 248).
        assert_eq!(h.quantile(0.5), Some(Duration::from_micros(51_200)));
        // 99 ms lies in [98 304, 106 496).
        assert_eq!(h.quantile(0.99), Some(Duration::from_micros(102_400)));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn rows_join_the_closest_neighbours_first_and_leave_out_empty_ranges() {
        let us = |v: u64| Duration::from_micros(v);
        let row = |lower: u64, upper: u64, count: u64| Row {
            lower: us(lower),
            upper: us(upper),
            count,
        };
        // Buckets 16 (16, 17 µs), 18 (20 µs), 23 (30, 31 µs) and, far off, 81 (5 ms).
        let h = Histogram::of(&[us(16), us(17), us(20), us(30), us(31), us(5000)]);
        assert_eq!(
            h.rows(10),
            [
                row(16, 18, 2),
                row(20, 22, 1),
                row(30, 32, 2),
                row(4608, 5120, 1)
            ]
        );
        assert_eq!(
            h.rows(3),
            [row(16, 22, 3), row(30, 32, 2), row(4608, 5120, 1)]
        );
        assert_eq!(h.rows(2), [row(16, 32, 5), row(4608, 5120, 1)]);
        assert_eq!(h.rows(1), [row(16, 5120, 6)]);
        assert!(Histogram::default().rows(10).is_empty());
    }

    #[test]
    fn between_equally_close_neighbours_the_sparse_ones_are_joined() {
        let b = |i: usize| Duration::from_micros(lower_bound(i));
        let mut all = vec![b(100); 10];
        all.extend([b(101), b(102)]);
        all.extend(vec![b(103); 10]);
        let counts: Vec<u64> = Histogram::of(&all)
            .rows(3)
            .iter()
            .map(|r| r.count)
            .collect();
        assert_eq!(counts, [10, 2, 10]);
    }

    #[test]
    fn bars_are_drawn_to_an_eighth_of_a_cell() {
        assert_eq!(bar(1.0, 4), "████");
        assert_eq!(bar(0.5, 3), "█▌");
        assert_eq!(bar(0.0, 4), "");
        assert_eq!(bar(0.001, 4), "▏", "a non-zero count always shows");
        assert_eq!(bar(f64::NAN, 4), "");
    }

    #[test]
    fn histogram_bars_render_rows_with_labels_and_counts() {
        let ms = |v: u64| Duration::from_millis(v);
        let mut all = vec![ms(100); 40];
        all.extend([ms(120); 10]);
        all.push(ms(400));
        let text = Histogram::of(&all).bars(3, 40);
        assert_eq!(
            text,
            format!(
                "   98.3 – 106    │{full} 40\n\
                 \x20   115 – 123    │████▊{pad} 10\n\
                 \x20   393 – 426    │▌{rest}  1\n",
                full = "█".repeat(19),
                pad = " ".repeat(14),
                rest = " ".repeat(18),
            )
        );
        assert!(text.lines().all(|l| l.chars().count() == 40), "{text}");
    }

    #[test]
    fn the_atomic_histogram_counts_like_the_plain_one() {
        let all: Vec<Duration> = (1..500).map(|v| Duration::from_micros(v * 37)).collect();
        let atomic = AtomicHistogram::default();
        for d in &all {
            atomic.record(*d);
        }
        assert_eq!(atomic.snapshot(), Histogram::of(&all));
    }
}
