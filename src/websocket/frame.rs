//! RFC 6455 §5.2 frame headers: decoding, encoding, and a [`Cursor`] that follows frame
//! boundaries in a byte stream without copying or unmasking payloads.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```

/// Opcode of a continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Opcode of a text frame.
pub const OP_TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const OP_PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const OP_PONG: u8 = 0xA;

/// Close code 1000: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code 1001: the endpoint is going away (a server shutting down).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code 1002: protocol error.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code 1009: a message too big to process.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// The longest frame header: 2 bytes, a 64-bit length and a masking key.
pub const MAX_HEADER: usize = 14;

/// Payload of a control frame at most (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The final fragment of a message.
    pub fin: bool,
    /// RSV1–3, as sent (an extension such as permessage-deflate sets RSV1).
    pub rsv: u8,
    /// Frame opcode.
    pub opcode: u8,
    /// Masking key: every frame from a client carries one, none from a server.
    pub mask: Option<[u8; 4]>,
    /// Payload length, bytes.
    pub len: u64,
}

impl Header {
    /// Decodes the header at the start of `buf`: the header and its length in bytes, or
    /// `None` while `buf` holds only part of it.
    pub fn parse(buf: &[u8]) -> Option<(Header, usize)> {
        let (&b0, &b1) = (buf.first()?, buf.get(1)?);
        let masked = b1 & 0x80 != 0;
        let (len, mut at) = match b1 & 0x7f {
            126 => (
                u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
                4,
            ),
            127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
            n => (u64::from(n), 2),
        };
        let mask = match masked {
            true => {
                let key = buf.get(at..at + 4)?.try_into().ok()?;
                at += 4;
                Some(key)
            }
            false => None,
        };
        let header = Header {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x07,
            opcode: b0 & 0x0f,
            mask,
            len,
        };
        Some((header, at))
    }

    /// Appends the encoded header to `out`, with the shortest length form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.fin) << 7 | (self.rsv & 0x07) << 4 | (self.opcode & 0x0f));
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        match self.len {
            n @ 0..=125 => out.push(mask_bit | n as u8),
            n @ 126..=0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        if let Some(key) = self.mask {
            out.extend_from_slice(&key);
        }
    }

    /// Whether this is a control frame (close, ping, pong).
    pub fn is_control(&self) -> bool {
        self.opcode & 0x08 != 0
    }
}

/// XORs `data` with the masking key, as if it started at byte `offset` of the payload
/// (RFC 6455 §5.3). Masking and unmasking are the same operation.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= key[(offset + i) % 4];
    }
}

/// A whole frame: `payload` with a header for `opcode`, masked with `mask` when given.
pub fn encode_frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_HEADER + payload.len());
    Header {
        fin: true,
        rsv: 0,
        opcode,
        mask,
        len: payload.len() as u64,
    }
    .encode(&mut out);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
    out
}

/// A close frame with `code` and `reason` (cut to fit a control frame), masked with
/// `mask` when given (a frame to a server).
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut payload = Vec::with_capacity(MAX_CONTROL_PAYLOAD);
    payload.extend_from_slice(&code.to_be_bytes());
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode_frame(OP_CLOSE, &payload, mask)
}

/// The status code of a close frame's payload (unmasked), when it has one.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(payload.get(..2)?.try_into().ok()?))
}

/// Follows frame boundaries in one direction of a WebSocket byte stream: fed every byte in
/// order, it knows whether the stream stands between two frames, how many more bytes
/// belong to the frame in progress, and whether a close frame went by. It reads headers
/// only; payloads are skipped by count.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    head: [u8; MAX_HEADER],
    /// Header bytes of the frame in progress collected so far; 0 outside a header.
    have: usize,
    /// Payload bytes of the frame in progress still to come.
    remaining: u64,
    /// A close frame's header went by.
    closed: bool,
}

