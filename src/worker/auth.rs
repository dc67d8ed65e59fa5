//! The authentication stage: decides whether a request's `auth_data` may be served.
//!
//! Unsecured mode (`UNSECURED=true`) accepts every request. Signed mode checks the envelope's
//! signature against the autoscaler's public key (PROTOCOL.md §3).

use super::envelope::Inbound;
use super::error::WorkerError;

/// The authentication policy of a worker.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Accept every request (development only).
    Unsecured,
    /// Accept requests whose `auth_data` is well-formed; signature verification is added
    /// by the signature module.
    Envelope,
}

impl Auth {
    /// Checks one request.
    pub fn check(&self, inbound: &Inbound) -> Result<(), WorkerError> {
        match self {
            Auth::Unsecured => Ok(()),
            Auth::Envelope if inbound.auth.is_some() => Ok(()),
            Auth::Envelope => Err(WorkerError::InvalidSignature(
                "request carries no auth_data".into(),
            )),
        }
    }
}
