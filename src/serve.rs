//! The accept loop shared by every Vespa server: HTTP/1.1 and HTTP/2 (prior knowledge) on
//! one port, `TCP_NODELAY` on every connection; optionally behind TLS, where ALPN picks the
//! protocol.
//!
//! Internal: connections are tasks in a [`JoinSet`] owned by the loop, so aborting the loop
//! (dropping the server's handle) also closes every open keep-alive connection instead of
//! leaving them serving a stopped server. Requests are handled inside the connection's own
//! task, so a client that leaves drops its request future at once.

use crate::http_util::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
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

/// Accepts connections until aborted, answering each request with `handler`.
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
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next() => continue,
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
        let handler = handler.clone();
        match &tls {
            None => connections.spawn(serve_connection(stream, peer, Protocol::Any, handler)),
            Some(tls) => connections.spawn(serve_tls(tls.clone(), stream, peer, handler)),
        };
    }
}

/// What the connection speaks.
enum Protocol {
    Any,
    Http1,
    Http2,
}

async fn serve_tls<H, F>(tls: Tls, stream: TcpStream, peer: SocketAddr, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
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
    serve_connection(stream, peer, protocol, handler).await
}

async fn serve_connection<I, H, F>(io: I, peer: SocketAddr, protocol: Protocol, handler: H)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let service = service_fn(move |req| {
        let response = handler(req);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let builder = match protocol {
        Protocol::Any => builder,
        Protocol::Http1 => builder.http1_only(),
        Protocol::Http2 => builder.http2_only(),
    };
    if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(%peer, error = %e, "client connection ended with an error");
    }
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
