//! Relays a backend response body to the client frame by frame, and settles the request's
//! accounting and its record when the body ends, fails, or is dropped.
//!
//! The [`Admitted`] guard and the request's [`Record`] travel inside the body: the request's
//! place in the working set and its concurrency slot are released, and its record ended,
//! when the last frame is handed to the server (success), when the backend fails or falls
//! silent for longer than `IDLE_TIMEOUT` (errored), or when the server drops the body
//! because the client left (cancelled and `client_gone`, by the guards' `Drop`). The
//! backend connection returns itself ([`ResponseBody`]); this module only does accounting.
//! No code after an `.await` is needed for cleanup.
//!
//! A response to a request inside a session also carries the session's [`Entered`] guard:
//! when the session closes mid-body, the relay ends the body with an error (the client sees
//! it cut, never a clean end), which drops the backend body and closes its connection.

use super::admission::Admitted;
use super::backend::{Closer, ResponseBody};
use super::ledger::Outcome;
use super::observe::{Ending, Record};
use super::session::Entered;
use crate::http_util::{BoxError, empty, strip_hop_by_hop};
use crate::serve::stall::StallTimer;
use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

/// The body went quiet for longer than `IDLE_TIMEOUT`.
#[derive(Debug, thiserror::Error)]
#[error("backend sent nothing for {0:.1} s (IDLE_TIMEOUT)")]
pub struct IdleTimeout(pub f64);

/// The request's session closed while its response was being relayed.
#[derive(Debug, thiserror::Error)]
#[error("the session closed; the response was cut")]
pub struct SessionClosed;

/// The client's response for the backend's `resp`: hop-by-hop headers stripped,
/// `X-Request-Id` and `Server-Timing` added, the body relayed with `admitted` and `record`
/// settled at its end.
///
/// `stream_send_timeout` is `SEND_TIMEOUT` for an HTTP/2 stream: there the connection can
/// stay writable while the client grants one stream no flow-control window, so the timer on
/// the connection's writes ([`crate::serve::send_timeout`]) cannot see it. A watchdog then
/// cancels the request (slot freed, backend connection closed, counted `cancelled`) when the
/// client has taken no frame for between one and two `SEND_TIMEOUT`s.
///
/// `session` is the request's place in its session, if it has one: the body is cut when the
/// session closes.
pub fn respond(
    resp: Response<ResponseBody>,
    admitted: Admitted,
    record: Record,
    idle_timeout: Option<Duration>,
    stream_send_timeout: Option<Duration>,
    session: Option<Entered>,
) -> Response<crate::http_util::Body> {
    let (mut head, body) = resp.into_parts();
    strip_hop_by_hop(&mut head.headers);
    record.stamp(&mut head.headers);
    if body.is_end_stream() {
        // Nothing will poll an empty body (204, 304, HEAD, length 0), so settle now.
        record.finish(Ending::Relayed);
        admitted.finish(Outcome::Success);
        return Response::from_parts(head, empty());
    }
    let guard = match (stream_send_timeout, body.closer()) {
        (Some(limit), Some(closer)) => {
            let watch = Arc::new(SendWatch {
                guard: Mutex::new(Some(admitted)),
                polls: AtomicU64::new(0),
                awaiting: AtomicBool::new(false),
            });
            tokio::spawn(watchdog(Arc::downgrade(&watch), closer, limit));
            Guard::Watched(watch)
        }
        _ => Guard::Local(Some(admitted)),
    };
    let relay = Relay {
        record: Some(record),
        settle: guard,
        inner: body,
        idle: StallTimer::default(),
        idle_timeout,
        session,
    };
    Response::from_parts(head, relay.boxed_unsync())
}

/// The request's guard: held by the relay, or shared with its send watchdog.
enum Guard {
    Local(Option<Admitted>),
    Watched(Arc<SendWatch>),
}

impl Guard {
    fn take(&mut self) -> Option<Admitted> {
        match self {
            Guard::Local(a) => a.take(),
            Guard::Watched(w) => w.guard.lock().unwrap_or_else(|p| p.into_inner()).take(),
        }
    }
}

/// Settles the request once: its record, then its ledger outcome. Returns whether this
/// call settled the ledger; when the send watchdog did it first (the client stopped
/// reading), the record ends as `client_gone` whatever `ending` says.
fn settle(guard: &mut Guard, record: &mut Option<Record>, ending: Ending) -> bool {
    let admitted = guard.take();
    let ending = match admitted {
        Some(_) => ending,
        None => Ending::ClientGone,
    };
    if let Some(r) = record.take() {
        r.finish(ending);
    }
    let Some(admitted) = admitted else {
        return false;
    };
    admitted.finish(match ending {
        Ending::Relayed => Outcome::Success,
        Ending::BackendFailed | Ending::BackendIdle => Outcome::Errored,
        Ending::ClientGone | Ending::SessionClosed => Outcome::Cancelled,
    });
    true
}

/// What the send watchdog of one HTTP/2 stream sees of its relay.
struct SendWatch {
    guard: Mutex<Option<Admitted>>,
    /// Times the relay was polled.
    polls: AtomicU64,
    /// The relay handed over a frame and waits for the client to want the next one.
    awaiting: AtomicBool,
}

