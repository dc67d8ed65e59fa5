//! Headers the worker adds: `X-Request-Id`, a W3C `traceparent` when asked to make one, and
//! `Server-Timing`.
//!
//! Internal: each value is written into a stack buffer and copied once into its
//! `HeaderValue`; an incoming `X-Request-Id` or `traceparent` is kept as the same shared
//! bytes it arrived in.

use http::HeaderValue;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// `X-Request-Id`.
pub static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
/// `traceparent` (W3C Trace Context).
pub static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
/// `Server-Timing`.
pub static SERVER_TIMING: http::HeaderName = http::HeaderName::from_static("server-timing");

/// The longest incoming `X-Request-Id` kept; a longer one is replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// What the worker does about W3C trace context (`TRACE_CONTEXT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TraceContext {
    /// `traceparent`, `tracestate` and `baggage` reach the backend as the client sent them;
    /// none is made up. The default.
    #[default]
    Passthrough,
    /// As `Passthrough`, and a request without `traceparent` gets a new one: version 00,
    /// random trace and parent ids, sampled.
    Generate,
}

/// A fixed-size text buffer: formatting into it allocates nothing.
#[derive(Debug)]
struct StackText<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackText<N> {
    fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    fn header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_bytes(&self.buf[..self.len]).ok()
    }
}

impl<const N: usize> Write for StackText<N> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // Internal: the system generator does not fail on supported platforms; ids stay
        // unique per process through the counter, and a trace id must not be all zeros.
        bytes[N - 1] = 1;
    }
    bytes
}

fn hex<const N: usize>(out: &mut StackText<N>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        let pair = [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]];
        let _ = out.write_str(std::str::from_utf8(&pair).unwrap_or("00"));
    }
}

/// Request ids for one worker: a random per-process prefix and a counter
/// (`3f9a1c07b2e4-17`), unique across workers without coordination.
#[derive(Debug)]
pub struct RequestIds {
    /// The random prefix, as hex.
    prefix: StackText<12>,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        let mut prefix = StackText::new();
        hex(&mut prefix, &random::<6>());
        Self {
            prefix,
            next: AtomicU64::new(1),
        }
    }
}

impl RequestIds {
    /// The client's `X-Request-Id` when it is usable (1 to [`MAX_REQUEST_ID_LEN`] visible
    /// ASCII characters), as a copy of its own ([`owned`]), else a new id.
    pub fn for_request(&self, given: Option<&HeaderValue>) -> HeaderValue {
        match given {
            Some(v) if usable_request_id(v) => owned(v),
            _ => self.next(),
        }
    }

    /// A new id.
    pub fn next(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut text = StackText::<40>::new();
        let _ = text.write_str(self.prefix.as_str());
        let _ = write!(text, "-{n}");
        text.header_value()
            .expect("hex digits, a dash and decimal digits are a valid header value")
    }
}

/// `v` in storage of its own.
///
/// Internal: a header value hyper parsed shares the connection's read buffer. Held for as
/// long as a response streams, it would keep that buffer (8 KiB) alive and make hyper
/// allocate another one for the connection's next read.
pub(super) fn owned(v: &HeaderValue) -> HeaderValue {
    let mut copy = HeaderValue::from_bytes(v.as_bytes()).unwrap_or_else(|_| v.clone());
    copy.set_sensitive(v.is_sensitive());
    copy
}

fn usable_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= MAX_REQUEST_ID_LEN && b.iter().all(|c| (0x21..=0x7e).contains(c))
}

/// A new `traceparent`: version 00, a random trace id and parent id, sampled (`-01`).
pub fn new_traceparent() -> HeaderValue {
    let ids: [u8; 24] = random();
    let mut text = StackText::<55>::new();
    let _ = text.write_str("00-");
    hex(&mut text, &ids[..16]);
    let _ = text.write_str("-");
    hex(&mut text, &ids[16..]);
    let _ = text.write_str("-01");
    text.header_value()
        .expect("a traceparent is lowercase hex and dashes")
}

