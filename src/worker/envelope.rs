//! The request envelope (PROTOCOL.md §2): reads `auth_data` and the payload from a request.
//!
//! Three shapes arrive at a worker:
//! - a JSON body `{"auth_data": {...}, "payload": ...}` (the official clients);
//! - `serverless_*` query parameters, with any body forwarded unchanged (GET/HEAD, uploads);
//! - in unsecured mode only, a plain request ("passthrough"), forwarded as it is with a
//!   synthetic `auth_data`.
//!
//! A request inside a session (PROTOCOL.md §8) names it with the envelope's top-level
//! `session_id` (a string, or null for none, as the official client always sends it) or,
//! in the query form, with `serverless_session_id`, which is never forwarded. That
//! parameter alone makes a query-form request: its body goes through unchanged, and the
//! open session it names authenticates it.
//!
//! The payload is forwarded as the exact bytes the client sent (`RawValue`), so numbers and
//! key order reach the backend untouched.

use super::error::WorkerError;
use crate::serve::read_timeout::{BodyReadTimeout, ReadTimeout};
use bytes::Bytes;
use http::{HeaderMap, Method, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The six keys `auth_data` must carry (PROTOCOL.md §2).
pub const AUTH_KEYS: [&str; 6] = [
    "cost",
    "endpoint",
    "reqnum",
    "request_idx",
    "signature",
    "url",
];

const QUERY_PREFIX: &str = "serverless_";
/// The query parameter naming the session of a query-form request.
pub const SESSION_QUERY_KEY: &str = "serverless_session_id";

/// Signed request metadata as the autoscaler issued it. `fields` keeps every key with the
/// JSON type it arrived with, since the signature covers those exact values.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthData {
    /// All keys of `auth_data`, extra ones (`__request_id`) included.
    pub fields: Map<String, Value>,
}

impl AuthData {
    /// `cost` as a number (a string holding a number is accepted); `None` when absent or
    /// null. A negative, non-finite or non-numeric cost is an error (PROTOCOL.md §4).
    pub fn cost(&self) -> Result<Option<f64>, WorkerError> {
        let cost = match self.fields.get("cost") {
            None | Some(Value::Null) => return Ok(None),
            Some(v) => number(v),
        };
        match cost {
            Some(c) if c.is_finite() && c >= 0.0 => Ok(Some(c)),
            _ => Err(WorkerError::InvalidRequest {
                message: "auth_data.cost must be a finite number >= 0".into(),
                fields: None,
            }),
        }
    }

    /// `reqnum` as an integer, 0 when it is not one.
    pub fn reqnum(&self) -> u64 {
        self.fields.get("reqnum").and_then(integer).unwrap_or(0)
    }

    /// `request_idx` as an integer, 0 when it is not one.
    pub fn request_idx(&self) -> u64 {
        self.fields
            .get("request_idx")
            .and_then(integer)
            .unwrap_or(0)
    }

    /// A string field (`signature`, `url`, `endpoint`).
    pub fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key)?.as_str()
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn integer(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// What to send to the backend as the request body.
#[derive(Debug)]
pub enum Payload {
    /// No body.
    None,
    /// The envelope's `payload`, sent as `application/json`.
    Json(Bytes),
    /// The client's body, unchanged (its own `Content-Type` is kept).
    Raw(Bytes),
    /// The client's body, unchanged and streamed (query auth or non-JSON passthrough).
    Stream(ReadTimeout<Incoming>),
}

/// A request after the envelope stage.
#[derive(Debug)]
pub struct Inbound {
    /// This request's share of `MAX_BUFFERED_BYTES` while its body is held in memory.
    pub held: Option<OwnedSemaphorePermit>,
    /// `auth_data` from the client, or `None` for an unsecured passthrough request (or a
    /// query-form request that names a session and nothing else).
    pub auth: Option<AuthData>,
    /// The session the request belongs to (`session_id`, `serverless_session_id`), if any.
    pub session: Option<String>,
    /// Query string to forward (without `serverless_*` and `api_key`), if any.
    pub query: Option<String>,
    /// Body to forward.
    pub payload: Payload,
    /// Bytes of the request body the worker read into memory; `None` for a streamed body.
    pub body_len: Option<u64>,
}

impl Inbound {
    /// The client's workload estimate, when it gave a usable (positive) one; 0 or none
    /// leaves it to the profile's rule. An invalid cost is a 422.
    pub fn cost(&self) -> Result<Option<f64>, WorkerError> {
        match &self.auth {
            Some(auth) => Ok(auth.cost()?.filter(|c| *c > 0.0)),
            None => Ok(None),
        }
    }

    /// The body to forward, when it is already in memory.
    pub fn body_bytes(&self) -> Option<&Bytes> {
        match &self.payload {
            Payload::Json(b) | Payload::Raw(b) => Some(b),
            Payload::None | Payload::Stream(_) => None,
        }
    }
}

/// Envelope-stage settings.
#[derive(Debug, Clone, Copy)]
pub struct EnvelopeRules<'a> {
    /// Unsecured mode: plain requests are passed through.
    pub unsecured: bool,
    /// Body size limit, bytes.
    pub max_body_size: u64,
    /// Limit on the wait for the next piece of the body (`BODY_READ_TIMEOUT`); 408 after.
    pub body_read_timeout: Option<std::time::Duration>,
    /// Bytes all buffered bodies may hold at once, in KiB permits (`MAX_BUFFERED_BYTES`).
    pub budget: Option<&'a Arc<Semaphore>>,
}

