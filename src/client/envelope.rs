//! How `auth_data` travels to the worker (PROTOCOL.md §2).
//!
//! - A JSON body on POST/PUT/PATCH goes inside the envelope
//!   `{"auth_data": …, "payload": <the body>}`. The payload bytes are spliced in as the
//!   caller sent them (not re-serialised), so numbers and key order reach the backend
//!   untouched, and `auth_data` keeps the JSON types the autoscaler gave it.
//! - GET, HEAD and DELETE, empty bodies and non-JSON bodies (multipart uploads, audio) carry
//!   `auth_data` in `serverless_*` query parameters, and the body travels unchanged.

// The `auth_data` keys the worker requires; anything else (`__request_id`) is not sent in
// the query form.
use crate::worker::envelope::AUTH_KEYS;
use bytes::Bytes;
use http::{HeaderMap, Method};
use serde_json::{Map, Value};

/// Where `auth_data` goes for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// JSON envelope body.
    Envelope,
    /// `serverless_*` query parameters; body unchanged.
    Query,
}

/// Chooses the shape for a request: the envelope only for a JSON body on a method that
/// has one.
pub(crate) fn shape(method: &Method, headers: &HeaderMap, body: &[u8]) -> Shape {
    let bodyless = [Method::GET, Method::HEAD, Method::DELETE].contains(method);
    if bodyless
        || body.iter().all(u8::is_ascii_whitespace)
        || !crate::http_util::is_json_content(headers)
    {
        return Shape::Query;
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Ok(_) => Shape::Envelope,
        // Not JSON after all: the backend gets it unchanged and answers for itself.
        Err(_) => Shape::Query,
    }
}

/// Query parameter naming the session a query-form request belongs to (the envelope's
/// `session_id`).
pub(crate) const SESSION_QUERY_KEY: &str = "serverless_session_id";

/// `{"auth_data": <auth>, "session_id": <session>, "payload": <payload bytes>}`, without
/// `session_id` when there is no session. `payload` must be valid JSON.
pub(crate) fn envelope(auth: &Map<String, Value>, session: Option<&str>, payload: &[u8]) -> Bytes {
    let auth = serde_json::to_vec(auth).expect("a JSON map serialises");
    let mut out = Vec::with_capacity(auth.len() + payload.len() + 64);
    out.extend_from_slice(b"{\"auth_data\":");
    out.extend_from_slice(&auth);
    if let Some(id) = session {
        out.extend_from_slice(b",\"session_id\":");
        out.extend_from_slice(&serde_json::to_vec(id).expect("a string serialises"));
    }
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(payload);
    out.push(b'}');
    Bytes::from(out)
}

/// `path` with the `serverless_*` parameters appended to its query. Numbers are written
/// so the worker parses them back to the same JSON type (`2.5` → float, `7` → int).
/// With `session`, `serverless_session_id` is appended too.
pub(crate) fn with_query_auth(
    path: &str,
    auth: &Map<String, Value>,
    session: Option<&str>,
) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for key in AUTH_KEYS {
        let text = match auth.get(key) {
            None => continue,
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        q.append_pair(&format!("serverless_{key}"), &text);
    }
    if let Some(id) = session {
        q.append_pair(SESSION_QUERY_KEY, id);
    }
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{}", q.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;
    use serde_json::json;

    fn auth() -> Map<String, Value> {
        let v = json!({"cost": 2.5, "endpoint": "my ep", "reqnum": 3, "request_idx": 4,
                       "signature": "c2ln+/=", "url": "http://w:1", "__request_id": "x"});
        v.as_object().unwrap().clone()
    }

    #[test]
    fn envelope_splices_the_payload_bytes_unchanged() {
        let payload = br#"{"max_tokens": 10, "z": 1.50, "a": [1]}"#;
        let body = envelope(&auth(), None, payload);
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.ends_with(r#","payload":{"max_tokens": 10, "z": 1.50, "a": [1]}}"#));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["auth_data"], Value::Object(auth()));
    }

    #[test]
    fn query_auth_carries_the_six_keys_and_keeps_the_callers_query() {
        let url = with_query_auth("/v1/models?x=1", &auth(), None);
        assert_eq!(
            url,
            "/v1/models?x=1&serverless_cost=2.5&serverless_endpoint=my+ep&serverless_reqnum=3\
             &serverless_request_idx=4&serverless_signature=c2ln%2B%2F%3D&serverless_url=http%3A%2F%2Fw%3A1"
        );
        assert!(with_query_auth("/a", &auth(), None).starts_with("/a?serverless_cost="));
    }

    #[test]
    fn a_session_id_travels_in_the_envelope_or_the_query() {
        let body = envelope(&auth(), Some("s\"1"), b"[1]");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["session_id"], "s\"1");
        assert_eq!(v["payload"], json!([1]));
        let url = with_query_auth("/ws", &auth(), Some("abc-_1"));
        assert!(url.ends_with("&serverless_session_id=abc-_1"), "{url}");
    }

    #[test]
    fn only_json_bodies_on_body_methods_use_the_envelope() {
        let json_ct = {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            h
        };
        let mut multipart = HeaderMap::new();
        multipart.insert(
            header::CONTENT_TYPE,
            "multipart/form-data; boundary=x".parse().unwrap(),
        );
        assert_eq!(shape(&Method::POST, &json_ct, b"{}"), Shape::Envelope);
        assert_eq!(
            shape(&Method::PUT, &HeaderMap::new(), b"[1]"),
            Shape::Envelope
        );
        assert_eq!(shape(&Method::POST, &json_ct, b"{oops"), Shape::Query);
        assert_eq!(shape(&Method::POST, &json_ct, b""), Shape::Query);
        assert_eq!(shape(&Method::POST, &multipart, b"{}"), Shape::Query);
        assert_eq!(shape(&Method::GET, &json_ct, b"{}"), Shape::Query);
        assert_eq!(shape(&Method::DELETE, &json_ct, b"{}"), Shape::Query);
    }
}
