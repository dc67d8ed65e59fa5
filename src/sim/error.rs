//! The sim's error answers, mapped to HTTP in exactly one place ([`SimError::into_response`]).
//!
//! Errors use the OpenAI shape `{"error": {"message": "...", "type": "<snake_case>"}}` on
//! every API: the sim stands in for a model server, and clients of all three APIs surface a
//! JSON body with a message.

use crate::http_util::{Body, json_response};
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

/// Why the sim refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// 400: the body is not JSON, or a field has the wrong type.
    #[error("{0}")]
    BadRequest(String),
    /// 413: the body is larger than the sim reads.
    #[error("request body is larger than the limit of {0} bytes")]
    BodyTooLarge(usize),
    /// 404: no such route.
    #[error("no such route: {0}")]
    NotFound(String),
    /// 405: the route exists but not for this method.
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed {
        /// The method the request used.
        method: String,
        /// The method the route accepts, for the `Allow` header.
        allow: &'static str,
    },
    /// 503: the start-up delay is not over.
    #[error("the model is still loading (--startup-delay)")]
    Starting,
    /// 500: injected by `--error-rate`.
    #[error("simulated server error (--error-rate)")]
    Injected,
    /// 400: a ComfyUI prompt that cannot run, answered in ComfyUI's shape
    /// `{"error": {"type", "message", "details", "extra_info"}, "node_errors": {}}`.
    #[error("{message}")]
    InvalidPrompt {
        /// ComfyUI's error type: `no_prompt`, `prompt_no_outputs`, `invalid_prompt`.
        kind: &'static str,
        /// ComfyUI's message.
        message: &'static str,
        /// Which part of the prompt, if any.
        details: String,
    },
}

impl SimError {
    /// A 400 with `message`.
    pub(crate) fn bad(message: impl Into<String>) -> SimError {
        SimError::BadRequest(message.into())
    }

    /// HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::InvalidPrompt { .. } => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Starting => StatusCode::SERVICE_UNAVAILABLE,
            Self::Injected => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the client sent a request the sim cannot take (400, 413): counted as
    /// `invalid`.
    pub fn is_invalid_request(&self) -> bool {
        matches!(
            self,
            Self::BadRequest(_) | Self::BodyTooLarge(_) | Self::InvalidPrompt { .. }
        )
    }

    /// The stable `type` of the JSON answer.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "invalid_request",
            Self::BodyTooLarge(_) => "body_too_large",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::Starting => "loading",
            Self::Injected => "server_error",
            Self::InvalidPrompt { kind, .. } => kind,
        }
    }

    /// The JSON answer.
    pub fn into_response(self) -> Response<Body> {
        if let Self::InvalidPrompt {
            kind,
            message,
            details,
        } = &self
        {
            let body = json!({
                "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
                "node_errors": {},
            });
            return json_response(self.status(), &body);
        }
        let body = json!({"error": {"message": self.to_string(), "type": self.kind()}});
        let mut resp = json_response(self.status(), &body);
        if let Self::MethodNotAllowed { allow, .. } = self {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        resp
    }
}
