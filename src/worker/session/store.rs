//! The open sessions of one worker, and everything that opens, finds, extends and closes
//! them. One lock guards the map; every critical section is a few steps, and callbacks run
//! outside it. Lock order: this lock, then the ledger's (never the reverse).

use super::credential;
use super::entered::Entered;
use super::id;
use super::on_close::{self, OnClose};
use super::params::Params;
use super::{CloseReason, SessionRules};
use crate::worker::backend::Backend;
use crate::worker::envelope::AuthData;
use crate::worker::error::WorkerError;
use crate::worker::ledger::{Kind, Ledger, Outcome, RequestInfo, Ticket};
use crate::worker::observe::Observer;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A session `/session/create` opened.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    /// Its id.
    pub session_id: String,
    /// When it expires unless a request extends it, Unix seconds.
    pub expiration: f64,
}

/// Why `/session/end`, `/session/get` or `/session/health` found no session to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// No open session has this id.
    NotFound,
    /// `session_auth` is not the session's `auth_data`.
    BadAuth,
}

#[derive(Debug)]
struct Session {
    id: Arc<str>,
    request_idx: u64,
    reqnum: u64,
    cost: f64,
    auth_data: Map<String, Value>,
    lifetime: Duration,
    /// Unix seconds, and the same moment on the (pausable) tokio clock.
    created_at: f64,
    created: Instant,
    expires: Instant,
    on_close_route: Option<String>,
    on_close_payload: Option<Value>,
    in_flight: usize,
    /// Its place in the ledger's working set, for its whole life.
    ticket: Ticket,
    /// Set when it closes; its requests in flight watch it.
    closed: watch::Sender<bool>,
}

impl Session {
    fn extend(&mut self, now: Instant) {
        self.expires = self.expires.max(now + self.lifetime);
    }

    fn expiration(&self) -> f64 {
        self.created_at
            + self
                .expires
                .saturating_duration_since(self.created)
                .as_secs_f64()
    }
}

/// The open sessions of one worker.
#[derive(Debug)]
pub struct Sessions {
    open: Mutex<HashMap<Arc<str>, Session>>,
    rules: SessionRules,
    ledger: Arc<Ledger>,
    backend: Arc<Backend>,
    observer: Arc<Observer>,
    /// Tells the expiry task the earliest expiry may have changed.
    wake: Notify,
    /// On-close callbacks still running.
    callbacks: Mutex<JoinSet<()>>,
}

fn unix_now() -> f64 {
    crate::worker::report::book::unix(SystemTime::now())
}