/// Whether a body read failed because the client's connection ended before the body did.
fn client_closed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(h) = c.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled() || h.is_closed())
        {
            return true;
        }
        // hyper reports a body cut short as an I/O error: end of file before the length
        // the client announced, or a reset connection.
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            )
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Reads a body into memory within `MAX_BODY_SIZE`, taking its share of the shared
/// `MAX_BUFFERED_BYTES` budget as it arrives (in KiB): bodies are buffered before their
/// signature can be checked, so without a shared bound many large ones at once could
/// exhaust memory. An exhausted budget is 503 `overloaded`, at once.
async fn collect(
    body: ReadTimeout<Incoming>,
    rules: &EnvelopeRules<'_>,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), WorkerError> {
    let mut body = std::pin::pin!(Limited::new(body, rules.max_body_size as usize));
    let mut chunks = Vec::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(WorkerError::BodyTooLarge {
                    limit: rules.max_body_size,
                });
            }
            Err(e) if BodyReadTimeout::find(&*e).is_some() => {
                let limit = rules.body_read_timeout.unwrap_or_default();
                return Err(WorkerError::RequestTimeout(limit.as_secs_f64()));
            }
            Err(e) if client_closed(&*e) => return Err(WorkerError::ClientGone),
            Err(e) => {
                return Err(WorkerError::InvalidRequest {
                    message: format!("could not read the request body: {e}"),
                    fields: None,
                });
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if let Some(budget) = rules.budget {
            let kib = u32::try_from(data.len().div_ceil(1024)).unwrap_or(u32::MAX);
            let permit = Arc::clone(budget)
                .try_acquire_many_owned(kib)
                .map_err(|_| WorkerError::Overloaded)?;
            match &mut held {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
        }
        len += data.len();
        chunks.push(data);
    }
    let bytes = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut all = bytes::BytesMut::with_capacity(len);
            for c in chunks {
                all.extend_from_slice(&c);
            }
            all.freeze()
        }
    };
    Ok((bytes, held))
}

/// Reads a whole body into memory within `MAX_BODY_SIZE`, `BODY_READ_TIMEOUT` and the
/// `MAX_BUFFERED_BYTES` budget, for the routes the worker answers itself (`/session/*`).
pub async fn read_all(
    headers: &HeaderMap,
    body: Incoming,
    rules: EnvelopeRules<'_>,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), WorkerError> {
    if declared_too_large(headers, rules.max_body_size) {
        return Err(WorkerError::BodyTooLarge {
            limit: rules.max_body_size,
        });
    }
    collect(ReadTimeout::new(body, rules.body_read_timeout), &rules).await
}

fn declared_too_large(headers: &HeaderMap, limit: u64) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|len| len > limit)
}

