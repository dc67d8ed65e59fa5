//! The splice: the client's and the backend's upgraded streams copied into each other,
//! byte for byte, both directions at once.
//!
//! Each direction is a [`Pump`] with a small buffer. As bytes pass it follows frame
//! boundaries ([`Cursor`]: headers only, payloads are neither copied aside nor unmasked),
//! which is what lets the worker close a socket properly: when it must (drain,
//! `WEBSOCKET_IDLE_TIMEOUT`) each direction finishes the frame in progress, then gets a
//! close frame of the worker's (code 1001; masked towards the backend, as a client's frames
//! must be), and the pump then reads and drops what its source still sends until that
//! source's own close frame or end, bounded by a grace period. Without that knowledge a
//! close frame could land inside a frame and corrupt the stream.
//!
//! Internal: both pumps are polled from one future (as `tokio::io::copy_bidirectional`
//! does), so neither direction can block the other, and one task owns the whole socket.

use crate::websocket::frame::{self, CLOSE_GOING_AWAY, Cursor};
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep, sleep_until};

/// Bytes buffered per direction.
const BUFFER: usize = 8 * 1024;

/// How a spliced WebSocket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// A close frame went by (either side started the closing handshake), then the
    /// connections ended.
    Clean,
    /// The client's connection ended or failed without a close frame.
    ClientGone,
    /// The backend's connection ended or failed without a close frame.
    BackendFailed,
    /// Nothing went either way for `WEBSOCKET_IDLE_TIMEOUT`; the worker closed both sides.
    Idle,
    /// The worker closed both sides as it stopped (the drain's deadline passed).
    Drained,
}

/// The end of a splice: how, and the bytes relayed each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spliced {
    /// How it ended.
    pub closed: Closed,
    /// Bytes the client sent that reached the backend.
    pub to_backend: u64,
    /// Bytes the backend sent that reached the client.
    pub to_client: u64,
}

/// The limits of one splice.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Close both sides after this long without a byte either way; `None` never.
    pub idle_timeout: Option<Duration>,
    /// Time the closing handshake may take once the worker closes a socket.
    pub close_grace: Duration,
}

