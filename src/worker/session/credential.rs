//! `session_auth`: `/session/end`, `/session/get` and `/session/health` are authorised by
//! the `auth_data` the session was created with, sent back whole, as the official client
//! does. It is compared as JSON values (key order and number spelling do not matter, `10`
//! equals `10.0` as in Python), and the signature in constant time.

use crate::worker::envelope::AUTH_KEYS;
use serde_json::{Map, Value};

/// Whether `given` (a request's `session_auth`) is the session's stored `auth_data`.
pub fn matches(stored: &Map<String, Value>, given: &Value) -> bool {
    given.as_object().is_some_and(|g| same_fields(stored, g))
}

/// Whether two `auth_data` objects are the same: the same keys, equal values, and the same
/// `signature` compared in constant time.
pub fn same_fields(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    a.len() == b.len()
        && a.iter().all(|(k, va)| match (k.as_str(), b.get(k)) {
            (_, None) => false,
            ("signature", Some(vb)) => same_signature(va, vb),
            (_, Some(vb)) => same_value(va, vb),
        })
}

/// Whether a request's `auth_data` is the session's own as far as the signature goes: the
/// same values of the keys every `auth_data` carries ([`AUTH_KEYS`], the signature among
/// them). Keys beyond those (the autoscaler's `__request_id`) are not compared: the query
/// form (`serverless_*`, a GET, an upload, a WebSocket of the session) cannot carry them.
pub fn same_signed(stored: &Map<String, Value>, given: &Map<String, Value>) -> bool {
    AUTH_KEYS
        .iter()
        .all(|k| match (stored.get(*k), given.get(*k)) {
            (Some(a), Some(b)) if *k == "signature" => same_signature(a, b),
            (Some(a), Some(b)) => same_value(a, b),
            _ => false,
        })
}

fn same_signature(a: &Value, b: &Value) -> bool {
    match (a.as_str(), b.as_str()) {
        (Some(a), Some(b)) => {
            aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
        }
        _ => same_value(a, b),
    }
}

/// JSON equality as Python's `==` sees decoded JSON: numbers by value.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored() -> Map<String, Value> {
        json!({"cost": 10, "endpoint": "e", "reqnum": 3, "request_idx": 3,
               "signature": "c2ln", "url": "http://w", "__request_id": "r"})
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn the_same_auth_data_matches_whatever_its_key_order_or_number_spelling() {
        let given = json!({"url": "http://w", "signature": "c2ln", "request_idx": 3,
                           "reqnum": 3.0, "endpoint": "e", "cost": 10.0, "__request_id": "r"});
        assert!(matches(&stored(), &given));
    }

    #[test]
    fn the_query_form_of_the_auth_data_is_the_sessions_own() {
        // As split_query types it: numbers for cost, reqnum and request_idx, strings else,
        // and no `__request_id`.
        let query = json!({"cost": 10, "endpoint": "e", "reqnum": 3, "request_idx": 3,
                           "signature": "c2ln", "url": "http://w"});
        let query = query.as_object().unwrap();
        assert!(!same_fields(&stored(), query), "not the whole auth_data");
        assert!(same_signed(&stored(), query));
        let mut other = query.clone();
        other["signature"] = json!("c2lO");
        assert!(!same_signed(&stored(), &other), "another signature");
        let mut other = query.clone();
        other.remove("url");
        assert!(!same_signed(&stored(), &other), "a signed key missing");
    }

    #[test]
    fn any_other_value_does_not_match() {
        let s = stored();
        assert!(!matches(&s, &Value::Null), "no session_auth");
        assert!(!matches(&s, &json!("c2ln")));
        let mut other = Value::Object(s.clone());
        other["signature"] = json!("c2lO");
        assert!(!matches(&s, &other), "another signature");
        let mut other = Value::Object(s.clone());
        other["reqnum"] = json!(4);
        assert!(!matches(&s, &other), "another reqnum");
        let mut other = Value::Object(s.clone());
        other.as_object_mut().unwrap().remove("__request_id");
        assert!(!matches(&s, &other), "a key missing");
        let mut other = Value::Object(s.clone());
        other["extra"] = json!(1);
        assert!(!matches(&s, &other), "a key more");
    }
}
