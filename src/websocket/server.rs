//! The server end of a WebSocket after the handshake: unmasked frames out, masked frames in
//! (RFC 6455 §5.1), fragmented messages put back together, control frames handed to the
//! caller so it answers them where it chooses.
//!
//! Internal: [`ServerSocket::recv`] only awaits reads into the socket's own buffer, so it is
//! cancel-safe and can sit in a `select!` beside a queue of messages to send; every write is
//! a separate call the caller awaits outside the race.

use super::frame::{self, Header, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A whole text message.
    Text(String),
    /// A whole binary message.
    Binary(Vec<u8>),
    /// A ping with its payload: answer with [`ServerSocket::pong`].
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// A close frame with its status code, if it had one: answer with
    /// [`ServerSocket::close`], then drop the socket.
    Close(Option<u16>),
}

/// Why reading from a client failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The connection failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The client broke the protocol (close with 1002).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A message longer than the limit (close with 1009).
    #[error("message larger than {0} bytes")]
    TooBig(usize),
}

impl ReadError {
    /// The close code to answer this error with.
    pub fn close_code(&self) -> u16 {
        match self {
            ReadError::TooBig(_) => frame::CLOSE_TOO_BIG,
            _ => frame::CLOSE_PROTOCOL_ERROR,
        }
    }
}

/// The server end of an upgraded connection.
#[derive(Debug)]
pub struct ServerSocket<S> {
    io: S,
    buf: Vec<u8>,
    /// Opcode and payload so far of a fragmented message.
    partial: Option<(u8, Vec<u8>)>,
    max_message: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ServerSocket<S> {
    /// Wraps the upgraded `io`; messages longer than `max_message` bytes are refused.
    pub fn new(io: S, max_message: usize) -> Self {
        Self {
            io,
            buf: Vec::with_capacity(4096),
            partial: None,
            max_message,
        }
    }

    /// Sends a text message in one frame.
    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send(OP_TEXT, text.as_bytes()).await
    }

    /// Answers a ping.
    pub async fn pong(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send(OP_PONG, payload).await
    }

    /// Sends a close frame with `code`; the caller drops the socket after.
    pub async fn close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        self.io
            .write_all(&frame::close_frame(code, reason, None))
            .await?;
        self.io.flush().await
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        self.io
            .write_all(&frame::encode_frame(opcode, payload, None))
            .await?;
        self.io.flush().await
    }

    /// The next message or control frame; `None` when the client closed the connection
    /// without a close frame. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            if let Some(incoming) = self.next_frame()? {
                return Ok(Some(incoming));
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Takes one whole frame out of the buffer, if there is one; data frames that do not
    /// end a message are kept until the message is whole.
    fn next_frame(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            let Some((header, at)) = Header::parse(&self.buf) else {
                return Ok(None);
            };
            let Some(key) = header.mask else {
                return Err(ReadError::Protocol("a client frame must be masked"));
            };
            let len = usize::try_from(header.len).unwrap_or(usize::MAX);
            let held = self.partial.as_ref().map_or(0, |(_, p)| p.len());
            if len > self.max_message.saturating_sub(held) {
                return Err(ReadError::TooBig(self.max_message));
            }
            if self.buf.len() - at < len {
                return Ok(None);
            }
            let mut payload: Vec<u8> = self.buf.drain(..at + len).skip(at).collect();
            frame::apply_mask(&mut payload, key, 0);
            if header.is_control() {
                if !header.fin || len > frame::MAX_CONTROL_PAYLOAD {
                    return Err(ReadError::Protocol("control frames are short and whole"));
                }
                return match header.opcode {
                    OP_CLOSE => Ok(Some(Incoming::Close(frame::close_code(&payload)))),
                    OP_PING => Ok(Some(Incoming::Ping(payload))),
                    OP_PONG => Ok(Some(Incoming::Pong)),
                    _ => Err(ReadError::Protocol("unknown control opcode")),
                };
            }
            let (opcode, mut message) = match (header.opcode, self.partial.take()) {
                (OP_CONTINUATION, Some(started)) => started,
                (OP_TEXT | OP_BINARY, None) => (header.opcode, Vec::new()),
                (OP_CONTINUATION, None) => {
                    return Err(ReadError::Protocol("continuation without a message"));
                }
                (OP_TEXT | OP_BINARY, Some(_)) => {
                    return Err(ReadError::Protocol("new message inside a fragmented one"));
                }
                _ => return Err(ReadError::Protocol("unknown data opcode")),
            };
            message.extend_from_slice(&payload);
            if !header.fin {
                self.partial = Some((opcode, message));
                continue;
            }
            return match opcode {
                OP_TEXT => String::from_utf8(message)
                    .map(|t| Some(Incoming::Text(t)))
                    .map_err(|_| ReadError::Protocol("text message is not UTF-8")),
                _ => Ok(Some(Incoming::Binary(message))),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::websocket::frame::{Header, encode_frame};

    const KEY: Option<[u8; 4]> = Some([0xa, 0xb, 0xc, 0xd]);

    #[tokio::test]
    async fn fragments_and_control_frames_come_out_in_order() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut sock = ServerSocket::new(server, 1024);
        let mut first = Vec::new();
        Header {
            fin: false,
            rsv: 0,
            opcode: OP_TEXT,
            mask: KEY,
            len: 3,
        }
        .encode(&mut first);
        let mut part = b"hel".to_vec();
        frame::apply_mask(&mut part, KEY.unwrap(), 0);
        first.extend(part);
        client.write_all(&first).await.unwrap();
        client
            .write_all(&encode_frame(OP_PING, b"p", KEY))
            .await
            .unwrap();
        client
            .write_all(&encode_frame(OP_CONTINUATION, b"lo", KEY))
            .await
            .unwrap();
        client
            .write_all(&frame::close_frame(1000, "", KEY))
            .await
            .unwrap();
        assert_eq!(
            sock.recv().await.unwrap(),
            Some(Incoming::Ping(b"p".to_vec()))
        );
        assert_eq!(
            sock.recv().await.unwrap(),
            Some(Incoming::Text("hello".into()))
        );
        assert_eq!(
            sock.recv().await.unwrap(),
            Some(Incoming::Close(Some(1000)))
        );
        drop(client);
        assert_eq!(sock.recv().await.unwrap(), None);
    }

    #[tokio::test]
    async fn unmasked_and_oversized_frames_are_refused() {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut sock = ServerSocket::new(server, 16);
        client
            .write_all(&encode_frame(OP_TEXT, b"x", None))
            .await
            .unwrap();
        let err = sock.recv().await.unwrap_err();
        assert_eq!(err.close_code(), frame::CLOSE_PROTOCOL_ERROR, "{err}");

        let (mut client, server) = tokio::io::duplex(4096);
        let mut sock = ServerSocket::new(server, 16);
        client
            .write_all(&encode_frame(OP_BINARY, &[0; 17], KEY))
            .await
            .unwrap();
        let err = sock.recv().await.unwrap_err();
        assert_eq!(err.close_code(), frame::CLOSE_TOO_BIG, "{err}");
    }

    #[tokio::test]
    async fn sent_frames_are_unmasked() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut sock = ServerSocket::new(server, 1024);
        sock.send_text("hi").await.unwrap();
        let mut got = [0u8; 4];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [0x81, 0x02, b'h', b'i']);
    }
}
