//! The request record: what the worker knows of one proxied request, classified once when
//! the request ends, feeding both the metrics and the access log.
//!
//! A [`Record`] is made when the request arrives and travels with it, like the admission
//! guard: in the handler's future while the request is read, admitted and sent, then in the
//! response body while it is relayed. It ends exactly once: [`Record::refuse`] when the
//! worker answers itself, [`Record::finish`] when the relay ends, or its `Drop` when the
//! client went away and hyper dropped whatever held it (counted `client_gone`).

use super::Observer;
use super::headers::{self, SERVER_TIMING, X_REQUEST_ID};
use super::metrics::RequestOutcome;
use crate::http_util::Body;
use crate::worker::error::WorkerError;
use crate::worker::ledger::RequestInfo;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body::Body as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `code` label and log status of a request whose client left before any response head
/// was sent (nginx's convention).
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// How a relayed response ended, as the relay saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The body was handed over to its last frame.
    Relayed,
    /// The backend's body failed mid-way.
    BackendFailed,
    /// The backend sent nothing for longer than `IDLE_TIMEOUT`.
    BackendIdle,
    /// The client went away (or stopped reading, past `SEND_TIMEOUT`).
    ClientGone,
    /// The request's session closed mid-body; the response was cut.
    SessionClosed,
}

/// The outcome of a request the worker answered itself with `error`.
///
/// Internal: every variant is listed, so a new error must be given an outcome here.
pub fn refused_outcome(error: &WorkerError) -> RequestOutcome {
    match error {
        WorkerError::InvalidSignature(_) | WorkerError::Unauthorized => {
            RequestOutcome::Unauthorized
        }
        WorkerError::InvalidSessionAuth => RequestOutcome::Unauthorized,
        WorkerError::BodyTooLarge { .. }
        | WorkerError::InvalidRequest { .. }
        | WorkerError::NotFound(_)
        | WorkerError::SessionNotFound(_) => RequestOutcome::Invalid,
        WorkerError::QueueFull { .. }
        | WorkerError::NotReady { .. }
        | WorkerError::Draining
        | WorkerError::Overloaded
        | WorkerError::TooManySessions { .. } => RequestOutcome::Rejected,
        WorkerError::InvalidSession | WorkerError::SessionClosed => RequestOutcome::SessionClosed,
        WorkerError::BackendUnavailable(_) | WorkerError::UpdateFailed(_) => {
            RequestOutcome::BackendError
        }
        WorkerError::BackendTimeout(_) | WorkerError::RequestTimeout(_) => RequestOutcome::Timeout,
        WorkerError::ClientGone => RequestOutcome::ClientGone,
    }
}

/// The outcome of a relayed response with status `status` that ended as `ending`.
pub fn relayed_outcome(status: Option<StatusCode>, ending: Ending) -> RequestOutcome {
    match ending {
        Ending::Relayed if status.is_some_and(|s| s.is_server_error()) => {
            RequestOutcome::BackendError
        }
        Ending::Relayed => RequestOutcome::Ok,
        Ending::BackendFailed => RequestOutcome::BackendError,
        Ending::BackendIdle => RequestOutcome::Timeout,
        Ending::ClientGone => RequestOutcome::ClientGone,
        Ending::SessionClosed => RequestOutcome::SessionClosed,
    }
}

/// One proxied request, from arrival to its end. Dropped unfinished, it records
/// `client_gone`.
#[derive(Debug)]
pub struct Record {
    observer: Arc<Observer>,
    started: Instant,
    method: Method,
    /// The request's path, in storage of its own (see [`headers::owned`]).
    path: Box<str>,
    client: Option<SocketAddr>,
    id: HeaderValue,
    traceparent: Option<HeaderValue>,
    status: Option<StatusCode>,
    workload: Option<f64>,
    request_idx: Option<u64>,
    queue: Option<Duration>,
    ttfb: Option<Duration>,
    bytes_in: Option<u64>,
    bytes_out: u64,
    last_frame: Option<Instant>,
    done: bool,
}

impl Record {
    pub(super) fn new(
        observer: Arc<Observer>,
        parts: &http::request::Parts,
        client: Option<SocketAddr>,
        id: HeaderValue,
    ) -> Self {
        let bytes_in = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        Self {
            observer,
            started: Instant::now(),
            method: parts.method.clone(),
            path: parts.uri.path().into(),
            client,
            id,
            traceparent: parts.headers.get(&headers::TRACEPARENT).map(headers::owned),
            status: None,
            workload: None,
            request_idx: None,
            queue: None,
            ttfb: None,
            bytes_in,
            bytes_out: 0,
            last_frame: None,
            done: false,
        }
    }

    /// The request id (`X-Request-Id`), as sent to the backend and returned to the client.
    pub fn id(&self) -> &HeaderValue {
        &self.id
    }

    /// The request's identity and workload, once admission sized it.
    pub fn describe(&mut self, info: &RequestInfo) {
        self.workload = Some(info.workload);
        self.request_idx = Some(info.request_idx);
    }

