//! The request pipeline: accept → envelope → auth → readiness → admission → forward → relay.
//!
//! Everything runs inside the future hyper polls for the client's request (never a spawned
//! task), so a client that leaves drops the pipeline wherever it is: in the queue, waiting
//! for the backend's headers, or mid-body. The [`Ticket`](super::ledger::Ticket) carried
//! along records that as `cancelled`, and dropping the backend future closes the backend
//! connection.

use super::envelope::{self, EnvelopeRules};
use super::error::WorkerError;
use super::forward::backend_request;
use super::ledger::{Outcome, RequestInfo};
use super::lifecycle::State;
use super::relay::{Relay, Settle};
use super::{Shared, routes};
use crate::http_util::{Body, empty, strip_hop_by_hop};
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::Arc;
use std::sync::atomic::Ordering;

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

async fn proxy(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, WorkerError> {
    let cfg = &shared.config;
    let (parts, body) = req.into_parts();
    let rules = EnvelopeRules {
        unsecured: cfg.unsecured,
        max_body_size: cfg.max_body_size,
    };
    let inbound = envelope::read(
        &parts.method,
        parts.uri.query(),
        &parts.headers,
        body,
        rules,
    )
    .await?;

    // PROTOCOL.md §4: the client's cost, else the profile's workload rule, else DEFAULT_COST.
    let workload = inbound
        .cost()
        .or_else(|| {
            cfg.benchmark
                .profile()?
                .request_workload(inbound.body_bytes()?)
        })
        .unwrap_or(cfg.default_cost);
    let info = match &inbound.auth {
        Some(auth) => RequestInfo {
            request_idx: auth.request_idx(),
            reqnum: auth.reqnum(),
            workload,
        },
        None => {
            let id = shared.synthetic_ids.fetch_add(1, Ordering::Relaxed);
            RequestInfo {
                request_idx: id,
                reqnum: id,
                workload,
            }
        }
    };
    if let Err(e) = shared.auth.check(&inbound).and_then(|()| accepting(shared)) {
        shared.ledger.reject(&info);
        return Err(e);
    }
    let mut ticket = shared.ledger.admit(&info)?;
    // Waiting here is the queue: FIFO (tokio's semaphore is fair), and cancelled by drop.
    let permit = match &shared.limiter {
        Some(sem) => Some(
            Arc::clone(sem)
                .acquire_owned()
                .await
                .expect("the limiter is never closed"),
        ),
        None => None,
    };
    ticket.start();

    let api_key = shared.backend_auth.as_ref();
    let (backend_req, replay) =
        backend_request(&shared.backend, &parts, inbound, api_key, cfg.max_body_size);
    let send = shared.backend.send(backend_req, replay);
    let sent = match cfg.response_start_timeout {
        Some(limit) => match tokio::time::timeout(limit, send).await {
            Ok(r) => r,
            Err(_) => {
                ticket.finish(Outcome::Errored);
                return Err(WorkerError::BackendTimeout(limit.as_secs_f64()));
            }
        },
        None => send.await,
    };
    let (resp, conn) = match sent {
        Ok(ok) => ok,
        Err(e) => {
            tracing::warn!(error = %e, "backend request failed");
            ticket.finish(Outcome::Errored);
            return Err(WorkerError::BackendUnavailable(e.to_string()));
        }
    };

    let (mut head, body) = resp.into_parts();
    strip_hop_by_hop(&mut head.headers);
    let settle = Settle {
        ticket,
        permit,
        conn: Some(conn),
        backend: Arc::clone(&shared.backend),
    };
    if body.is_end_stream() {
        // Nothing will poll an empty body (204, 304, HEAD, length 0), so settle now.
        settle.finish(Outcome::Success);
        return Ok(Response::from_parts(head, empty()));
    }
    Ok(Response::from_parts(
        head,
        Relay::new(body, cfg.idle_timeout, settle).boxed_unsync(),
    ))
}

/// Admits proxied requests only in `ready`.
fn accepting(shared: &Shared) -> Result<(), WorkerError> {
    match shared.lifecycle.state() {
        State::Ready => Ok(()),
        State::Draining => Err(WorkerError::Draining),
        State::Errored(msg) => Err(WorkerError::NotReady {
            reason: msg,
            retry_after: 10,
        }),
        other => Err(WorkerError::NotReady {
            reason: other.name().replace('_', " "),
            retry_after: shared.config.ready_poll_interval.as_secs().max(1),
        }),
    }
}
