//! The request pipeline: accept → envelope → auth → admission → forward → relay.
//!
//! Everything runs inside the future hyper polls for the client's request (never a spawned
//! task), so a client that leaves drops the pipeline wherever it is: in the queue, waiting
//! for the backend's headers, or mid-body. The [`Admitted`] guard carried along records
//! that as `cancelled`, the request's [`Record`] as `client_gone`, and dropping the backend
//! future or body closes the backend connection.
//!
//! `POST /session/*` is answered by [`session::routes`]. A request inside a session carries
//! the session's [`Entered`] guard along the same path; its close is raced with the wait for
//! a slot and for the backend's head (410 `session_closed`), then watched by the relay,
//! which cuts the body. Requests outside sessions carry none and pay nothing for it.
//!
//! A WebSocket handshake takes the same path up to the backend's answer; after a `101` the
//! socket is relayed by [`websocket`], which holds the guards until the socket closes (a
//! socket opened in a session closes with it).

use super::admission::Admitted;
use super::envelope::{self, EnvelopeRules, Inbound};
use super::error::WorkerError;
use super::forward::Sent;
use super::ledger::{Kind, Outcome, RequestInfo};
use super::observe::Record;
use super::session::{self, Entered};
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
    if let Some(route) = session::routes::Route::of(&parts.method, parts.uri.path()) {
        return session::routes::serve(&shared, route, &parts, body, record).await;
    }
    // A WebSocket handshake takes the same path; only the forwarding differs.
    let upgrade = ClientUpgrade::take(&mut parts);
    match proxy(&shared, &parts, body, &mut record, upgrade).await {
        Ok(Answer {
            resp: Sent::Switched(accepted),
            admitted,
            session,
            ..
        }) => {
            let limits = websocket::splice::Limits {
                idle_timeout: shared.config.websocket_idle_timeout,
                close_grace: super::CLOSE_GRACE,
            };
            let socket = websocket::Socket {
                admitted,
                record,
                session,
            };
            websocket::open(accepted, socket, &shared.websockets, limits)
        }
        Ok(Answer {
            resp: Sent::Response(resp),
            admitted,
            stream_send_timeout,
            session,
        }) => relay::respond(
            resp,
            admitted,
            record,
            shared.config.idle_timeout,
            stream_send_timeout,
            session,
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
    session: Option<Entered>,
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
    let inbound = envelope::read(
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
    if let Err(e) = authenticate(shared, &inbound) {
        shared.admission.unauthorized(&e);
        return Err(e);
    }
    let mut session = match &inbound.session {
        Some(id) => Some(shared.sessions.enter(id)?),
        None => None,
    };
    let mut info = shared.admission.describe(&inbound, parts)?;
    if let Some(s) = &session {
        info = RequestInfo {
            request_idx: s.request_idx(),
            reqnum: s.reqnum(),
            kind: Kind::InSession,
            ..info
        };
    }
    record.describe(&info);
    let sent = match session.as_mut() {
        None => admit_and_send(shared, parts, inbound, &info, record, upgrade).await,
        // The session may close while the request waits for a slot or the backend's head:
        // dropping that future cancels both (the backend connection is closed).
        Some(s) => tokio::select! {
            biased;
            () = s.closed() => Err(WorkerError::SessionClosed),
            sent = admit_and_send(shared, parts, inbound, &info, record, upgrade) => sent,
        },
    };
    let (admitted, resp) = sent?;
    // HTTP/1 connections carry SEND_TIMEOUT on their writes; an HTTP/2 stream can stall
    // alone, so it gets its own watchdog.
    let stream_send_timeout = (parts.version == http::Version::HTTP_2)
        .then_some(cfg.serve_limits.send_timeout)
        .flatten();
    Ok(Answer {
        resp,
        admitted,
        stream_send_timeout,
        session,
    })
}

/// The auth stage. A request of an open session that carries the session's own
/// `auth_data` is checked without the replay rules (the official client sends it again
/// with every request of the session), and so is one naming a session that is not open
/// (it is answered 410 and served nothing); a query-form request that names a session and
/// nothing else is authenticated by the session's id, a 128-bit secret handed only to the
/// client whose create request was verified ([`Shared::sessions`] refuses it with 410 when
/// no such session is open).
fn authenticate(shared: &Shared, inbound: &Inbound) -> Result<(), WorkerError> {
    match (&inbound.session, &inbound.auth) {
        (Some(_), None) => Ok(()),
        (Some(id), Some(auth)) if shared.sessions.holds(id, auth) != Some(false) => {
            shared.auth.check_in_session(inbound)
        }
        _ => shared.auth.check(inbound),
    }
}

/// Admission, then the backend up to its response head (or its `101` for a WebSocket).
async fn admit_and_send(
    shared: &Shared,
    parts: &Parts,
    mut inbound: Inbound,
    info: &RequestInfo,
    record: &mut Record,
    upgrade: Option<ClientUpgrade>,
) -> Result<(Admitted, Sent), WorkerError> {
    // The buffered body's share of MAX_BUFFERED_BYTES, until the backend has taken it.
    let held = inbound.held.take();
    let arrived = Instant::now();
    let admitted = match upgrade {
        None => shared.admission.admit(info).await?,
        // A socket is in the working set until it closes, but takes no concurrency slot:
        // it mostly waits (a progress socket beside a job), and with ALLOW_PARALLEL=false
        // it would otherwise hold the only slot its own job needs.
        Some(_) => shared.admission.admit_without_slot(info)?,
    };
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
            Ok((admitted, resp))
        }
        Err(e) => {
            admitted.finish(Outcome::Errored);
            Err(e)
        }
    }
}