/// Copies `client` and `backend` into each other until both sides end, one fails,
/// `limits.idle_timeout` passes without a byte, or `stop` resolves (then both sides get a
/// close frame 1001 and `limits.close_grace` to answer it).
pub async fn splice<C, B>(
    mut client: C,
    mut backend: B,
    limits: Limits,
    stop: impl Future<Output = ()>,
) -> Spliced
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut up = Pump::new(true);
    let mut down = Pump::new(false);
    let mut activity = Instant::now();
    let mut idle: Option<Pin<Box<Sleep>>> = limits
        .idle_timeout
        .map(|limit| Box::pin(sleep_until(activity + limit)));
    let mut stop = pin!(stop);
    // Set once the worker starts closing: why, when the grace ends, and whether a close
    // frame had already gone by (the socket was closing cleanly anyway).
    let mut closing: Option<(Closed, Pin<Box<Sleep>>, bool)> = None;
    let mut first_end: Option<Closed> = None;
    let closed = std::future::poll_fn(|cx| {
        if closing.is_none() {
            let why = if stop.as_mut().poll(cx).is_ready() {
                Some((Closed::Drained, "going away"))
            } else if idle_expired(&mut idle, activity, limits.idle_timeout, cx) {
                Some((Closed::Idle, "idle timeout"))
            } else {
                None
            };
            if let Some((why, reason)) = why {
                let clean = up.cursor.closed() || down.cursor.closed();
                up.close(reason);
                down.close(reason);
                let grace = Box::pin(sleep_until(Instant::now() + limits.close_grace));
                closing = Some((why, grace, clean));
            }
        }
        let ending = |why: Closed, closing: &Option<(Closed, Pin<Box<Sleep>>, bool)>| match closing
        {
            Some((_, _, true)) => Closed::Clean,
            Some((why, _, false)) => *why,
            None => why,
        };
        if let Some((_, grace, _)) = &mut closing
            && grace.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(ending(Closed::Clean, &closing));
        }
        let u = up.poll(cx, &mut client, &mut backend, &mut activity);
        let d = down.poll(cx, &mut backend, &mut client, &mut activity);
        let clean = up.cursor.closed() || down.cursor.closed();
        if first_end.is_none() {
            first_end = match (up.source_ended, down.source_ended) {
                (true, _) => Some(Closed::ClientGone),
                (_, true) => Some(Closed::BackendFailed),
                _ => None,
            };
            // One side left mid-conversation: the other is cut at once (a client gone
            // stops the backend's work, as for any request).
            if let Some(side) = first_end
                && !clean
                && closing.is_none()
            {
                return Poll::Ready(side);
            }
        }
        // One side ended after a close frame, or both sent theirs: the closing handshake
        // is under way, and the connections get the grace period to end.
        let handshake = first_end.is_some() || (up.cursor.closed() && down.cursor.closed());
        if handshake && clean && closing.is_none() {
            let mut grace = Box::pin(sleep_until(Instant::now() + limits.close_grace));
            let _ = grace.as_mut().poll(cx);
            closing = Some((Closed::Clean, grace, true));
        }
        let failed = match (&u, &d) {
            (Poll::Ready(Err(Fault::Source(_))), _) | (_, Poll::Ready(Err(Fault::Sink(_)))) => {
                Some(Closed::ClientGone)
            }
            (Poll::Ready(Err(Fault::Sink(_))), _) | (_, Poll::Ready(Err(Fault::Source(_)))) => {
                Some(Closed::BackendFailed)
            }
            _ => None,
        };
        if let Some(side) = failed {
            for (r, to) in [(&u, "backend"), (&d, "client")] {
                if let Poll::Ready(Err(e)) = r {
                    tracing::debug!(error = %e, towards = to, "WebSocket relay failed");
                }
            }
            return Poll::Ready(ending(if clean { Closed::Clean } else { side }, &closing));
        }
        match (u, d) {
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => {
                let side = first_end.unwrap_or(Closed::Clean);
                Poll::Ready(ending(if clean { Closed::Clean } else { side }, &closing))
            }
            _ => Poll::Pending,
        }
    })
    .await;
    Spliced {
        closed,
        to_backend: up.bytes,
        to_client: down.bytes,
    }
}

/// Whether `limit` has passed since the last byte; re-arms the timer when bytes moved
/// since it was set, so the hot path never touches the timer.
fn idle_expired(
    timer: &mut Option<Pin<Box<Sleep>>>,
    activity: Instant,
    limit: Option<Duration>,
    cx: &mut Context<'_>,
) -> bool {
    let (Some(timer), Some(limit)) = (timer.as_mut(), limit) else {
        return false;
    };
    while timer.as_mut().poll(cx).is_ready() {
        let deadline = activity + limit;
        if deadline <= Instant::now() {
            return true;
        }
        timer.as_mut().reset(deadline);
    }
    false
}

/// Which end of a direction failed.
#[derive(Debug)]
enum Fault {
    /// Reading from the source.
    Source(io::Error),
    /// Writing to the sink.
    Sink(io::Error),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Source(e) => write!(f, "read: {e}"),
            Fault::Sink(e) => write!(f, "write: {e}"),
        }
    }
}

/// Where one direction stands.
#[derive(Debug)]
enum State {
    /// Copying.
    Relay,
    /// Closing: write to the end of the frame in progress, then this close frame.
    Finish(Vec<u8>),
    /// Closing: writing the close frame, from this offset.
    Inject(Vec<u8>, usize),
    /// Closing: the sink has its close frame; drop what the source sends until its own
    /// close frame or end.
    Discard,
    /// The source ended: shutting the sink's write side.
    Shutdown,
    /// Finished.
    Done,
}

/// One direction: source → sink.
struct Pump {
    buf: Box<[u8]>,
    /// Bytes read and not yet written: `buf[pos..end]`.
    pos: usize,
    end: usize,
    /// Frame boundaries of what was taken from the source.
    cursor: Cursor,
    /// The sink is the backend: the worker's own frames must be masked.
    masked: bool,
    /// Bytes relayed to the sink.
    bytes: u64,
    /// Written bytes not yet flushed.
    unflushed: bool,
    /// The source reached its end.
    source_ended: bool,
    state: State,
}

