//! WebSockets to an endpoint: routed like a request, the `auth_data` in the URL.
//!
//! A WebSocket client cannot send an envelope body, so the handshake carries `auth_data`
//! in `serverless_*` query parameters (PROTOCOL.md §2), and the worker checks it like any
//! request's. The socket counts as one request of its `cost` on the worker until it closes.
//! A socket in a session goes to the session's worker with the session's id too, and
//! closes when the session does.

use super::session::worker_of;
use super::{Client, ClientError, Session, envelope};

impl Client {
    /// A `ws://` (`wss://` for an https worker) URL for a WebSocket to the endpoint's
    /// backend at `path` (path and query, e.g. `/ws?clientId=ID`): routed like a request of
    /// workload `cost`, its `auth_data` in `serverless_*` query parameters. Open it soon:
    /// the worker was chosen for now, and the signature names that worker.
    pub async fn websocket_url(&self, path: &str, cost: f64) -> Result<String, ClientError> {
        super::send::check_path(path)?;
        let auth = self.assign(cost, 0).await?;
        let worker = worker_of(&auth);
        Ok(format!(
            "{}{}",
            ws_scheme(&worker),
            envelope::with_query_auth(path, &auth, None)
        ))
    }

    /// A `ws://` (`wss://`) URL for a WebSocket at `path` in `session`: to the session's
    /// worker, with its `auth_data` and id. The socket closes when the session does.
    pub fn session_websocket_url(
        &self,
        session: &Session,
        path: &str,
    ) -> Result<String, ClientError> {
        super::send::check_path(path)?;
        Ok(format!(
            "{}{}",
            ws_scheme(&session.worker),
            envelope::with_query_auth(path, session.auth(), Some(&session.id))
        ))
    }
}

/// `worker` (an http(s) base URL) with the matching WebSocket scheme.
fn ws_scheme(worker: &str) -> String {
    match worker.split_once("://") {
        Some(("https", rest)) => format!("wss://{rest}"),
        Some((_, rest)) => format!("ws://{rest}"),
        None => format!("ws://{worker}"),
    }
}
