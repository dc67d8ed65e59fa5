//! The request pipeline: accept → envelope → auth → admission → forward → relay.
//!
//! Everything runs inside the future hyper polls for the client's request (never a spawned
//! task), so a client that leaves drops the pipeline wherever it is: in the queue, waiting
//! for the backend's headers, or mid-body. The [`Admitted`](super::admission::Admitted)
//! guard carried along records that as `cancelled`, and dropping the backend future or body
//! closes the backend connection.

use super::envelope::{self, EnvelopeRules};
use super::error::WorkerError;
use super::ledger::Outcome;
use super::{Shared, relay, routes};
use crate::http_util::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;

/// Serves one request. Never fails: errors become JSON answers.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    if let Some(resp) = routes::own_route(&shared, &req) {
        return resp;
    }
    match proxy(&shared, req).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(status = %e.status(), error = %e, "request answered by the worker");
            e.into_response()
        }
    }
}

async fn proxy(shared: &Shared, req: Request<Incoming>) -> Result<Response<Body>, WorkerError> {
    let cfg = &shared.config;
    let (parts, body) = req.into_parts();
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
    // Auth first: nothing of a forged request's cost or payload is read, and it never
    // reaches the books (PROTOCOL.md §4).
    if let Err(e) = shared.auth.check(&inbound) {
        shared.admission.unauthorized(&e);
        return Err(e);
    }
    let info = shared.admission.describe(&inbound)?;
    // The buffered body's share of MAX_BUFFERED_BYTES, until the backend has taken it.
    let held = inbound.held.take();
    let admitted = shared.admission.admit(&info).await?;
    let sent = shared.forward.send(&parts, inbound).await;
    drop(held);
    match sent {
        Ok(resp) => {
            // HTTP/1 connections carry SEND_TIMEOUT on their writes; an HTTP/2 stream can
            // stall alone, so it gets its own watchdog.
            let stream_send_timeout = (parts.version == http::Version::HTTP_2)
                .then_some(cfg.serve_limits.send_timeout)
                .flatten();
            Ok(relay::respond(
                resp,
                admitted,
                cfg.idle_timeout,
                stream_send_timeout,
            ))
        }
        Err(e) => {
            admitted.finish(Outcome::Errored);
            Err(e)
        }
    }
}