/// The trace id of a well-formed `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`, W3C Trace
/// Context §3.2), for the access log; `None` for anything else.
pub fn trace_id(traceparent: &HeaderValue) -> Option<&str> {
    let s = traceparent.to_str().ok()?;
    let b = s.as_bytes();
    let hex_at = |r: std::ops::Range<usize>| {
        b.get(r)
            .is_some_and(|h| h.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
    };
    let dashes = [2, 35, 52].iter().all(|i| b.get(*i) == Some(&b'-'));
    let version_ok = hex_at(0..2) && &b[..2] != b"ff";
    let ids_ok = hex_at(3..35) && hex_at(36..52) && hex_at(53..55);
    let tail_ok = b.len() == 55 || (&b[..2] != b"00" && b.get(55) == Some(&b'-'));
    let trace = s.get(3..35)?;
    (dashes && version_ok && ids_ok && tail_ok && trace.bytes().any(|c| c != b'0')).then_some(trace)
}

/// `Server-Timing` with the worker's figures: `queue;dur=<ms>` (the wait for a backend
/// slot) and `backend;dur=<ms>` (sent to the backend until its response head), each only
/// when known. `None` when neither is.
pub fn server_timing(queue: Option<Duration>, backend: Option<Duration>) -> Option<HeaderValue> {
    let mut text = StackText::<64>::new();
    for (name, d) in [("queue", queue), ("backend", backend)] {
        let Some(d) = d else { continue };
        let sep = if text.len > 0 { ", " } else { "" };
        let _ = write!(text, "{sep}{name};dur={:.3}", d.as_secs_f64() * 1000.0);
    }
    (text.len > 0).then(|| text.header_value()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_client_request_id_is_kept_and_others_are_replaced() {
        let ids = RequestIds::default();
        let given = HeaderValue::from_static("abc-123");
        assert_eq!(ids.for_request(Some(&given)), given);
        let long = HeaderValue::from_str(&"x".repeat(MAX_REQUEST_ID_LEN + 1)).unwrap();
        for bad in [
            HeaderValue::from_static(""),
            HeaderValue::from_static("has space"),
            long,
        ] {
            let id = ids.for_request(Some(&bad));
            assert_ne!(id, bad);
            assert!(usable_request_id(&id), "{id:?}");
        }
    }

    #[test]
    fn new_request_ids_share_a_prefix_and_differ() {
        let ids = RequestIds::default();
        let (a, b) = (ids.next(), ids.next());
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.split('-').next(), b.split('-').next());
        assert_eq!(a.split('-').next().unwrap().len(), 12);
    }

    #[test]
    fn a_new_traceparent_is_well_formed_and_sampled() {
        let tp = new_traceparent();
        let s = tp.to_str().unwrap();
        assert_eq!(s.len(), 55, "{s}");
        assert!(s.starts_with("00-") && s.ends_with("-01"), "{s}");
        assert_eq!(trace_id(&tp), Some(&s[3..35]));
        assert_ne!(new_traceparent(), tp);
    }

    #[test]
    fn trace_id_reads_only_well_formed_traceparents() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id(&HeaderValue::from_static(ok)),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(trace_id(&HeaderValue::from_static(bad)), None, "{bad}");
        }
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert!(trace_id(&HeaderValue::from_static(later)).is_some());
    }

    #[test]
    fn server_timing_names_what_is_known() {
        let ms = Duration::from_micros;
        assert_eq!(
            server_timing(Some(ms(1500)), Some(ms(250_250))).unwrap(),
            "queue;dur=1.500, backend;dur=250.250"
        );
        assert_eq!(
            server_timing(None, Some(ms(2))).unwrap(),
            "backend;dur=0.002"
        );
        assert_eq!(server_timing(None, None), None);
    }
}