/// Cancels the request when its relay handed over a frame and was not polled again for a
/// whole `limit` (so between one and two `limit`s after the client stopped taking frames).
async fn watchdog(watch: Weak<SendWatch>, closer: Closer, limit: Duration) {
    let mut seen = None;
    loop {
        tokio::time::sleep(limit).await;
        let Some(w) = watch.upgrade() else {
            return;
        };
        let polls = w.polls.load(Ordering::Relaxed);
        if w.awaiting.load(Ordering::Relaxed) && seen == Some(polls) {
            let taken = w.guard.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(admitted) = taken {
                tracing::info!(
                    send_timeout = limit.as_secs_f64(),
                    "client took no frame of its HTTP/2 stream (SEND_TIMEOUT); request cancelled"
                );
                admitted.finish(Outcome::Cancelled);
                closer.close();
            }
            return;
        }
        if w.guard.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
            return;
        }
        seen = Some(polls);
    }
}

pin_project! {
    /// A backend response body on its way to the client.
    ///
    /// Internal: fields drop in order, so a relay dropped mid-body (the client left) ends
    /// its record, then its ledger entry, then the backend connection: whoever sees the
    /// connection close or the ledger settle finds the request already counted.
    pub struct Relay<B = ResponseBody> {
        record: Option<Record>,
        settle: Guard,
        #[pin]
        inner: B,
        idle: StallTimer,
        idle_timeout: Option<Duration>,
        session: Option<Entered>,
    }
}

impl<B> Relay<B> {
    /// Wraps `inner`; `settle` and `record` are finished when the body ends.
    pub fn new(inner: B, idle_timeout: Option<Duration>, settle: Admitted, record: Record) -> Self {
        Self {
            record: Some(record),
            settle: Guard::Local(Some(settle)),
            inner,
            idle: StallTimer::default(),
            idle_timeout,
            session: None,
        }
    }
}

impl<B> Body for Relay<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError> + std::fmt::Display,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Guard::Watched(w) = &*this.settle {
            w.polls.fetch_add(1, Ordering::Relaxed);
            w.awaiting.store(false, Ordering::Relaxed);
        }
        if let Some(session) = this.session.as_mut()
            && session.poll_closed(cx).is_ready()
        {
            if settle(this.settle, this.record, Ending::SessionClosed) {
                tracing::debug!("the request's session closed mid-response; response cut");
            }
            return Poll::Ready(Some(Err(Box::new(SessionClosed))));
        }
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Guard::Watched(w) = &*this.settle {
                    w.awaiting.store(true, Ordering::Relaxed);
                }
                this.idle.progress();
                if let (Some(r), Some(data)) = (this.record.as_mut(), frame.data_ref()) {
                    r.frame(data.len());
                }
                // The server may stop polling once the body reports its end (a known
                // length reached), so settle as soon as the last frame is handed over.
                if this.inner.is_end_stream() {
                    settle(this.settle, this.record, Ending::Relayed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if settle(this.settle, this.record, Ending::BackendFailed) {
                    tracing::warn!(error = %e, "backend response body failed mid-stream");
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                settle(this.settle, this.record, Ending::Relayed);
                Poll::Ready(None)
            }
            Poll::Pending => {
                // Internal: the timer runs only while the relay waits for the backend, so a
                // client that is slow to take frames is not counted as backend silence.
                let timed_out = this
                    .idle_timeout
                    .is_some_and(|limit| this.idle.expired(limit, cx));
                if timed_out && settle(this.settle, this.record, Ending::BackendIdle) {
                    let secs = this.idle_timeout.unwrap_or_default().as_secs_f64();
                    tracing::warn!(
                        idle_timeout = secs,
                        "backend response went idle; aborting it"
                    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::admission::tests::ready_admission;
    use crate::worker::ledger::RequestInfo;
    use tokio::sync::mpsc;

    use crate::http_util::test_body::Frames;
    use crate::worker::ledger::Ledger;

    /// An admitted request whose backend body frames the test sends, relayed with
    /// `idle_timeout`; and the ledger it is booked in.
    async fn relay_with_idle_timeout(
        idle_timeout: Duration,
    ) -> (mpsc::Sender<Bytes>, Pin<Box<Relay<Frames>>>, Arc<Ledger>) {
        let (admission, ledger) = ready_admission(None);
        let admitted = admission
            .admit(&RequestInfo::numbered(1, 2.0))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(1);
        let record = crate::worker::observe::tests::record();
        let relay = Box::pin(Relay::new(Frames(rx), Some(idle_timeout), admitted, record));
        (tx, relay, ledger)
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_silent_past_the_idle_timeout_errors_the_request() {
        let (tx, mut relay, ledger) = relay_with_idle_timeout(Duration::from_secs(30)).await;
        tx.send(Bytes::from_static(b"data: 1\n\n")).await.unwrap();
        assert!(relay.frame().await.unwrap().is_ok());
        // The clock only moves while nothing else can run: 30 s of backend silence.
        let err = relay.frame().await.unwrap().unwrap_err();
        assert!(err.is::<IdleTimeout>(), "{err}");
        let s = ledger.snapshot();
        assert_eq!((s.working(), s.totals.errored.requests), (0, 1));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn frames_within_the_idle_timeout_keep_the_request_alive_to_its_end() {
        let (tx, mut relay, ledger) = relay_with_idle_timeout(Duration::from_secs(30)).await;
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(29)).await;
            tx.send(Bytes::from_static(b"x")).await.unwrap();
            assert!(relay.frame().await.unwrap().is_ok());
        }
        drop(tx);
        assert!(relay.frame().await.is_none());
        let s = ledger.snapshot();
        assert_eq!((s.working(), s.totals.served.requests), (0, 1));
    }
}
