//! The opening handshake (RFC 6455 §4): recognising an upgrade request and the
//! `Sec-WebSocket-Accept` answer to its key.

use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Version};

/// `Sec-WebSocket-Key`.
pub const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
/// `Sec-WebSocket-Accept`.
pub const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
/// `Sec-WebSocket-Version`.
pub const SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");

/// The GUID a server appends to the client's key (RFC 6455 §1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Whether a comma-separated header (`Connection`, `Upgrade`) lists `token`, in any case.
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether a request asks to become a WebSocket: an HTTP/1.1 `GET` with
/// `Connection: upgrade` and `Upgrade: websocket` (RFC 6455 §4.1). HTTP/2 has no
/// `Connection` header (its WebSockets use extended CONNECT, RFC 8441).
pub fn is_upgrade(method: &Method, version: Version, headers: &HeaderMap) -> bool {
    method == Method::GET
        && version == Version::HTTP_11
        && has_token(headers, &header::CONNECTION, "upgrade")
        && has_token(headers, &header::UPGRADE, "websocket")
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`: base64 of the SHA-1 of the
/// key and the GUID.
pub fn accept_key(key: &[u8]) -> String {
    let mut input = Vec::with_capacity(key.len() + GUID.len());
    input.extend_from_slice(key);
    input.extend_from_slice(GUID.as_bytes());
    STANDARD.encode(digest(&SHA1_FOR_LEGACY_USE_ONLY, &input))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn only_an_http11_get_with_both_tokens_is_an_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "WebSocket".parse().unwrap());
        assert!(is_upgrade(&Method::GET, Version::HTTP_11, &h));
        assert!(!is_upgrade(&Method::POST, Version::HTTP_11, &h));
        assert!(!is_upgrade(&Method::GET, Version::HTTP_2, &h));
        h.insert(header::UPGRADE, "h2c".parse().unwrap());
        assert!(!is_upgrade(&Method::GET, Version::HTTP_11, &h));
    }
}
