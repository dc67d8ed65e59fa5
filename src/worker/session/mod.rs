//! Sessions (PROTOCOL.md §8), as the `vastai` 1.9.1 worker serves them: a client pinned to
//! this worker for a lifetime, for KV-cache reuse, a loaded LoRA or a reservation.
//!
//! - `POST /session/create` arrives as a signed envelope routed with a `cost`: it is
//!   verified like any request, needs the worker `ready`, and opens a session that counts as
//!   one working request of that cost until it closes ([`Sessions::open`]).
//! - Requests carrying its `session_id` (or `serverless_session_id` in the query) are served
//!   inside it ([`Sessions::enter`]): each extends it and is counted in flight there.
//! - `POST /session/end`, `/session/get` and `/session/health` are authorised by the
//!   session's `auth_data` sent back as `session_auth` ([`credential`]); `/session/end` is
//!   also served on a plain-HTTP port for webhooks and jobs on the machine ([`listener`]).
//! - A session closes when it is ended, when its lifetime passes with no request
//!   ([`Sessions::expire_forever`]), or when the worker drains ([`Sessions::close_all`]).
//!   Closing cancels its requests still in flight (their backend connections are closed)
//!   and POSTs its `on_close_payload` to its `on_close_route` on the backend ([`on_close`]).
//!
//! Lifetime rule (a difference from `vastai`, whose every request adds `lifetime` to the
//! expiration, so it grows without bound): a session expires `lifetime` after it was
//! created or after its latest request started or ended, whichever is last, and never while
//! one of its requests is in flight. `lifetime` is at most `MAX_SESSION_LIFETIME`.

mod credential;
mod entered;
pub mod id;
pub mod listener;
pub mod on_close;
mod params;
pub mod routes;
mod store;

pub use entered::Entered;
pub use params::{DEFAULT_LIFETIME, Params};
pub use store::{Lookup, Opened, Sessions};

use std::time::Duration;

/// Session settings of one worker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionRules {
    /// Most sessions open at once (`MAX_SESSIONS`); beyond, `/session/create` is 429.
    /// Default is `None`, unlimited.
    pub max_sessions: Option<usize>,
    /// Longest lifetime a session may ask for (`MAX_SESSION_LIFETIME`). Default is 24 h.
    pub max_lifetime: Duration,
    /// Limit on one on-close callback (`SESSION_ON_CLOSE_TIMEOUT`). Default is 10 s.
    pub on_close_timeout: Duration,
}

impl Default for SessionRules {
    fn default() -> Self {
        Self {
            max_sessions: None,
            max_lifetime: Duration::from_secs(86_400),
            on_close_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a session closed: the `reason` label of `vespa_sessions_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// `POST /session/end`.
    Ended,
    /// Its lifetime passed with no request.
    Expired,
    /// The worker drained.
    Drained,
}

impl CloseReason {
    /// Every reason, for series that exist from the start.
    pub const ALL: [CloseReason; 3] = [
        CloseReason::Ended,
        CloseReason::Expired,
        CloseReason::Drained,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Ended => "ended",
            CloseReason::Expired => "expired",
            CloseReason::Drained => "drained",
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
