//! The payload of `POST /session/create`: `{"lifetime", "on_close_route",
//! "on_close_payload"}`, as the official client sends it, validated.

use crate::worker::error::WorkerError;
use serde_json::Value;
use std::time::Duration;

/// A session's lifetime when the client names none (the `vastai` worker's default): 60 s.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// Longest accepted `on_close_route`, bytes.
const MAX_ROUTE_LEN: usize = 2048;

/// What a client asked of its session.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Time the session stays open without a request: the asked `lifetime`, at most
    /// `MAX_SESSION_LIFETIME`.
    pub lifetime: Duration,
    /// Backend path POSTed to when the session closes.
    pub on_close_route: Option<String>,
    /// JSON sent to `on_close_route` (kept only with a route, as the `vastai` worker does).
    pub on_close_payload: Option<Value>,
}

fn invalid(message: &str) -> WorkerError {
    WorkerError::InvalidRequest {
        message: message.to_string(),
        fields: None,
    }
}

impl Params {
    /// Reads `payload` (the envelope's, `None` when null): `lifetime` absent or null is 60 s,
    /// else a finite number of seconds > 0, cut to `max_lifetime`; `on_close_route` a path
    /// on the backend (never a URL: the callback goes to the backend and nowhere else).
    pub fn parse(payload: Option<&[u8]>, max_lifetime: Duration) -> Result<Params, WorkerError> {
        let value = match payload {
            None => Value::Null,
            Some(bytes) => serde_json::from_slice(bytes).map_err(|_| invalid("invalid JSON"))?,
        };
        let obj = match value {
            Value::Null => serde_json::Map::new(),
            Value::Object(obj) => obj,
            _ => {
                return Err(invalid(
                    "the /session/create payload must be a JSON object: {\"lifetime\", \"on_close_route\", \"on_close_payload\"}",
                ));
            }
        };
        let lifetime = match obj.get("lifetime") {
            None | Some(Value::Null) => DEFAULT_LIFETIME,
            Some(v) => match v.as_f64() {
                Some(secs) if secs.is_finite() && secs > 0.0 => {
                    Duration::try_from_secs_f64(secs).map_or(max_lifetime, |d| d.min(max_lifetime))
                }
                _ => return Err(invalid("lifetime must be a number of seconds > 0")),
            },
        };
        let on_close_route = match obj.get("on_close_route") {
            None | Some(Value::Null) => None,
            Some(Value::String(route)) if is_backend_path(route) => Some(route.clone()),
            Some(_) => {
                return Err(invalid(
                    "on_close_route must be a path on the backend starting with / (not a URL)",
                ));
            }
        };
        let on_close_payload = on_close_route
            .as_ref()
            .and_then(|_| obj.get("on_close_payload"))
            .filter(|v| !v.is_null())
            .cloned();
        Ok(Params {
            lifetime,
            on_close_route,
            on_close_payload,
        })
    }
}

/// An origin-form path (`/…`, with an optional query): not `//host` (a network path), not a
/// URL, and nothing a request line cannot carry.
fn is_backend_path(route: &str) -> bool {
    route.starts_with('/')
        && !route.starts_with("//")
        && route.len() <= MAX_ROUTE_LEN
        && route.parse::<http::uri::PathAndQuery>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DAY: Duration = Duration::from_secs(86_400);

    fn parse(v: Value) -> Result<Params, WorkerError> {
        Params::parse(Some(v.to_string().as_bytes()), DAY)
    }

    #[test]
    fn defaults_follow_the_vastai_worker() {
        let p = Params::parse(None, DAY).unwrap();
        assert_eq!(p.lifetime, DEFAULT_LIFETIME);
        assert_eq!((p.on_close_route, p.on_close_payload), (None, None));
        let p = parse(json!({"lifetime": null, "on_close_route": null,
                             "on_close_payload": {"a": 1}}))
        .unwrap();
        assert_eq!(p.lifetime, DEFAULT_LIFETIME);
        assert_eq!(p.on_close_payload, None, "no route, no payload");
    }

    #[test]
    fn lifetime_is_a_positive_finite_number_cut_to_the_maximum() {
        assert_eq!(
            parse(json!({"lifetime": 2.5})).unwrap().lifetime,
            Duration::from_millis(2500)
        );
        assert_eq!(parse(json!({"lifetime": 1e9})).unwrap().lifetime, DAY);
        for bad in [json!(0), json!(-1), json!("60"), json!(true), json!([60])] {
            let err = parse(json!({"lifetime": bad})).unwrap_err();
            assert_eq!(err.status(), 422, "{bad}");
            assert!(err.to_string().contains("lifetime"), "{err}");
        }
    }

    #[test]
    fn on_close_route_is_a_backend_path_never_a_url() {
        let p =
            parse(json!({"on_close_route": "/jobs/done?x=1", "on_close_payload": [1]})).unwrap();
        assert_eq!(p.on_close_route.as_deref(), Some("/jobs/done?x=1"));
        assert_eq!(p.on_close_payload, Some(json!([1])));
        for bad in [
            json!("http://169.254.169.254/latest"),
            json!("//evil.example/x"),
            json!("relative/path"),
            json!("/with space"),
            json!(42),
        ] {
            let err = parse(json!({"on_close_route": bad})).unwrap_err();
            assert_eq!(err.status(), 422, "{bad}");
        }
    }

    #[test]
    fn a_payload_that_is_not_an_object_is_refused() {
        assert_eq!(parse(json!([1])).unwrap_err().status(), 422);
        assert_eq!(
            Params::parse(Some(b"{"), DAY).unwrap_err().to_string(),
            "invalid JSON"
        );
    }
}