impl Pump {
    fn new(masked: bool) -> Self {
        Self {
            buf: vec![0; BUFFER].into_boxed_slice(),
            pos: 0,
            end: 0,
            cursor: Cursor::default(),
            masked,
            bytes: 0,
            unflushed: false,
            source_ended: false,
            state: State::Relay,
        }
    }

    /// Starts closing this direction with a close frame 1001 carrying `reason`.
    fn close(&mut self, reason: &str) {
        if matches!(self.state, State::Relay) {
            let mask = self.masked.then(mask_key);
            self.state = State::Finish(frame::close_frame(CLOSE_GOING_AWAY, reason, mask));
        }
    }

    /// Moves bytes until the source or the sink must wait; ready when this direction is
    /// finished.
    fn poll<S, K>(
        &mut self,
        cx: &mut Context<'_>,
        source: &mut S,
        sink: &mut K,
        activity: &mut Instant,
    ) -> Poll<Result<(), Fault>>
    where
        S: AsyncRead + Unpin,
        K: AsyncWrite + Unpin,
    {
        loop {
            match &mut self.state {
                State::Done => return Poll::Ready(Ok(())),
                State::Shutdown => {
                    ready!(self.flush(cx, sink))?;
                    // The sink may already be gone: the direction is over either way.
                    let _ = ready!(Pin::new(&mut *sink).poll_shutdown(cx));
                    self.state = State::Done;
                }
                State::Relay => {
                    ready!(self.write(cx, sink, usize::MAX, activity))?;
                    ready!(self.flush(cx, sink))?;
                    if !ready!(self.read(cx, source, activity))? {
                        self.state = State::Shutdown;
                    }
                }
                State::Finish(_) => {
                    let left = self.cursor.to_boundary();
                    if left > 0 {
                        let limit = usize::try_from(left).unwrap_or(usize::MAX);
                        ready!(self.write(cx, sink, limit, activity))?;
                        if self.cursor.to_boundary() > 0 && self.pos == self.end {
                            // Mid-frame with nothing buffered: the rest is still to come.
                            if !ready!(self.read(cx, source, activity))? {
                                self.state = State::Shutdown;
                            }
                        }
                        continue;
                    }
                    // Between frames: what is buffered is never relayed.
                    let State::Finish(close) = std::mem::replace(&mut self.state, State::Discard)
                    else {
                        unreachable!("matched above")
                    };
                    // The source's own close frame already reached the sink: it needs
                    // none of the worker's.
                    let relayed_close = self.cursor.closed();
                    self.discard_buffered();
                    if !relayed_close {
                        self.state = State::Inject(close, 0);
                    }
                }
                State::Inject(close, at) => {
                    while *at < close.len() {
                        let n = ready!(Pin::new(&mut *sink).poll_write(cx, &close[*at..]))
                            .map_err(Fault::Sink)?;
                        if n == 0 {
                            return Poll::Ready(Err(Fault::Sink(io::ErrorKind::WriteZero.into())));
                        }
                        *at += n;
                        self.unflushed = true;
                    }
                    ready!(self.flush(cx, sink))?;
                    self.state = State::Discard;
                }
                State::Discard => {
                    self.discard_buffered();
                    if self.cursor.closed() || !ready!(self.read(cx, source, activity))? {
                        self.discard_buffered();
                        self.state = State::Shutdown;
                    }
                }
            }
        }
    }

    /// Drops the buffered bytes, still following their frames (to see a close frame).
    fn discard_buffered(&mut self) {
        self.cursor.advance(&self.buf[self.pos..self.end]);
        self.pos = self.end;
    }