/// Reads the envelope of a request. Errors are 401, 413 or 422 answers.
pub async fn read(
    method: &Method,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Incoming,
    rules: EnvelopeRules<'_>,
) -> Result<Inbound, WorkerError> {
    let too_large = WorkerError::BodyTooLarge {
        limit: rules.max_body_size,
    };
    if declared_too_large(headers, rules.max_body_size) {
        return Err(too_large);
    }
    let body = ReadTimeout::new(body, rules.body_read_timeout);
    let (query_auth, forward_query) = split_query(query)?;
    let query_session = query
        .filter(|q| q.contains(SESSION_QUERY_KEY))
        .and_then(query_session);
    if query_auth.is_some() || query_session.is_some() {
        // Query auth: the body, whatever it is, goes through unchanged.
        return Ok(Inbound {
            held: None,
            auth: query_auth,
            session: query_session,
            query: forward_query,
            payload: Payload::Stream(body),
            body_len: None,
        });
    }
    if !crate::http_util::is_json_content(headers) {
        if !rules.unsecured {
            return Err(WorkerError::InvalidSignature(
                "no auth_data: send a JSON envelope or serverless_* query parameters".into(),
            ));
        }
        return Ok(Inbound {
            held: None,
            auth: None,
            session: None,
            query: forward_query,
            payload: Payload::Stream(body),
            body_len: None,
        });
    }
    let (bytes, held) = collect(body, &rules).await?;
    let body_len = Some(bytes.len() as u64);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if !rules.unsecured {
            return Err(WorkerError::InvalidSignature(
                "no auth_data: send a JSON envelope or serverless_* query parameters".into(),
            ));
        }
        return Ok(Inbound {
            held,
            auth: None,
            session: None,
            query: forward_query,
            payload: raw_or_none(bytes),
            body_len,
        });
    }
    // One pass over the body: the top-level object's values stay raw slices, so a large
    // payload is scanned but never built into a tree.
    let top = parse_top(&bytes)?;
    let is_envelope = top.as_ref().is_some_and(|o| o.contains_key("auth_data"));
    if !is_envelope && rules.unsecured {
        return Ok(Inbound {
            held,
            auth: None,
            session: None,
            query: forward_query,
            payload: Payload::Raw(bytes),
            body_len,
        });
    }
    let Some(top) = top else {
        return Err(WorkerError::InvalidRequest {
            message: "expected a JSON object with auth_data and payload".into(),
            fields: None,
        });
    };
    let (auth, payload) = parse_envelope(&bytes, &top)?;
    let session = envelope_session(&top)?;
    let (query, payload) = place_payload(method, forward_query, payload)?;
    Ok(Inbound {
        held,
        auth: Some(auth),
        session,
        query,
        payload,
        body_len,
    })
}

fn raw_or_none(bytes: Bytes) -> Payload {
    if bytes.is_empty() {
        Payload::None
    } else {
        Payload::Raw(bytes)
    }
}

/// A top-level JSON object with its values left raw.
type RawObject<'a> = BTreeMap<String, &'a RawValue>;

/// The body as a raw object, `None` when it is valid JSON but not an object, or a 422 when
/// it is not JSON at all.
fn parse_top(bytes: &[u8]) -> Result<Option<RawObject<'_>>, WorkerError> {
    if let Ok(obj) = serde_json::from_slice::<RawObject>(bytes) {
        return Ok(Some(obj));
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        Ok(_) => Ok(None),
        Err(e) => Err(WorkerError::InvalidRequest {
            message: format!("invalid JSON: {e}"),
            fields: None,
        }),
    }
}

fn parse_envelope(
    body: &Bytes,
    top: &RawObject<'_>,
) -> Result<(AuthData, Option<Bytes>), WorkerError> {
    let env_auth = top.get("auth_data").copied();
    let env_payload = top.get("payload").copied();
    let mut fields = Map::new();
    let mut missing = Vec::new();
    let auth = match env_auth.map(|r| serde_json::from_str::<Value>(r.get())) {
        None => {
            fields.insert("auth_data".into(), json!("field missing"));
            missing.push("auth_data".to_string());
            None
        }
        Some(Ok(Value::Object(map))) => {
            let absent: Map<String, Value> = AUTH_KEYS
                .iter()
                .filter(|k| !map.contains_key(**k))
                .map(|k| ((*k).to_string(), json!("missing parameter")))
                .collect();
            if !absent.is_empty() {
                missing.extend(absent.keys().map(|k| format!("auth_data.{k}")));
                fields.insert("auth_data".into(), Value::Object(absent));
            }
            Some(AuthData { fields: map })
        }
        Some(_) => {
            fields.insert("auth_data".into(), json!("expected an object"));
            missing.push("auth_data (not an object)".to_string());
            None
        }
    };
    if env_payload.is_none() {
        fields.insert("payload".into(), json!("field missing"));
        missing.push("payload".into());
    }
    match auth {
        Some(auth) if missing.is_empty() => {
            // Zero-copy: the payload is a slice of the body it was parsed from.
            let payload = env_payload
                .filter(|p| p.get() != "null")
                .map(|p| body.slice_ref(p.get().as_bytes()));
            Ok((auth, payload))
        }
        _ => Err(WorkerError::InvalidRequest {
            message: format!("missing or invalid fields: {}", missing.join(", ")),
            fields: Some(fields),
        }),
    }
}

