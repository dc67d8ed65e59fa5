//! WebSockets through the worker: an HTTP/1.1 upgrade (`Connection: upgrade`,
//! `Upgrade: websocket`) passes the envelope, auth and admission like any request (its auth
//! in the `serverless_*` query parameters), is forwarded to the backend with its handshake
//! headers, and when the backend answers `101 Switching Protocols` the client gets that
//! answer and the two upgraded connections are spliced byte for byte ([`splice`]).
//!
//! Vast's own proxy path cannot carry WebSockets (its example connects to the instance
//! directly, past the worker and its auth); here a socket is one working request of its
//! cost from admission until it closes. It takes no concurrency slot: a socket mostly waits
//! (ComfyUI's progress socket beside its job), and with `ALLOW_PARALLEL=false` it would
//! hold the only slot the job it watches needs. A socket opened in a session (its
//! `serverless_session_id`) closes when the session does. No request timeout
//! applies after the `101`; `WEBSOCKET_IDLE_TIMEOUT` does, and `SEND_TIMEOUT` still bounds
//! a client that takes no bytes.
//!
//! Internal: the response future has returned once the `101` is sent, so the socket is
//! relayed in a task of its own (the one exception to "never spawn on the request path").
//! That task owns the request's [`Admitted`] guard and [`Record`], so its accounting ends
//! when the socket closes, and, aborted, their `Drop` counts it cancelled. It watches
//! [`Sockets`], through which the drain closes every socket properly.

pub mod splice;

use super::admission::Admitted;
use super::backend::Switched;
use super::ledger::Outcome;
use super::observe::{Ending, Record};
use super::session::Entered;
use crate::http_util::{Body, empty, strip_hop_by_hop};
use crate::websocket::handshake;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use splice::{Closed, Limits};
use tokio::sync::watch;

/// The client's side of a WebSocket handshake: its pending upgrade.
pub struct ClientUpgrade(OnUpgrade);

impl std::fmt::Debug for ClientUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientUpgrade").finish_non_exhaustive()
    }
}

impl ClientUpgrade {
    /// The pending upgrade of a WebSocket handshake request; `None` for any other request.
    pub fn take(parts: &mut Parts) -> Option<ClientUpgrade> {
        if !handshake::is_upgrade(&parts.method, parts.version, &parts.headers) {
            return None;
        }
        parts.extensions.remove::<OnUpgrade>().map(ClientUpgrade)
    }
}

/// A handshake the backend accepted: both ends, before either is upgraded.
#[derive(Debug)]
pub struct Accepted {
    /// The client's pending upgrade.
    pub client: ClientUpgrade,
    /// The backend's `101`.
    pub backend: Switched,
}

/// Puts the handshake's own hop-by-hop headers, which the forwarding strips from every
/// request, back on the backend request: `Connection: upgrade` and the client's `Upgrade`.
/// `Sec-WebSocket-*` headers are end-to-end and go through as they are.
pub fn restore_upgrade_headers(client: &HeaderMap, backend: &mut HeaderMap) {
    backend.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    let upgrade = client
        .get(header::UPGRADE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("websocket"));
    backend.insert(header::UPGRADE, upgrade);
}

/// The open WebSockets of one worker, and the signal that closes them all.
#[derive(Debug)]
pub struct Sockets {
    /// Internal: each open socket holds a receiver, so the receiver count is the number
    /// of open sockets, and `closed()` resolves when the last one is gone.
    closing: watch::Sender<bool>,
}

impl Default for Sockets {
    fn default() -> Self {
        Self {
            closing: watch::Sender::new(false),
        }
    }
}

impl Sockets {
    /// Sockets open now (relayed, or between their `101` and the splice).
    pub fn open(&self) -> usize {
        self.closing.receiver_count()
    }

    /// Closes every socket properly: each side gets a close frame 1001 after the frame in
    /// progress and [`super::CLOSE_GRACE`] to answer it, then the connections close.
    /// Sockets opened after this close at once.
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves when no socket is open.
    pub async fn all_closed(&self) {
        self.closing.closed().await
    }
}

/// What a socket holds until it closes.
#[derive(Debug)]
pub struct Socket {
    /// Its place in the working set.
    pub admitted: Admitted,
    /// Its access-log and metrics record.
    pub record: Record,
    /// The session it was opened in, which closes it when the session closes.
    pub session: Option<Entered>,
}

/// Answers the client `101` with the backend's handshake headers
/// (`Sec-WebSocket-Accept`, `-Protocol`, `-Extensions`) and relays the socket in a task
/// of its own, which owns the [`Socket`]'s guards until the socket closes.
pub fn open(
    accepted: Accepted,
    socket: Socket,
    sockets: &Sockets,
    limits: Limits,
) -> Response<Body> {
    let Socket {
        admitted,
        record,
        session,
    } = socket;
    let Accepted { client, backend } = accepted;
    let mut headers = backend.head.headers.clone();
    strip_hop_by_hop(&mut headers);
    let upgrade = backend
        .head
        .headers
        .get(header::UPGRADE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
    record.stamp(&mut headers);
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *resp.headers_mut() = headers;
    let mut closing = sockets.closing.subscribe();
    let stop = async move {
        // A worker gone (the sender dropped) closes its sockets too.
        let drained = closing.wait_for(|c| *c);
        match session {
            None => drop(drained.await),
            // The session's guard lives as long as the socket: it keeps the session from
            // expiring while the socket is open, and extends it when the socket closes.
            Some(mut session) => tokio::select! {
                _ = drained => {}
                () = session.closed() => {}
            },
        }
    };
    tokio::spawn(relay(client, backend, limits, stop, admitted, record));
    resp
}

/// Waits for both upgrades, splices them, and settles the request when the socket closes.
async fn relay(
    client: ClientUpgrade,
    backend: Switched,
    limits: Limits,
    stop: impl std::future::Future<Output = ()>,
    admitted: Admitted,
    mut record: Record,
) {
    let client = match client.0.await {
        Ok(io) => TokioIo::new(io),
        Err(e) => {
            tracing::debug!(error = %e, "client left before its WebSocket opened");
            record.finish(Ending::ClientGone);
            admitted.finish(Outcome::Cancelled);
            return;
        }
    };
    let backend = match backend.socket().await {
        Ok(socket) => socket,
        Err(e) => {
            tracing::warn!(error = %e, "backend WebSocket failed before it opened");
            record.finish(Ending::BackendFailed);
            admitted.finish(Outcome::Errored);
            return;
        }
    };
    let spliced = splice::splice(client, backend, limits, stop).await;
    record.relayed(spliced.to_backend, spliced.to_client);
    let (ending, outcome) = match spliced.closed {
        Closed::Clean | Closed::Drained => (Ending::Relayed, Outcome::Success),
        Closed::Idle => (Ending::BackendIdle, Outcome::Success),
        Closed::ClientGone => (Ending::ClientGone, Outcome::Cancelled),
        Closed::BackendFailed => (Ending::BackendFailed, Outcome::Errored),
    };
    tracing::debug!(closed = ?spliced.closed, "WebSocket closed");
    record.finish(ending);
    admitted.finish(outcome);
}
