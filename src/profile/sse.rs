//! Server-sent events, read incrementally: the benchmark counts a streamed answer's work as
//! its events arrive.
//!
//! Only what counting needs: events are separated by a blank line (`\n\n` or `\r\n\r\n`), and
//! an event's `data:` lines are joined with `\n`. Comments, `event:`, `id:` and `retry:` lines
//! are ignored.

/// Most bytes one event may hold before the stream is refused as not an event stream.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Splits a byte stream into the data of its events.
#[derive(Debug, Default)]
pub struct Events {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for an event end.
    scanned: usize,
}

impl Events {
    /// Adds bytes read from the stream; calls `on_data` with the data of each complete
    /// event (events without data are skipped). Fails when one event grows past
    /// [`MAX_EVENT_BYTES`].
    pub fn push(&mut self, bytes: &[u8], mut on_data: impl FnMut(&[u8])) -> Result<(), String> {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        let mut data = Vec::new();
        let mut i = self.scanned.saturating_sub(3);
        while let Some(end) = find_blank_line(&self.buf[start..], i.saturating_sub(start)) {
            let (event, sep) = end;
            data.clear();
            event_data(&self.buf[start..start + event], &mut data);
            if !data.is_empty() {
                on_data(&data);
            }
            start += event + sep;
            i = start;
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err(format!(
                "a streamed event is longer than {MAX_EVENT_BYTES} bytes"
            ));
        }
        Ok(())
    }
}

/// The end of the first event in `buf` searching from `from`: (event length, separator
/// length).
fn find_blank_line(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some((i, 2));
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

/// Appends the `data:` lines of one event to `out`, joined with `\n`.
fn event_data(event: &[u8], out: &mut Vec<u8>) {
    for line in event.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            if !out.is_empty() {
                out.push(b'\n');
            }
            out.extend_from_slice(rest.strip_prefix(b" ").unwrap_or(rest));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut events = Events::default();
        let mut out = Vec::new();
        for c in chunks {
            events
                .push(c, |d| out.push(String::from_utf8_lossy(d).into_owned()))
                .unwrap();
        }
        out
    }

    #[test]
    fn events_split_across_reads_and_line_endings() {
        let whole: &[u8] = b"data: {\"a\":1}\n\n: comment\n\ndata: x\r\n\r\nevent: e\ndata: p\ndata: q\n\ndata: [DONE]\n\n";
        let want = vec!["{\"a\":1}", "x", "p\nq", "[DONE]"];
        assert_eq!(split(&[whole]), want);
        // Every split point, byte by byte included, gives the same events.
        for at in 0..whole.len() {
            assert_eq!(split(&[&whole[..at], &whole[at..]]), want, "split at {at}");
        }
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(split(&bytes), want);
        // An unfinished event is not reported.
        assert_eq!(split(&[b"data: 1\n\ndata: 2\n"]), vec!["1"]);
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut events = Events::default();
        let big = vec![b'x'; MAX_EVENT_BYTES / 4];
        let mut r = Ok(());
        for _ in 0..5 {
            r = events.push(&big, |_| {});
        }
        assert!(r.unwrap_err().contains("longer than"));
    }
}