/// The envelope's `session_id`: a string, or null or absent for none.
fn envelope_session(top: &RawObject<'_>) -> Result<Option<String>, WorkerError> {
    let Some(raw) = top.get("session_id") else {
        return Ok(None);
    };
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Null) => Ok(None),
        Ok(Value::String(id)) => Ok(Some(id)),
        _ => Err(WorkerError::InvalidRequest {
            message: "session_id must be a string or null".into(),
            fields: None,
        }),
    }
}

/// The value of `serverless_session_id` in `query`, when it is there and not empty.
fn query_session(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == SESSION_QUERY_KEY)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// GET and HEAD carry an object payload as query parameters; other methods as a JSON body.
fn place_payload(
    method: &Method,
    query: Option<String>,
    payload: Option<Bytes>,
) -> Result<(Option<String>, Payload), WorkerError> {
    let Some(payload) = payload else {
        return Ok((query, Payload::None));
    };
    if method != Method::GET && method != Method::HEAD {
        return Ok((query, Payload::Json(payload)));
    }
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(&payload) else {
        return Err(WorkerError::InvalidRequest {
            message: format!(
                "a {method} payload must be a JSON object (it becomes the query string)"
            ),
            fields: None,
        });
    };
    let mut ser = form_urlencoded::Serializer::new(query.unwrap_or_default());
    for (k, v) in &obj {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        ser.append_pair(k, &text);
    }
    let q = ser.finish();
    Ok(((!q.is_empty()).then_some(q), Payload::None))
}

