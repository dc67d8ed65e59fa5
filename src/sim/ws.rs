//! ComfyUI's progress socket, `GET /ws?clientId=ID`: on connect the client gets
//! `{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": N}}, "sid": ID}}`,
//! then the messages of every prompt submitted with that `client_id` ([`super::prompt`]) and
//! the queue's status broadcasts, as ComfyUI's `server.py` sends them: JSON text messages
//! `{"type", "data"}`.
//!
//! As in ComfyUI, a socket is keyed by its client id (a random hex id when none is given),
//! a new socket with the same id replaces the old one for new messages, and messages for a
//! client with no socket are dropped. Pings are answered; text the client sends is ignored.

use super::Shared;
use super::error::SimError;
use crate::http_util::{Body, empty};
use crate::websocket::frame::{CLOSE_GOING_AWAY, CLOSE_NORMAL};
use crate::websocket::handshake::{self, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY};
use crate::websocket::server::{Incoming, ServerSocket};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Largest message the sim reads from a client (aiohttp's default).
const MAX_MESSAGE: usize = 4 << 20;

type Outbox = mpsc::UnboundedSender<Arc<str>>;

/// The open sockets, by client id.
#[derive(Debug, Default)]
pub(crate) struct Sockets {
    by_sid: Mutex<HashMap<String, Outbox>>,
}

impl Sockets {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Outbox>> {
        self.by_sid.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `{"type": kind, "data": data}` to the socket of `sid`, if it has one.
    pub(crate) fn send(&self, sid: &str, kind: &str, data: Value) {
        if let Some(outbox) = self.lock().get(sid) {
            let _ = outbox.send(message(kind, data));
        }
    }

    /// Sends `{"type": kind, "data": data}` to every socket.
    pub(crate) fn broadcast(&self, kind: &str, data: Value) {
        let text = message(kind, data);
        for outbox in self.lock().values() {
            let _ = outbox.send(Arc::clone(&text));
        }
    }
}

fn message(kind: &str, data: Value) -> Arc<str> {
    Arc::from(json!({"type": kind, "data": data}).to_string())
}

/// `GET /ws`: answers the handshake with `101` and serves the socket in a task of its own.
pub(crate) fn open(
    shared: &Arc<Shared>,
    mut req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, SimError> {
    let h = req.headers();
    let key = h.get(SEC_WEBSOCKET_KEY).cloned();
    let version_13 = h
        .get(handshake::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let (Some(key), true) = (key, handshake::is_upgrade(req.method(), req.version(), h)) else {
        return Err(SimError::BadRequest(
            "expected a WebSocket handshake (Connection: upgrade, Upgrade: websocket)".into(),
        ));
    };
    if !version_13 {
        return Err(SimError::BadRequest(
            "unsupported Sec-WebSocket-Version (13 is)".into(),
        ));
    }
    let sid = req
        .uri()
        .query()
        .and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "clientId")
                .map(|(_, v)| v.into_owned())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| super::prompt::random_hex(16));
    let upgrade = hyper::upgrade::on(&mut req);
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket client left before the upgrade");
                return;
            }
        };
        serve(&shared, ServerSocket::new(io, MAX_MESSAGE), sid).await;
    });
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let accept = handshake::accept_key(key.as_bytes());
    headers.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    Ok(resp)
}

/// Serves one socket until the client closes it or the sim stops.
async fn serve<S>(shared: &Shared, mut socket: ServerSocket<S>, sid: String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (outbox, mut queued) = mpsc::unbounded_channel();
    shared.sockets.lock().insert(sid.clone(), outbox.clone());
    let mut stopping = std::pin::pin!(shared.stopping());
    // Registered first, so no message of a prompt can slip between; written first, so the
    // status opens the conversation as in ComfyUI.
    let status = json!({"status": shared.queue.status(), "sid": sid});
    let mut result = socket
        .send_text(&message("status", status))
        .await
        .map_err(|e| e.to_string());
    while result.is_ok() {
        tokio::select! {
            Some(text) = queued.recv() => {
                result = socket.send_text(&text).await.map_err(|e| e.to_string());
            }
            incoming = socket.recv() => match incoming {
                Ok(Some(Incoming::Ping(payload))) => {
                    result = socket.pong(&payload).await.map_err(|e| e.to_string());
                }
                Ok(Some(Incoming::Close(_))) => {
                    let _ = socket.close(CLOSE_NORMAL, "").await;
                    break;
                }
                Ok(Some(Incoming::Text(_) | Incoming::Binary(_) | Incoming::Pong)) => {}
                Ok(None) => break,
                Err(e) => {
                    let _ = socket.close(e.close_code(), "").await;
                    result = Err(e.to_string());
                }
            },
            () = &mut stopping => {
                let _ = socket.close(CLOSE_GOING_AWAY, "server stopping").await;
                break;
            }
        }
    }
    if let Err(e) = result {
        tracing::debug!(sid, error = %e, "WebSocket ended with an error");
    }
    // A newer socket of the same client keeps its place.
    let mut sockets = shared.sockets.lock();
    if sockets.get(&sid).is_some_and(|o| o.same_channel(&outbox)) {
        sockets.remove(&sid);
    }
}