impl Cursor {
    /// Takes in the next `bytes` of the stream.
    pub fn advance(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.remaining > 0 {
                let n = rest
                    .len()
                    .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                self.remaining -= n as u64;
                rest = &rest[n..];
                continue;
            }
            self.head[self.have] = rest[0];
            self.have += 1;
            rest = &rest[1..];
            if let Some((header, _)) = Header::parse(&self.head[..self.have]) {
                self.have = 0;
                self.remaining = header.len;
                self.closed |= header.opcode == OP_CLOSE;
            }
        }
    }

    /// Whether the stream stands between two frames (nothing of a frame is pending).
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// How many more bytes may pass without going beyond the end of the frame in
    /// progress: 0 between frames. While a header is incomplete this counts the header
    /// bytes known to be missing; once they pass, the payload's length is known.
    pub fn to_boundary(&self) -> u64 {
        if self.remaining > 0 {
            return self.remaining;
        }
        match self.have {
            0 => 0,
            1 => 1,
            _ => {
                let b1 = self.head[1];
                let ext = match b1 & 0x7f {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
                (2 + ext + mask - self.have) as u64
            }
        }
    }

    /// Whether a close frame has gone by.
    pub fn closed(&self) -> bool {
        self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_in_every_length_form() {
        for len in [0u64, 5, 125, 126, 65535, 65536, 1 << 40] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let h = Header {
                    fin: len % 2 == 0,
                    rsv: 4,
                    opcode: OP_BINARY,
                    mask,
                    len,
                };
                let mut out = Vec::new();
                h.encode(&mut out);
                assert_eq!(Header::parse(&out), Some((h, out.len())), "{len} {mask:?}");
                assert_eq!(Header::parse(&out[..out.len() - 1]), None);
            }
        }
    }

    #[test]
    fn an_rfc_6455_example_frame_decodes() {
        // §5.7: a single-frame masked text message "Hello".
        let frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, at) = Header::parse(&frame).unwrap();
        assert_eq!((h.fin, h.opcode, h.len, at), (true, OP_TEXT, 5, 6));
        let mut payload = frame[at..].to_vec();
        apply_mask(&mut payload, h.mask.unwrap(), 0);
        assert_eq!(payload, b"Hello");
        assert_eq!(
            encode_frame(OP_TEXT, b"Hello", h.mask),
            frame,
            "encoding masks the payload"
        );
    }

    #[test]
    fn close_frames_carry_their_code_and_a_cut_reason() {
        let frame = close_frame(CLOSE_GOING_AWAY, &"é".repeat(100), None);
        let (h, at) = Header::parse(&frame).unwrap();
        assert_eq!(h.opcode, OP_CLOSE);
        assert!(h.len as usize <= MAX_CONTROL_PAYLOAD);
        assert_eq!(close_code(&frame[at..]), Some(1001));
        assert!(std::str::from_utf8(&frame[at + 2..]).is_ok());
        let masked = close_frame(CLOSE_NORMAL, "bye", Some([9, 8, 7, 6]));
        let (h, at) = Header::parse(&masked).unwrap();
        let mut payload = masked[at..].to_vec();
        apply_mask(&mut payload, h.mask.unwrap(), 0);
        assert_eq!(close_code(&payload), Some(1000));
        assert_eq!(&payload[2..], b"bye");
    }

    #[test]
    fn the_cursor_finds_boundaries_whatever_the_chunking() {
        let mut stream = Vec::new();
        stream.extend(encode_frame(OP_TEXT, b"hi", Some([1, 2, 3, 4])));
        stream.extend(encode_frame(OP_BINARY, &[7u8; 300], None));
        stream.extend(encode_frame(OP_PING, b"", None));
        let ends = [8usize, 8 + 4 + 300, 8 + 304 + 2];
        for chunk in 1..=stream.len() {
            let mut c = Cursor::default();
            let mut at = 0;
            let mut boundaries = Vec::new();
            while at < stream.len() {
                let end = (at + chunk).min(stream.len());
                // Within the chunk, never past the end of the frame in progress.
                while at < end {
                    let step = (c.to_boundary().max(1) as usize).min(end - at);
                    c.advance(&stream[at..at + step]);
                    at += step;
                    if c.at_boundary() {
                        boundaries.push(at);
                    }
                }
            }
            for end in ends {
                assert!(boundaries.contains(&end), "chunk {chunk}: {boundaries:?}");
            }
            assert!(!c.closed());
            // Fed in chunks that cross frame ends, it still ends between frames.
            let mut c = Cursor::default();
            for piece in stream.chunks(chunk) {
                c.advance(piece);
            }
            assert!(c.at_boundary(), "chunk {chunk}");
        }
    }

    #[test]
    fn the_cursor_sees_a_close_frame_go_by() {
        let mut c = Cursor::default();
        let frame = close_frame(CLOSE_NORMAL, "", Some([0; 4]));
        c.advance(&frame[..3]);
        assert!(!c.at_boundary() && !c.closed());
        assert_eq!(c.to_boundary(), 3, "the rest of the masking key");
        c.advance(&frame[3..6]);
        assert!(c.closed());
        assert_eq!(c.to_boundary(), 2, "the close code");
    }
}
