//! WebSockets to an endpoint: routed like a request, the `auth_data` in the URL.
//!
//! A WebSocket client cannot send an envelope body, so the handshake carries `auth_data`
//! in `serverless_*` query parameters (PROTOCOL.md §2), and the worker checks it like any
//! request's. The socket counts as one request of its `cost` on the worker until it closes.

use super::envelope;
use super::{Client, ClientError};
use serde_json::Value;

impl Client {
    /// A `ws://` (`wss://` for an https worker) URL for a WebSocket to the endpoint's
    /// backend at `path` (path and query, e.g. `/ws?clientId=ID`): routed like a request of
    /// workload `cost`, its `auth_data` in `serverless_*` query parameters. Open it soon:
    /// the worker was chosen for now, and the signature names that worker.
    pub async fn websocket_url(&self, path: &str, cost: f64) -> Result<String, ClientError> {
        if !path.starts_with('/') {
            return Err(ClientError::Config(format!(
                "WebSocket path must start with / (got {path:?})"
            )));
        }
        let auth = match &self.inner.config.debug_worker_url {
            Some(url) => self.synthetic_auth(url, cost),
            None => self.route_until_assigned(cost, 0).await?,
        };
        let worker = auth
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim_end_matches('/');
        let worker = match worker.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}"),
            Some((_, rest)) => format!("ws://{rest}"),
            None => format!("ws://{worker}"),
        };
        Ok(format!(
            "{worker}{}",
            envelope::with_query_auth(path, &auth)
        ))
    }
}
