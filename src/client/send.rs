//! One request to an endpoint: route, wrap, send, and retry on another worker while no
//! response has started.
//!
//! Retry rule: a worker that cannot be reached, or answers 429 (`queue_full`) or 503
//! (`not_ready`, `draining`), has done no work the caller could have seen, so the request
//! is routed again (same `request_idx`, so the autoscaler counts it once) and sent to
//! whichever worker comes back, up to `max_attempts` in all. Once a response is handed to
//! the caller it is never replayed: an error mid-stream surfaces from the body.

use super::envelope::{self, Shape};
use super::session::worker_of;
use super::workers::tls_failure;
use super::{COST_HEADER, Client, ClientError};
use crate::http_util::{Body, BoxError, strip_hop_by_hop};
use crate::profile::RequestView;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};
use std::sync::atomic::Ordering;

/// A request to send to an endpoint's backend.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    /// Method, kept on the way to the backend. Default is POST.
    pub method: Method,
    /// Backend path and query, e.g. `/v1/chat/completions`. Must start with `/`.
    pub path: String,
    /// Headers for the backend. Hop-by-hop headers, `Host`, `Content-Length`,
    /// `Authorization` and `X-Serverless-Cost` are not forwarded.
    pub headers: HeaderMap,
    /// The body, in memory so a retry can send it again. Default is empty.
    pub body: Bytes,
    /// Workload estimate. Default is `None`: the `X-Serverless-Cost` header, else the
    /// profile's workload rule, else [`ClientConfig::default_cost`](super::ClientConfig).
    pub cost: Option<f64>,
}

impl ClientRequest {
    /// A request with no body.
    pub fn new(method: Method, path: impl Into<String>) -> ClientRequest {
        ClientRequest {
            method,
            path: path.into(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            cost: None,
        }
    }

    /// A POST of `value` as JSON.
    pub fn post_json(path: impl Into<String>, value: &Value) -> ClientRequest {
        ClientRequest::new(Method::POST, path).body(
            value.to_string(),
            HeaderValue::from_static("application/json"),
        )
    }

    /// Sets the body and its `Content-Type`.
    pub fn body(mut self, body: impl Into<Bytes>, content_type: HeaderValue) -> ClientRequest {
        self.body = body.into();
        self.headers.insert(header::CONTENT_TYPE, content_type);
        self
    }

    /// Sets the workload estimate sent to `/route/` as `cost`.
    pub fn cost(mut self, cost: f64) -> ClientRequest {
        self.cost = Some(cost);
        self
    }
}

impl Client {
    /// The `cost` a request is routed with: the explicit one, else `X-Serverless-Cost`,
    /// else the workload rule of the request's route in the profile, else the default.
    pub fn cost_of(&self, req: &ClientRequest) -> f64 {
        let c = &self.inner.config;
        let header = || {
            req.headers
                .get(COST_HEADER)?
                .to_str()
                .ok()?
                .trim()
                .parse::<f64>()
                .ok()
        };
        let profile = || {
            let view = RequestView {
                path: req.path.split('?').next().unwrap_or_default(),
                body: Some(&req.body),
                body_bytes: Some(req.body.len() as u64),
            };
            c.profile
                .as_ref()?
                .request_workload(&view)
                .inspect_err(|e| {
                    tracing::debug!(path = %view.path, error = %e,
                        "the profile's workload rule cannot size this request; routing it with the default cost");
                })
                .ok()
                .flatten()
        };
        req.cost
            .or_else(header)
            .or_else(profile)
            .filter(|v| v.is_finite() && *v >= 0.0)
            .unwrap_or(c.default_cost)
    }

    /// Sends `req` to a worker of the endpoint and returns the worker's response as soon
    /// as its head arrives; the body streams. See the module docs for retries.
    ///
    /// A 429 or 503 on the last attempt is returned as a response (with the worker's
    /// `Retry-After`), not as an error.
    pub async fn request(&self, req: ClientRequest) -> Result<Response<Body>, ClientError> {
        check_path(&req.path)?;
        let cost = self.cost_of(&req);
        let routed = self.routed(&req, cost).await?;
        Ok(into_response(routed.resp, routed.worker))
    }

