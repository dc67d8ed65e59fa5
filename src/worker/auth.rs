//! The authentication stage: decides whether a request's `auth_data` may be served.
//!
//! Unsecured mode (`UNSECURED=true`) accepts every request. Signed mode verifies the
//! envelope's signature with the autoscaler's public key (PROTOCOL.md §3) and, when
//! `REPLAY_WINDOW` is set, refuses replays. Until the key is loaded, every signed request
//! gets 401: there is no fallback to unsecured. In the `url` form the signed URL must be this
//! worker's own (`CHECK_SIGNED_URL`), so a signature issued for another worker is refused.
//! A well-formed signature that fails to verify asks for the key to be fetched again (at
//! most every [`REFETCH_INTERVAL`]), so a rotated key is picked up.

use super::envelope::{AuthData, Inbound};
use super::error::WorkerError;
use crate::signing::{self, PublicKey, SignatureForm};
use base64::Engine as _;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Least time between two key fetches asked for by failed signatures.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// The authentication policy of a worker.
#[derive(Debug)]
pub enum Auth {
    /// Accept every request (development only).
    Unsecured,
    /// Verify signatures.
    Signed(Box<Verifier>),
}

impl Auth {
    /// Checks one request.
    pub fn check(&self, inbound: &Inbound) -> Result<(), WorkerError> {
        self.check_with(inbound, true)
    }

    /// Checks a request of an open session that carries the session's own `auth_data`, as
    /// the official client sends every request of a session: the signature, without the
    /// replay rules, which would refuse the second request of every session.
    pub fn check_in_session(&self, inbound: &Inbound) -> Result<(), WorkerError> {
        self.check_with(inbound, false)
    }

    fn check_with(&self, inbound: &Inbound, replay: bool) -> Result<(), WorkerError> {
        match (self, &inbound.auth) {
            (Auth::Unsecured, _) => Ok(()),
            (Auth::Signed(v), Some(auth)) if replay => v.verify(auth),
            (Auth::Signed(v), Some(auth)) => v.verify_signature(auth),
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
    own_url: Option<String>,
    refetch: Notify,
    last_refetch: Mutex<Option<Instant>>,
}

impl Verifier {
    /// A verifier for `form`; `replay_window` 0 turns replay protection off.
    pub fn new(form: SignatureForm, replay_window: u64) -> Self {
        Self {
            key: RwLock::new(None),
            form,
            replay: (replay_window > 0).then(|| Mutex::new(Replay::new(replay_window))),
            own_url: None,
            refetch: Notify::new(),
            last_refetch: Mutex::new(None),
        }
    }

    /// Refuses url-form signatures whose `url` is not `url` (this worker's public URL).
    #[must_use]
    pub fn own_url(mut self, url: &str) -> Self {
        self.own_url = Some(normalize_url(url));
        self
    }

    /// Resolves when a failed signature asked for the key to be fetched again.
    pub async fn refetch_requested(&self) {
        self.refetch.notified().await;
    }

    fn ask_refetch(&self) {
        let mut last = self.last_refetch.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= REFETCH_INTERVAL) {
            *last = Some(Instant::now());
            self.refetch.notify_one();
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
        self.verify_signature(auth)?;
        if let Some(replay) = &self.replay {
            replay
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .check(auth)?;
        }
        Ok(())
    }

    /// Verifies the signature of `auth` (and, in the `url` form, that it was issued for
    /// this worker), without the replay rules.
    pub fn verify_signature(&self, auth: &AuthData) -> Result<(), WorkerError> {
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
        let url_form = signing::url_message(&auth.fields);
        let covers_url =
            self.form != SignatureForm::Legacy && key.verify(url_form.as_bytes(), signature);
        let valid = covers_url
            || (self.form != SignatureForm::Url
                && key.verify(signing::legacy_message(&auth.fields).as_bytes(), signature));
        if !valid {
            if well_formed(signature) {
                // Perhaps the autoscaler rotated its key.
                self.ask_refetch();
            }
            return Err(WorkerError::InvalidSignature("invalid signature".into()));
        }
        if covers_url
            && let Some(own) = &self.own_url
            && auth.str("url").map(normalize_url).as_deref() != Some(own.as_str())
        {
            return Err(WorkerError::InvalidSignature(
                "the signature was issued for another worker's url".into(),
            ));
        }
        Ok(())
    }
}

/// Replay rules: reject a message identical to one of the last `window` accepted ones, and
/// a `reqnum` older than every one of them (PyWorker's "below the highest minus the window",
/// made safe: one request with a huge `reqnum` cannot lock out every later one, since the
/// floor is the oldest of the last `window` accepted reqnums, not the highest).
#[derive(Debug)]
struct Replay {
    window: u64,
    recent: HashSet<String>,
    order: VecDeque<(u64, String)>,
    /// The reqnums of `order`, counted, for the floor.
    reqnums: BTreeMap<u64, u32>,
}

impl Replay {
    fn new(window: u64) -> Self {
        Self {
            window,
            recent: HashSet::new(),
            order: VecDeque::new(),
            reqnums: BTreeMap::new(),
        }
    }

    fn check(&mut self, auth: &AuthData) -> Result<(), WorkerError> {
        let reqnum = auth.reqnum();
        let full = self.order.len() as u64 >= self.window;
        if full
            && let Some((&floor, _)) = self.reqnums.first_key_value()
            && reqnum < floor
        {
            return Err(WorkerError::InvalidSignature(format!(
                "reqnum {reqnum} is older than the replay window (the last {} accepted start at {floor})",
                self.window
            )));
        }
        let message = signing::legacy_message(&auth.fields);
        if self.recent.contains(&message) {
            return Err(WorkerError::InvalidSignature("replayed request".into()));
        }
        self.recent.insert(message.clone());
        self.order.push_back((reqnum, message));
        *self.reqnums.entry(reqnum).or_default() += 1;
        if self.order.len() as u64 > self.window
            && let Some((old_num, old)) = self.order.pop_front()
        {
            self.recent.remove(&old);
            if let Some(n) = self.reqnums.get_mut(&old_num) {
                *n -= 1;
                if *n == 0 {
                    self.reqnums.remove(&old_num);
                }
            }
        }
        Ok(())
    }
}

/// A signature that could have come from the autoscaler: base64 of at least 128 bytes.
fn well_formed(signature: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .is_ok_and(|b| b.len() >= 128)
}

/// A URL as compared for the signed-url check: scheme and host in lower case, no trailing
/// slash.
fn normalize_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_ascii_lowercase()
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
        assert!(v.verify(&signed(&key, SignatureForm::Legacy, 12)).is_ok());
        assert!(
            v.verify(&signed(&key, SignatureForm::Legacy, 7)).is_err(),
            "older than the last two accepted"
        );
        assert!(v.verify(&signed(&key, SignatureForm::Legacy, 11)).is_ok());
    }

