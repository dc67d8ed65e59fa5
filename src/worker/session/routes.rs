//! The four session routes, answered by the worker and never forwarded, with the bodies,
//! status codes and error texts of the `vastai` 1.9.1 worker. Each is recorded like a
//! proxied request (access log, `vespa_requests_total`); worker refusals are JSON
//! `{"error", "code"}`, whose `error` the official client shows.

use super::params::Params;
use super::store::Lookup;
use crate::http_util::{Body, json_response};
use crate::worker::Shared;
use crate::worker::envelope::{self, EnvelopeRules, Payload};
use crate::worker::error::WorkerError;
use crate::worker::observe::Record;
use http::request::Parts;
use http::{Method, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

/// A session route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /session/create`.
    Create,
    /// `POST /session/end`, `/session/get` or `/session/health`: a session named by its id.
    Named(Named),
}

/// The routes that name a session: `{"session_id", "session_auth"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// `POST /session/end`.
    End,
    /// `POST /session/get`.
    Get,
    /// `POST /session/health`.
    Health,
}

impl Route {
    /// The session route of a request, if it is one (POST only; anything else is proxied).
    pub fn of(method: &Method, path: &str) -> Option<Route> {
        if method != Method::POST {
            return None;
        }
        match path.strip_prefix("/session/")? {
            "create" => Some(Route::Create),
            "end" => Some(Route::Named(Named::End)),
            "get" => Some(Route::Named(Named::Get)),
            "health" => Some(Route::Named(Named::Health)),
            _ => None,
        }
    }
}

/// Answers a session route and ends its record.
pub async fn serve(
    shared: &Shared,
    route: Route,
    parts: &Parts,
    body: Incoming,
    mut record: Record,
) -> Response<Body> {
    match answer(shared, route, parts, body, &mut record).await {
        Ok(resp) => record.answer(resp),
        Err(e) => {
            // The code, not the text: a "not found" text names the id the client sent.
            tracing::debug!(status = %e.status(), code = e.code(), "session request refused");
            record.refuse(e)
        }
    }
}

fn rules(shared: &Shared) -> EnvelopeRules<'_> {
    EnvelopeRules {
        unsecured: shared.config.unsecured,
        max_body_size: shared.config.max_body_size,
        body_read_timeout: shared.config.body_read_timeout,
        budget: Some(&shared.buffered),
    }
}

fn invalid(message: &str) -> WorkerError {
    WorkerError::InvalidRequest {
        message: message.to_string(),
        fields: None,
    }
}

async fn answer(
    shared: &Shared,
    route: Route,
    parts: &Parts,
    body: Incoming,
    record: &mut Record,
) -> Result<Response<Body>, WorkerError> {
    let named = match route {
        Route::Create => return create(shared, parts, body, record).await,
        Route::Named(named) => named,
    };
    let (bytes, _held) = envelope::read_all(&parts.headers, body, rules(shared)).await?;
    record.body_read(bytes.len() as u64);
    let (id, session_auth) = session_request(&bytes)?;
    answer_named(shared, named, &id, &session_auth)
}

/// The answer to `/session/end`, `/session/get` or `/session/health` for session `id`.
pub fn answer_named(
    shared: &Shared,
    route: Named,
    id: &str,
    session_auth: &Value,
) -> Result<Response<Body>, WorkerError> {
    let sessions = &shared.sessions;
    let refused = |lookup: Lookup, not_found: String| match lookup {
        Lookup::NotFound => WorkerError::SessionNotFound(not_found),
        Lookup::BadAuth => WorkerError::InvalidSessionAuth,
    };
    match route {
        Named::End => sessions
            .end(id, session_auth)
            .map(|()| {
                json_response(
                    StatusCode::OK,
                    &json!({"ended": true, "removed_session": id}),
                )
            })
            .map_err(|e| refused(e, format!("session with id {id} not found"))),
        Named::Get => sessions
            .get(id, session_auth)
            .map(|doc| json_response(StatusCode::OK, &doc))
            .map_err(|e| refused(e, "session does not exist".into())),
        Named::Health => sessions
            .health(id, session_auth)
            .map(|ok| json_response(StatusCode::OK, &json!({"ok": ok})))
            .map_err(|e| refused(e, "session does not exist".into())),
    }
}

