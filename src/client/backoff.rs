//! Jittered, growing delays: between `/route/` polls while no worker is ready, and between
//! attempts on different workers.
//!
//! The shape is the official client's (`vastai.serverless`, `Endpoint._route`):
//! `uniform(0.1, min(2^attempt + U(0, 1), 5))` seconds. Jitter keeps many clients that
//! started waiting together from polling the autoscaler in lockstep.

use std::time::Duration;

/// A delay schedule: attempt `n` (from 0) sleeps `uniform(floor, min(base × (2^n + U(0,1)), cap))`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Shortest delay. Default is 100 ms.
    pub floor: Duration,
    /// Unit the exponential is multiplied by. Default is 1 s.
    pub base: Duration,
    /// Longest delay. Default is 5 s.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            floor: Duration::from_millis(100),
            base: Duration::from_secs(1),
            cap: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The same delay for every attempt (no growth, no jitter); for tests.
    pub fn fixed(delay: Duration) -> Backoff {
        Backoff {
            floor: delay,
            base: delay,
            cap: delay,
        }
    }

    /// The delay before attempt `attempt + 1`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let growth = 2f64.powi(attempt.min(30) as i32) + unit_random();
        let high = (self.base.as_secs_f64() * growth).min(self.cap.as_secs_f64());
        let low = self.floor.as_secs_f64().min(high);
        Duration::from_secs_f64(low + (high - low) * unit_random())
    }
}

/// A uniform random number in `[0, 1)`.
fn unit_random() -> f64 {
    let mut bytes = [0u8; 8];
    // Internal: a failed RNG leaves zeros, which only removes the jitter.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_between_floor_and_a_growing_capped_ceiling() {
        let b = Backoff::default();
        for attempt in 0..10 {
            for _ in 0..50 {
                let d = b.delay(attempt).as_secs_f64();
                let ceiling = (2f64.powi(attempt as i32) + 1.0).min(5.0);
                assert!((0.1..=ceiling).contains(&d), "attempt {attempt}: {d}");
            }
        }
        assert_eq!(
            Backoff::fixed(Duration::from_millis(7)).delay(3),
            Duration::from_millis(7)
        );
    }
}
