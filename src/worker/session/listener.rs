//! The plain-HTTP `/session/end` listener (`WORKER_HTTP_PORT`), as the `vastai` worker
//! serves it beside its main port: "the worker itself, or a third-party webhook, can close
//! the session" from the machine without TLS. It answers `POST /session/end` only (the same
//! body, checks and answers as on the main port) and 404 to anything else.

use super::routes::{self, Named, Route};
use crate::http_util::Body;
use crate::worker::Shared;
use crate::worker::error::WorkerError;
use http::{Request, Response};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;

/// Where the `/session/end` listener binds (`WORKER_HTTP_PORT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HttpPort {
    /// The `vastai` default: the worker's port plus one; off when the worker's port is 0
    /// (an ephemeral port has no "next" one). Default.
    #[default]
    Next,
    /// No listener (`off`).
    Off,
    /// This port, on the worker's listen address (0 picks a free one).
    Port(u16),
}

impl HttpPort {
    /// The address to bind beside a worker listening on `listen`, if any.
    pub fn resolve(self, listen: SocketAddr) -> Option<SocketAddr> {
        let port = match self {
            HttpPort::Off => return None,
            HttpPort::Port(p) => p,
            HttpPort::Next if listen.port() == 0 => return None,
            HttpPort::Next => listen.port().checked_add(1)?,
        };
        Some(SocketAddr::new(listen.ip(), port))
    }
}

/// Serves one request of the plain-HTTP listener.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    client: SocketAddr,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let route = Route::of(&parts.method, parts.uri.path());
    if route != Some(Route::Named(Named::End)) {
        return WorkerError::NotFound(parts.uri.path().to_string()).into_response();
    }
    let record = shared.observer.record(&mut parts, Some(client));
    routes::serve(&shared, Route::Named(Named::End), &parts, body, record).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_port_is_the_next_one_and_none_beside_an_ephemeral_port() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            HttpPort::Next.resolve(at("0.0.0.0:3000")),
            Some(at("0.0.0.0:3001"))
        );
        assert_eq!(HttpPort::Next.resolve(at("127.0.0.1:0")), None);
        assert_eq!(HttpPort::Next.resolve(at("127.0.0.1:65535")), None);
        assert_eq!(HttpPort::Off.resolve(at("0.0.0.0:3000")), None);
        assert_eq!(
            HttpPort::Port(0).resolve(at("127.0.0.1:0")),
            Some(at("127.0.0.1:0"))
        );
    }
}
