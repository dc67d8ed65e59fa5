//! Routes the worker answers itself. They live under `/_vespa/` so they never shadow a
//! backend path; `GET /ping` and `POST /pyworker/update` are kept for PyWorker
//! compatibility. Health, ready and metrics are open to anyone; the status document
//! (request indexes, report errors) needs `Authorization: Bearer $MASTER_TOKEN` when a token
//! is set.
//!
//! Internal: `/_vespa/metrics` stays open, as Knative's queue-proxy serves its own, because
//! it holds only aggregates (counts by status and outcome, timings, load, capacity, state)
//! that a client can already infer from 429s and `Retry-After`: no request index, payload,
//! address, token or error text. Scrapers (Prometheus, KEDA through Prometheus) then need
//! no credential; on Vast, `MASTER_TOKEN` is the platform's, not the user's.

use super::Shared;
use super::error::WorkerError;
use super::lifecycle::State;
use super::observe::{Format, Scrape};
use crate::http_util::{Body, full, json_response, text_response};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

/// The worker's own answer for `req`, or `None` when the request is to be proxied.
pub fn own_route(shared: &Shared, req: &Request<Incoming>) -> Option<http::Response<Body>> {
    let path = req.uri().path();
    let readable = req.method() == Method::GET || req.method() == Method::HEAD;
    if path == "/ping" && readable {
        return Some(text_response(StatusCode::OK, "pong"));
    }
    if path == "/pyworker/update" && req.method() == Method::POST {
        return Some(match update(shared, req.headers()) {
            Ok(()) => json_response(StatusCode::OK, &json!({"ok": true})),
            Err(e) => e.into_response(),
        });
    }
    let route = path.strip_prefix("/_vespa/")?;
    Some(match (route, readable) {
        ("health", true) => json_response(StatusCode::OK, &json!({"status": "alive"})),
        ("ready", true) => ready(shared),
        ("metrics", true) => metrics(shared, req.headers()),
        ("status", true) => match holds_master_token(shared, req.headers()) {
            Ok(()) => json_response(StatusCode::OK, &status(shared)),
            Err(e) => e.into_response(),
        },
        _ => WorkerError::NotFound(path.to_string()).into_response(),
    })
}

/// `POST /pyworker/update`, Vast's rolling update: with `Authorization: Bearer
/// $MASTER_TOKEN`, write the marker file as PyWorker does and ask the worker to drain and
/// exit for its restart. Without a configured token nobody may.
fn update(shared: &Shared, headers: &http::HeaderMap) -> Result<(), WorkerError> {
    if master_token(shared).is_none() {
        return Err(WorkerError::Unauthorized);
    }
    if let Err(e) = holds_master_token(shared, headers) {
        tracing::warn!("POST /pyworker/update refused: wrong or missing MASTER_TOKEN");
        return Err(e);
    }
    let file = &shared.config.force_update_file;
    std::fs::write(file, b"")
        .map_err(|e| WorkerError::UpdateFailed(format!("{}: {e}", file.display())))?;
    tracing::info!(file = %file.display(), "rolling update: draining, then exiting for the restart");
    shared.update.send_replace(true);
    Ok(())
}

fn master_token(shared: &Shared) -> Option<&str> {
    shared
        .config
        .vast
        .master_token
        .as_deref()
        .filter(|t| !t.is_empty())
}

/// `Authorization: Bearer $MASTER_TOKEN` (or the bare token, as PyWorker accepts), compared
/// in constant time. Without a configured token there is nothing to hold: `Ok`.
fn holds_master_token(shared: &Shared, headers: &http::HeaderMap) -> Result<(), WorkerError> {
    let Some(expected) = master_token(shared) else {
        return Ok(());
    };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v))
        .unwrap_or("");
    aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), expected.as_bytes())
        .map_err(|_| WorkerError::Unauthorized)
}

fn ready(shared: &Shared) -> http::Response<Body> {
    let state = shared.lifecycle.state();
    let status = if state == State::Ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // Open to anyone: the state only; the error's text is in `/_vespa/status`.
    json_response(status, &json!({"state": state.name()}))
}

/// `/_vespa/metrics`: OpenMetrics text when the scraper asks for it, Prometheus text 0.0.4
/// otherwise ([`Format::negotiate`]).
fn metrics(shared: &Shared, headers: &http::HeaderMap) -> http::Response<Body> {
    let snap = shared.ledger.snapshot();
    let now = Scrape {
        in_flight: snap.in_flight,
        queued: snap.queued,
        working_set_workload: snap.cur_load,
        max_perf: snap.max_perf,
        estimated_wait: snap.estimated_wait,
        state: shared.lifecycle.state().name(),
        idle_connections: shared.backend.idle_connections(),
        open_connections: shared.backend.open_connections(),
        sessions_open: snap.sessions,
    };
    let format = Format::negotiate(headers);
    let mut resp = http::Response::new(full(shared.observer.metrics.encode(&now, format)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(format.content_type()),
    );
    resp
}

/// The `/_vespa/status` document.
pub fn status(shared: &Shared) -> serde_json::Value {
    let state = shared.lifecycle.state();
    let snap = shared.ledger.snapshot();
    json!({
        "state": state.name(),
        "error": state.error(),
        "uptime_secs": shared.lifecycle.uptime().as_secs_f64(),
        "max_perf": snap.max_perf,
        "cur_load": snap.cur_load,
        "estimated_wait": snap.estimated_wait,
        "max_wait_time": shared.config.max_wait_time,
        "queued": snap.queued,
        "in_flight": snap.in_flight,
        "websockets": shared.websockets.open(),
        "working_request_idxs": snap.working_request_idxs,
        "sessions": shared.sessions.list(),
        "totals": snap.totals,
        "unauthorized": shared.unauthorized_total(),
        "signatures": match shared.verifier() {
            None => "unsecured",
            Some(v) if v.has_key() => "key_loaded",
            Some(_) => "waiting_for_key",
        },
        "report": shared.reporter.as_ref().map(|r| r.outcome()),
    })
}
