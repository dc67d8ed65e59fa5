//! Small HTTP helpers shared by every server and client in Vespa.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Boxed error used by streaming bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response Vespa's servers produce.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A JSON response with `status` and the serialised `value`.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A plain-text response.
pub fn text_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), and must not be
/// forwarded by a proxy in either direction.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// Removes hop-by-hop headers: the fixed list above plus every header named in `Connection`
/// (RFC 9110 §7.6.1: "a proxy … MUST remove any header fields listed in Connection").
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in named_in_connection(headers).iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// The headers a `Connection` header names (none, without allocating, when it is absent).
fn named_in_connection(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// A copy of `headers` without hop-by-hop headers (as [`strip_hop_by_hop`]) and without
/// the headers in `also`: one pass over the headers, instead of a copy then a removal per
/// name.
pub fn copy_end_to_end(headers: &HeaderMap, also: &[HeaderName]) -> HeaderMap {
    let named = named_in_connection(headers);
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let dropped = HOP_BY_HOP.contains(name) || also.contains(name) || named.contains(name);
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// An error and its whole `source()` chain on one line (`a: b: c`), for messages and logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = inner.source();
    }
    s
}

/// Whether a body with these headers is JSON: `Content-Type` JSON (`application/json`,
/// `*+json`, `text/json`) or absent, as PROTOCOL.md §2 reads an envelope.
pub fn is_json_content(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let Ok(ct) = ct.to_str() else { return false };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || mime.ends_with("+json") || mime == "text/json"
}

/// Bodies for unit tests.
#[cfg(test)]
pub(crate) mod test_body {
    use bytes::Bytes;
    use http_body::{Body, Frame};
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::sync::mpsc;

    /// A body whose frames the test sends; it ends when the sender is dropped.
    pub(crate) struct Frames(pub mpsc::Receiver<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            self.0.poll_recv(cx).map(|f| f.map(|b| Ok(Frame::data(b))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_shows_every_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        #[derive(Debug, thiserror::Error)]
        #[error("connect failed")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(error_chain(&Outer(io)), "connect failed: refused");
    }

    #[test]
    fn strips_fixed_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.append(header::CONNECTION, HeaderValue::from_static("X-Other"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-other", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let mut copy_of = h.clone();
        copy_of.append("x-kept", HeaderValue::from_static("a"));
        copy_of.append("x-kept", HeaderValue::from_static("b"));
        copy_of.insert(header::HOST, HeaderValue::from_static("w"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::CONTENT_TYPE));
        // The one-pass copy drops the same headers, and those it is told to, keeping
        // repeated ones in order.
        let copy = copy_end_to_end(&copy_of, &[header::HOST]);
        assert_eq!(copy.len(), 3, "{copy:?}");
        assert!(copy.contains_key(header::CONTENT_TYPE));
        let kept: Vec<_> = copy.get_all("x-kept").iter().collect();
        assert_eq!(kept, ["a", "b"]);
    }
}