    /// Writes buffered bytes, at most `limit`; ready when that much is written or the
    /// buffer is empty.
    fn write<K: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut K,
        limit: usize,
        activity: &mut Instant,
    ) -> Poll<Result<(), Fault>> {
        let mut left = limit;
        while self.pos < self.end && left > 0 {
            let upto = self.end.min(self.pos.saturating_add(left));
            let n = ready!(Pin::new(&mut *sink).poll_write(cx, &self.buf[self.pos..upto]))
                .map_err(Fault::Sink)?;
            if n == 0 {
                return Poll::Ready(Err(Fault::Sink(io::ErrorKind::WriteZero.into())));
            }
            self.cursor.advance(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            left -= n;
            self.bytes += n as u64;
            self.unflushed = true;
            *activity = Instant::now();
        }
        Poll::Ready(Ok(()))
    }

    fn flush<K: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut K,
    ) -> Poll<Result<(), Fault>> {
        if self.unflushed {
            ready!(Pin::new(&mut *sink).poll_flush(cx)).map_err(Fault::Sink)?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Refills the (empty) buffer from the source; ready with `false` at its end.
    fn read<S: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        source: &mut S,
        activity: &mut Instant,
    ) -> Poll<Result<bool, Fault>> {
        let mut rb = ReadBuf::new(&mut self.buf);
        ready!(Pin::new(&mut *source).poll_read(cx, &mut rb)).map_err(Fault::Source)?;
        let n = rb.filled().len();
        self.pos = 0;
        self.end = n;
        if n == 0 {
            self.source_ended = true;
            return Poll::Ready(Ok(false));
        }
        *activity = Instant::now();
        Poll::Ready(Ok(true))
    }
}

