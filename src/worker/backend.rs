//! The connection to the model server: HTTP/1.1 (over TLS for an `https://` base) over a
//! small keep-alive pool.
//!
//! Internal: hyper-util's pooled client cannot tell whether a failed request went out on a
//! reused connection, and only a reused connection that failed before any response byte may
//! be retried. One backend origin makes a pool simple: a stack of idle `SendRequest`s, most
//! recently used first, dropped once idle longer than the pool timeout (below uvicorn's 5 s
//! keep-alive, so we never reuse a connection the backend is about to close).
//!
//! A response comes back as a [`ResponseBody`] that owns its connection: when the body ends
//! cleanly the connection returns to the pool by itself; when it fails or is dropped before
//! its end, the connection is closed. hyper's HTTP/1 client cannot reuse a connection with
//! an unread message, so the backend sees the disconnect at once. That is how a client
//! leaving aborts the backend's work, and why no caller hands connections back by hand.

use crate::http_util::Body;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use rustls::ClientConfig;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

mod upgrade;
pub use upgrade::{BackendSocket, Switched, UpgradeAnswer};

impl BackendError {
    /// What went wrong, without the backend's address: for answers to clients.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::Connect { source, .. } => match source.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused",
                std::io::ErrorKind::TimedOut => "connect timed out",
                _ => "cannot connect",
            },
            BackendError::Request(e) if e.is_incomplete_message() => {
                "connection closed before the response"
            }
            BackendError::Request(_) => "request failed",
        }
    }
}

/// Why a backend request failed before its response started.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No TCP connection could be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port` of the backend.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The connection failed while sending the request or waiting for the answer.
    #[error("request failed: {0}")]
    Request(#[from] hyper::Error),
}

/// One backend connection: the handle requests go out on, and its driver task, which can be
/// aborted to close the connection at once.
struct Conn {
    sender: SendRequest<Body>,
    driver: AbortHandle,
    _open: OpenConn,
}

/// Counts a connection as open while it lives (`vespa_backend_connections`).
struct OpenConn(Arc<AtomicUsize>);

impl OpenConn {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(count))
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// Idle keep-alive connections, most recently used last.
struct Pool {
    idle: Mutex<Vec<Idle>>,
    idle_timeout: Duration,
    /// Connections made and not yet dropped, idle ones included.
    open: Arc<AtomicUsize>,
}

impl Pool {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the most recently used live idle connection, if any.
    fn take(&self) -> Option<Conn> {
        let mut idle = self.idle();
        while let Some(c) = idle.pop() {
            if c.since.elapsed() < self.idle_timeout && !c.conn.sender.is_closed() {
                return Some(c.conn);
            }
        }
        None
    }

    /// Keeps a connection whose response has fully ended.
    fn put(&self, conn: Conn) {
        if conn.sender.is_closed() || self.idle_timeout.is_zero() {
            return;
        }
        // Internal: stale connections are dropped by `take` and by the reaper, not here: a
        // scan on every release would read the clock once per idle connection.
        self.idle().push(Idle {
            conn,
            since: Instant::now(),
        });
    }
}

/// A connection on its way back to the pool once its response ends.
struct Lease {
    conn: Conn,
    pool: Arc<Pool>,
    /// Shared with a [`Closer`]: whoever takes the handle first decides whether the
    /// connection goes back to the pool (release) or is closed (close), never both.
    closing: Arc<Mutex<Option<AbortHandle>>>,
    /// Whether the request's body has gone out whole. Internal: a streamed body may still
    /// be uploading when the response ends, and hyper takes no new request on that
    /// connection until it is sent; such a connection is closed, never pooled. A complete
    /// body (`Sent::Whole`) always has; a streamed one once hyper took its last frame.
    sent: Sent,
}

/// How much of a request's body hyper has taken.
#[derive(Clone)]
pub(crate) enum Sent {
    /// Complete before it went out.
    Whole,
    /// Streamed: the flag is set once hyper took its end.
    Streamed(Arc<AtomicBool>),
    /// A connection never to be reused (a refused upgrade).
    Never,
}