impl Sessions {
    /// No session yet; sessions are counted in `ledger`, their callbacks sent to `backend`.
    pub fn new(
        rules: SessionRules,
        ledger: Arc<Ledger>,
        backend: Arc<Backend>,
        observer: Arc<Observer>,
    ) -> Self {
        Self {
            open: Mutex::default(),
            rules,
            ledger,
            backend,
            observer,
            wake: Notify::new(),
            callbacks: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Session>> {
        // Internal: no critical section can panic halfway, so a poisoned map is consistent.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The settings.
    pub fn rules(&self) -> &SessionRules {
        &self.rules
    }

    /// Open sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Opens a session for the verified create request `info` (`auth` its `auth_data`), or
    /// refuses it with 429 when `MAX_SESSIONS` are open (recorded as a rejection, as the
    /// `vastai` worker does). The session enters the working set as one request of its cost.
    pub fn open(
        &self,
        info: &RequestInfo,
        auth: AuthData,
        params: Params,
    ) -> Result<Opened, WorkerError> {
        let info = RequestInfo {
            kind: Kind::Session,
            ..info.clone()
        };
        let id: Arc<str> = id::new_id()?.into();
        let mut open = self.lock();
        if let Some(max) = self.rules.max_sessions
            && open.len() >= max
        {
            drop(open);
            self.ledger.reject(&info);
            return Err(WorkerError::TooManySessions { max });
        }
        let ticket = self.ledger.open_session(&info);
        let created = Instant::now();
        let session = Session {
            id: Arc::clone(&id),
            request_idx: info.request_idx,
            reqnum: info.reqnum,
            cost: info.workload,
            auth_data: auth.fields,
            lifetime: params.lifetime,
            created_at: unix_now(),
            created,
            expires: created + params.lifetime,
            on_close_route: params.on_close_route,
            on_close_payload: params.on_close_payload,
            in_flight: 0,
            ticket,
            closed: watch::channel(false).0,
        };
        let opened = Opened {
            session_id: id.to_string(),
            expiration: session.expiration(),
        };
        open.insert(Arc::clone(&id), session);
        let count = open.len();
        drop(open);
        self.wake.notify_one();
        tracing::info!(
            session = %id::short(&id),
            request_idx = info.request_idx,
            cost = info.workload,
            lifetime_secs = params.lifetime.as_secs_f64(),
            open = count,
            "session opened"
        );
        Ok(opened)
    }

    /// Whether `auth` is the `auth_data` the open session `id` was created with (its signed
    /// keys: a query-form request carries no others); `None` when no session `id` is open.
    pub fn holds(&self, id: &str, auth: &AuthData) -> Option<bool> {
        self.lock()
            .get(id)
            .map(|s| credential::same_signed(&s.auth_data, &auth.fields))
    }

    /// Enters a request into the open session `id`: it extends the session and counts in
    /// flight there until the returned guard drops. 410 `invalid session` when no session
    /// `id` is open.
    pub fn enter(self: &Arc<Self>, id: &str) -> Result<Entered, WorkerError> {
        let mut open = self.lock();
        let Some(s) = open.get_mut(id) else {
            return Err(WorkerError::InvalidSession);
        };
        s.in_flight += 1;
        s.extend(Instant::now());
        let (key, ids, closed) = (
            Arc::clone(&s.id),
            (s.request_idx, s.reqnum),
            s.closed.subscribe(),
        );
        drop(open);
        Ok(Entered::new(Arc::clone(self), key, ids, closed))
    }

    /// A request of session `id` ended: it extends the session, which may expire again once
    /// none of its requests is in flight.
    pub(super) fn leave(&self, id: &str) {
        let mut open = self.lock();
        let Some(s) = open.get_mut(id) else {
            return;
        };
        s.in_flight -= 1;
        s.extend(Instant::now());
        let idle = s.in_flight == 0;
        drop(open);
        if idle {
            self.wake.notify_one();
        }
    }

    fn authorized<'a>(
        open: &'a mut HashMap<Arc<str>, Session>,
        id: &str,
        session_auth: &Value,
    ) -> Result<&'a mut Session, Lookup> {
        let s = open.get_mut(id).ok_or(Lookup::NotFound)?;
        if credential::matches(&s.auth_data, session_auth) {
            Ok(s)
        } else {
            Err(Lookup::BadAuth)
        }
    }

    /// `/session/get`: the session's document.
    pub fn get(&self, id: &str, session_auth: &Value) -> Result<Value, Lookup> {
        let mut open = self.lock();
        let s = Self::authorized(&mut open, id, session_auth)?;
        Ok(json!({
            "session_id": id,
            "auth_data": s.auth_data,
            "lifetime": s.lifetime.as_secs_f64(),
            "expiration": s.expiration(),
            "created_at": s.created_at,
            "on_close_route": s.on_close_route,
            "on_close_payload": s.on_close_payload,
        }))
    }

    /// `/session/health`: whether the session is open (a session not found is `false`).
    pub fn health(&self, id: &str, session_auth: &Value) -> Result<bool, Lookup> {
        let mut open = self.lock();
        match Self::authorized(&mut open, id, session_auth) {
            Ok(_) => Ok(true),
            Err(Lookup::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `/session/end`: closes the session. Its on-close callback runs in the background
    /// (bounded by `SESSION_ON_CLOSE_TIMEOUT`), so the answer does not wait for the backend.
    pub fn end(&self, id: &str, session_auth: &Value) -> Result<(), Lookup> {
        let mut open = self.lock();
        Self::authorized(&mut open, id, session_auth)?;
        let session = open.remove(id);
        drop(open);
        if let Some(call) = session.and_then(|s| self.close(s, CloseReason::Ended)) {
            self.spawn_callback(call);
        }
        Ok(())
    }

    /// Closes a session taken out of the map: its requests in flight are cancelled, its
    /// ledger entry ends (`success`, one `/delete_requests/` record), and its callback, if
    /// it has one, is returned to be run.
    fn close(&self, session: Session, reason: CloseReason) -> Option<OnClose> {
        session.closed.send_replace(true);
        let Session {
            id,
            mut ticket,
            in_flight,
            on_close_route,
            on_close_payload,
            ..
        } = session;
        ticket.finish(Outcome::Success);
        self.observer.metrics.session_closed(reason);
        let shown_id = id::short(&id);
        tracing::info!(session = %shown_id, %reason, cancelled = in_flight, "session closed");
        on_close_route.map(|route| OnClose {
            route,
            body: on_close::body(&id, on_close_payload.as_ref()),
            shown_id,
        })
    }

    fn spawn_callback(&self, call: OnClose) {
        let backend = Arc::clone(&self.backend);
        let timeout = self.rules.on_close_timeout;
        let mut running = self.callbacks.lock().unwrap_or_else(|p| p.into_inner());
        // Forget the callbacks that are done, so the set holds only running ones.
        while running.try_join_next().is_some() {}
        running.spawn(async move { on_close::run(&backend, call, timeout).await });
    }

    /// Closes the sessions whose time is up (none of their requests in flight) at `now`;
    /// returns when the next one is due, if any.
    pub fn expire(&self, now: Instant) -> Option<Instant> {
        let mut open = self.lock();
        let due: Vec<Arc<str>> = open
            .values()
            .filter(|s| s.in_flight == 0 && s.expires <= now)
            .map(|s| Arc::clone(&s.id))
            .collect();
        let expired: Vec<Session> = due.iter().filter_map(|id| open.remove(id)).collect();
        let next = open
            .values()
            .filter(|s| s.in_flight == 0)
            .map(|s| s.expires)
            .min();
        drop(open);
        for s in expired {
            if let Some(call) = self.close(s, CloseReason::Expired) {
                self.spawn_callback(call);
            }
        }
        next
    }

    /// Closes every session when its time is up, for the worker's life: it sleeps until the
    /// next expiry (on the tokio clock) or until a session opens or goes idle.
    pub async fn expire_forever(self: Arc<Self>) {
        loop {
            let woken = self.wake.notified();
            match self.expire(Instant::now()) {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = woken => {}
                    }
                }
                None => woken.await,
            }
        }
    }

    /// Closes every open session (the worker drains) and waits for every on-close callback,
    /// these and those still running, each bounded by `SESSION_ON_CLOSE_TIMEOUT`.
    pub async fn close_all(&self, reason: CloseReason) {
        let all: Vec<Session> = self.lock().drain().map(|(_, s)| s).collect();
        let calls: Vec<OnClose> = all
            .into_iter()
            .filter_map(|s| self.close(s, reason))
            .collect();
        for call in calls {
            self.spawn_callback(call);
        }
        let mut running =
            std::mem::take(&mut *self.callbacks.lock().unwrap_or_else(|p| p.into_inner()));
        while running.join_next().await.is_some() {}
    }

    /// The open sessions as `/_vespa/status` lists them (ids shortened).
    pub fn list(&self) -> Vec<Value> {
        let open = self.lock();
        let mut list: Vec<(f64, Value)> = open
            .values()
            .map(|s| {
                let doc = json!({
                    "id": id::short(&s.id),
                    "request_idx": s.request_idx,
                    "cost": s.cost,
                    "lifetime": s.lifetime.as_secs_f64(),
                    "created_at": s.created_at,
                    "expiration": s.expiration(),
                    "in_flight": s.in_flight,
                });
                (s.created_at, doc)
            })
            .collect();
        drop(open);
        list.sort_by(|a, b| a.0.total_cmp(&b.0));
        list.into_iter().map(|(_, doc)| doc).collect()
    }
}

#[cfg(test)]
mod tests;
