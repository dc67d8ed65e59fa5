//! Request signatures shared by the worker (verifies) and the local autoscaler (signs).
//!
//! The autoscaler signs Python `json.dumps(message, indent=4, sort_keys=True)` bytes with
//! RSASSA-PKCS1-v1_5 / SHA-256 (PROTOCOL.md §3). Which message depends on the form:
//! `url` signs `{"url": auth_data.url}` (current Vast), `legacy` signs the five fields
//! other than `signature`.

pub mod canonical;
pub mod signature;

pub use signature::{KeyError, PublicKey, SigningKey};

use serde_json::{Map, Value};

/// The five `auth_data` fields the legacy form signs.
pub const LEGACY_FIELDS: [&str; 5] = ["cost", "endpoint", "reqnum", "request_idx", "url"];

/// Which message a signature covers (`SIGNATURE_FORM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureForm {
    /// `{"url": auth_data.url}`. Default.
    #[default]
    Url,
    /// `{cost, endpoint, reqnum, request_idx, url}`.
    Legacy,
    /// Either of the two (verification only).
    Any,
}

impl std::str::FromStr for SignatureForm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "url" => Ok(Self::Url),
            "legacy" => Ok(Self::Legacy),
            "any" => Ok(Self::Any),
            _ => Err("expected url, legacy or any".into()),
        }
    }
}

/// Canonical bytes of the `url` form, for the `url` value in `auth_data`.
pub fn url_message(auth: &Map<String, Value>) -> String {
    let mut m = Map::new();
    m.insert(
        "url".into(),
        auth.get("url").cloned().unwrap_or(Value::Null),
    );
    canonical::python_json_dumps(&Value::Object(m))
}

/// Canonical bytes of the `legacy` form: the five fields with the JSON types they arrived with.
pub fn legacy_message(auth: &Map<String, Value>) -> String {
    let m: Map<String, Value> = LEGACY_FIELDS
        .iter()
        .map(|k| {
            (
                (*k).to_string(),
                auth.get(*k).cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    canonical::python_json_dumps(&Value::Object(m))
}

/// The message(s) a signature may cover under `form`.
pub fn messages(form: SignatureForm, auth: &Map<String, Value>) -> Vec<String> {
    match form {
        SignatureForm::Url => vec![url_message(auth)],
        SignatureForm::Legacy => vec![legacy_message(auth)],
        SignatureForm::Any => vec![url_message(auth), legacy_message(auth)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn auth() -> Map<String, Value> {
        json!({"cost": 242.0, "endpoint": "my-endpoint", "reqnum": 12345, "request_idx": 2421,
               "url": "https://203.0.113.7:41234", "signature": "x", "__request_id": "r"})
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn url_form_is_the_url_alone() {
        assert_eq!(
            url_message(&auth()),
            "{\n    \"url\": \"https://203.0.113.7:41234\"\n}"
        );
    }

    #[test]
    fn legacy_form_is_sorted_five_fields_with_types_kept() {
        assert_eq!(
            legacy_message(&auth()),
            "{\n    \"cost\": 242.0,\n    \"endpoint\": \"my-endpoint\",\n    \"reqnum\": 12345,\n    \"request_idx\": 2421,\n    \"url\": \"https://203.0.113.7:41234\"\n}"
        );
    }

    #[test]
    fn openssl_signatures_verify_over_the_built_messages() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}{f}")).unwrap();
        let key = PublicKey::from_pem(&read("rsa_pub_spki.pem")).unwrap();
        let mut a = auth();
        a.insert("reqnum".into(), json!(1234));
        a.insert("request_idx".into(), json!(5678));
        assert_eq!(url_message(&a), read("msg_url.txt"));
        assert_eq!(legacy_message(&a), read("msg_legacy.txt"));
        assert!(key.verify(url_message(&a).as_bytes(), read("msg_url.sig.b64").trim()));
        assert!(key.verify(
            legacy_message(&a).as_bytes(),
            read("msg_legacy.sig.b64").trim()
        ));
    }
}
