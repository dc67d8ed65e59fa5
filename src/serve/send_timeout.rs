//! `SEND_TIMEOUT`: a client that stops reading loses its connection.
//!
//! A response body is only polled when the socket can take more bytes, so a timer kept by
//! the body would never run for a client that stopped reading: its request would hold its
//! slot, its permit and the backend forever. The timer lives here instead, under hyper, on
//! the connection's writes: it starts when a write cannot proceed and is registered with the
//! connection task's waker, so it fires whether or not anything polls the body. Its error
//! ends the connection; dropping the connection drops every request on it, which the
//! worker's guards record as cancelled and which closes their backend connections.

use super::stall::StallTimer;
use pin_project_lite::pin_project;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client took no bytes for longer than `SEND_TIMEOUT`.
#[derive(Debug, thiserror::Error)]
#[error("the client took no response bytes for {0:.1} s (SEND_TIMEOUT)")]
pub struct SendTimeout(pub f64);

pin_project! {
    /// A connection's I/O whose writes fail with [`SendTimeout`] once they have been unable
    /// to proceed for `limit`.
    pub struct WriteStall<I> {
        #[pin]
        io: I,
        limit: Option<Duration>,
        stall: StallTimer,
    }
}

impl<I> WriteStall<I> {
    /// Wraps `io`; `None` never times out.
    pub fn new(io: I, limit: Option<Duration>) -> Self {
        Self {
            io,
            limit,
            stall: StallTimer::default(),
        }
    }
}

impl<I: AsyncWrite> WriteStall<I> {
    /// Passes a write's result on, starting the stall timer on `Pending` and failing once
    /// it has run out.
    fn watch<T>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut I>, &mut Context<'_>) -> Poll<io::Result<T>>,
        progress: impl Fn(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        let this = self.project();
        let result = poll(this.io, cx);
        let Some(limit) = *this.limit else {
            return result;
        };
        match result {
            Poll::Ready(Ok(v)) => {
                if progress(&v) {
                    this.stall.progress();
                }
                Poll::Ready(Ok(v))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.stall.expired(limit, cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                SendTimeout(limit.as_secs_f64()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead> AsyncRead for WriteStall<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<I: AsyncWrite> AsyncWrite for WriteStall<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.watch(cx, |io, cx| io.poll_write(cx, buf), |n| *n > 0)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.watch(cx, |io, cx| io.poll_write_vectored(cx, bufs), |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A flush that completes is no sign the client read anything; only writes reset.
        self.watch(cx, |io, cx| io.poll_flush(cx), |_| false)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.watch(cx, |io, cx| io.poll_shutdown(cx), |_| false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_takes_fails_after_the_limit() {
        // A 1-byte pipe nobody reads: the second byte can never be written.
        let (client, _server) = tokio::io::duplex(1);
        let mut io = Box::pin(WriteStall::new(client, Some(Duration::from_secs(60))));
        let started = Instant::now();
        let err = io.write_all(b"ab").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.get_ref().unwrap().is::<SendTimeout>());
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_taking_bytes_is_not_cut_off() {
        use tokio::io::AsyncReadExt;
        let (client, mut server) = tokio::io::duplex(1);
        let mut io = Box::pin(WriteStall::new(client, Some(Duration::from_secs(60))));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut b = [0u8; 1];
            while got.len() < 4 {
                tokio::time::sleep(Duration::from_secs(50)).await;
                server.read_exact(&mut b).await.unwrap();
                got.push(b[0]);
            }
            got
        });
        io.write_all(b"abcd").await.unwrap();
        drop(io);
        assert_eq!(reader.await.unwrap(), b"abcd");
    }
}