    /// Routes `req` with workload `cost` and sends it to the worker assigned, trying again
    /// through `/route/` while a worker is unreachable or answers 429/503 before its
    /// response starts, up to `max_attempts` in all. The last attempt's answer is returned
    /// whatever its status.
    pub(super) async fn routed(
        &self,
        req: &ClientRequest,
        cost: f64,
    ) -> Result<Routed, ClientError> {
        let c = &self.inner.config;
        let shape = envelope::shape(&req.method, &req.headers, &req.body);
        let headers = forward_headers(&req.headers, shape);
        let mut request_idx = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let auth = self.assign(cost, request_idx).await?;
            request_idx = auth
                .get("request_idx")
                .and_then(Value::as_u64)
                .unwrap_or(request_idx);
            let worker = worker_of(&auth);
            let sent = self
                .send_to(&worker, &auth, req, shape, &headers, None)
                .await;
            let last = attempt >= c.max_attempts;
            match sent {
                Ok(resp) if !last && retryable(resp.status()) => {
                    tracing::info!(worker = %worker, status = %resp.status(), attempt,
                        "worker refused before responding; routing again");
                }
                Ok(resp) => return Ok(Routed { resp, worker, auth }),
                Err(e) if !last && (e.is_worker_unavailable() || e.is_worker_tls()) => {
                    tracing::info!(worker = %worker, error = %e, attempt,
                        "worker unreachable; routing again");
                }
                Err(e) => return Err(e.after_attempts(attempt)),
            }
            tokio::time::sleep(c.retry_backoff.delay(attempt - 1)).await;
        }
    }

    /// Sends `req` once to `worker` with `auth` in the given shape; `session` adds the
    /// session id (`session_id` in the envelope, `serverless_session_id` in the query).
    pub(super) async fn send_to(
        &self,
        worker: &str,
        auth: &Map<String, Value>,
        req: &ClientRequest,
        shape: Shape,
        headers: &HeaderMap,
        session: Option<&str>,
    ) -> Result<reqwest::Response, ClientError> {
        let (target, body) = match shape {
            Shape::Envelope => (
                format!("{worker}{}", req.path),
                envelope::envelope(auth, session, &req.body),
            ),
            Shape::Query => (
                format!(
                    "{worker}{}",
                    envelope::with_query_auth(&req.path, auth, session)
                ),
                req.body.clone(),
            ),
        };
        self.inner
            .workers
            .for_url(worker)
            .await?
            .request(req.method.clone(), &target)
            .headers(headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| unreachable(worker.to_string(), 1, e))
    }

    /// `auth_data` for a debug worker: unsigned, with a reqnum/request_idx unique to this
    /// client (never 0, which an unsecured worker would treat as "none").
    pub(super) fn synthetic_auth(&self, url: &str, cost: f64) -> Map<String, Value> {
        let n = self.inner.synthetic.fetch_add(1, Ordering::Relaxed);
        let v = json!({
            "cost": cost, "endpoint": self.inner.config.endpoint, "reqnum": n,
            "request_idx": n, "signature": "", "url": url,
        });
        match v {
            Value::Object(m) => m,
            _ => unreachable!("a JSON object literal"),
        }
    }
}

/// A routed request's answer: the worker's response head, the worker, and the signed
/// `auth_data` it was sent with.
pub(super) struct Routed {
    pub resp: reqwest::Response,
    pub worker: String,
    pub auth: Map<String, Value>,
}

/// A request path must start with `/`.
pub(super) fn check_path(path: &str) -> Result<(), ClientError> {
    if path.starts_with('/') {
        return Ok(());
    }
    Err(ClientError::Config(format!(
        "request path must start with / (got {path:?})"
    )))
}

/// A worker that could not be reached (or whose TLS failed) on attempt `attempts`.
pub(super) fn unreachable(url: String, attempts: u32, e: reqwest::Error) -> ClientError {
    match tls_failure(&e) {
        Some(tls) => ClientError::WorkerTls {
            url,
            attempts,
            reason: tls.to_string(),
            source: e,
        },
        None => ClientError::WorkerUnavailable {
            url,
            attempts,
            source: e,
        },
    }
}

/// Statuses a worker answers when it did no work: try another worker.
pub(super) fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
}

/// The caller's headers as the worker should see them.
pub(super) fn forward_headers(headers: &HeaderMap, shape: Shape) -> HeaderMap {
    let mut out = headers.clone();
    strip_hop_by_hop(&mut out);
    for name in [
        header::HOST,
        header::CONTENT_LENGTH,
        header::AUTHORIZATION,
        HeaderName::from_static(COST_HEADER),
    ] {
        out.remove(name);
    }
    if shape == Shape::Envelope {
        out.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    out
}

/// Which worker answered: a response extension set by [`Client::request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedBy(pub String);

/// The header `vespa proxy` adds to every relayed response: the worker URL that served it.
pub const SERVED_BY_HEADER: &str = "x-vespa-worker";

/// The worker's response with its body streaming, hop-by-hop headers removed, and the
/// worker's URL as a [`ServedBy`] extension.
pub(super) fn into_response(resp: reqwest::Response, worker: String) -> Response<Body> {
    let status = resp.status();
    let mut headers = resp.headers().clone();
    strip_hop_by_hop(&mut headers);
    let body = reqwest::Body::from(resp)
        .map_err(|e| Box::new(e) as BoxError)
        .boxed_unsync();
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out.extensions_mut().insert(ServedBy(worker));
    out
}