/// `{"session_id", "session_auth"}`: 422 `invalid JSON` or `missing session_id` as the
/// `vastai` worker answers; a `session_id` that is not a string names no session.
fn session_request(bytes: &[u8]) -> Result<(String, Value), WorkerError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|_| invalid("invalid JSON"))?;
    let Value::Object(mut obj) = value else {
        return Err(invalid(
            "expected a JSON object: {\"session_id\", \"session_auth\"}",
        ));
    };
    let id = match obj.remove("session_id") {
        None | Some(Value::Null) => return Err(invalid("missing session_id")),
        Some(Value::String(s)) if s.is_empty() => return Err(invalid("missing session_id")),
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
    };
    let session_auth = obj.remove("session_auth").unwrap_or(Value::Null);
    Ok((id, session_auth))
}

/// `POST /session/create`: a signed envelope whose payload is the session's parameters.
/// Verified like any request (401), sized like one (its routed `cost`), refused like one
/// when the worker is not ready (503), then opened (429 past `MAX_SESSIONS`): 201
/// `{"session_id", "expiration"}`.
async fn create(
    shared: &Shared,
    parts: &Parts,
    body: Incoming,
    record: &mut Record,
) -> Result<Response<Body>, WorkerError> {
    let mut inbound = envelope::read(
        &parts.method,
        parts.uri.query(),
        &parts.headers,
        body,
        rules(shared),
    )
    .await?;
    if let Some(len) = inbound.body_len {
        record.body_read(len);
    }
    if inbound.auth.is_some()
        && let Err(e) = shared.auth.check(&inbound)
    {
        shared.admission.unauthorized(&e);
        return Err(e);
    }
    let payload = match &inbound.payload {
        Payload::Json(bytes) => Some(bytes.as_ref()),
        Payload::None => None,
        Payload::Raw(_) | Payload::Stream(_) => {
            return Err(invalid(
                "POST /session/create takes a JSON envelope: {\"auth_data\": {…}, \"payload\": {\"lifetime\", \"on_close_route\", \"on_close_payload\"}}",
            ));
        }
    };
    let Some(auth) = inbound.auth.clone() else {
        return Err(invalid(
            "POST /session/create takes a JSON envelope with auth_data",
        ));
    };
    let params = Params::parse(payload, shared.sessions.rules().max_lifetime)?;
    // A create names no session of its own (the official client sends `session_id: null`).
    inbound.session = None;
    let info = shared.admission.describe(&inbound, parts)?;
    record.describe(&info);
    shared.admission.ready_for(&info)?;
    let opened = shared.sessions.open(&info, auth, params)?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"session_id": opened.session_id, "expiration": opened.expiration}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_post_to_the_four_routes_is_a_session_route() {
        assert_eq!(
            Route::of(&Method::POST, "/session/end"),
            Some(Route::Named(Named::End))
        );
        assert_eq!(
            Route::of(&Method::POST, "/session/create"),
            Some(Route::Create)
        );
        assert_eq!(Route::of(&Method::GET, "/session/get"), None);
        assert_eq!(Route::of(&Method::POST, "/session/other"), None);
        assert_eq!(Route::of(&Method::POST, "/v1/session/end"), None);
    }

    #[test]
    fn session_requests_are_read_as_the_vastai_worker_reads_them() {
        let read = |s: &str| session_request(s.as_bytes());
        assert_eq!(read("{").unwrap_err().to_string(), "invalid JSON");
        for missing in [r#"{}"#, r#"{"session_id": null}"#, r#"{"session_id": ""}"#] {
            assert_eq!(
                read(missing).unwrap_err().to_string(),
                "missing session_id",
                "{missing}"
            );
        }
        assert_eq!(read("[]").unwrap_err().status(), 422);
        let (id, auth) = read(r#"{"session_id": "s", "session_auth": {"a": 1}}"#).unwrap();
        assert_eq!((id.as_str(), auth), ("s", json!({"a": 1})));
        let (id, auth) = read(r#"{"session_id": 12}"#).unwrap();
        assert_eq!((id.as_str(), auth), ("12", Value::Null));
    }
}
