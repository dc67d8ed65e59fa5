//! Upgrade requests (a WebSocket handshake) to the backend.
//!
//! An upgrade goes out on a new connection, never a pooled one, and that connection never
//! returns to the pool: after `101 Switching Protocols` it stops being HTTP and becomes the
//! relay's socket ([`BackendSocket`]), still counted in `vespa_backend_connections` while
//! it lives. Any other answer is relayed like a normal response, and its connection is
//! closed after it.

use super::{Backend, BackendError, OpenConn, ResponseBody};
use crate::http_util::Body;
use http::{Request, Response, StatusCode};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The backend's answer to an upgrade request.
pub enum UpgradeAnswer {
    /// `101 Switching Protocols`.
    Switched(Switched),
    /// Any other answer, relayed as a normal response.
    Refused(Response<ResponseBody>),
}

/// A `101` answer: its head, and the connection on its way to becoming a socket.
pub struct Switched {
    /// Status and headers of the backend's answer (`Sec-WebSocket-Accept`, …).
    pub head: http::response::Parts,
    upgrade: OnUpgrade,
    open: Option<OpenConn>,
}

impl std::fmt::Debug for Switched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switched")
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl Switched {
    /// The upgraded connection, once the connection's driver has handed it over.
    pub async fn socket(self) -> Result<BackendSocket, hyper::Error> {
        let io = self.upgrade.await?;
        Ok(BackendSocket {
            io: TokioIo::new(io),
            _open: self.open,
        })
    }
}

/// The backend end of a relayed WebSocket: the upgraded connection, counted open until
/// dropped.
pub struct BackendSocket {
    io: TokioIo<Upgraded>,
    _open: Option<OpenConn>,
}

impl std::fmt::Debug for BackendSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendSocket").finish_non_exhaustive()
    }
}

impl AsyncRead for BackendSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for BackendSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Backend {
    /// Sends an upgrade request on a new connection and waits for the answer's head.
    pub async fn upgrade(&self, req: Request<Body>) -> Result<UpgradeAnswer, BackendError> {
        let req = self.prepare(req);
        let mut conn = self.connect().await?;
        // Detached: dropping the connection's handle below must not close it, since after
        // a `101` its task still hands the socket over to `hyper::upgrade::on`.
        conn.detach();
        let mut resp = conn.sender.send_request(req).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(UpgradeAnswer::Refused(self.respond(
                resp,
                conn,
                super::Sent::Never,
            )));
        }
        let upgrade = hyper::upgrade::on(&mut resp);
        // The sender goes; the driver hands the socket over and ends.
        let open = conn.open.take();
        let (head, _empty) = resp.into_parts();
        Ok(UpgradeAnswer::Switched(Switched {
            head,
            upgrade,
            open,
        }))
    }
}
