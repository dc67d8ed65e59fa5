//! The accept loop shared by every Vespa server: HTTP/1.1 and HTTP/2 (prior knowledge) on
//! one port, `TCP_NODELAY` on every connection; optionally behind TLS, where ALPN picks the
//! protocol. [`ServeLimits`] bounds what one client may hold (connections, a slow request
//! head, a response it does not read, HTTP/2 streams); a stop signal closes every
//! connection gracefully, so responses in progress are written to their last byte.
//!
//! Connections are served with HTTP/1.1 upgrades: a handler that answers
//! `101 Switching Protocols` gets the connection's I/O from `hyper::upgrade::on` (the
//! worker's WebSocket relay, the sim's `/ws`). An upgraded connection leaves hyper, and so
//! the graceful close, but keeps its `MAX_CONNECTIONS` permit until it is dropped.
//!
//! Internal: connections are tasks in a [`JoinSet`] owned by the loop, so aborting the loop
//! (dropping the server's handle) also closes every open keep-alive connection instead of
//! leaving them serving a stopped server. Requests are handled inside the connection's own
//! task, so a client that leaves drops its request future at once.
//!
//! Internal: a connection costs what its task and hyper's state hold for as long as it is
//! open (a streamed response can keep it for minutes), so their sizes are kept down: the
//! protocol is told apart by [`detect`] (hyper's read buffer stays at 8 KiB), the rarer
//! TLS and HTTP/2 states are boxed, so a plain HTTP/1.1 connection's task does not carry
//! their size, and a request's future is boxed for as long as it runs ([`Answer`]).

mod detect;
mod limits;
pub mod read_timeout;
pub mod send_timeout;
pub(crate) mod stall;

pub use limits::*;

use crate::http_util::Body;
use detect::{Rewound, Version, detect};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use send_timeout::WriteStall;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// Time a client has to complete the TLS handshake. Default is 10 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS for [`accept_loop_tls`]: the rustls server configuration and the handshake timeout.
#[derive(Clone)]
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// TLS with `config` (see `tls::server::load`) and the default handshake timeout.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            acceptor: config.into(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Closes connections whose handshake is not done within `timeout`, so a client that
    /// never finishes cannot hold a task. Default is 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }
}

/// Binds `addr` for a server: `SO_REUSEADDR` (a restarted server need not wait for the old
/// connections' `TIME_WAIT`) and a listen backlog of [`LISTEN_BACKLOG`], where connections
/// beyond [`ServeLimits::max_connections`] wait.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts connections until aborted, answering each request with `handler`, within the
/// default [`ServeLimits`].
pub async fn accept_loop<H, F>(listener: TcpListener, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    accept_loop_tls(listener, None, handler).await
}

/// [`accept_loop`], over TLS when `tls` is given: HTTP/2 when the client negotiated `h2`
/// by ALPN, HTTP/1.1 when it negotiated `http/1.1`, either (by preface) without ALPN.
pub async fn accept_loop_tls<H, F>(listener: TcpListener, tls: Option<Tls>, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    serve(
        listener,
        tls,
        ServeLimits::default(),
        std::future::pending(),
        move |req, _| handler(req),
    )
    .await
}

/// The accept loop with its limits and a stop signal. When `stop` resolves, the loop stops
/// accepting (the listener closes) and shuts every connection down gracefully: a response
/// in progress is written to its end (the last frame, the chunked terminator, HTTP/2's
/// end of stream), idle keep-alive connections close at once. Returns when every
/// connection has closed. The handler is given each request with the client's address.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<Tls>,
    limits: ServeLimits,
    stop: impl Future<Output = ()>,
    handler: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut connections = JoinSet::new();
    // Internal: one permit per open connection, held by its task. With none left the loop
    // does not call accept(), so the kernel queues new connections in the backlog.
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (closing, closing_rx) = watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    loop {
        let permit = tokio::select! {
            () = &mut stop => break,
            Some(_) = connections.join_next() => continue,
            p = Arc::clone(&permits).acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            () = &mut stop => break,
            // Internal: a finished connection's task keeps its memory until it is joined,
            // so connections are joined while the loop waits for the next one too: after a
            // burst, an idle server does not hold the memory of every closed connection.
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            peer,
            limits,
            closing: closing_rx.clone(),
        };
        let handler = handler.clone();
        let tls = tls.clone();
        // The permit travels with the socket: an upgraded connection outlives its task.
        let stream = Permitted {
            io: stream,
            _permit: permit,
        };
        let task = async move {
            match tls {
                None => serve_connection(stream, conn, Protocol::Any, handler).await,
                Some(tls) => Box::pin(serve_tls(tls, stream, conn, handler)).await,
            }
        };
        connections.spawn(task);
    }
    drop(listener);
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
}

