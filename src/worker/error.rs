//! The worker's own error answers, mapped to HTTP in exactly one place ([`WorkerError::into_response`]).
//!
//! Every answer the worker makes itself is JSON `{"error": "<human text>", "code": "<snake_case>"}`
//! (PROTOCOL.md §2), so clients can tell a worker refusal from a backend answer.

use crate::http_util::{Body, json_response};
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

/// 499, nginx's status for a client that closed its request before the answer.
pub const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => panic!("499 is a valid status code"),
};

/// Why the worker answered a request itself instead of relaying the backend's answer.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// 401: the signature did not verify, or no public key is loaded.
    #[error("{0}")]
    InvalidSignature(String),
    /// 413: the request body is larger than `MAX_BODY_SIZE`.
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// 422: the body is not JSON, or envelope fields are missing. `fields` names each
    /// problem field the way PyWorker does (`{"auth_data": {"url": "missing parameter"}}`).
    #[error("{message}")]
    InvalidRequest {
        /// Human text.
        message: String,
        /// Field-by-field details, merged into the body.
        fields: Option<serde_json::Map<String, Value>>,
    },
    /// 429: the estimated wait is above `MAX_WAIT_TIME`.
    #[error("estimated wait {wait:.1} s is above the limit of {limit} s")]
    QueueFull {
        /// Estimated wait, seconds.
        wait: f64,
        /// `MAX_WAIT_TIME`.
        limit: f64,
        /// Seconds until the wait should be under the limit.
        retry_after: u64,
    },
    /// 502: the backend could not be reached or failed before its answer started.
    #[error("backend unavailable: {0}")]
    BackendUnavailable(String),
    /// 503: the worker is not ready to serve (starting, waiting for the backend, errored).
    #[error("worker is not ready: {reason}")]
    NotReady {
        /// What the worker is waiting for.
        reason: String,
        /// Suggested retry delay, seconds.
        retry_after: u64,
    },
    /// 503: the worker is shutting down and takes no new work.
    #[error("worker is draining: it finishes in-flight work and takes no new requests")]
    Draining,
    /// 504: the backend did not start answering within `RESPONSE_START_TIMEOUT`.
    #[error("backend did not start answering within {0:.1} s")]
    BackendTimeout(f64),
    /// 404 for an unknown `/_vespa/` route.
    #[error("no such worker route: {0}")]
    NotFound(String),
    /// 503: request bodies already held in memory fill `MAX_BUFFERED_BYTES`.
    #[error(
        "the worker is holding as many request bodies as it may (MAX_BUFFERED_BYTES); retry shortly"
    )]
    Overloaded,
    /// 401 on a control route (`/pyworker/update`) without the right `MASTER_TOKEN`.
    #[error("unauthorized")]
    Unauthorized,
    /// 500: the rolling update's marker file could not be written.
    #[error("failed to write file: {0}")]
    UpdateFailed(String),
    /// 408: the client stopped sending its request body for longer than
    /// `BODY_READ_TIMEOUT`. The connection is closed after the answer.
    #[error("the client sent no request body bytes for {0:.1} s")]
    RequestTimeout(f64),
    /// 499 (nginx's "client closed request"): the client closed its connection before its
    /// request body was complete. Nobody reads this answer; it is counted `client_gone`.
    #[error("the client closed the connection before its request body was complete")]
    ClientGone,
    /// 400: `/session/end` or `/session/get` names a session this worker does not hold; the
    /// text is the `vastai` worker's for each route.
    #[error("{0}")]
    SessionNotFound(String),
    /// 401: `session_auth` is not the `auth_data` the session was created with.
    #[error("session_auth is not valid")]
    InvalidSessionAuth,
    /// 410: the request names a session that is not open (never was, ended or expired).
    #[error("invalid session")]
    InvalidSession,
    /// 410: the request's session closed (ended, expired, or the worker drained) before the
    /// backend's answer started; the backend request was cancelled.
    #[error("the session closed before the backend answered; the request was cancelled")]
    SessionClosed,
    /// 429: `MAX_SESSIONS` sessions are open.
    #[error("too many open sessions: this worker holds at most {max} (MAX_SESSIONS)")]
    TooManySessions {
        /// `MAX_SESSIONS`.
        max: usize,
    },
}

impl WorkerError {
    /// HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidSignature(_) => StatusCode::UNAUTHORIZED,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidRequest { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BackendUnavailable(_) => StatusCode::BAD_GATEWAY,
            Self::NotReady { .. } | Self::Draining | Self::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::BackendTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::UpdateFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::ClientGone => CLIENT_CLOSED_REQUEST,
            Self::SessionNotFound(_) => StatusCode::BAD_REQUEST,
            Self::InvalidSessionAuth => StatusCode::UNAUTHORIZED,
            Self::InvalidSession | Self::SessionClosed => StatusCode::GONE,
            Self::TooManySessions { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// Stable machine-readable code (the `code` field).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidSignature(_) => "invalid_signature",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::QueueFull { .. } => "queue_full",
            Self::BackendUnavailable(_) => "backend_unavailable",
            Self::NotReady { .. } => "not_ready",
            Self::Draining => "draining",
            Self::BackendTimeout(_) => "backend_timeout",
            Self::NotFound(_) => "not_found",
            Self::Unauthorized => "unauthorized",
            Self::Overloaded => "overloaded",
            Self::UpdateFailed(_) => "update_failed",
            Self::RequestTimeout(_) => "request_timeout",
            Self::ClientGone => "client_gone",
            Self::SessionNotFound(_) => "session_not_found",
            Self::InvalidSessionAuth => "invalid_session_auth",
            Self::InvalidSession => "invalid_session",
            Self::SessionClosed => "session_closed",
            Self::TooManySessions { .. } => "too_many_sessions",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::QueueFull { retry_after, .. } | Self::NotReady { retry_after, .. } => {
                Some(*retry_after)
            }
            Self::Overloaded => Some(1),
            _ => None,
        }
    }

    /// The JSON answer for this error.
    pub fn into_response(self) -> Response<Body> {
        let mut body = serde_json::Map::new();
        if let Self::InvalidRequest {
            fields: Some(fields),
            ..
        } = &self
        {
            body.extend(fields.clone());
        }
        body.insert("error".into(), json!(self.to_string()));
        body.insert("code".into(), json!(self.code()));
        let mut resp = json_response(self.status(), &Value::Object(body));
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.clamp(1, 3600)));
        }
        if matches!(self, Self::RequestTimeout(_)) {
            // The rest of the body may still come; the connection cannot be reused.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(resp: Response<Body>) -> Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn invalid_request_merges_field_errors_with_code() {
        let mut fields = serde_json::Map::new();
        fields.insert("auth_data".into(), json!({"url": "missing parameter"}));
        let e = WorkerError::InvalidRequest {
            message: "missing fields: auth_data.url".into(),
            fields: Some(fields),
        };
        let resp = e.into_response();
        assert_eq!(resp.status(), 422);
        let v = body_json(resp).await;
        assert_eq!(v["auth_data"]["url"], "missing parameter");
        assert_eq!(v["code"], "invalid_request");
        assert_eq!(v["error"], "missing fields: auth_data.url");
    }

    #[tokio::test]
    async fn queue_full_carries_retry_after() {
        let resp = WorkerError::QueueFull {
            wait: 12.0,
            limit: 10.0,
            retry_after: 2,
        }
        .into_response();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        assert_eq!(body_json(resp).await["code"], "queue_full");
    }
}
