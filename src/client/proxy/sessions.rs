//! Sessions in `vespa proxy`: requests that name a session in the `X-Vespa-Session` header
//! (or all requests, with `--session NAME`) go to that session's worker, so a conversation
//! keeps its KV cache and a loaded LoRA stays loaded.
//!
//! A name is the caller's: the proxy opens the session on the first request that uses it
//! and keeps it while requests extend it. When the worker answers 410 `invalid session`
//! (the session expired, was ended, or its worker restarted), nothing was done for the
//! request, so the proxy opens a new session and sends the request once more. On shutdown
//! the proxy ends every session it holds.
//!
//! Internal: one async mutex per name, held only while that name's session is opened, so
//! concurrent first requests open one session, and requests of open sessions never wait on
//! each other.

use super::SessionsConfig;
use crate::client::{Client, ClientError, ClientRequest, Session};
use crate::http_util::{Body, full};
use http::{HeaderMap, HeaderName, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Request header naming the session a request belongs to.
pub const SESSION_HEADER: &str = "x-vespa-session";
/// Longest session name accepted, bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Largest 410 body read to tell the worker's "invalid session" from a backend's 410.
const GONE_BODY_LIMIT: usize = 4096;

type Slot = Arc<tokio::sync::Mutex<Option<Session>>>;

/// A name's slot and when a request last used it.
#[derive(Debug)]
struct Held {
    slot: Slot,
    used: Instant,
}

/// Why a request could not be sent in its session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The header's value cannot name a session.
    #[error("{SESSION_HEADER} must be 1 to {MAX_NAME_LEN} visible ASCII characters")]
    BadName,
    /// `--max-sessions` sessions are already held.
    #[error("the proxy already holds {0} sessions (--max-sessions)")]
    TooMany(usize),
    /// Opening the session or sending the request failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// The sessions one proxy holds, by name.
#[derive(Debug)]
pub struct Sessions {
    config: SessionsConfig,
    slots: Mutex<HashMap<String, Held>>,
}

impl Sessions {
    /// An empty table.
    pub fn new(config: SessionsConfig) -> Self {
        Self {
            config,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The session `headers` name (and removes the header), else the default one.
    pub fn name_of(&self, headers: &mut HeaderMap) -> Result<Option<String>, SessionError> {
        let named = headers.remove(HeaderName::from_static(SESSION_HEADER));
        let Some(value) = named else {
            return Ok(self.config.default.clone());
        };
        match value.to_str() {
            Ok(s) if !s.trim().is_empty() && s.len() <= MAX_NAME_LEN => {
                Ok(Some(s.trim().to_string()))
            }
            _ => Err(SessionError::BadName),
        }
    }

    fn slot(&self, name: &str) -> Result<Slot, SessionError> {
        let now = Instant::now();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = slots.get_mut(name) {
            held.used = now;
            return Ok(Arc::clone(&held.slot));
        }
        if slots.len() >= self.config.max {
            // A name unused for twice the lifetime has no session left on its worker (it
            // expires `lifetime` after its latest request): its place is free again, unless
            // a request still holds it.
            let idle = Duration::from_secs_f64(self.config.spec.lifetime * 2.0);
            slots.retain(|_, h| Arc::strong_count(&h.slot) > 1 || now - h.used < idle);
        }
        if slots.len() >= self.config.max {
            return Err(SessionError::TooMany(self.config.max));
        }
        let slot = Slot::default();
        slots.insert(
            name.to_string(),
            Held {
                slot: Arc::clone(&slot),
                used: now,
            },
        );
        Ok(slot)
    }

    /// The open session of `slot`, opening one when there is none or when it is `stale`
    /// (the worker said it is gone).
    async fn session(
        &self,
        client: &Client,
        slot: &Slot,
        stale: Option<&str>,
    ) -> Result<Session, ClientError> {
        let mut held = slot.lock().await;
        match &*held {
            Some(s) if stale != Some(s.id.as_str()) => return Ok(s.clone()),
            _ => {}
        }
        *held = None;
        let opened = client.open_session(&self.config.spec).await?;
        *held = Some(opened.clone());
        Ok(opened)
    }

    /// Sends `req` in the session `name`, opening it first if needed, and once more in a
    /// new session when the worker answers that the session is gone.
    pub async fn request(
        &self,
        client: &Client,
        name: &str,
        req: ClientRequest,
    ) -> Result<Response<Body>, SessionError> {
        let slot = self.slot(name)?;
        let session = match self.session(client, &slot, None).await {
            Ok(s) => s,
            Err(e) => {
                self.forget_if_empty(name, &slot).await;
                return Err(e.into());
            }
        };
        let resp = client.session_request(&session, req.clone()).await?;
        if resp.status() != StatusCode::GONE {
            return Ok(resp);
        }
        // The worker's own answer is a small JSON body with a length; anything else is
        // the backend's, relayed untouched.
        let small = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .is_some_and(|n| n <= GONE_BODY_LIMIT);
        if !small {
            return Ok(resp);
        }
        let (parts, body) = resp.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        if !is_session_gone(&bytes) {
            // The backend's own 410: the caller's to see.
            return Ok(Response::from_parts(parts, full(bytes)));
        }
        tracing::info!(session = %name, worker = %session.worker,
            "session gone on its worker; opening a new one");
        let session = self.session(client, &slot, Some(&session.id)).await?;
        Ok(client.session_request(&session, req).await?)
    }

    /// Drops the slot of `name` when it holds no session (opening one failed), so a name
    /// that never got a session does not count against `--max-sessions`.
    async fn forget_if_empty(&self, name: &str, slot: &Slot) {
        let held = slot.lock().await;
        if held.is_some() {
            return;
        }
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.get(name).is_some_and(|h| Arc::ptr_eq(&h.slot, slot)) {
            slots.remove(name);
        }
    }

    /// The sessions held, for `GET /_vespa/proxy/sessions`.
    pub async fn list(&self) -> Value {
        let slots: Vec<(String, Slot)> = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots
                .iter()
                .map(|(n, h)| (n.clone(), Arc::clone(&h.slot)))
                .collect()
        };
        let mut out = serde_json::Map::new();
        for (name, slot) in slots {
            if let Some(s) = &*slot.lock().await {
                out.insert(
                    name,
                    json!({"worker": s.worker, "expiration": s.expiration}),
                );
            }
        }
        Value::Object(out)
    }

    /// Ends the session `name`; `false` when the proxy holds none by that name.
    pub async fn close(&self, client: &Client, name: &str) -> Result<bool, ClientError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.remove(name).map(|h| h.slot)
        };
        let Some(slot) = slot else {
            return Ok(false);
        };
        let session = slot.lock().await.take();
        match session {
            Some(s) => client.close_session(&s).await.map(|_| true),
            None => Ok(false),
        }
    }

    /// Ends every session held (on shutdown); failures are logged.
    pub async fn close_all(&self, client: &Client) {
        let names: Vec<String> = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.keys().cloned().collect()
        };
        for name in names {
            if let Err(e) = self.close(client, &name).await {
                tracing::warn!(session = %name, error = %e, "could not end the session");
            }
        }
    }
}

