//! Translation between the client's request and the backend's (PROTOCOL.md §2,
//! "Forwarding"), and the send that waits for the backend's response head.

use super::backend::{Backend, BackendError, ResponseBody, UpgradeAnswer};
use super::envelope::{Inbound, Payload};
use super::error::WorkerError;
use super::websocket::{Accepted, ClientUpgrade, restore_upgrade_headers};
use crate::http_util::{Body, copy_end_to_end, full};
use crate::serve::read_timeout::BodyReadTimeout;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::sync::Arc;
use std::time::Duration;

/// The forwarding stage of one worker: the backend and how requests reach it.
#[derive(Debug)]
pub struct Forward {
    /// The model server.
    pub backend: Arc<Backend>,
    /// Limit on a streamed request body, bytes.
    pub max_body_size: u64,
    /// Limit on the wait for the backend's response head; `None` waits as long as it takes.
    pub response_start_timeout: Option<Duration>,
}

/// What the backend answered a request with.
pub enum Sent {
    /// A response, relayed to the client.
    Response(Response<ResponseBody>),
    /// `101 Switching Protocols` to a WebSocket handshake: the socket to relay.
    Switched(Accepted),
}

impl Sent {
    /// The backend's status.
    pub fn status(&self) -> StatusCode {
        match self {
            Sent::Response(r) => r.status(),
            Sent::Switched(s) => s.backend.head.status,
        }
    }
}

impl Forward {
    /// Sends the client's request to the backend and waits for the response head.
    pub async fn send(
        &self,
        parts: &Parts,
        inbound: Inbound,
    ) -> Result<Response<ResponseBody>, WorkerError> {
        let (req, replay) = backend_request(&self.backend, parts, inbound, self.max_body_size);
        self.answer(|| self.backend.send(req, replay)).await
    }

    /// Sends a WebSocket handshake to the backend, with its upgrade headers and no body,
    /// and waits for the answer's head: `101` gives the socket to relay, anything else is
    /// a response like any other.
    pub async fn upgrade(
        &self,
        parts: &Parts,
        inbound: Inbound,
        client: ClientUpgrade,
    ) -> Result<Sent, WorkerError> {
        let (mut req, _) = backend_request(&self.backend, parts, inbound, self.max_body_size);
        *req.body_mut() = crate::http_util::empty();
        restore_upgrade_headers(&parts.headers, req.headers_mut());
        Ok(match self.answer(|| self.backend.upgrade(req)).await? {
            UpgradeAnswer::Refused(resp) => Sent::Response(resp),
            UpgradeAnswer::Switched(backend) => Sent::Switched(Accepted { client, backend }),
        })
    }

    /// The backend's answer to `send()` within `RESPONSE_START_TIMEOUT`, its failure as
    /// the client's error.
    ///
    /// Internal: given the send to make rather than its future, which, as an argument of
    /// an `async fn`, would be held twice (the argument, and the future being awaited) in
    /// every request's future.
    async fn answer<T, F>(&self, send: impl FnOnce() -> F) -> Result<T, WorkerError>
    where
        F: Future<Output = Result<T, BackendError>>,
    {
        let sent = match self.response_start_timeout {
            Some(limit) => tokio::time::timeout(limit, send())
                .await
                .map_err(|_| WorkerError::BackendTimeout(limit.as_secs_f64()))?,
            None => send().await,
        };
        sent.map_err(|e| {
            if let Some(t) = BodyReadTimeout::find(&e) {
                // The client, not the backend, stopped the upload.
                return WorkerError::RequestTimeout(t.0);
            }
            if exceeded_limit(&e) {
                // A streamed upload without a Content-Length went past MAX_BODY_SIZE.
                return WorkerError::BodyTooLarge {
                    limit: self.max_body_size,
                };
            }
            tracing::warn!(error = %e, "backend request failed");
            // The client hears what happened, never where the backend is.
            WorkerError::BackendUnavailable(e.kind().to_string())
        })
    }
}

/// Whether `err` or one of its sources is the streamed body's `MAX_BODY_SIZE` limit.
fn exceeded_limit(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<LengthLimitError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Request headers the worker never forwards, besides hop-by-hop ones: `Host` (set to the
/// backend's), `Content-Length` (recomputed), `Authorization` (the client's key is for the
/// endpoint, not the backend; the backend's own key, `BACKEND_API_KEY`, is added by
/// [`Backend`]) and `Expect` (the worker already has the body).
const NOT_FORWARDED: [HeaderName; 4] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::AUTHORIZATION,
    header::EXPECT,
];

/// Builds the backend request: the client's method, path and (filtered) query, headers
/// minus the ones above, and the payload. Returns the complete body too when it can be
/// replayed on a retry.
pub fn backend_request(
    backend: &Backend,
    parts: &Parts,
    inbound: Inbound,
    max_body_size: u64,
) -> (Request<Body>, Option<Bytes>) {
    let mut headers = copy_end_to_end(&parts.headers, &NOT_FORWARDED);
    let (body, replay) = match inbound.payload {
        Payload::None => {
            if inbound.auth.is_some() {
                // The envelope's own Content-Type described the envelope, not a body.
                headers.remove(header::CONTENT_TYPE);
            }
            (crate::http_util::empty(), Some(Bytes::new()))
        }
        Payload::Json(bytes) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            (full(bytes.clone()), Some(bytes))
        }
        Payload::Raw(bytes) => (full(bytes.clone()), Some(bytes)),
        Payload::Stream(incoming) => (
            Limited::new(incoming, max_body_size as usize).boxed_unsync(),
            None,
        ),
    };
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = backend.target_of(&parts.uri, inbound.query.as_deref());
    *req.headers_mut() = headers;
    (req, replay)
}
