//! A request inside a session, from the session's side: it is counted in flight there
//! while it lives (the session does not expire meanwhile, and each start and end extends
//! it), and it can see the session close, to be cancelled.
//!
//! Internal: the close signal is a `watch` receiver boxed into a future once per request of
//! a session, so the pipeline and the relayed body can poll it; requests outside sessions
//! carry no [`Entered`] and pay nothing.

use super::store::Sessions;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::watch;

/// A request's place in its session. Dropped, it leaves the session (and extends it).
pub struct Entered {
    sessions: Arc<Sessions>,
    id: Arc<str>,
    request_idx: u64,
    reqnum: u64,
    closed: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl std::fmt::Debug for Entered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entered")
            .field("session", &super::id::short(&self.id))
            .finish_non_exhaustive()
    }
}

impl Entered {
    pub(super) fn new(
        sessions: Arc<Sessions>,
        id: Arc<str>,
        ids: (u64, u64),
        mut closed: watch::Receiver<bool>,
    ) -> Self {
        Self {
            sessions,
            id,
            request_idx: ids.0,
            reqnum: ids.1,
            // Resolves when the session closes, or when it is gone (its sender dropped).
            closed: Box::pin(async move {
                let _ = closed.wait_for(|c| *c).await;
            }),
        }
    }

    /// The session's `request_idx`, which its requests share.
    pub fn request_idx(&self) -> u64 {
        self.request_idx
    }

    /// The session's `reqnum`, which its requests share.
    pub fn reqnum(&self) -> u64 {
        self.reqnum
    }

    /// Ready once the session has closed.
    pub fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.closed.as_mut().poll(cx)
    }

    /// Resolves once the session has closed.
    pub async fn closed(&mut self) {
        std::future::poll_fn(|cx| self.poll_closed(cx)).await;
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.sessions.leave(&self.id);
    }
}
