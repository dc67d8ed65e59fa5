//! Sessions (PROTOCOL.md §8): a client pinned to one worker for a lifetime, for KV-cache
//! reuse, a loaded LoRA, or a reservation of capacity.
//!
//! Opening one is an ordinary routed request: `/route/` with the session's `cost` names a
//! worker and signs an `auth_data`, then `POST {worker}/session/create` carries
//! `{"auth_data", "payload": {"lifetime", "on_close_route", "on_close_payload"}}` and gets
//! back `{"session_id", "expiration"}`. Requests in the session skip `/route/`: they go
//! straight to that worker with the same `auth_data` and the session's id (`session_id` in
//! the envelope, `serverless_session_id` in the query form). `/session/health` and
//! `/session/end` carry `{"session_id", "session_auth"}`, where `session_auth` is that
//! `auth_data`. This is the wire of the official `vastai` 1.9.1 client, so a session
//! opened by one can be used by the other.
//!
//! A request in a session is never re-routed: the session lives on its worker only. A 410
//! answer means the session is gone (ended, expired, or its worker restarted); the caller
//! opens a new one.

use super::envelope;
use super::send::{Routed, forward_headers};
use super::{Client, ClientError, ClientRequest};
use crate::http_util::Body;
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

/// What a session asks for when it is opened.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// Workload the session holds on its worker while open (`cost` of the route call).
    /// Default is `None`: the client's default cost.
    pub cost: Option<f64>,
    /// Seconds the session lives without requests; each request extends it. Default is 60
    /// (the official client's).
    pub lifetime: f64,
    /// Backend path the worker POSTs `on_close_payload` to when the session closes.
    /// Default is `None`.
    pub on_close_route: Option<String>,
    /// JSON sent to `on_close_route` (the worker adds `session_id`). Default is `None`.
    pub on_close_payload: Option<Value>,
}

impl Default for SessionSpec {
    fn default() -> Self {
        Self {
            cost: None,
            lifetime: 60.0,
            on_close_route: None,
            on_close_payload: None,
        }
    }
}

/// An open session on one worker.
#[derive(Debug, Clone)]
pub struct Session {
    /// The id the worker gave it.
    pub id: String,
    /// The worker it lives on, e.g. `http://1.2.3.4:5000`.
    pub worker: String,
    /// When it expires unless extended, seconds since the Unix epoch (the worker's clock).
    pub expiration: f64,
    /// The signed `auth_data` it was opened with: every request in it carries this.
    auth: Map<String, Value>,
}

impl Session {
    /// The signed `auth_data` the session was opened with.
    pub(super) fn auth(&self) -> &Map<String, Value> {
        &self.auth
    }

    /// The `{"session_id", "session_auth"}` body of the session calls.
    fn credentials(&self) -> Value {
        json!({"session_id": self.id, "session_auth": self.auth})
    }
}

impl Client {
    /// Opens a session on a worker chosen by the autoscaler. A worker that is unreachable
    /// or answers 429/503 (full, `MAX_SESSIONS`, draining) is tried again through
    /// `/route/`, up to `max_attempts` in all, like a request.
    pub async fn open_session(&self, spec: &SessionSpec) -> Result<Session, ClientError> {
        let c = self.config();
        if !(spec.lifetime.is_finite() && spec.lifetime > 0.0) {
            return Err(ClientError::Config(format!(
                "session lifetime must be a number of seconds > 0 (got {})",
                spec.lifetime
            )));
        }
        let cost = spec
            .cost
            .filter(|v| v.is_finite() && *v >= 0.0)
            .unwrap_or(c.default_cost);
        let payload = json!({
            "lifetime": spec.lifetime,
            "on_close_route": spec.on_close_route,
            "on_close_payload": spec.on_close_payload,
        });
        let create = ClientRequest::post_json("/session/create", &payload);
        let Routed { resp, worker, auth } = self.routed(&create, cost).await?;
        let status = resp.status();
        if status != StatusCode::CREATED {
            let text = resp.text().await.unwrap_or_default();
            return Err(refused(&worker, status.as_u16(), &error_text(&text)));
        }
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        let Some(id) = answer.get("session_id").and_then(Value::as_str) else {
            return Err(refused(&worker, 201, "no session_id in the answer"));
        };
        tracing::info!(worker = %worker, "session opened");
        Ok(Session {
            id: id.to_string(),
            worker,
            expiration: answer
                .get("expiration")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            auth,
        })
    }

    /// Sends `req` in `session`, to its worker only. The response is returned as the
    /// worker gave it, a 410 (session gone) included.
    pub async fn session_request(
        &self,
        session: &Session,
        req: ClientRequest,
    ) -> Result<Response<Body>, ClientError> {
        super::send::check_path(&req.path)?;
        let shape = envelope::shape(&req.method, &req.headers, &req.body);
        let headers = forward_headers(&req.headers, shape);
        let resp = self
            .send_to(
                &session.worker,
                &session.auth,
                &req,
                shape,
                &headers,
                Some(&session.id),
            )
            .await?;
        Ok(super::send::into_response(resp, session.worker.clone()))
    }

    /// Whether the worker still holds `session` (`POST /session/health`).
    pub async fn session_is_open(&self, session: &Session) -> Result<bool, ClientError> {
        let (status, answer) = self.session_call(session, "/session/health").await?;
        match status {
            200 => Ok(answer.get("ok").and_then(Value::as_bool) == Some(true)),
            _ => Err(refused(&session.worker, status, &error_of(&answer))),
        }
    }

    /// Ends `session` (`POST /session/end`): the worker cancels its requests in flight and
    /// calls its `on_close_route`. Returns `false` when it was already gone.
    pub async fn close_session(&self, session: &Session) -> Result<bool, ClientError> {
        let (status, answer) = self.session_call(session, "/session/end").await?;
        match status {
            200 => {
                tracing::info!(worker = %session.worker, "session closed");
                Ok(true)
            }
            // Unknown to the worker (400) or closed meanwhile (410).
            400 | 410 => Ok(false),
            _ => Err(refused(&session.worker, status, &error_of(&answer))),
        }
    }

    async fn session_call(
        &self,
        session: &Session,
        path: &str,
    ) -> Result<(u16, Value), ClientError> {
        let url = format!("{}{path}", session.worker);
        let resp = self
            .inner
            .workers
            .for_url(&session.worker)
            .await?
            .post(&url)
            .json(&session.credentials())
            .timeout(self.config().route_call_timeout)
            .send()
            .await
            .map_err(|e| super::send::unreachable(session.worker.clone(), 1, e))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(json!({"error": text})),
        ))
    }

    /// A signed `auth_data` naming a worker: from `/route/`, or synthetic in debug mode.
    pub(super) async fn assign(
        &self,
        cost: f64,
        request_idx: u64,
    ) -> Result<Map<String, Value>, ClientError> {
        match &self.config().debug_worker_url {
            Some(url) => Ok(self.synthetic_auth(url, cost)),
            None => self.route_until_assigned(cost, request_idx).await,
        }
    }
}

/// The worker URL an `auth_data` names, without a trailing `/`.
pub(super) fn worker_of(auth: &Map<String, Value>) -> String {
    auth.get("url")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string()
}

fn refused(worker: &str, status: u16, message: &str) -> ClientError {
    ClientError::SessionRefused {
        url: worker.to_string(),
        status,
        message: message.to_string(),
    }
}

/// The `error` of a JSON answer, else the text itself (shortened).
fn error_text(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => error_of(&v),
        Err(_) => text.chars().take(200).collect(),
    }
}

fn error_of(answer: &Value) -> String {
    match answer.get("error") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => answer.to_string(),
    }
}
