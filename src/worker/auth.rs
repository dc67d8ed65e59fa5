//! The authentication stage: decides whether a request's `auth_data` may be served.
//!
//! Unsecured mode (`UNSECURED=true`) accepts every request. Signed mode verifies the
//! envelope's signature with the autoscaler's public key (PROTOCOL.md §3) and, when
//! `REPLAY_WINDOW` is set, refuses replays. Until the key is loaded, every signed request
//! gets 401: there is no fallback to unsecured.

use super::envelope::{AuthData, Inbound};
use super::error::WorkerError;
use crate::signing::{self, PublicKey, SignatureForm};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

/// The authentication policy of a worker.
#[derive(Debug)]
pub enum Auth {
    /// Accept every request (development only).
    Unsecured,
    /// Verify signatures.
    Signed(Verifier),
}

impl Auth {
    /// Checks one request.
    pub fn check(&self, inbound: &Inbound) -> Result<(), WorkerError> {
        match (self, &inbound.auth) {
            (Auth::Unsecured, _) => Ok(()),
            (Auth::Signed(v), Some(auth)) => v.verify(auth),
            (Auth::Signed(_), None) => Err(WorkerError::InvalidSignature(
                "request carries no auth_data".into(),
            )),
        }
    }

    /// The verifier, in signed mode.
    pub fn verifier(&self) -> Option<&Verifier> {
        match self {
            Auth::Signed(v) => Some(v),
            Auth::Unsecured => None,
        }
    }
}

/// Signature verifier with a public key that arrives after start-up.
#[derive(Debug)]
pub struct Verifier {
    key: RwLock<Option<Arc<PublicKey>>>,
    form: SignatureForm,
    replay: Option<Mutex<Replay>>,
}

impl Verifier {
    /// A verifier for `form`; `replay_window` 0 turns replay protection off.
    pub fn new(form: SignatureForm, replay_window: u64) -> Self {
        Self {
            key: RwLock::new(None),
            form,
            replay: (replay_window > 0).then(|| Mutex::new(Replay::new(replay_window))),
        }
    }

    /// Installs the autoscaler's public key.
    pub fn set_key(&self, key: PublicKey) {
        *self.key.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(key));
    }

    /// Whether a key is loaded.
    pub fn has_key(&self) -> bool {
        self.key.read().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Verifies `auth`: the signature over the configured message form, then replay rules.
    pub fn verify(&self, auth: &AuthData) -> Result<(), WorkerError> {
        let key = self.key.read().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(key) = key else {
            return Err(WorkerError::InvalidSignature(
                "the autoscaler public key is not loaded yet".into(),
            ));
        };
        let Some(signature) = auth.str("signature") else {
            return Err(WorkerError::InvalidSignature(
                "auth_data.signature is not a string".into(),
            ));
        };
        let valid = signing::messages(self.form, &auth.fields)
            .iter()
            .any(|m| key.verify(m.as_bytes(), signature));
        if !valid {
            return Err(WorkerError::InvalidSignature("invalid signature".into()));
        }
        if let Some(replay) = &self.replay {
            replay
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .check(auth)?;
        }
        Ok(())
    }
}

/// PyWorker's replay rules: reject `reqnum < highest_seen - window`, and reject a message
/// identical to one of the last `window` accepted ones.
#[derive(Debug)]
struct Replay {
    window: u64,
    highest: u64,
    recent: HashSet<String>,
    order: VecDeque<String>,
}

impl Replay {
    fn new(window: u64) -> Self {
        Self {
            window,
            highest: 0,
            recent: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    fn check(&mut self, auth: &AuthData) -> Result<(), WorkerError> {
        let reqnum = auth.reqnum();
        if reqnum < self.highest.saturating_sub(self.window) {
            return Err(WorkerError::InvalidSignature(format!(
                "reqnum {reqnum} is older than the replay window ({} below {})",
                self.window, self.highest
            )));
        }
        let message = signing::legacy_message(&auth.fields);
        if self.recent.contains(&message) {
            return Err(WorkerError::InvalidSignature("replayed request".into()));
        }
        self.highest = self.highest.max(reqnum);
        self.recent.insert(message.clone());
        self.order.push_back(message);
        if self.order.len() as u64 > self.window
            && let Some(old) = self.order.pop_front()
        {
            self.recent.remove(&old);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::SigningKey;
    use serde_json::json;

    fn signed(key: &SigningKey, form: SignatureForm, reqnum: u64) -> AuthData {
        let mut fields =
            json!({"cost": 10, "endpoint": "e", "reqnum": reqnum, "request_idx": reqnum,
                                "url": "http://127.0.0.1:1"})
            .as_object()
            .unwrap()
            .clone();
        let msg = match form {
            SignatureForm::Legacy => signing::legacy_message(&fields),
            _ => signing::url_message(&fields),
        };
        fields.insert("signature".into(), json!(key.sign(msg.as_bytes()).unwrap()));
        AuthData { fields }
    }

    fn verifier(key: &SigningKey, form: SignatureForm, window: u64) -> Verifier {
        let v = Verifier::new(form, window);
        v.set_key(PublicKey::from_pem(key.public_key_pem()).unwrap());
        v
    }

    #[test]
    fn no_key_means_401_never_unsecured() {
        let key = SigningKey::generate().unwrap();
        let v = Verifier::new(SignatureForm::Url, 0);
        assert!(v.verify(&signed(&key, SignatureForm::Url, 1)).is_err());
    }

    #[test]
    fn forms_accept_their_own_message_and_any_accepts_both() {
        let key = SigningKey::generate().unwrap();
        let url = signed(&key, SignatureForm::Url, 1);
        let legacy = signed(&key, SignatureForm::Legacy, 2);
        assert!(verifier(&key, SignatureForm::Url, 0).verify(&url).is_ok());
        assert!(
            verifier(&key, SignatureForm::Url, 0)
                .verify(&legacy)
                .is_err()
        );
        assert!(
            verifier(&key, SignatureForm::Legacy, 0)
                .verify(&legacy)
                .is_ok()
        );
        assert!(
            verifier(&key, SignatureForm::Legacy, 0)
                .verify(&url)
                .is_err()
        );
        let any = verifier(&key, SignatureForm::Any, 0);
        assert!(any.verify(&url).is_ok() && any.verify(&legacy).is_ok());
    }

    #[test]
    fn tampering_with_signed_fields_fails() {
        let key = SigningKey::generate().unwrap();
        let v = verifier(&key, SignatureForm::Legacy, 0);
        let mut a = signed(&key, SignatureForm::Legacy, 5);
        a.fields.insert("cost".into(), json!(10.0));
        assert!(
            v.verify(&a).is_err(),
            "cost 10 vs 10.0 are different signed bytes"
        );
    }

    #[test]
    fn replay_window_rejects_repeats_and_old_reqnums() {
        let key = SigningKey::generate().unwrap();
        let v = verifier(&key, SignatureForm::Legacy, 2);
        let r10 = signed(&key, SignatureForm::Legacy, 10);
        assert!(v.verify(&r10).is_ok());
        assert!(v.verify(&r10).is_err(), "identical message");
        assert!(
            v.verify(&signed(&key, SignatureForm::Legacy, 7)).is_err(),
            "older than 10 - 2"
        );
        assert!(v.verify(&signed(&key, SignatureForm::Legacy, 9)).is_ok());
    }
}
