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
//!
//! Each connection has a task of its own, which drives its I/O while a request goes out and
//! waits for its response head, and while the connection is idle. A [`ResponseBody`] that
//! finds nothing to read (a streamed answer) drives the connection from the task reading
//! it ([`Conn::drive`]) until the body ends: a frame of the backend's stream then reaches
//! the client's connection with no hand-off between tasks, and events the backend wrote
//! together (read in one receive) go out to the client in one write rather than one each.

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
use std::task::{Context, Poll, Waker};
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

/// The future that runs one connection's I/O (hyper's connection, with upgrades).
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// A connection's driver, shared by its host task, its [`Conn`] and the [`Closer`]s of its
/// responses.
struct Link {
    /// `None` once the connection ended or was closed.
    driver: Option<Driver>,
    /// A response body drives the connection from its own task; the host task waits.
    inline: bool,
    /// The host task's waker, to give the driving back to it.
    host: Option<Waker>,
    /// The host task, aborted when the connection is closed.
    task: Option<AbortHandle>,
    /// The connection's I/O goes on after its [`Conn`] is dropped, until hyper ends it
    /// (an upgrade handing its socket over, a request body still uploading).
    detached: bool,
    /// Bumped each time a response releases the connection, so a [`Closer`] made for an
    /// earlier response cannot close the connection under a later one.
    lease: u64,
}

impl Link {
    /// Polls the driver; returns whether the connection is still open.
    fn poll(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(driver) = self.driver.as_mut() else {
            return false;
        };
        let Poll::Ready(ended) = driver.as_mut().poll(cx) else {
            return true;
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "backend connection ended with an error");
        }
        self.driver = None;
        false
    }

    /// Closes the connection at once: the driver (and the socket with it) is dropped.
    fn close(&mut self) {
        self.driver = None;
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Gives the driving back to the host task.
    fn hand_to_host(&mut self) {
        if std::mem::take(&mut self.inline)
            && let Some(host) = &self.host
        {
            host.wake_by_ref();
        }
    }
}

fn lock(link: &Mutex<Link>) -> std::sync::MutexGuard<'_, Link> {
    link.lock().unwrap_or_else(|p| p.into_inner())
}

/// The task that drives a connection while no response body does: the handshake, a
/// request on its way out and its wait for the response head, the idle time in the pool
/// (where it reads a close by the backend). Ends with the connection.
async fn host(link: Arc<Mutex<Link>>) {
    std::future::poll_fn(|cx| {
        let mut l = lock(&link);
        if !l.host.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            l.host = Some(cx.waker().clone());
        }
        if l.inline && l.driver.is_some() {
            return Poll::Pending;
        }
        if l.poll(cx) {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
}

/// One backend connection: the handle requests go out on, and its driver.
struct Conn {
    sender: SendRequest<Body>,
    link: Arc<Mutex<Link>>,
    /// Taken only by an upgrade, whose socket keeps the count.
    open: Option<OpenConn>,
}

impl Conn {
    fn link(&self) -> std::sync::MutexGuard<'_, Link> {
        lock(&self.link)
    }

    /// Drives the connection's I/O from the calling task (a response body's), registering
    /// it to be woken when the connection can go on. The host task waits until the
    /// response releases the connection.
    fn drive(&self, cx: &mut Context<'_>) {
        let mut link = self.link();
        link.inline = true;
        link.poll(cx);
    }

    /// Lets the connection's I/O go on with nobody waiting on it, until hyper ends it.
    fn detach(&self) {
        let mut link = self.link();
        link.detached = true;
        link.hand_to_host();
    }
}

impl Drop for Conn {
    /// Closes the connection, unless it was detached.
    fn drop(&mut self) {
        let mut link = self.link();
        if !link.detached {
            link.close();
        }
    }
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
    /// The connection's [`Link::lease`] while this response holds it: a [`Closer`] made
    /// for it closes the connection only until the response releases it.
    lease: u64,
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
        let whole = self.sent.all();
        {
            let mut link = self.conn.link();
            link.lease += 1;
            if link.driver.is_none() {
                return;
            }
            // A response that ended while the request's body is still going out: the
            // upload finishes, after which hyper closes the connection.
            link.detached = !whole;
            link.hand_to_host();
        }
        if whole {
            self.pool.put(self.conn);
        }
    }
}

