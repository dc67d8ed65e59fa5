//! Request signatures shared by the worker (verifies) and the local autoscaler (signs).
//!
//! The autoscaler signs Python `json.dumps(message, indent=4, sort_keys=True)` bytes with
//! RSASSA-PKCS1-v1_5 / SHA-256 (PROTOCOL.md §3). Which message depends on the form:
//! `url` signs `{"url": auth_data.url}` (current Vast), `legacy` signs the five fields
//! other than `signature`.

pub mod canonical;
pub mod signature;
pub mod verified;

pub use signature::{KeyError, PublicKey, SigningKey};

use serde_json::{Map, Value};
use std::fmt;

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

impl SignatureForm {
    /// The messages a signature may cover under this form, in the order they are tried.
    pub fn messages(self) -> &'static [Message] {
        match self {
            SignatureForm::Url => &[Message::Url],
            SignatureForm::Legacy => &[Message::Legacy],
            SignatureForm::Any => &[Message::Url, Message::Legacy],
        }
    }
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

/// One of the two messages a signature may cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// `{"url": auth_data.url}`.
    Url,
    /// The five [`LEGACY_FIELDS`] with the JSON types they arrived with.
    Legacy,
}

impl Message {
    /// Writes this message's canonical bytes for `auth` to `out`, borrowing the values (a
    /// missing field is `null`).
    ///
    /// # Errors
    /// Only the ones `out` returns.
    pub fn write<W: fmt::Write + ?Sized>(
        self,
        out: &mut W,
        auth: &Map<String, Value>,
    ) -> fmt::Result {
        let field = |k: &'static str| (k, auth.get(k).unwrap_or(&Value::Null));
        match self {
            Message::Url => canonical::write_sorted_object(out, [field("url")]),
            // LEGACY_FIELDS are in sorted order.
            Message::Legacy => canonical::write_sorted_object(out, LEGACY_FIELDS.map(field)),
        }
    }

    /// This message's canonical bytes for `auth`.
    pub fn build(self, auth: &Map<String, Value>) -> String {
        let mut out = String::new();
        // Writing to a `String` cannot fail.
        let _ = self.write(&mut out, auth);
        out
    }
}

/// Canonical bytes of the `url` form, for the `url` value in `auth_data`.
pub fn url_message(auth: &Map<String, Value>) -> String {
    Message::Url.build(auth)
}

/// Canonical bytes of the `legacy` form: the five fields with the JSON types they arrived with.
pub fn legacy_message(auth: &Map<String, Value>) -> String {
    Message::Legacy.build(auth)
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
