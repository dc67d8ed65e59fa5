//! The autoscaler's error answers, mapped to HTTP in exactly one place
//! ([`AutoscalerError::into_response`]).
//!
//! Every refusal is JSON `{"error": "<human text>", "code": "<snake_case>"}`, the same shape
//! the worker uses (PROTOCOL.md §2), so the client library can surface it as is.

use crate::http_util::{Body, json_response};
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

/// Why the autoscaler refused a request.
#[derive(Debug, thiserror::Error)]
pub enum AutoscalerError {
    /// 400: the body is not JSON, or not a JSON object.
    #[error("body is not a JSON object: {0}")]
    BadJson(String),
    /// 422: the body is a JSON object but a field is missing or has the wrong type.
    #[error("{0}")]
    InvalidRequest(String),
    /// 413: the body is larger than the autoscaler reads.
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit, bytes.
        limit: usize,
    },
    /// 401: no API key, or not the key of the endpoint.
    #[error("{0}")]
    InvalidApiKey(&'static str),
    /// 401: `mtoken` is not the configured master token.
    #[error("missing or wrong mtoken")]
    InvalidToken,
    /// 401: `Authorization: Bearer` does not hold the master token (`GET /metrics`).
    #[error("missing or wrong master token: send Authorization: Bearer <master token>")]
    InvalidBearerToken,
    /// 404: no endpoint of that name is configured.
    #[error("unknown endpoint: {0:?}")]
    UnknownEndpoint(String),
    /// 404: no such route.
    #[error("no such route: {0}")]
    NotFound(String),
    /// 405: the route exists but not for this method.
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed {
        /// The method the request used.
        method: String,
        /// The methods the route accepts, for the `Allow` header.
        allow: &'static str,
    },
    /// 500: signing failed (not expected for a key that loaded).
    #[error("signing failed: {0}")]
    Signing(#[from] crate::signing::KeyError),
}

impl AutoscalerError {
    /// HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadJson(_) => StatusCode::BAD_REQUEST,
            Self::InvalidRequest(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidApiKey(_) | Self::InvalidToken | Self::InvalidBearerToken => {
                StatusCode::UNAUTHORIZED
            }
            Self::UnknownEndpoint(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Signing(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code (the `code` field).
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadJson(_) => "invalid_json",
            Self::InvalidRequest(_) => "invalid_request",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::InvalidApiKey(_) => "invalid_api_key",
            Self::InvalidToken | Self::InvalidBearerToken => "invalid_token",
            Self::UnknownEndpoint(_) => "unknown_endpoint",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::Signing(_) => "internal_error",
        }
    }

    /// The JSON answer for this error.
    pub fn into_response(self) -> Response<Body> {
        let body = json!({"error": self.to_string(), "code": self.code()});
        let mut resp = json_response(self.status(), &body);
        if let Self::MethodNotAllowed { allow, .. } = self {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn method_not_allowed_names_the_allowed_methods() {
        let resp = AutoscalerError::MethodNotAllowed {
            method: "GET".into(),
            allow: "POST",
        }
        .into_response();
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()[header::ALLOW], "POST");
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["code"], "method_not_allowed");
    }
}