/// Whether a 410 body is the worker's "the session is gone" (`{"error": "invalid
/// session"}`), not the backend's own 410.
fn is_session_gone(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(|e| e == "invalid session"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(default: Option<&str>, max: usize) -> Sessions {
        Sessions::new(SessionsConfig {
            default: default.map(str::to_string),
            max,
            ..SessionsConfig::default()
        })
    }

    #[test]
    fn the_header_names_the_session_and_is_not_forwarded() {
        let t = table(Some("all"), 4);
        let mut h = HeaderMap::new();
        assert_eq!(t.name_of(&mut h).unwrap().as_deref(), Some("all"));
        h.insert(SESSION_HEADER, " chat-1 ".parse().unwrap());
        assert_eq!(t.name_of(&mut h).unwrap().as_deref(), Some("chat-1"));
        assert!(h.get(SESSION_HEADER).is_none());
        h.insert(
            SESSION_HEADER,
            "x".repeat(MAX_NAME_LEN + 1).parse().unwrap(),
        );
        assert!(matches!(t.name_of(&mut h), Err(SessionError::BadName)));
        assert_eq!(table(None, 1).name_of(&mut HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn names_beyond_max_sessions_are_refused_but_known_ones_are_not() {
        let t = table(None, 2);
        t.slot("a").unwrap();
        t.slot("b").unwrap();
        t.slot("a").unwrap();
        assert!(matches!(t.slot("c"), Err(SessionError::TooMany(2))));
    }

    #[tokio::test]
    async fn a_name_whose_session_could_not_open_does_not_hold_a_place() {
        let t = table(None, 1);
        let mut c = crate::client::ClientConfig::new("http://127.0.0.1:9", "ep", "k");
        // Nothing listens on port 9 of the loopback: every open fails at once.
        c.debug_worker_url = Some("http://127.0.0.1:9".into());
        c.max_attempts = 1;
        let client = Client::new(c).unwrap();
        let req = || ClientRequest::new(http::Method::GET, "/x");
        for name in ["a", "b"] {
            let err = t.request(&client, name, req()).await.unwrap_err();
            assert!(matches!(err, SessionError::Client(_)), "{name}: {err}");
        }
        assert!(t.slot("c").is_ok(), "failed opens leave no slot behind");
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_idle_for_twice_the_lifetime_gives_its_place_back() {
        let mut config = SessionsConfig {
            max: 1,
            ..SessionsConfig::default()
        };
        config.spec.lifetime = 10.0;
        let t = Sessions::new(config);
        drop(t.slot("a").unwrap());
        tokio::time::advance(Duration::from_secs(15)).await;
        assert!(t.slot("a").is_ok(), "a known name is used again");
        assert!(matches!(t.slot("b"), Err(SessionError::TooMany(1))));
        tokio::time::advance(Duration::from_secs(19)).await;
        assert!(
            matches!(t.slot("b"), Err(SessionError::TooMany(1))),
            "a used 19 s ago"
        );
        let held = t.slot("a").unwrap();
        tokio::time::advance(Duration::from_secs(25)).await;
        assert!(
            matches!(t.slot("b"), Err(SessionError::TooMany(1))),
            "a request still holds a"
        );
        drop(held);
        assert!(t.slot("b").is_ok(), "a idle for 25 s > 2 × 10 s");
    }

    #[test]
    fn only_the_workers_invalid_session_answer_reopens() {
        assert!(is_session_gone(br#"{"error": "invalid session"}"#));
        assert!(!is_session_gone(br#"{"error": "gone for good"}"#));
        assert!(!is_session_gone(b"Gone"));
    }
}