    #[test]
    fn a_session_reusing_its_auth_data_is_not_a_replay_but_a_bad_signature_still_fails() {
        let key = SigningKey::generate().unwrap();
        let v = verifier(&key, SignatureForm::Legacy, 2);
        let session = signed(&key, SignatureForm::Legacy, 10);
        assert!(v.verify(&session).is_ok(), "the create request");
        for _ in 0..3 {
            assert!(
                v.verify_signature(&session).is_ok(),
                "requests of the session"
            );
        }
        assert!(v.verify(&session).is_err(), "outside the session, a replay");
        let mut forged = session.clone();
        forged.fields.insert("signature".into(), json!("AAAA"));
        assert!(v.verify_signature(&forged).is_err());
    }

    #[test]
    fn one_huge_reqnum_does_not_lock_out_later_requests() {
        let key = SigningKey::generate().unwrap();
        let v = verifier(&key, SignatureForm::Legacy, 2);
        for n in [10, 11, u64::MAX, 12, 13, 14] {
            assert!(
                v.verify(&signed(&key, SignatureForm::Legacy, n)).is_ok(),
                "{n}"
            );
        }
    }

    #[test]
    fn a_url_signature_for_another_worker_is_refused() {
        let key = SigningKey::generate().unwrap();
        let mine = verifier(&key, SignatureForm::Url, 0).own_url("HTTP://127.0.0.1:1/");
        assert!(mine.verify(&signed(&key, SignatureForm::Url, 1)).is_ok());
        let theirs = verifier(&key, SignatureForm::Url, 0).own_url("http://127.0.0.1:2");
        let err = theirs
            .verify(&signed(&key, SignatureForm::Url, 1))
            .unwrap_err();
        assert!(err.to_string().contains("another worker"), "{err}");
        // The legacy form does not sign the url for a worker: nothing to compare.
        let legacy = verifier(&key, SignatureForm::Legacy, 0).own_url("http://127.0.0.1:2");
        assert!(
            legacy
                .verify(&signed(&key, SignatureForm::Legacy, 1))
                .is_ok()
        );
    }

    async fn pending(v: &Verifier) -> bool {
        tokio::time::timeout(Duration::ZERO, v.refetch_requested())
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_well_formed_bad_signature_asks_for_the_key_again_at_most_every_interval() {
        let key = SigningKey::generate().unwrap();
        let rotated = SigningKey::generate().unwrap();
        let v = verifier(&key, SignatureForm::Url, 0);
        let mut garbage = signed(&key, SignatureForm::Url, 1);
        garbage.fields.insert("signature".into(), json!("AAAA"));
        assert!(v.verify(&garbage).is_err());
        assert!(pending(&v).await, "a malformed signature asks for nothing");
        assert!(v.verify(&signed(&rotated, SignatureForm::Url, 1)).is_err());
        assert!(v.verify(&signed(&rotated, SignatureForm::Url, 2)).is_err());
        assert!(!pending(&v).await, "asked once");
        assert!(pending(&v).await, "rate-limited: not asked twice");
    }
}
