//! `BODY_READ_TIMEOUT`: a client that stops sending its request body fails its request.
//!
//! Hyper has a timeout for the request head but none for the body, so a client could send
//! half an upload and hold its connection (and, for a streamed upload, a backend request)
//! forever. [`ReadTimeout`] wraps a request body and fails it when a frame is awaited for
//! longer than the limit. Only time spent waiting counts: while nobody polls the body (the
//! backend is busy with what it got), the client is not at fault.

use super::stall::StallTimer;
use crate::http_util::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The client sent no body bytes for longer than `BODY_READ_TIMEOUT`.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body bytes for {0:.1} s (BODY_READ_TIMEOUT)")]
pub struct BodyReadTimeout(pub f64);

impl BodyReadTimeout {
    /// The [`BodyReadTimeout`] in `err` or any of its sources, if there is one.
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyReadTimeout> {
        let mut next = Some(err);
        while let Some(e) = next {
            if let Some(t) = e.downcast_ref::<BodyReadTimeout>() {
                return Some(t);
            }
            next = e.source();
        }
        None
    }
}

pin_project! {
    /// A request body that fails with [`BodyReadTimeout`] when its next frame is awaited
    /// for longer than `limit`.
    pub struct ReadTimeout<B> {
        #[pin]
        inner: B,
        limit: Option<Duration>,
        stall: StallTimer,
    }
}

impl<B> ReadTimeout<B> {
    /// Wraps `inner`; `None` waits as long as it takes.
    pub fn new(inner: B, limit: Option<Duration>) -> Self {
        Self {
            inner,
            limit,
            stall: StallTimer::default(),
        }
    }
}

impl<B> std::fmt::Debug for ReadTimeout<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadTimeout")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl<B> Body for ReadTimeout<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                this.stall.progress();
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match *this.limit {
                Some(limit) if this.stall.expired(limit, cx) => {
                    Poll::Ready(Some(Err(Box::new(BodyReadTimeout(limit.as_secs_f64())))))
                }
                _ => Poll::Pending,
            },
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
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    use crate::http_util::test_body::Frames;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_mid_way_fails_after_the_limit() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Bytes::from_static(b"half")).await.unwrap();
        let limit = Some(Duration::from_secs(60));
        let mut body = Box::pin(ReadTimeout::new(Frames(rx), limit));
        assert!(body.frame().await.unwrap().is_ok());
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(BodyReadTimeout::find(&*err).is_some(), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn time_nobody_polls_the_body_does_not_count() {
        let (tx, rx) = mpsc::channel(4);
        let limit = Some(Duration::from_secs(60));
        let mut body = Box::pin(ReadTimeout::new(Frames(rx), limit));
        let first = tokio::spawn(async move {
            let ok = body.frame().await.is_some_and(|f| f.is_ok());
            (body, ok)
        });
        tokio::time::advance(Duration::from_secs(30)).await;
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        let (mut body, ok) = first.await.unwrap();
        assert!(ok);
        // The reader (a busy backend) leaves the body alone for longer than the limit.
        tokio::time::advance(Duration::from_secs(600)).await;
        let next = tokio::spawn(async move { body.frame().await.map(|f| f.is_ok()) });
        tokio::time::advance(Duration::from_secs(59)).await;
        tx.send(Bytes::from_static(b"b")).await.unwrap();
        assert_eq!(next.await.unwrap(), Some(true));
    }
}
