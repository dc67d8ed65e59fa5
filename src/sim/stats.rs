//! Counters of the simulated server, served at `GET /_sim/stats` (and by API at
//! `GET /_sim/metrics`, [`SimMetrics`]).
//!
//! Every request the capacity model serves is a [`Job`]: a guard that moves the request
//! through the gauges (`queued` → `active`) and into exactly one total (`completed`,
//! `errored` or `cancelled`). The guard lives in the request future or the streaming body,
//! so a client that disconnects drops it and is counted as cancelled at once, releasing its
//! batch slot in the same step. Counters live in a [`watch`] channel, so tests wait for a
//! condition instead of polling.

use super::metrics::{Api, Ended, SimMetrics};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// Requests holding a batch slot (or an image slot): prefilling, decoding, rendering.
    pub active: u64,
    /// Requests waiting for a slot, in FIFO order.
    pub queued: u64,
    /// Requests that will never be answered (`--hang-rate`), until their client leaves.
    pub hanging: u64,
    /// Requests answered in full.
    pub completed: u64,
    /// Requests whose client left before the answer was complete.
    pub cancelled: u64,
    /// Requests that failed on purpose: injected 500s and streams broken by
    /// `--die-after-chunks`.
    pub errored: u64,
    /// API requests refused with 503 during the start-up delay.
    pub rejected: u64,
    /// API requests refused with 4xx: a body that is not JSON, too large, or a field of
    /// the wrong type.
    pub invalid: u64,
    /// Completion tokens produced: all of a completed non-streaming answer, each chunk sent
    /// of a stream.
    pub tokens_generated: u64,
}

/// The shared counters.
#[derive(Debug)]
pub(crate) struct Stats {
    tx: watch::Sender<SimStats>,
    metrics: SimMetrics,
}

impl Stats {
    pub(crate) fn new() -> Stats {
        Stats {
            tx: watch::Sender::new(SimStats::default()),
            metrics: SimMetrics::new(),
        }
    }

    /// The counters by API.
    pub(crate) fn metrics(&self) -> &SimMetrics {
        &self.metrics
    }

    /// Counts a request of `api` refused before it became a [`Job`]: `Rejected` (start-up),
    /// `Errored` (an injected failure) or `Invalid`.
    pub(crate) fn refused(&self, api: Api, how: Ended) {
        self.metrics.ended(api, how);
        self.update(|s| match how {
            Ended::Rejected => s.rejected += 1,
            Ended::Errored => s.errored += 1,
            Ended::Invalid => s.invalid += 1,
            Ended::Completed => s.completed += 1,
            Ended::Cancelled => s.cancelled += 1,
        });
    }

    pub(crate) fn snapshot(&self) -> SimStats {
        *self.tx.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<SimStats> {
        self.tx.subscribe()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut SimStats)) {
        self.tx.send_modify(f);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Queued,
    Active,
    Hanging,
    Done,
}

/// How a job ended, when it did not end by being dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    Errored,
}

/// One request's place in the counters, and its slot once it has one. Dropped before
/// [`Job::finish`], it counts as cancelled.
#[derive(Debug)]
pub(crate) struct Job {
    stats: std::sync::Arc<Stats>,
    api: Api,
    phase: Phase,
    // Internal: released with the job, never separately, so a slot cannot outlive its
    // request nor be freed twice.
    permit: Option<OwnedSemaphorePermit>,
}

impl Job {
    /// A request of `api` entering the queue.
    pub(crate) fn queued(stats: &std::sync::Arc<Stats>, api: Api) -> Job {
        stats.update(|s| s.queued += 1);
        Job {
            stats: std::sync::Arc::clone(stats),
            api,
            phase: Phase::Queued,
            permit: None,
        }
    }

    /// A request of `api` that will never be answered.
    pub(crate) fn hanging(stats: &std::sync::Arc<Stats>, api: Api) -> Job {
        stats.update(|s| s.hanging += 1);
        Job {
            stats: std::sync::Arc::clone(stats),
            api,
            phase: Phase::Hanging,
            permit: None,
        }
    }