/// A masking key for a frame of the worker's to the backend (RFC 6455 §5.3: from a strong
/// source of entropy). Should the system's source fail, the zero key still makes a valid
/// frame.
fn mask_key() -> [u8; 4] {
    let mut key = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::websocket::frame::{
        Header, OP_BINARY, OP_CLOSE, OP_TEXT, apply_mask, close_code, close_frame, encode_frame,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    const KEY: Option<[u8; 4]> = Some([1, 2, 3, 4]);

    /// A splice between two in-memory connections: the test holds the client's and the
    /// backend's ends, and `stop` fires the worker's close.
    struct Rig {
        client: DuplexStream,
        backend: DuplexStream,
        stop: Option<oneshot::Sender<()>>,
        task: JoinHandle<Spliced>,
    }

    fn rig(idle_timeout: Option<Duration>) -> Rig {
        let (client, client_side) = duplex(64 * 1024);
        let (backend, backend_side) = duplex(64 * 1024);
        let (stop, stopped) = oneshot::channel::<()>();
        let limits = Limits {
            idle_timeout,
            close_grace: Duration::from_secs(1),
        };
        let task = tokio::spawn(splice(client_side, backend_side, limits, async {
            let _ = stopped.await;
        }));
        Rig {
            client,
            backend,
            stop: Some(stop),
            task,
        }
    }

    /// Reads one whole frame: its header and unmasked payload.
    async fn read_frame(io: &mut DuplexStream) -> (Header, Vec<u8>) {
        let mut buf = Vec::new();
        loop {
            if let Some((h, at)) = Header::parse(&buf) {
                let mut payload = vec![0; h.len as usize];
                let have = (buf.len() - at).min(payload.len());
                payload[..have].copy_from_slice(&buf[at..at + have]);
                io.read_exact(&mut payload[have..]).await.unwrap();
                if let Some(key) = h.mask {
                    apply_mask(&mut payload, key, 0);
                }
                return (h, payload);
            }
            let mut byte = [0u8; 1];
            io.read_exact(&mut byte).await.unwrap();
            buf.push(byte[0]);
        }
    }

    #[tokio::test]
    async fn frames_pass_both_ways_and_a_close_handshake_ends_cleanly() {
        let mut r = rig(None);
        let hello = encode_frame(OP_TEXT, b"hello", KEY);
        r.client.write_all(&hello).await.unwrap();
        let (h, payload) = read_frame(&mut r.backend).await;
        assert_eq!(
            (h.opcode, h.mask, payload.as_slice()),
            (OP_TEXT, KEY, &b"hello"[..])
        );
        r.backend
            .write_all(&encode_frame(OP_BINARY, &[7; 20_000], None))
            .await
            .unwrap();
        let (h, payload) = read_frame(&mut r.client).await;
        assert_eq!((h.opcode, payload.len()), (OP_BINARY, 20_000));
        // The client closes; the backend answers and ends the connection.
        r.client
            .write_all(&close_frame(1000, "", KEY))
            .await
            .unwrap();
        assert_eq!(read_frame(&mut r.backend).await.0.opcode, OP_CLOSE);
        r.backend
            .write_all(&close_frame(1000, "", None))
            .await
            .unwrap();
        drop(r.backend);
        assert_eq!(read_frame(&mut r.client).await.0.opcode, OP_CLOSE);
        drop(r.client);
        let done = r.task.await.unwrap();
        assert_eq!(done.closed, Closed::Clean);
        assert_eq!(done.to_backend as usize, hello.len() + 8);
        assert_eq!(done.to_client as usize, 4 + 20_000 + 4);
    }

    #[tokio::test]
    async fn a_side_that_leaves_without_a_close_frame_is_blamed() {
        let r = rig(None);
        drop(r.client);
        assert_eq!(r.task.await.unwrap().closed, Closed::ClientGone);
        let r = rig(None);
        drop(r.backend);
        assert_eq!(r.task.await.unwrap().closed, Closed::BackendFailed);
    }

    #[tokio::test]
    async fn stopping_mid_frame_finishes_the_frame_then_sends_close_1001_both_ways() {
        let mut r = rig(None);
        let first = encode_frame(OP_BINARY, &[9; 1000], KEY);
        r.client.write_all(&first[..300]).await.unwrap();
        // The worker's close must wait for the frame in progress.
        let mut seen = vec![0u8; 300];
        r.backend.read_exact(&mut seen).await.unwrap();
        let _ = r.stop.take().unwrap().send(());
        let (h, payload) = read_frame(&mut r.client).await;
        assert_eq!(
            (h.opcode, h.mask),
            (OP_CLOSE, None),
            "unmasked to the client"
        );
        assert_eq!(close_code(&payload), Some(1001));
        r.client.write_all(&first[300..]).await.unwrap();
        // A frame after the boundary is never relayed.
        r.client
            .write_all(&encode_frame(OP_TEXT, b"late", KEY))
            .await
            .unwrap();
        let mut rest = vec![0u8; first.len() - 300];
        r.backend.read_exact(&mut rest).await.unwrap();
        seen.extend(rest);
        assert_eq!(seen, first, "the frame in progress arrives whole");
        let (h, payload) = read_frame(&mut r.backend).await;
        assert_eq!(h.opcode, OP_CLOSE);
        assert!(h.mask.is_some(), "masked to the backend");
        assert_eq!(close_code(&payload), Some(1001));
        // Both answer the close; the relay then ends.
        r.client
            .write_all(&close_frame(1001, "", KEY))
            .await
            .unwrap();
        r.backend
            .write_all(&close_frame(1001, "", None))
            .await
            .unwrap();
        let done = r.task.await.unwrap();
        assert_eq!(done.closed, Closed::Drained);
        let mut tail = Vec::new();
        r.backend.read_to_end(&mut tail).await.unwrap();
        assert!(tail.is_empty(), "nothing after the close frame: {tail:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn once_both_close_frames_went_by_the_connections_get_the_grace_period() {
        let mut r = rig(None);
        r.client
            .write_all(&close_frame(1000, "", KEY))
            .await
            .unwrap();
        read_frame(&mut r.backend).await;
        r.backend
            .write_all(&close_frame(1000, "", None))
            .await
            .unwrap();
        read_frame(&mut r.client).await;
        // Neither peer closes its connection: the worker does, once the grace has passed.
        let started = Instant::now();
        let done = r.task.await.unwrap();
        assert_eq!(done.closed, Closed::Clean);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn silence_past_the_idle_timeout_closes_both_sides() {
        let mut r = rig(Some(Duration::from_secs(30)));
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(20)).await;
            r.client
                .write_all(&encode_frame(OP_TEXT, b"x", KEY))
                .await
                .unwrap();
            read_frame(&mut r.backend).await;
        }
        // 30 s of silence now: the clock runs only while everything waits.
        let (h, payload) = read_frame(&mut r.client).await;
        assert_eq!((h.opcode, close_code(&payload)), (OP_CLOSE, Some(1001)));
        assert_eq!(read_frame(&mut r.backend).await.0.opcode, OP_CLOSE);
        // Neither answers: the grace period ends it.
        let done = r.task.await.unwrap();
        assert_eq!(done.closed, Closed::Idle);
    }
}
