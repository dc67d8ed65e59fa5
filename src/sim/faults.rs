//! Fault injection for reliability tests: a start-up delay, a health switch, injected
//! errors and hangs.
//!
//! Randomness comes from SplitMix64 over one atomic counter: lock-free, and the same seed
//! gives the same sequence of fates for the same sequence of requests (`--seed`). It is not
//! a cryptographic generator and does not need to be.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::time::Instant;

/// What `/health` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// Within `--startup-delay`: 503, and API requests are refused.
    Starting,
    /// Switched off with `POST /_sim/health`: 503, API requests are still served.
    Unhealthy,
    /// 200.
    Healthy,
}

/// What happens to one API request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Serve,
    /// Answer 500 (`--error-rate`).
    Fail,
    /// Never answer (`--hang-rate`).
    Hang,
}

/// The fault state of one simulated server.
#[derive(Debug)]
pub(crate) struct Faults {
    ready_at: Instant,
    healthy: AtomicBool,
    error_rate: f64,
    hang_rate: f64,
    rng: SplitMix64,
}

impl Faults {
    pub(crate) fn new(config: &super::SimConfig, seed: u64) -> Faults {
        Faults {
            ready_at: Instant::now() + config.startup_delay,
            healthy: AtomicBool::new(true),
            error_rate: config.error_rate,
            hang_rate: config.hang_rate,
            rng: SplitMix64::new(seed),
        }
    }

    pub(crate) fn health(&self) -> Health {
        if !self.started() {
            Health::Starting
        } else if self.healthy.load(Ordering::SeqCst) {
            Health::Healthy
        } else {
            Health::Unhealthy
        }
    }

    /// The start-up delay is over.
    pub(crate) fn started(&self) -> bool {
        Instant::now() >= self.ready_at
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Draws the fate of one request: one draw, split `[error | hang | serve]`. Without
    /// faults configured nothing is drawn.
    pub(crate) fn fate(&self) -> Fate {
        if self.error_rate <= 0.0 && self.hang_rate <= 0.0 {
            return Fate::Serve;
        }
        let u = self.rng.next_f64();
        if u < self.error_rate {
            Fate::Fail
        } else if u < self.error_rate + self.hang_rate {
            Fate::Hang
        } else {
            Fate::Serve
        }
    }
}

/// A seed from the clock and the process id, for runs without `--seed`.
pub(crate) fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// SplitMix64 (Steele, Lea, Flood 2014): a Weyl sequence through a 64-bit mixer.
#[derive(Debug)]
pub(crate) struct SplitMix64 {
    state: AtomicU64,
}

impl SplitMix64 {
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

    pub(crate) fn new(seed: u64) -> SplitMix64 {
        SplitMix64 {
            state: AtomicU64::new(seed),
        }
    }

    pub(crate) fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(Self::GAMMA, Ordering::Relaxed)
            .wrapping_add(Self::GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`: the top 53 bits as a fraction.
    pub(crate) fn next_f64(&self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimConfig;

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // First outputs for seed 1234567 from the reference C implementation.
        let rng = SplitMix64::new(1234567);
        assert_eq!(rng.next_u64(), 6457827717110365317);
        assert_eq!(rng.next_u64(), 3203168211198807973);
    }

    #[test]
    fn fates_follow_the_rates_and_the_seed() {
        let config = SimConfig {
            error_rate: 0.2,
            hang_rate: 0.3,
            ..SimConfig::default()
        };
        let a = Faults::new(&config, 42);
        let b = Faults::new(&config, 42);
        let fates: Vec<Fate> = (0..10_000).map(|_| a.fate()).collect();
        assert!(
            fates.iter().all(|f| *f == b.fate()),
            "same seed, same fates"
        );
        let share = |f: Fate| fates.iter().filter(|x| **x == f).count() as f64 / 10_000.0;
        assert!((share(Fate::Fail) - 0.2).abs() < 0.02);
        assert!((share(Fate::Hang) - 0.3).abs() < 0.02);
    }

    #[test]
    fn certain_failure_always_fails() {
        let config = SimConfig {
            error_rate: 1.0,
            ..SimConfig::default()
        };
        let f = Faults::new(&config, 0);
        assert!((0..1000).all(|_| f.fate() == Fate::Fail));
    }
}