/// Splits the query into `serverless_*` auth (when present) and the rest to forward.
/// The forwarded part keeps its original encoding; `api_key` is dropped (the official
/// client adds it, and it must not reach the backend), and so is `serverless_session_id`
/// (read by [`query_session`]), which is not part of the auth.
fn split_query(query: Option<&str>) -> Result<(Option<AuthData>, Option<String>), WorkerError> {
    let Some(query) = query else {
        return Ok((None, None));
    };
    let mut auth: BTreeMap<String, String> = BTreeMap::new();
    let mut keep = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = form_urlencoded::parse(pair.as_bytes())
            .next()
            .unwrap_or_default();
        if key == SESSION_QUERY_KEY {
            continue;
        }
        if let Some(name) = key.strip_prefix(QUERY_PREFIX) {
            auth.insert(name.to_string(), value.into_owned());
        } else if key != "api_key" {
            keep.push(pair);
        }
    }
    let forward = (!keep.is_empty()).then(|| keep.join("&"));
    if auth.is_empty() {
        return Ok((None, forward));
    }
    let absent: Vec<&str> = AUTH_KEYS
        .iter()
        .copied()
        .filter(|k| !auth.contains_key(*k))
        .collect();
    if !absent.is_empty() {
        let fields: Map<String, Value> = absent
            .iter()
            .map(|k| (format!("{QUERY_PREFIX}{k}"), json!("missing parameter")))
            .collect();
        return Err(WorkerError::InvalidRequest {
            message: format!(
                "missing query parameters: {}",
                absent
                    .iter()
                    .map(|k| format!("{QUERY_PREFIX}{k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fields: Some(fields),
        });
    }
    let fields = auth.into_iter().map(|(k, v)| {
        let value = match k.as_str() {
            // "serverless_cost parses as a float if it contains '.', else as an int".
            "cost" => typed_number(&v, v.contains('.')),
            "reqnum" | "request_idx" => typed_number(&v, false),
            _ => Value::String(v),
        };
        (k, value)
    });
    Ok((
        Some(AuthData {
            fields: fields.collect(),
        }),
        forward,
    ))
}

fn typed_number(s: &str, float: bool) -> Value {
    let parsed = if float {
        s.parse::<f64>().ok().and_then(serde_json::Number::from_f64)
    } else {
        s.parse::<i64>().ok().map(serde_json::Number::from)
    };
    parsed
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(s.to_string()))
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_keeps_payload_bytes_and_auth_types() {
        let body = br#"{"auth_data":{"cost":242.0,"endpoint":"e","reqnum":5,"request_idx":9,"signature":"s","url":"u","__request_id":"x"},"session_id":null,"payload":{"b":1.50,"a":[1]}}"#;
        let (auth, payload) = parse_envelope(
            &Bytes::from_static(body),
            &parse_top(body).unwrap().unwrap(),
        )
        .unwrap();
        assert_eq!(payload.unwrap(), &br#"{"b":1.50,"a":[1]}"#[..]);
        assert_eq!(auth.cost().unwrap(), Some(242.0));
        assert!(auth.fields["cost"].is_f64());
        assert_eq!((auth.reqnum(), auth.request_idx()), (5, 9));
    }

    #[test]
    fn only_objects_can_be_envelopes() {
        assert!(parse_top(br#"[{"auth_data": {}}, {}]"#).unwrap().is_none());
        assert!(parse_top(b"42").unwrap().is_none());
        assert!(parse_top(b"{\"a\": ").is_err());
        let top = parse_top(br#"{"auth_data": 1, "payload": [1, 2]}"#)
            .unwrap()
            .unwrap();
        assert_eq!(top["payload"].get(), "[1, 2]");
    }

    #[test]
    fn missing_fields_are_named_like_pyworker() {
        let body = br#"{"auth_data":{"cost":1,"endpoint":"e","reqnum":1,"request_idx":1,"signature":"s"}}"#;
        match parse_envelope(
            &Bytes::from_static(body),
            &parse_top(body).unwrap().unwrap(),
        )
        .unwrap_err()
        {
            WorkerError::InvalidRequest {
                fields: Some(f),
                message,
            } => {
                assert_eq!(f["auth_data"], json!({"url": "missing parameter"}));
                assert_eq!(f["payload"], json!("field missing"));
                assert!(message.contains("auth_data.url"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn query_auth_types_cost_like_pyworker_and_drops_api_key() {
        let q = "a=1&serverless_cost=2.5&serverless_endpoint=e&serverless_reqnum=3&serverless_request_idx=4&serverless_signature=c2ln%3D&serverless_url=http%3A%2F%2Fw&api_key=k&b=%20x";
        let (auth, fwd) = split_query(Some(q)).unwrap();
        let auth = auth.unwrap();
        assert_eq!(fwd.as_deref(), Some("a=1&b=%20x"));
        assert!(auth.fields["cost"].is_f64());
        assert_eq!(auth.fields["reqnum"], json!(3));
        assert_eq!(auth.str("signature"), Some("c2ln="));
        assert_eq!(auth.str("url"), Some("http://w"));
        let (auth, _) = split_query(Some(q.replace("2.5", "2").as_str())).unwrap();
        assert!(auth.unwrap().fields["cost"].is_i64());
    }

    #[test]
    fn a_session_id_is_read_from_the_envelope_or_the_query_and_never_forwarded() {
        let top = |body: &'static [u8]| parse_top(body).unwrap().unwrap();
        assert_eq!(
            envelope_session(&top(br#"{"session_id": null}"#)).unwrap(),
            None
        );
        assert_eq!(envelope_session(&top(br#"{"a": 1}"#)).unwrap(), None);
        assert_eq!(
            envelope_session(&top(br#"{"session_id": "s1"}"#)).unwrap(),
            Some("s1".into())
        );
        let err = envelope_session(&top(br#"{"session_id": 5}"#)).unwrap_err();
        assert!(err.to_string().contains("session_id"), "{err}");
        let q = "a=1&serverless_session_id=s%2D1&b=2";
        assert_eq!(query_session(q).as_deref(), Some("s-1"));
        let (auth, fwd) = split_query(Some(q)).unwrap();
        assert!(auth.is_none(), "a session id alone is no auth_data");
        assert_eq!(fwd.as_deref(), Some("a=1&b=2"));
        assert_eq!(query_session("serverless_session_id="), None);
    }

    #[test]
    fn partial_query_auth_is_rejected_with_the_missing_names() {
        let err = split_query(Some("serverless_cost=1&serverless_url=u")).unwrap_err();
        assert!(err.to_string().contains("serverless_signature"), "{err}");
    }

    #[test]
    fn get_payload_becomes_query_parameters() {
        let (q, p) = place_payload(
            &Method::GET,
            Some("x=1".into()),
            Some(Bytes::from_static(br#"{"q":"a b","n":2}"#)),
        )
        .unwrap();
        assert!(matches!(p, Payload::None));
        assert_eq!(q.as_deref(), Some("x=1&n=2&q=a+b"));
    }
}
