//! HTTP handlers: `/pubkey/`, `/route/`, `/worker_status/`, `/delete_requests/`,
//! `/get_endpoint_workers/`, `/metrics`. The trailing slash is optional.
//!
//! Every handler returns `Result<_, AutoscalerError>`; [`handle`] turns errors into their
//! JSON answers in one place. `/route/` and the reports count their result in
//! [`Metrics`](super::metrics::Metrics) whether they succeed or not.

use super::Shared;
use super::config::WorkerAuth;
use super::error::AutoscalerError;
use super::messages::{DeleteRequests, Report, RouteRequest};
use super::metrics::{ReportKind, ReportResult, RouteResult, pool_snapshot};
use crate::http_util::{Body, full, json_response};
use crate::signing::{SignatureForm, legacy_message, url_message};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

/// Largest `/route/` and `/get_endpoint_workers/` body read. Reports have their own,
/// configured limits (`max_report_body`, `max_delete_body`).
pub const MAX_BODY: usize = 1 << 20;

/// Serves one request. Never fails: errors become JSON answers.
pub async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    dispatch(shared, req).await.unwrap_or_else(|e| {
        tracing::debug!(status = %e.status(), error = %e, "request refused");
        e.into_response()
    })
}

async fn dispatch(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<Body>, AutoscalerError> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let method = req.method();
    match path.as_str() {
        "/pubkey" => {
            allow(method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            Ok(pubkey(shared))
        }
        "/route" => {
            allow(method, &[Method::POST], "POST")?;
            route(shared, req).await
        }
        "/worker_status" => {
            allow(method, &[Method::POST], "POST")?;
            let taken = worker_status(shared, req).await;
            report_answer(shared, ReportKind::Status, taken)
        }
        "/delete_requests" => {
            allow(method, &[Method::POST], "POST")?;
            let taken = delete_requests(shared, req).await;
            report_answer(shared, ReportKind::DeleteRequests, taken)
        }
        "/get_endpoint_workers" => {
            allow(method, &[Method::GET, Method::POST], "GET, POST")?;
            endpoint_workers(shared, req).await
        }
        "/metrics" => {
            allow(method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            holds_master_token(shared, req.headers())?;
            Ok(metrics(shared))
        }
        _ => Err(AutoscalerError::NotFound(req.uri().path().to_string())),
    }
}

fn allow(method: &Method, allowed: &[Method], allow: &'static str) -> Result<(), AutoscalerError> {
    if allowed.contains(method) {
        return Ok(());
    }
    Err(AutoscalerError::MethodNotAllowed {
        method: method.to_string(),
        allow,
    })
}

/// `GET /pubkey/`: the signing key's public half, SubjectPublicKeyInfo PEM.
fn pubkey(shared: &Shared) -> Response<Body> {
    let pem = shared.config.signing_key.public_key_pem().to_string();
    let mut resp = Response::new(full(pem));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// `POST /route/` (PROTOCOL.md §1).
async fn route(shared: &Shared, req: Request<Incoming>) -> Result<Response<Body>, AutoscalerError> {
    let metrics = &shared.metrics;
    let (parts, body) = req.into_parts();
    let r = match read_object(body, MAX_BODY, false).await {
        Ok(body) => RouteRequest::parse(&body),
        Err(e) => Err(e),
    }
    .inspect_err(|e| metrics.route(None, RouteResult::of(e)))?;
    let key = bearer(&parts.headers).or(r.api_key.as_deref());
    authenticate(shared, &r.endpoint, key)
        .inspect_err(|e| metrics.route(Some(&r.endpoint), RouteResult::of(e)))?;

    let (request_idx, routed) = {
        let mut registry = shared.registry();
        let idx = registry.request_idx(r.request_idx);
        (
            idx,
            registry.route(&r.endpoint, idx, r.units, Instant::now()),
        )
    };
    let assignment = match routed {
        Ok(a) => a,
        Err(census) => {
            tracing::debug!(endpoint = %r.endpoint, request_idx, ?census, "no worker ready");
            metrics.route(Some(&r.endpoint), RouteResult::NoWorker);
            let answer =
                json!({"endpoint": r.endpoint, "request_idx": request_idx, "status": census});
            return Ok(json_response(StatusCode::OK, &answer));
        }
    };
    let mut auth = Map::new();
    auth.insert("cost".into(), r.cost);
    auth.insert("endpoint".into(), Value::String(r.endpoint));
    auth.insert("reqnum".into(), assignment.reqnum.into());
    auth.insert("request_idx".into(), request_idx.into());
    auth.insert("url".into(), Value::String(assignment.url));
    let message = match shared.config.signature_form {
        SignatureForm::Legacy => legacy_message(&auth),
        SignatureForm::Url | SignatureForm::Any => url_message(&auth),
    };
    let signed = shared.config.signing_key.sign(message.as_bytes());
    let result = match signed {
        Ok(_) => RouteResult::Routed,
        Err(_) => RouteResult::Error,
    };
    metrics.route(auth.get("endpoint").and_then(Value::as_str), result);
    let signature = signed?;
    auth.insert("signature".into(), Value::String(signature));
    auth.insert(
        "__request_id".into(),
        Value::String(shared.next_request_id()),
    );
    tracing::debug!(
        worker = assignment.worker_id,
        reqnum = assignment.reqnum,
        request_idx,
        "routed"
    );
    Ok(json_response(StatusCode::OK, &Value::Object(auth)))
}

/// Counts a report of `kind` that was `taken` (or refused) and answers it: `{}` when taken.
fn report_answer(
    shared: &Shared,
    kind: ReportKind,
    taken: Result<ReportResult, AutoscalerError>,
) -> Result<Response<Body>, AutoscalerError> {
    let result = match &taken {
        Ok(r) => *r,
        Err(e) => ReportResult::of(e),
    };
    shared.metrics.report(kind, result);
    taken.map(|_| json_response(StatusCode::OK, &json!({})))
}

/// `POST /worker_status/` (PROTOCOL.md §5.1).
async fn worker_status(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<ReportResult, AutoscalerError> {
    let body = read_object(req.into_body(), shared.config.max_report_body, false).await?;
    check_token(shared, &body)?;
    let report = Report::parse(body)?;
    if let Some(endpoint) = &report.endpoint
        && !shared.config.endpoints.contains_key(endpoint)
    {
        return Err(AutoscalerError::UnknownEndpoint(endpoint.clone()));
    }
    let (id, url) = (report.id, report.url.clone());
    if shared.registry().report(report, Instant::now()) {
        tracing::info!(worker = id, %url, "worker joined");
    }
    Ok(ReportResult::Ok)
}

/// `POST /delete_requests/` (PROTOCOL.md §5.2).
async fn delete_requests(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<ReportResult, AutoscalerError> {
    let body = read_object(req.into_body(), shared.config.max_delete_body, false).await?;
    check_token(shared, &body)?;
    let d = DeleteRequests::parse(&body)?;
    shared.metrics.finished(d.requests.iter().map(|r| r.status));
    if !shared.registry().finished(d.worker_id, &d.requests) {
        tracing::debug!(
            worker = d.worker_id,
            "finished requests from a worker that never reported"
        );
        return Ok(ReportResult::UnknownWorker);
    }
    Ok(ReportResult::Ok)
}

/// `GET /metrics`: the live counters, then the pool's gauges read now.
fn metrics(shared: &Shared) -> Response<Body> {
    let snapshot = pool_snapshot(
        &mut shared.registry(),
        shared.config.endpoints.keys(),
        Instant::now(),
    );
    crate::openmetrics::response(&[shared.metrics.registry(), &snapshot])
}

/// `GET|POST /get_endpoint_workers/`: the endpoint's workers. The endpoint comes from
/// `?endpoint=`, the body's `endpoint`, or is the only one configured; the key as for
/// `/route/` (or `?api_key=`).
async fn endpoint_workers(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<Body>, AutoscalerError> {
    let (parts, body) = req.into_parts();
    let query: Vec<(String, String)> =
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let body = if parts.method == Method::POST {
        read_object(body, MAX_BODY, true).await?
    } else {
        Map::new()
    };
    let from_body = |name: &str| body.get(name).and_then(Value::as_str);
    let only = (shared.config.endpoints.len() == 1)
        .then(|| shared.config.endpoints.keys().next())
        .flatten()
        .map(String::as_str);
    let endpoint = param("endpoint")
        .or(from_body("endpoint"))
        .or(only)
        .ok_or_else(|| AutoscalerError::InvalidRequest("missing field: endpoint".into()))?;
    let key = bearer(&parts.headers)
        .or(param("api_key"))
        .or(from_body("api_key"));
    authenticate(shared, endpoint, key)?;
    let list = shared.registry().list(endpoint, Instant::now());
    Ok(json_response(StatusCode::OK, &Value::Array(list)))
}

/// Reads a JSON object body of at most `limit` bytes (413 beyond); an empty body is `{}`
/// when `empty_ok`.
async fn read_object(
    body: Incoming,
    limit: usize,
    empty_ok: bool,
) -> Result<Map<String, Value>, AutoscalerError> {
    let bytes: Bytes = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                AutoscalerError::BodyTooLarge { limit }
            } else {
                AutoscalerError::BadJson(format!("could not read the body: {e}"))
            }
        })?
        .to_bytes();
    if empty_ok && bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(AutoscalerError::BadJson(format!(
            "got {}",
            json_kind(&other)
        ))),
        Err(e) => Err(AutoscalerError::BadJson(e.to_string())),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The key of an `Authorization: Bearer <key>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim())
        .filter(|k| !k.is_empty())
}

/// 401 without a key, 404 for an unknown endpoint, 401 for another endpoint's key.
fn authenticate(shared: &Shared, endpoint: &str, key: Option<&str>) -> Result<(), AutoscalerError> {
    let key = key
        .filter(|k| !k.is_empty())
        .ok_or(AutoscalerError::InvalidApiKey(
            "missing API key: send Authorization: Bearer <key> or api_key in the body",
        ))?;
    let expected = shared
        .config
        .endpoints
        .get(endpoint)
        .ok_or_else(|| AutoscalerError::UnknownEndpoint(endpoint.to_string()))?;
    if !same_secret(key, expected) {
        return Err(AutoscalerError::InvalidApiKey(
            "API key is not valid for this endpoint",
        ));
    }
    Ok(())
}

/// 401 unless the body's `mtoken` is the master token (or the autoscaler is `--insecure`).
fn check_token(shared: &Shared, body: &Map<String, Value>) -> Result<(), AutoscalerError> {
    let WorkerAuth::MasterToken(expected) = &shared.config.worker_auth else {
        return Ok(());
    };
    match body.get("mtoken").and_then(Value::as_str) {
        Some(token) if same_secret(token, expected) => Ok(()),
        _ => Err(AutoscalerError::InvalidToken),
    }
}

/// 401 unless `Authorization: Bearer` holds the master token (or the autoscaler is
/// `--insecure`): the rule for what only the fleet's operator reads.
fn holds_master_token(shared: &Shared, headers: &HeaderMap) -> Result<(), AutoscalerError> {
    let WorkerAuth::MasterToken(expected) = &shared.config.worker_auth else {
        return Ok(());
    };
    match bearer(headers) {
        Some(token) if same_secret(token, expected) => Ok(()),
        _ => Err(AutoscalerError::InvalidBearerToken),
    }
}

/// Secret comparison in constant time (with respect to content).
fn same_secret(given: &str, expected: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), expected.as_bytes()).is_ok()
}
