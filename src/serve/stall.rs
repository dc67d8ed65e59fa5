//! A timer for "no progress for this long", shared by the body and write timeouts.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Started by the first wait after progress, cleared by progress.
#[derive(Debug, Default)]
pub(crate) struct StallTimer {
    // Internal: boxed and made on the first stall, so I/O that never stalls (most) carries
    // no timer.
    timer: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl StallTimer {
    /// Progress was made: the next wait starts a fresh `limit`.
    pub(crate) fn progress(&mut self) {
        self.stalled = false;
    }

    /// Called on a wait (`Pending`): starts the timer if this wait is the first since
    /// progress, registers `cx` with it, and returns whether `limit` has run out.
    pub(crate) fn expired(&mut self, limit: Duration, cx: &mut Context<'_>) -> bool {
        let deadline = Instant::now() + limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.stalled {
            self.stalled = true;
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}