impl Sent {
    fn all(&self) -> bool {
        match self {
            Sent::Whole => true,
            Sent::Streamed(done) => done.load(Ordering::Acquire),
            Sent::Never => false,
        }
    }
}

pin_project! {
    /// A streamed request body that marks when hyper has taken its end.
    struct Tracked {
        #[pin]
        inner: Body,
        done: Arc<AtomicBool>,
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = crate::http_util::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            this.done.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.done.store(true, Ordering::Release);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Lease {
    fn release(self) {
        let still_ours = self
            .closing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some();
        if still_ours && self.sent.all() {
            self.pool.put(self.conn);
        }
    }
}

/// Closes a response's backend connection while the response is still running; does
/// nothing once the response ended and its connection went back to the pool.
pub struct Closer(Arc<Mutex<Option<AbortHandle>>>);

impl Closer {
    /// Closes the connection, unless the response already released it.
    pub fn close(&self) {
        if let Some(driver) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            driver.abort();
        }
    }
}

pin_project! {
    /// A backend response body that returns its connection to the pool when it ends
    /// cleanly. Dropped or failed before its end, it closes the connection instead.
    pub struct ResponseBody {
        #[pin]
        inner: Incoming,
        lease: Option<Lease>,
    }
}

impl ResponseBody {
    /// A handle that closes this response's backend connection at once (while the
    /// response is still running), for a caller that cannot drop the body itself.
    pub fn closer(&self) -> Option<Closer> {
        self.lease.as_ref().map(|l| Closer(Arc::clone(&l.closing)))
    }

    fn new(inner: Incoming, lease: Lease) -> Self {
        let mut body = Self {
            inner,
            lease: Some(lease),
        };
        // Nothing may poll a body that is empty from the start (204, 304, HEAD, length 0).
        if http_body::Body::is_end_stream(&body.inner)
            && let Some(lease) = body.lease.take()
        {
            lease.release();
        }
        body
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) | Poll::Ready(None) => {
                // Internal: the caller may stop polling once `is_end_stream` says so, so the
                // connection goes back with the last frame, not on a later `None`.
                let ended = matches!(polled, Poll::Ready(None)) || this.inner.is_end_stream();
                if ended && let Some(lease) = this.lease.take() {
                    lease.release();
                }
            }
            Poll::Ready(Some(Err(_))) => drop(this.lease.take()),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Client for one backend origin.
pub struct Backend {
    base: Uri,
    addr: String,
    host: HeaderValue,
    /// For an https base: the TLS configuration, or why the system roots could not load.
    tls: Option<Result<Arc<ClientConfig>, String>>,
    prefix: String,
    pool: Arc<Pool>,
    connect_timeout: Duration,
    api_key: Option<HeaderValue>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// A client for `base` (an `http[s]://host[:port][/prefix]` URL). An https base is
    /// verified against the system's root certificates (see [`Backend::with_tls`]).
    pub fn new(base: Uri, connect_timeout: Duration, idle_timeout: Duration) -> Self {
        let authority = base.authority().map(|a| a.as_str()).unwrap_or("localhost");
        let https = base.scheme_str() == Some("https");
        let addr = match (base.port_u16(), https) {
            (Some(_), _) => authority.to_string(),
            (None, false) => format!("{authority}:80"),
            (None, true) => format!("{authority}:443"),
        };
        let tls = https.then(|| {
            crate::tls::client::backend_client_config()
                .map(Arc::new)
                .map_err(|e| e.to_string())
        });
        let host =
            HeaderValue::from_str(authority).unwrap_or(HeaderValue::from_static("localhost"));
        let prefix = base.path().trim_end_matches('/').to_string();
        Self {
            base,
            addr,
            host,
            tls,
            prefix,
            pool: Arc::new(Pool {
                idle: Mutex::new(Vec::new()),
                idle_timeout,
                open: Arc::default(),
            }),
            connect_timeout,
            api_key: None,
        }
    }

    /// Sends `Authorization: Bearer KEY` on every request to the backend, health probes
    /// included (a vLLM started with `--api-key`). Default is none.
    #[must_use]
    pub fn with_api_key(mut self, key: Option<&str>) -> Self {
        self.api_key = key.and_then(|k| {
            let mut v = HeaderValue::from_str(&format!("Bearer {k}")).ok()?;
            v.set_sensitive(true);
            Some(v)
        });
        self
    }

    /// Uses `config` for the TLS handshake of an https base instead of the system's roots.
    /// No effect on an http base.
    #[must_use]
    pub fn with_tls(mut self, config: Arc<ClientConfig>) -> Self {
        if self.tls.is_some() {
            self.tls = Some(Ok(config));
        }
        self
    }

    /// The backend's base URL.
    pub fn base(&self) -> &Uri {
        &self.base
    }

    /// Origin-form target for an incoming `path` and `query`.
    pub fn target(&self, path: &str, query: Option<&str>) -> Uri {
        let mut s = format!("{}{}", self.prefix, path);
        if let Some(q) = query {
            s.push('?');
            s.push_str(q);
        }
        s.parse().unwrap_or_else(|_| Uri::from_static("/"))
    }

    /// [`Backend::target`] for a client's request `uri` and its (filtered) `query`: the
    /// client's own path and query, shared rather than rebuilt, when the base has no path
    /// prefix and the query is unchanged (every request but the query form's).
    pub fn target_of(&self, uri: &Uri, query: Option<&str>) -> Uri {
        if self.prefix.is_empty()
            && query == uri.query()
            && let Some(pq) = uri.path_and_query()
        {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(pq.clone());
            if let Ok(target) = Uri::from_parts(parts) {
                return target;
            }
        }
        self.target(uri.path(), query)
    }

    /// Number of idle pooled connections (for tests and status).
    pub fn idle_connections(&self) -> usize {
        self.pool.idle().len()
    }

    /// Number of open backend connections: idle ones, and those carrying a request or
    /// a response.
    pub fn open_connections(&self) -> usize {
        self.pool.open.load(Ordering::Relaxed)
    }

    /// Closes pooled connections idle for longer than the pool's idle timeout. Runs every
    /// idle timeout for the worker's life ([`Backend::reap_idle_forever`]), so a connection
    /// the backend would close soon is closed by the worker first, with no traffic needed.
    pub fn reap_idle(&self) {
        let mut idle = self.pool.idle();
        idle.retain(|c| c.since.elapsed() < self.pool.idle_timeout && !c.conn.sender.is_closed());
    }

    /// [`Backend::reap_idle`] every idle timeout; never returns (nothing to do when the pool
    /// keeps no connection).
    pub async fn reap_idle_forever(self: Arc<Self>) {
        let every = self.pool.idle_timeout;
        if every.is_zero() {
            return std::future::pending().await;
        }
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.reap_idle();
        }
    }

    fn respond(&self, resp: Response<Incoming>, conn: Conn, sent: Sent) -> Response<ResponseBody> {
        let lease = Lease {
            closing: Arc::new(Mutex::new(Some(conn.driver.clone()))),
            conn,
            pool: Arc::clone(&self.pool),
            sent,
        };
        resp.map(|body| ResponseBody::new(body, lease))
    }

    async fn connect(&self) -> Result<Conn, BackendError> {
        let connect = TcpStream::connect(&self.addr);
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(BackendError::Connect {
                    addr: self.addr.clone(),
                    source,
                });
            }
            Err(_) => {
                return Err(BackendError::Connect {
                    addr: self.addr.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
                });
            }
        };
        // Small SSE frames must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let open = OpenConn::new(&self.pool.open);
        match &self.tls {
            None => handshake(stream, open).await,
            // Internal: boxed, so every request's future does not carry the TLS handshake's
            // size for the plain backends most workers have.
            Some(tls) => Box::pin(self.connect_tls(tls, stream, open)).await,
        }
    }

    async fn connect_tls(
        &self,
        tls: &Result<Arc<ClientConfig>, String>,
        stream: TcpStream,
        open: OpenConn,
    ) -> Result<Conn, BackendError> {
        let tls_error = |source| BackendError::Connect {
            addr: self.addr.clone(),
            source,
        };
        let config = tls
            .clone()
            .map_err(|e| tls_error(std::io::Error::other(format!("TLS: {e}"))))?;
        let host = self.base.host().unwrap_or("localhost");
        let connect = crate::tls::client::connect(config, host, stream);
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(s)) => s,
            // The source wraps the `rustls::Error` (e.g. an untrusted certificate).
            Ok(Err(e)) => return Err(tls_error(e)),
            Err(_) => {
                let timeout = std::io::ErrorKind::TimedOut;
                return Err(tls_error(std::io::Error::new(
                    timeout,
                    "TLS handshake timed out",
                )));
            }
        };
        handshake(stream, open).await
    }

    fn prepare(&self, mut req: Request<Body>) -> Request<Body> {
        *req.version_mut() = Version::HTTP_11;
        req.headers_mut().insert(header::HOST, self.host.clone());
        if let Some(key) = &self.api_key {
            req.headers_mut().insert(header::AUTHORIZATION, key.clone());
        }
        req
    }

    /// Sends `req` and waits for the response head. A pooled connection found closed, or not
    /// ready within the connect timeout, is skipped. When the request went out on a reused
    /// connection and failed before any response byte, it is sent once more on a new
    /// connection, provided `replay` (the complete body) is given. Without `replay` (a
    /// streamed body) the connection is pooled afterwards only if the whole body went out.
    pub async fn send(
        &self,
        req: Request<Body>,
        replay: Option<Bytes>,
    ) -> Result<Response<ResponseBody>, BackendError> {
        let mut req = self.prepare(req);
        let sent = match replay {
            Some(_) => Sent::Whole,
            None => {
                let done = Arc::new(AtomicBool::new(false));
                req = req.map(|inner| {
                    let done = Arc::clone(&done);
                    http_body_util::BodyExt::boxed_unsync(Tracked { inner, done })
                });
                Sent::Streamed(done)
            }
        };
        while let Some(mut conn) = self.pool.take() {
            let ready = tokio::time::timeout(self.connect_timeout, conn.sender.ready()).await;
            if !matches!(ready, Ok(Ok(()))) {
                continue;
            }
            let retry = replay
                .as_ref()
                .map(|body| clone_request(&req, body.clone()));
            match conn.sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.respond(resp, conn, sent)),
                Err(mut e) => {
                    if let Some(unsent) = e.take_message() {
                        req = unsent;
                        continue;
                    }
                    let error = e.into_error();
                    let Some(retry) = retry else {
                        return Err(BackendError::Request(error));
                    };
                    tracing::debug!(%error, "reused backend connection failed before answering; retrying once");
                    return self.send_new(retry, sent).await;
                }
            }
        }
        self.send_new(req, sent).await
    }

    async fn send_new(
        &self,
        req: Request<Body>,
        sent: Sent,
    ) -> Result<Response<ResponseBody>, BackendError> {
        let mut conn = self.connect().await?;
        let resp = conn.sender.send_request(req).await?;
        Ok(self.respond(resp, conn, sent))
    }
}

async fn handshake<I>(io: I, open: OpenConn) -> Result<Conn, BackendError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(BackendError::Request)?;
    // Internal: the connection driver must run on its own; it ends when both the sender
    // and any response body are dropped, which is what closes the socket on cancel. After a
    // `101 Switching Protocols` it hands the socket over to `hyper::upgrade::on` and ends.
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "backend connection ended with an error");
        }
    })
    .abort_handle();
    Ok(Conn {
        sender,
        driver,
        _open: open,
    })
}

fn clone_request(req: &Request<Body>, body: Bytes) -> Request<Body> {
    let mut copy = Request::new(crate::http_util::full(body));
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}
