//! Relays a backend response body to the client frame by frame, and settles the request's
//! accounting when the body ends, fails, or is dropped.
//!
//! The [`Admitted`] guard travels inside the body: the request's place in the working set
//! and its concurrency slot are released when the last frame is handed to the server
//! (success), when the backend fails or falls silent for longer than `IDLE_TIMEOUT`
//! (errored), or when the server drops the body because the client left (cancelled, by the
//! guard's `Drop`). The backend connection returns itself ([`ResponseBody`]); this module
//! only does accounting. No code after an `.await` is needed for cleanup.

use super::admission::Admitted;
use super::backend::ResponseBody;
use super::ledger::Outcome;
use crate::http_util::{BoxError, empty, strip_hop_by_hop};
use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The body went quiet for longer than `IDLE_TIMEOUT`.
#[derive(Debug, thiserror::Error)]
#[error("backend sent nothing for {0:.1} s (IDLE_TIMEOUT)")]
pub struct IdleTimeout(pub f64);

/// The client's response for the backend's `resp`: hop-by-hop headers stripped, the body
/// relayed with `admitted` settled at its end.
pub fn respond(
    resp: Response<ResponseBody>,
    admitted: Admitted,
    idle_timeout: Option<Duration>,
) -> Response<crate::http_util::Body> {
    let (mut head, body) = resp.into_parts();
    strip_hop_by_hop(&mut head.headers);
    if body.is_end_stream() {
        // Nothing will poll an empty body (204, 304, HEAD, length 0), so settle now.
        admitted.finish(Outcome::Success);
        return Response::from_parts(head, empty());
    }
    Response::from_parts(
        head,
        Relay::new(body, idle_timeout, admitted).boxed_unsync(),
    )
}

pin_project! {
    /// A backend response body on its way to the client.
    pub struct Relay<B = ResponseBody> {
        #[pin]
        inner: B,
        #[pin]
        idle: Option<Sleep>,
        idle_timeout: Option<Duration>,
        settle: Option<Admitted>,
    }
}

impl<B> Relay<B> {
    /// Wraps `inner`; `settle` is finished when the body ends.
    pub fn new(inner: B, idle_timeout: Option<Duration>, settle: Admitted) -> Self {
        Self {
            inner,
            idle: idle_timeout.map(tokio::time::sleep),
            idle_timeout,
            settle: Some(settle),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::admission::tests::ready_admission;
    use crate::worker::ledger::RequestInfo;
    use tokio::sync::mpsc;

    /// A body whose frames the test sends.
    struct Frames(mpsc::Receiver<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            self.0.poll_recv(cx).map(|f| f.map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_silent_past_the_idle_timeout_errors_the_request() {
        let (admission, ledger) = ready_admission(None);
        let admitted = admission
            .admit(&RequestInfo::numbered(1, 2.0))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(1);
        let mut relay = Box::pin(Relay::new(
            Frames(rx),
            Some(Duration::from_secs(30)),
            admitted,
        ));
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
        let (admission, ledger) = ready_admission(None);
        let admitted = admission
            .admit(&RequestInfo::numbered(1, 2.0))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(1);
        let mut relay = Box::pin(Relay::new(
            Frames(rx),
            Some(Duration::from_secs(30)),
            admitted,
        ));
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
