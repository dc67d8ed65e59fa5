//! A Prometheus histogram as a scraper sees it, and its quantiles.
//!
//! The worker's time to first byte is a histogram of cumulative bucket counts since start.
//! A percentile over the whole life of a worker hides what it does now, so `vespa top`
//! subtracts an earlier scrape from the latest ([`Histogram::since`]) and estimates the
//! quantile of what was observed in between, the way PromQL's `histogram_quantile` does:
//! linear interpolation inside the bucket that holds the rank.

/// Cumulative bucket counts: `(upper bound, observations at or below it)`, by ascending
/// bound, the last one `+Inf` (the total count).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// `(le, cumulative count)`, sorted by `le`.
    pub buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// A histogram of `buckets` in any order.
    pub fn new(mut buckets: Vec<(f64, f64)>) -> Histogram {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Histogram { buckets }
    }

    /// Observations counted: the `+Inf` bucket's count.
    pub fn count(&self) -> f64 {
        self.buckets.last().map_or(0.0, |b| b.1)
    }

    /// What was observed after `earlier` was scraped. When `earlier` has other bounds or a
    /// bucket went down (the worker restarted), everything counted now is new.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let same_bounds = self.buckets.len() == earlier.buckets.len()
            && self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .all(|(a, b)| a.0 == b.0 && a.1 >= b.1);
        if !same_bounds {
            return self.clone();
        }
        let buckets = self
            .buckets
            .iter()
            .zip(&earlier.buckets)
            .map(|(a, b)| (a.0, a.1 - b.1))
            .collect();
        Histogram { buckets }
    }

    /// Adds `other`'s counts, bucket by bucket; `false` (and no change) when the bounds
    /// differ. An empty histogram takes `other`'s bounds.
    pub fn add(&mut self, other: &Histogram) -> bool {
        if self.buckets.is_empty() {
            self.buckets = other.buckets.clone();
            return true;
        }
        if self.buckets.len() != other.buckets.len()
            || self
                .buckets
                .iter()
                .zip(&other.buckets)
                .any(|(a, b)| a.0 != b.0)
        {
            return false;
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            a.1 += b.1;
        }
        true
    }

    /// The `q` quantile (0 < q ≤ 1) of the observations, `None` when there are none. A rank
    /// in the `+Inf` bucket gives the highest finite bound, as PromQL does.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if !(count > 0.0 && q > 0.0 && q <= 1.0) {
            return None;
        }
        let rank = q * count;
        let i = self.buckets.iter().position(|b| b.1 >= rank)?;
        let (upper, cum) = self.buckets[i];
        let (lower, below) = if i == 0 {
            (0.0_f64.min(upper), 0.0)
        } else {
            self.buckets[i - 1]
        };
        if upper.is_infinite() {
            return (i > 0).then_some(lower);
        }
        // Internal: `below < rank <= cum`, so the division is safe; the top of a bucket is
        // its bound exactly.
        if rank >= cum {
            return Some(upper);
        }
        Some(lower + (upper - lower) * (rank - below) / (cum - below))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(buckets: &[(f64, f64)]) -> Histogram {
        Histogram::new(buckets.to_vec())
    }

    #[test]
    fn the_quantile_interpolates_inside_the_bucket_that_holds_the_rank() {
        // 10 observations: 4 up to 0.1 s, 6 more up to 0.5 s.
        let x = h(&[(0.1, 4.0), (0.5, 10.0), (f64::INFINITY, 10.0)]);
        // Rank 5 is the first of the 6 in (0.1, 0.5]: 0.1 + 0.4 × 1/6.
        let p50 = x.quantile(0.5).unwrap();
        assert!((p50 - (0.1 + 0.4 / 6.0)).abs() < 1e-9, "{p50}");
        assert!((x.quantile(0.2).unwrap() - 0.05).abs() < 1e-9);
        assert_eq!(x.quantile(1.0), Some(0.5));
    }

    #[test]
    fn a_rank_beyond_the_last_bound_is_the_last_finite_bound() {
        let x = h(&[(0.1, 1.0), (0.5, 1.0), (f64::INFINITY, 10.0)]);
        assert_eq!(x.quantile(0.99), Some(0.5));
        let only_inf = h(&[(f64::INFINITY, 3.0)]);
        assert_eq!(only_inf.quantile(0.5), None);
    }

    #[test]
    fn no_observation_has_no_quantile() {
        assert_eq!(Histogram::default().quantile(0.5), None);
        assert_eq!(h(&[(0.1, 0.0), (f64::INFINITY, 0.0)]).quantile(0.5), None);
    }

    #[test]
    fn since_keeps_only_what_came_after_and_a_restart_keeps_everything() {
        let before = h(&[(0.1, 5.0), (f64::INFINITY, 5.0)]);
        let after = h(&[(0.1, 5.0), (f64::INFINITY, 9.0)]);
        let delta = after.since(&before);
        assert_eq!(delta.buckets, vec![(0.1, 0.0), (f64::INFINITY, 4.0)]);
        // After a restart the counts went down: all of them are new.
        let restarted = h(&[(0.1, 1.0), (f64::INFINITY, 1.0)]);
        assert_eq!(restarted.since(&after), restarted);
    }

    #[test]
    fn add_sums_histograms_of_the_same_bounds_only() {
        let mut sum = Histogram::default();
        assert!(sum.add(&h(&[(0.1, 1.0), (f64::INFINITY, 2.0)])));
        assert!(sum.add(&h(&[(0.1, 3.0), (f64::INFINITY, 3.0)])));
        assert_eq!(sum.buckets, vec![(0.1, 4.0), (f64::INFINITY, 5.0)]);
        assert!(!sum.add(&h(&[(0.2, 3.0), (f64::INFINITY, 3.0)])));
        assert_eq!(sum.count(), 5.0);
    }
}
