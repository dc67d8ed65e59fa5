//! Which HTTP a connection speaks, read from its first bytes: HTTP/2 when they are the
//! client preface (RFC 9113 §3.4), HTTP/1.1 as soon as they differ from it.
//!
//! hyper-util's `auto` builder does the same, then gives hyper those bytes alone as the
//! answer to its first read. hyper's read buffer starts at 8 KiB; with 24 bytes in it,
//! reserving room for the next read doubles it to 16 KiB, on every connection, for the
//! connection's life. [`Rewound`] answers the first read with the bytes already read *and*
//! whatever the socket holds after them, so a request head fits in the first 8 KiB.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.1 (or 1.0).
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
}

/// Reads from `io` until its bytes either differ from the HTTP/2 preface (HTTP/1) or are
/// the whole preface (HTTP/2), and returns `io` with those bytes put back in front. A
/// connection closed before either is HTTP/1 (hyper then sees what there is, or nothing).
pub async fn detect<I: AsyncRead + Unpin>(mut io: I) -> io::Result<(Version, Rewound<I>)> {
    let mut read = [0u8; PREFACE.len()];
    let mut len = 0;
    let version = loop {
        let n = io.read(&mut read[len..]).await?;
        len += n;
        if n == 0 || read[..len] != PREFACE[..len] {
            break Version::Http1;
        }
        if len == PREFACE.len() {
            break Version::Http2;
        }
    };
    Ok((
        version,
        Rewound {
            io,
            read,
            pos: 0,
            len,
        },
    ))
}

pin_project_lite::pin_project! {
    /// A stream with the bytes [`detect`] read from it put back in front.
    pub struct Rewound<I> {
        #[pin]
        io: I,
        read: [u8; PREFACE.len()],
        pos: usize,
        len: usize,
    }
}

impl<I> Rewound<I> {
    /// `io` with nothing read from it yet (the protocol is known from ALPN).
    pub fn unread(io: I) -> Self {
        Self {
            io,
            read: [0; PREFACE.len()],
            pos: 0,
            len: 0,
        }
    }
}

impl<I: AsyncRead> AsyncRead for Rewound<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if *this.pos == *this.len {
            return this.io.poll_read(cx, buf);
        }
        let n = (*this.len - *this.pos).min(buf.remaining());
        buf.put_slice(&this.read[*this.pos..*this.pos + n]);
        *this.pos += n;
        if buf.remaining() > 0 {
            // Internal: the bytes read back are answered either way; an error or the end of
            // the stream shows again on the next read, and `Pending` only left a waker.
            let _ = this.io.poll_read(cx, buf);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite> AsyncWrite for Rewound<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// What `detect` says of a client that writes `chunks`, and the whole stream it gives
    /// back, read in reads of at most `read_size` bytes.
    async fn detected(chunks: &[&[u8]], read_size: usize) -> (Version, Vec<u8>, Vec<usize>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        let writer = tokio::spawn(async move {
            let mut client = client;
            for c in chunks {
                client.write_all(&c).await.unwrap();
                client.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let (version, mut io) = detect(server).await.unwrap();
        writer.await.unwrap();
        let mut all = Vec::new();
        let mut reads = Vec::new();
        let mut buf = vec![0u8; read_size];
        loop {
            let n = io.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            reads.push(n);
            all.extend_from_slice(&buf[..n]);
        }
        (version, all, reads)
    }

    #[tokio::test]
    async fn an_http1_request_is_given_back_whole_in_one_read_after_the_first_bytes() {
        let request = b"POST /v1/completions HTTP/1.1\r\nhost: w\r\ncontent-length: 2\r\n\r\n{}";
        let (version, all, reads) = detected(&[request], 8192).await;
        assert_eq!(version, Version::Http1);
        assert_eq!(all, request);
        assert_eq!(
            reads,
            [request.len()],
            "one read: the bytes detect read and the rest"
        );
    }

    #[tokio::test]
    async fn the_preface_is_http2_even_when_it_arrives_in_pieces() {
        let (a, b) = PREFACE.split_at(5);
        let frames = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00";
        let (version, all, _) = detected(&[a, b, frames], 8192).await;
        assert_eq!(version, Version::Http2);
        assert_eq!(all, [&PREFACE[..], frames].concat());
    }

    #[tokio::test]
    async fn bytes_that_start_like_the_preface_then_differ_are_http1() {
        let request = b"PUT /x HTTP/1.1\r\nhost: w\r\n\r\n";
        let (version, all, _) = detected(&[b"P", request.strip_prefix(b"P").unwrap()], 4).await;
        assert_eq!(version, Version::Http1);
        assert_eq!(all, request, "small reads give everything back in order");
    }

    #[tokio::test]
    async fn a_connection_closed_before_any_byte_is_http1_with_nothing_to_read() {
        let (version, all, _) = detected(&[], 8192).await;
        assert_eq!(version, Version::Http1);
        assert!(all.is_empty());
    }
}
