//! Relays a backend response body to the client frame by frame, and settles the request's
//! accounting when the body ends, fails, or is dropped.
//!
//! The [`Settle`] guard travels inside the body: the request's ticket, its concurrency
//! permit and its backend connection are released when the last frame is handed to the
//! server (success), when the backend fails or falls silent for longer than `IDLE_TIMEOUT`
//! (errored), or when the server drops the body because the client left (cancelled, by the
//! ticket's `Drop`). No code after an `.await` is needed for cleanup.

use super::backend::{Backend, Conn};
use super::ledger::{Outcome, Ticket};
use crate::http_util::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

/// The body went quiet for longer than `IDLE_TIMEOUT`.
#[derive(Debug, thiserror::Error)]
#[error("backend sent nothing for {0:.1} s (IDLE_TIMEOUT)")]
pub struct IdleTimeout(pub f64);

/// Everything a request holds until its response ends.
pub struct Settle {
    /// The request's place in the working set.
    pub ticket: Ticket,
    /// Its concurrency slot, if concurrency is limited.
    pub permit: Option<OwnedSemaphorePermit>,
    /// The backend connection, returned to the pool on success.
    pub conn: Option<Conn>,
    /// The pool to return it to.
    pub backend: Arc<Backend>,
}

impl Settle {
    /// Records the outcome and releases the slot; a connection goes back to the pool only
    /// after a complete response.
    pub fn finish(mut self, outcome: Outcome) {
        if let (Outcome::Success, Some(conn)) = (outcome, self.conn.take()) {
            self.backend.checkin(conn);
        }
        self.ticket.finish(outcome);
        drop(self.permit);
    }
}

pin_project! {
    /// A backend response body on its way to the client.
    pub struct Relay {
        #[pin]
        inner: Incoming,
        #[pin]
        idle: Option<Sleep>,
        idle_timeout: Option<Duration>,
        settle: Option<Settle>,
    }
}

impl Relay {
    /// Wraps `inner`; `settle` is finished when the body ends.
    pub fn new(inner: Incoming, idle_timeout: Option<Duration>, settle: Settle) -> Self {
        Self {
            inner,
            idle: idle_timeout.map(tokio::time::sleep),
            idle_timeout,
            settle: Some(settle),
        }
    }
}

impl Body for Relay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(sleep), Some(d)) =
                    (this.idle.as_mut().as_pin_mut(), *this.idle_timeout)
                {
                    sleep.reset(Instant::now() + d);
                }
                // The server may stop polling once the body reports its end (a known
                // length reached), so settle as soon as the last frame is handed over.
                if this.inner.is_end_stream()
                    && let Some(s) = this.settle.take()
                {
                    s.finish(Outcome::Success);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(s) = this.settle.take() {
                    tracing::warn!(error = %e, "backend response body failed mid-stream");
                    s.finish(Outcome::Errored);
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                if let Some(s) = this.settle.take() {
                    s.finish(Outcome::Success);
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                let timed_out = this
                    .idle
                    .as_mut()
                    .as_pin_mut()
                    .is_some_and(|s| s.poll(cx).is_ready());
                if timed_out && let Some(s) = this.settle.take() {
                    let secs = this.idle_timeout.unwrap_or_default().as_secs_f64();
                    tracing::warn!(
                        idle_timeout = secs,
                        "backend response went idle; aborting it"
                    );
                    s.finish(Outcome::Errored);
                    return Poll::Ready(Some(Err(Box::new(IdleTimeout(secs)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