/// What a connection task knows besides its stream.
struct Conn {
    peer: SocketAddr,
    limits: ServeLimits,
    closing: watch::Receiver<bool>,
}

/// What the connection speaks.
enum Protocol {
    Any,
    Http1,
    Http2,
}

async fn serve_tls<H, F>(tls: Tls, stream: Permitted<TcpStream>, conn: Conn, handler: H)
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let peer = conn.peer;
    let handshake = tls.acceptor.accept(stream);
    let stream = match tokio::time::timeout(tls.handshake_timeout, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let protocol = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        Some(b"http/1.1") => Protocol::Http1,
        _ => Protocol::Any,
    };
    serve_connection(stream, conn, protocol, handler).await
}

async fn serve_connection<I, H, F>(io: I, conn: Conn, protocol: Protocol, handler: H)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let Conn {
        peer,
        limits,
        mut closing,
    } = conn;
    let service = service_fn(move |req| Answer(Box::pin(handler(req, peer))));
    let io = WriteStall::new(io, limits.send_timeout);
    let (version, io) = match protocol {
        Protocol::Http1 => (Version::Http1, Rewound::unread(io)),
        Protocol::Http2 => (Version::Http2, Rewound::unread(io)),
        Protocol::Any => {
            // A client that sends nothing is held to the time it has for a request head.
            let first_bytes = async {
                match limits.header_read_timeout {
                    Some(limit) => tokio::time::timeout(limit, detect(io)).await.ok(),
                    None => Some(detect(io).await),
                }
            };
            let detected = tokio::select! {
                d = first_bytes => d,
                () = closed(&mut closing) => return,
            };
            match detected {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "client connection failed before its first request");
                    return;
                }
                None => {
                    tracing::debug!(%peer, "client sent nothing within the header read timeout");
                    return;
                }
            }
        }
    };
    let io = TokioIo::new(io);
    let ended = match version {
        Version::Http1 => {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(io, service)
                .with_upgrades();
            until_closed(pin!(connection), &mut closing, |c| c.graceful_shutdown()).await
        }
        Version::Http2 => {
            let mut connection = Box::pin(
                http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(limits.h2_max_concurrent_streams)
                    .max_header_list_size(limits.h2_max_header_list_size)
                    .keep_alive_interval(limits.h2_keep_alive_interval)
                    .keep_alive_timeout(limits.h2_keep_alive_timeout)
                    .serve_connection(io, service),
            );
            until_closed(connection.as_mut(), &mut closing, |c| c.graceful_shutdown()).await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "client connection ended with an error");
    }
}

/// Drives `connection` to its end; when the loop asks its connections to close first,
/// `shutdown` starts its graceful close and the connection is driven until that is done.
async fn until_closed<C: Future>(
    mut connection: Pin<&mut C>,
    closing: &mut watch::Receiver<bool>,
    shutdown: impl FnOnce(Pin<&mut C>),
) -> C::Output {
    tokio::select! {
        ended = connection.as_mut() => ended,
        () = closed(closing) => {
            shutdown(connection.as_mut());
            connection.await
        }
    }
}

/// A handler's response as hyper's service gives it: `Ok`, always.
///
/// Internal: hyper keeps room for one service future per connection for the connection's
/// life, and a handler's future is the whole request pipeline, kilobytes. Boxed, it takes
/// memory only while its request waits for the response head: a connection streaming a
/// response, or idle between requests, holds a pointer. (An `async` block around it would
/// hold it twice: captured, and being awaited.)
struct Answer<F>(Pin<Box<F>>);

impl<F: Future> Future for Answer<F> {
    type Output = Result<F::Output, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map(Ok)
    }
}

pin_project_lite::pin_project! {
    /// A client connection's I/O holding its `MAX_CONNECTIONS` permit, released when the
    /// socket is dropped: with the connection task, or with the upgraded stream that
    /// outlives it.
    struct Permitted<I> {
        #[pin]
        io: I,
        _permit: tokio::sync::OwnedSemaphorePermit,
    }
}

impl<I: AsyncRead> AsyncRead for Permitted<I> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<I: AsyncWrite> AsyncWrite for Permitted<I> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Resolves when the loop asks its connections to close (or is gone).
async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

/// Resolves on SIGTERM or SIGINT: how every server command is asked to stop. The signal
/// handlers are installed when this is called, not when it is first polled, so a signal
/// that arrives between the call and the `.await` still counts.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