/// Closes a response's backend connection while the response is still running; does
/// nothing once the response ended and its connection went back to the pool.
pub struct Closer {
    link: Arc<Mutex<Link>>,
    lease: u64,
}

impl Closer {
    /// Closes the connection, unless the response already released it.
    pub fn close(&self) {
        let mut link = lock(&self.link);
        if link.lease == self.lease {
            link.close();
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
        // This body drives its connection (since it first found nothing to read).
        driving: bool,
    }
}

impl ResponseBody {
    /// A handle that closes this response's backend connection at once (while the
    /// response is still running), for a caller that cannot drop the body itself.
    pub fn closer(&self) -> Option<Closer> {
        self.lease.as_ref().map(|l| Closer {
            link: Arc::clone(&l.conn.link),
            lease: l.lease,
        })
    }

    fn new(inner: Incoming, lease: Lease) -> Self {
        let mut body = Self {
            inner,
            lease: Some(lease),
            driving: false,
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
        // Internal: a body the connection's task has already read whole (most answers
        // that are not streamed) is taken without driving the connection, which then
        // stays with its task. From the first time there is nothing to read, the body
        // drives the connection before each read, so what the connection has already
        // received is decoded at once.
        let polled = match this.lease.as_ref() {
            Some(lease) if *this.driving => {
                lease.conn.drive(cx);
                this.inner.as_mut().poll_frame(cx)
            }
            Some(lease) => match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => {
                    *this.driving = true;
                    lease.conn.drive(cx);
                    this.inner.as_mut().poll_frame(cx)
                }
                polled => polled,
            },
            None => this.inner.as_mut().poll_frame(cx),
        };
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
        let lease = conn.link().lease;
        let lease = Lease {
            lease,
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
    // Internal: the driver ends when both the sender and any response body are dropped,
    // or at once when it is dropped itself, which is what closes the socket on cancel.
    // After a `101 Switching Protocols` it hands the socket over to `hyper::upgrade::on`
    // and ends.
    let link = Arc::new(Mutex::new(Link {
        driver: Some(Box::pin(conn.with_upgrades())),
        inline: false,
        host: None,
        task: None,
        detached: false,
        lease: 0,
    }));
    let task = tokio::spawn(host(Arc::clone(&link))).abort_handle();
    lock(&link).task = Some(task);
    Ok(Conn {
        sender,
        link,
        open: Some(open),
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A backend that answers each request on a connection with `events` SSE events, the
    /// head and all events in one write. Counts the connections it accepted, and says on
    /// the channel when one ends.
    async fn sse_backend(
        events: usize,
    ) -> (
        Uri,
        Arc<AtomicUsize>,
        tokio::sync::mpsc::UnboundedReceiver<()>,
    ) {
        let (ended, ends) = tokio::sync::mpsc::unbounded_channel();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        let mut answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for i in 0..events {
            let event = format!("data: {i}\n\n");
            answer.extend_from_slice(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes());
        }
        answer.extend_from_slice(b"0\r\n\r\n");
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::Relaxed);
                let answer = answer.clone();
                let ended = ended.clone();
                tokio::spawn(async move {
                    let _ended = SaysEnded(ended);
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let Ok(n @ 1..) = stream.read(&mut buf).await else {
                            return;
                        };
                        seen.extend_from_slice(&buf[..n]);
                        // Requests without a body: one per blank line.
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            if stream.write_all(&answer).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (format!("http://{addr}").parse().unwrap(), accepted, ends)
    }

    /// Says on its channel when the connection it belongs to ends.
    struct SaysEnded(tokio::sync::mpsc::UnboundedSender<()>);

    impl Drop for SaysEnded {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }

    fn get() -> Request<Body> {
        Request::get("/v1/stream")
            .body(crate::http_util::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn events_read_together_come_out_of_the_body_in_one_go_and_the_connection_is_reused() {
        let (base, accepted, _ends) = sse_backend(5).await;
        let backend = Backend::new(base, Duration::from_secs(5), Duration::from_secs(4));
        for round in 0..3 {
            // A hung exchange (a connection nobody drives) fails here rather than hanging.
            let resp = tokio::time::timeout(
                Duration::from_secs(10),
                backend.send(get(), Some(Bytes::new())),
            )
            .await
            .unwrap_or_else(|_| panic!("round {round}: no response head"))
            .unwrap();
            let mut body = std::pin::pin!(resp.into_body());
            // The head and every event came in one write. The body drives its connection
            // itself, so each event is there at once, in a single poll of this task,
            // without waiting for another task to read it.
            let frames = std::future::poll_fn(|cx| {
                let mut frames = Vec::new();
                loop {
                    match body.as_mut().poll_frame(cx) {
                        Poll::Ready(Some(Ok(f))) => frames.push(f.into_data().unwrap()),
                        Poll::Ready(Some(Err(e))) => panic!("round {round}: {e}"),
                        Poll::Ready(None) => return Poll::Ready(frames),
                        // Before the first event the head may have come alone.
                        Poll::Pending if frames.is_empty() => return Poll::Pending,
                        Poll::Pending => panic!("round {round}: pending after {frames:?}"),
                    }
                    if body.is_end_stream() {
                        return Poll::Ready(frames);
                    }
                }
            });
            let frames = tokio::time::timeout(Duration::from_secs(10), frames)
                .await
                .unwrap_or_else(|_| panic!("round {round}: the body never ended"));
            let text: Vec<u8> = frames.concat();
            assert_eq!(
                text, b"data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n",
                "round {round}"
            );
            assert_eq!(backend.idle_connections(), 1, "round {round}: pooled");
        }
        assert_eq!(
            accepted.load(Ordering::Relaxed),
            1,
            "one connection for all"
        );
        assert_eq!(backend.open_connections(), 1);
    }

    #[tokio::test]
    async fn a_response_body_dropped_mid_stream_closes_its_connection_at_once() {
        let (base, accepted, mut ends) = sse_backend(5).await;
        let backend = Backend::new(base, Duration::from_secs(5), Duration::from_secs(4));
        let send = || backend.send(get(), Some(Bytes::new()));
        let resp = send().await.unwrap();
        let closer = resp
            .body()
            .closer()
            .expect("a running response has a closer");
        let mut body = resp.into_body();
        assert!(http_body_util::BodyExt::frame(&mut body).await.is_some());
        drop(body);
        assert_eq!(
            (backend.open_connections(), backend.idle_connections()),
            (0, 0)
        );
        // The backend sees the connection end now, not after the pool's idle timeout.
        tokio::time::timeout(Duration::from_secs(5), ends.recv())
            .await
            .expect("the backend saw its connection close");
        // A closer of a response that ended closes nothing later: the next response's
        // connection stays pooled and is reused.
        let events = 5 * "data: 0\n\n".len();
        let resp = send().await.unwrap();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap();
        assert_eq!(bytes.to_bytes().len(), events);
        closer.close();
        let resp = send().await.unwrap();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap();
        assert_eq!(bytes.to_bytes().len(), events);
        assert_eq!(
            accepted.load(Ordering::Relaxed),
            2,
            "the third reused the second's"
        );
        // A closer of a running response closes it at once.
        let resp = send().await.unwrap();
        resp.body().closer().unwrap().close();
        let mut body = resp.into_body();
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            if frame.is_err() {
                break;
            }
        }
        tokio::time::timeout(Duration::from_secs(5), ends.recv())
            .await
            .expect("the closer closed the connection");
    }
}