    /// Waits for a slot of `slots` (FIFO: tokio's semaphore is fair), then counts as active.
    pub(crate) async fn admit(mut self, slots: &std::sync::Arc<Semaphore>) -> Job {
        debug_assert_eq!(self.phase, Phase::Queued);
        let permit = std::sync::Arc::clone(slots)
            .acquire_owned()
            .await
            .expect("the slot semaphore is never closed");
        self.permit = Some(permit);
        self.phase = Phase::Active;
        self.stats.update(|s| {
            s.queued -= 1;
            s.active += 1;
        });
        self
    }

    /// Counts `n` generated tokens.
    pub(crate) fn tokens(&self, n: u64) {
        if n > 0 {
            self.stats.metrics.tokens(self.api, n);
            self.stats.update(|s| s.tokens_generated += n);
        }
    }

    /// Ends the job with `outcome` and frees its slot.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.end(Some(outcome));
    }

    fn end(&mut self, outcome: Option<Outcome>) {
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        // Free the slot before publishing, so a watcher that sees the job done can take it.
        self.permit = None;
        if phase == Phase::Done {
            return;
        }
        let ended = match outcome {
            Some(Outcome::Completed) => Ended::Completed,
            Some(Outcome::Errored) => Ended::Errored,
            None => Ended::Cancelled,
        };
        self.stats.metrics.ended(self.api, ended);
        self.stats.update(|s| {
            match phase {
                Phase::Queued => s.queued -= 1,
                Phase::Active => s.active -= 1,
                Phase::Hanging => s.hanging -= 1,
                Phase::Done => {}
            }
            match outcome {
                Some(Outcome::Completed) => s.completed += 1,
                Some(Outcome::Errored) => s.errored += 1,
                None => s.cancelled += 1,
            }
        });
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.end(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openmetrics::assert_samples;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_job_moves_through_the_gauges_into_one_total() {
        let stats = Arc::new(Stats::new());
        let slots = Arc::new(Semaphore::new(1));
        let job = Job::queued(&stats, Api::Completions);
        assert_eq!(stats.snapshot().queued, 1);
        let job = job.admit(&slots).await;
        assert_eq!((stats.snapshot().queued, stats.snapshot().active), (0, 1));
        assert_eq!(slots.available_permits(), 0);
        job.tokens(5);
        job.finish(Outcome::Completed);
        let s = stats.snapshot();
        assert_eq!((s.active, s.completed, s.tokens_generated), (0, 1, 5));
        assert_eq!(slots.available_permits(), 1);
    }

    #[tokio::test]
    async fn a_dropped_job_is_cancelled_and_frees_its_slot() {
        let stats = Arc::new(Stats::new());
        let slots = Arc::new(Semaphore::new(1));
        let active = Job::queued(&stats, Api::Completions).admit(&slots).await;
        let waiting = Job::queued(&stats, Api::Completions);
        drop(waiting);
        drop(active);
        drop(Job::hanging(&stats, Api::Generate));
        let s = stats.snapshot();
        assert_eq!((s.active, s.queued, s.hanging, s.cancelled), (0, 0, 0, 3));
        assert_eq!(slots.available_permits(), 1);
    }

    #[tokio::test]
    async fn each_end_is_counted_once_under_its_api_in_the_metrics_too() {
        let stats = Arc::new(Stats::new());
        let slots = Arc::new(Semaphore::new(1));
        let job = Job::queued(&stats, Api::ChatCompletions)
            .admit(&slots)
            .await;
        job.tokens(3);
        job.finish(Outcome::Completed);
        drop(Job::hanging(&stats, Api::Generate));
        stats.refused(Api::RunSync, Ended::Rejected);
        stats.refused(Api::Completions, Ended::Invalid);
        let s = stats.snapshot();
        assert_eq!(
            (
                s.completed,
                s.cancelled,
                s.rejected,
                s.invalid,
                s.tokens_generated
            ),
            (1, 1, 1, 1, 3)
        );
        assert_samples(
            stats.metrics().registry(),
            &[
                r#"vespa_sim_requests_total{api="chat_completions",outcome="completed"} 1"#,
                r#"vespa_sim_requests_total{api="generate",outcome="cancelled"} 1"#,
                r#"vespa_sim_requests_total{api="runsync",outcome="rejected"} 1"#,
                r#"vespa_sim_requests_total{api="completions",outcome="invalid"} 1"#,
                r#"vespa_sim_tokens_generated_total{api="chat_completions"} 3"#,
            ],
        );
    }
}