    /// The request body was read into memory: `len` bytes.
    pub fn body_read(&mut self, len: u64) {
        self.bytes_in = Some(len);
    }

    /// The request got its backend slot after waiting `wait`.
    pub fn queued(&mut self, wait: Duration) {
        self.queue = Some(wait);
        self.observer.metrics.queue_wait(wait.as_secs_f64());
    }

    /// The backend's response head (`status`) arrived `ttfb` after the request was sent.
    pub fn answered(&mut self, status: StatusCode, ttfb: Duration) {
        self.status = Some(status);
        self.ttfb = Some(ttfb);
        self.observer.metrics.time_to_first_byte(ttfb.as_secs_f64());
    }

    /// A body frame of `len` bytes was handed to the client.
    pub fn frame(&mut self, len: usize) {
        let now = Instant::now();
        if let Some(prev) = self.last_frame {
            let gap = now.saturating_duration_since(prev);
            self.observer.metrics.stream_gap(gap.as_secs_f64());
        }
        self.last_frame = Some(now);
        self.bytes_out += len as u64;
    }

    /// An upgraded connection (a WebSocket) relayed `to_backend` bytes from the client and
    /// `to_client` bytes back: its bytes in and out.
    pub fn relayed(&mut self, to_backend: u64, to_client: u64) {
        self.bytes_in = Some(to_backend);
        self.bytes_out = to_client;
    }

    /// Adds `X-Request-Id` and the worker's `Server-Timing` to a response head.
    pub fn stamp(&self, headers: &mut HeaderMap) {
        headers.insert(X_REQUEST_ID.clone(), self.id.clone());
        if let Some(timing) = headers::server_timing(self.queue, self.ttfb) {
            headers.append(SERVER_TIMING.clone(), timing);
        }
    }

    /// The worker's own answer for `error`; the request ends here.
    pub fn refuse(mut self, error: WorkerError) -> Response<Body> {
        let outcome = refused_outcome(&error);
        let mut resp = error.into_response();
        self.stamp(resp.headers_mut());
        self.status = Some(resp.status());
        self.bytes_out = resp.body().size_hint().exact().unwrap_or(0);
        self.end(outcome);
        resp
    }

    /// The worker's own successful answer `resp` (a `/session/*` route); the request ends
    /// here, `ok`.
    pub fn answer(mut self, mut resp: Response<Body>) -> Response<Body> {
        self.stamp(resp.headers_mut());
        self.status = Some(resp.status());
        self.bytes_out = resp.body().size_hint().exact().unwrap_or(0);
        self.end(RequestOutcome::Ok);
        resp
    }

    /// Ends a relayed request.
    pub fn finish(mut self, ending: Ending) {
        self.end(relayed_outcome(self.status, ending));
    }

