//! The on-close callback: when a session closes (ended, expired, drained) and it named an
//! `on_close_route`, the worker POSTs its `on_close_payload` there on the backend, built as
//! the `vastai` worker builds it: an object is copied, null is `{}`, anything else is
//! wrapped as `{"payload": …}`, and `session_id` is added unless the object has one.
//! Best effort: bounded by `SESSION_ON_CLOSE_TIMEOUT`, a failure is logged, never retried.

use crate::worker::backend::Backend;
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::BodyExt;
use serde_json::{Map, Value};
use std::time::Duration;

/// A callback to run: the backend path and the JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct OnClose {
    /// `on_close_route`.
    pub route: String,
    /// The body, built by [`body`].
    pub body: Value,
    /// The session's id as logs show it.
    pub shown_id: String,
}

/// The body POSTed for session `session_id` with `on_close_payload` `payload`.
pub fn body(session_id: &str, payload: Option<&Value>) -> Value {
    let mut obj = match payload {
        Some(Value::Object(o)) => o.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(other) => Map::from_iter([("payload".to_string(), other.clone())]),
    };
    obj.entry("session_id")
        .or_insert_with(|| Value::String(session_id.to_string()));
    Value::Object(obj)
}

/// POSTs the callback to the backend within `timeout` (the whole exchange, body included).
pub async fn run(backend: &Backend, call: OnClose, timeout: Duration) {
    let post = async {
        let (path, query) = match call.route.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (call.route.as_str(), None),
        };
        let bytes = Bytes::from(call.body.to_string());
        let mut req = Request::new(crate::http_util::full(bytes.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = backend.target(path, query);
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        let resp = backend
            .send(req, Some(bytes))
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        Ok::<_, String>(status)
    };
    match tokio::time::timeout(timeout, post).await {
        Ok(Ok(status)) if status.is_success() => {
            tracing::debug!(session = %call.shown_id, route = %call.route, %status, "on_close callback done");
        }
        Ok(Ok(status)) => {
            tracing::warn!(session = %call.shown_id, route = %call.route, %status, "on_close callback answered an error");
        }
        Ok(Err(error)) => {
            tracing::warn!(session = %call.shown_id, route = %call.route, %error, "on_close callback failed");
        }
        Err(_) => {
            tracing::warn!(
                session = %call.shown_id,
                route = %call.route,
                timeout_secs = timeout.as_secs_f64(),
                "on_close callback timed out (SESSION_ON_CLOSE_TIMEOUT)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_body_is_built_as_the_vastai_worker_builds_it() {
        assert_eq!(body("s1", None), json!({"session_id": "s1"}));
        assert_eq!(body("s1", Some(&Value::Null)), json!({"session_id": "s1"}));
        assert_eq!(
            body("s1", Some(&json!({"job": 7}))),
            json!({"job": 7, "session_id": "s1"})
        );
        assert_eq!(
            body("s1", Some(&json!({"session_id": "mine"}))),
            json!({"session_id": "mine"}),
            "a session_id of its own is kept"
        );
        assert_eq!(
            body("s1", Some(&json!([1, 2]))),
            json!({"payload": [1, 2], "session_id": "s1"})
        );
        assert_eq!(
            body("s1", Some(&json!("done"))),
            json!({"payload": "done", "session_id": "s1"})
        );
    }
}
