//! The request pipeline: accept → envelope → auth → admission → forward → relay.
//!
//! Everything runs inside the future hyper polls for the client's request (never a spawned
//! task), so a client that leaves drops the pipeline wherever it is: in the queue, waiting
//! for the backend's headers, or mid-body. The [`Admitted`] guard carried along records
//! that as `cancelled`, the request's [`Record`] as `client_gone`, and dropping the backend
//! future or body closes the backend connection.
//!
//! A WebSocket handshake takes the same path up to the backend's answer; after a `101` the
//! socket is relayed by [`websocket`], which holds the guards until the socket closes.

use super::admission::Admitted;
use super::envelope::{self, EnvelopeRules};
use super::error::WorkerError;
use super::forward::Sent;
use super::ledger::Outcome;
use super::observe::Record;
use super::websocket::{self, ClientUpgrade};
use super::{Shared, relay, routes};
use crate::http_util::Body;
use http::request::Parts;
use http::{Request, Response};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Serves one request from `client`. Never fails: errors become JSON answers.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    client: SocketAddr,
) -> Response<Body> {
    if let Some(resp) = routes::own_route(&shared, &req) {
        return resp;
    }
    let (mut parts, body) = req.into_parts();
    let mut record = shared.observer.record(&mut parts, Some(client));
    // A WebSocket handshake takes the same path; only the forwarding differs.
    let upgrade = ClientUpgrade::take(&mut parts);
    match proxy(&shared, &parts, body, &mut record, upgrade).await {
        Ok(Answer {
            resp: Sent::Switched(accepted),
            admitted,
            ..
        }) => {
            let limits = websocket::splice::Limits {
                idle_timeout: shared.config.websocket_idle_timeout,
                close_grace: super::CLOSE_GRACE,
            };
            websocket::open(accepted, admitted, record, &shared.websockets, limits)
        }
        Ok(Answer {
            resp: Sent::Response(resp),
            admitted,
            stream_send_timeout,
        }) => relay::respond(
            resp,
            admitted,
            record,
            shared.config.idle_timeout,
            stream_send_timeout,
        ),
        Err(e) => {
            tracing::debug!(status = %e.status(), error = %e, "request answered by the worker");
            record.refuse(e)
        }
    }
}

/// The backend's response head, with what the relay needs to carry the body.
struct Answer {
    resp: Sent,
    admitted: Admitted,
    stream_send_timeout: Option<Duration>,
}

async fn proxy(
    shared: &Shared,
    parts: &Parts,
    body: Incoming,
    record: &mut Record,
    upgrade: Option<ClientUpgrade>,
) -> Result<Answer, WorkerError> {
    let cfg = &shared.config;
    let rules = EnvelopeRules {
        unsecured: cfg.unsecured,
        max_body_size: cfg.max_body_size,
        body_read_timeout: cfg.body_read_timeout,
        budget: Some(&shared.buffered),
    };
    let mut inbound = envelope::read(
        &parts.method,
        parts.uri.query(),
        &parts.headers,
        body,
        rules,
    )
    .await?;
    if let Some(len) = inbound.body_len {
        record.body_read(len);
    }
    // Auth first: nothing of a forged request's cost or payload is read, and it never
    // reaches the books (PROTOCOL.md §4).
    if let Err(e) = shared.auth.check(&inbound) {
        shared.admission.unauthorized(&e);
        return Err(e);
    }
    let info = shared.admission.describe(&inbound)?;
    record.describe(&info);
    // The buffered body's share of MAX_BUFFERED_BYTES, until the backend has taken it.
    let held = inbound.held.take();
    let arrived = Instant::now();
    let admitted = shared.admission.admit(&info).await?;
    let sent_at = Instant::now();
    record.queued(sent_at - arrived);
    let sent = match upgrade {
        None => shared
            .forward
            .send(parts, inbound)
            .await
            .map(Sent::Response),
        Some(client) => shared.forward.upgrade(parts, inbound, client).await,
    };
    drop(held);
    match sent {
        Ok(resp) => {
            record.answered(resp.status(), sent_at.elapsed());
            // HTTP/1 connections carry SEND_TIMEOUT on their writes; an HTTP/2 stream can
            // stall alone, so it gets its own watchdog.
            let stream_send_timeout = (parts.version == http::Version::HTTP_2)
                .then_some(cfg.serve_limits.send_timeout)
                .flatten();
            Ok(Answer {
                resp,
                admitted,
                stream_send_timeout,
            })
        }
        Err(e) => {
            admitted.finish(Outcome::Errored);
            Err(e)
        }
    }
}