    fn end(&mut self, outcome: RequestOutcome) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let total = self.started.elapsed();
        let code = self.status.map_or(CLIENT_CLOSED_REQUEST, |s| s.as_u16());
        self.observer
            .metrics
            .request(code, outcome, total.as_secs_f64());
        if self.observer.access_log {
            self.log(code, outcome, total);
        }
    }

    fn log(&self, status: u16, outcome: RequestOutcome, total: Duration) {
        if crate::logging::plain_access_lines() {
            crate::logging::access_line(|line| self.access_fields(line, status, outcome, total));
        } else {
            self.access_event(status, outcome, total);
        }
    }

    /// The access line's fields as the text subscriber writes them (` k=v`, numbers as
    /// `tracing` records them, absent ones left out), for [`crate::logging::access_line`].
    fn access_fields(
        &self,
        line: &mut String,
        status: u16,
        outcome: RequestOutcome,
        total: Duration,
    ) {
        use std::fmt::Write as _;
        let ms = |d: Duration| d.as_micros() as f64 / 1000.0;
        let _ = write!(
            line,
            " method={} path={} status={status} outcome={outcome}",
            self.method, self.path
        );
        if let Some(w) = self.workload {
            let _ = write!(line, " workload={w:?}");
        }
        if let Some(i) = self.request_idx {
            let _ = write!(line, " request_idx={i}");
        }
        if let Some(q) = self.queue {
            let _ = write!(line, " queue_ms={:?}", ms(q));
        }
        if let Some(t) = self.ttfb {
            let _ = write!(line, " ttfb_ms={:?}", ms(t));
        }
        let _ = write!(line, " total_ms={:?}", ms(total));
        if let Some(b) = self.bytes_in {
            let _ = write!(line, " bytes_in={b}");
        }
        let _ = write!(line, " bytes_out={}", self.bytes_out);
        if let Some(c) = &self.client {
            let _ = write!(line, " client={c}");
        }
        let _ = write!(line, " request_id={}", self.id.to_str().unwrap_or(""));
        if let Some(t) = self.traceparent.as_ref().and_then(headers::trace_id) {
            let _ = write!(line, " trace_id={t}");
        }
    }

    /// The access line as a `tracing` event (JSON logs, colours, a `RUST_LOG` filter).
    fn access_event(&self, status: u16, outcome: RequestOutcome, total: Duration) {
        let ms = |d: Duration| d.as_micros() as f64 / 1000.0;
        tracing::info!(
            target: crate::logging::ACCESS_TARGET,
            method = %self.method,
            path = %self.path,
            status,
            outcome = %outcome,
            workload = self.workload,
            request_idx = self.request_idx,
            queue_ms = self.queue.map(ms),
            ttfb_ms = self.ttfb.map(ms),
            total_ms = ms(total),
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            client = self.client.as_ref().map(tracing::field::display),
            request_id = %self.id.to_str().unwrap_or(""),
            trace_id = self
                .traceparent
                .as_ref()
                .and_then(headers::trace_id)
                .map(tracing::field::display),
            "request"
        );
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        self.end(RequestOutcome::ClientGone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `tracing` writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_record_keeps_nothing_of_the_buffer_its_request_was_read_from() {
        // As hyper parses a request: every part a slice of the connection's read buffer.
        let head =
            "/v1/completions?a=1 abc-123 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let buffer = bytes::Bytes::from(head.as_bytes().to_vec());
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.uri = http::Uri::from_maybe_shared(buffer.slice(0..19)).unwrap();
        let id = HeaderValue::from_maybe_shared(buffer.slice(20..27)).unwrap();
        let traceparent = HeaderValue::from_maybe_shared(buffer.slice(28..)).unwrap();
        parts.headers.insert(X_REQUEST_ID.clone(), id);
        parts
            .headers
            .insert(headers::TRACEPARENT.clone(), traceparent);
        let record = super::super::tests::observer().record(&mut parts, None);
        drop(parts);
        assert!(
            buffer.is_unique(),
            "the record holds a slice of the read buffer"
        );
        assert_eq!(&*record.path, "/v1/completions");
        assert_eq!(record.id(), "abc-123");
        assert_eq!(
            record.traceparent.as_ref().and_then(headers::trace_id),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn the_plain_access_line_is_the_text_subscribers_line() {
        let metrics = super::super::metrics::Metrics::new(super::super::metrics::report_counters());
        let observer = Arc::new(Observer::new(metrics, false, Default::default()));
        let req = http::Request::post("/v1/chat/completions?x=1")
            .header("content-length", "56")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(())
            .unwrap();
        let (mut parts, ()) = req.into_parts();
        let client = Some("127.0.0.1:48016".parse().unwrap());
        let mut record = observer.record(&mut parts, client);
        record.workload = Some(1.0);
        record.request_idx = Some(7);
        record.queue = Some(Duration::from_micros(1));
        record.ttfb = Some(Duration::from_micros(2_500));
        record.bytes_out = 123;
        let total = Duration::from_micros(2_374);
        let mut fields = String::new();
        record.access_fields(&mut fields, 200, RequestOutcome::Ok, total);
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .without_time()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            record.access_event(200, RequestOutcome::Ok, total)
        });
        let line = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(line, format!(" INFO vespa::access: request{fields}\n"));
        assert!(
            fields.contains(" trace_id=4bf92f3577b34da6a3ce929d0e0e4736"),
            "{fields}"
        );
        // Absent values are left out, as the subscriber does.
        record.queue = None;
        record.bytes_in = None;
        fields.clear();
        record.access_fields(&mut fields, 499, RequestOutcome::ClientGone, total);
        assert!(
            !fields.contains("queue_ms") && !fields.contains("bytes_in"),
            "{fields}"
        );
        record.done = true;
    }

    #[test]
    fn relayed_backend_5xx_is_a_backend_error_and_4xx_is_ok() {
        let s = |c| Some(StatusCode::from_u16(c).unwrap());
        assert_eq!(
            relayed_outcome(s(500), Ending::Relayed),
            RequestOutcome::BackendError
        );
        assert_eq!(relayed_outcome(s(404), Ending::Relayed), RequestOutcome::Ok);
        assert_eq!(
            relayed_outcome(s(200), Ending::BackendIdle),
            RequestOutcome::Timeout
        );
        assert_eq!(
            relayed_outcome(None, Ending::ClientGone),
            RequestOutcome::ClientGone
        );
    }

    #[test]
    fn worker_refusals_are_classified_by_cause() {
        let cases = [
            (
                WorkerError::QueueFull {
                    wait: 2.0,
                    limit: 1.0,
                    retry_after: 1,
                },
                RequestOutcome::Rejected,
            ),
            (WorkerError::Draining, RequestOutcome::Rejected),
            (
                WorkerError::InvalidSignature("bad".into()),
                RequestOutcome::Unauthorized,
            ),
            (
                WorkerError::BodyTooLarge { limit: 1 },
                RequestOutcome::Invalid,
            ),
            (
                WorkerError::BackendUnavailable("refused".into()),
                RequestOutcome::BackendError,
            ),
            (WorkerError::BackendTimeout(1.0), RequestOutcome::Timeout),
            (WorkerError::RequestTimeout(1.0), RequestOutcome::Timeout),
        ];
        for (error, outcome) in cases {
            assert_eq!(refused_outcome(&error), outcome, "{error:?}");
        }
    }
}
