//! The authentication stage: decides whether a request's `auth_data` may be served.
//!
//! Unsecured mode (`UNSECURED=true`) accepts every request. Signed mode verifies the
//! envelope's signature with the autoscaler's public key (PROTOCOL.md §3) and, when
//! `REPLAY_WINDOW` is set, refuses replays. Until the key is loaded, every signed request
//! gets 401: there is no fallback to unsecured. In the `url` form the signed URL must be this
//! worker's own (`CHECK_SIGNED_URL`), so a signature issued for another worker is refused.
//! A well-formed signature that fails to verify asks for the key to be fetched again (at
//! most every [`REFETCH_INTERVAL`]), so a rotated key is picked up.
//!
//! The key remembers the signatures it verified ([`CachedKey`]): in the `url` form every
//! request to a worker carries the same `(url, signature)` pair, so only the first one pays
//! for the RSA verification. The replay rules and the own-URL check run on every request.

use super::envelope::{AuthData, Inbound};
use super::error::WorkerError;
use crate::signing::verified::CachedKey;
use crate::signing::{self, Message, PublicKey, SignatureForm};
use base64::Engine as _;
use prometheus_client::metrics::counter::Counter;
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
    key: RwLock<Option<Arc<CachedKey>>>,
    form: SignatureForm,
    replay: Option<Mutex<Replay>>,
    own_url: Option<String>,
    refetch: Notify,
    last_refetch: Mutex<Option<Instant>>,
    rsa_verifications: Counter,
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
            rsa_verifications: Counter::default(),
        }
    }

    /// Counts its RSA verifications in `counter` (the worker's
    /// `vespa_rsa_verifications_total`) instead of a counter of its own.
    #[must_use]
    pub fn counting_in(mut self, counter: Counter) -> Self {
        self.rsa_verifications = counter;
        self
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

    /// Installs the autoscaler's public key. A new key starts with nothing verified: what
    /// the previous one verified is forgotten with it. The same key fetched again (a refetch
    /// after a forgery) keeps what it verified.
    pub fn set_key(&self, key: PublicKey) {
        let mut current = self.key.write().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_none_or(|c| *c.key() != key) {
            *current = Some(Arc::new(CachedKey::new(key)));
        }
    }

    /// RSA verifications run so far: the signatures the key did not remember.
    pub fn rsa_verifications(&self) -> u64 {
        self.rsa_verifications.get()
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
        let messages = self.form.messages();
        // Internal: the memory is asked for every message before any RSA, so in the `any`
        // form a remembered legacy signature does not pay for a failing url check first.
        let covered = messages
            .iter()
            .find(|m| key.verified_before(**m, &auth.fields, signature))
            .or_else(|| {
                messages.iter().find(|m| {
                    self.rsa_verifications.inc();
                    key.verify(**m, &auth.fields, signature)
                })
            });
        let Some(&covered) = covered else {
            if well_formed(signature) {
                // Perhaps the autoscaler rotated its key.
                self.ask_refetch();
            }
            return Err(WorkerError::InvalidSignature("invalid signature".into()));
        };
        if covered == Message::Url
            && let Some(own) = &self.own_url
            && !auth.str("url").is_some_and(|url| same_url(url, own))
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

/// Whether `url` normalizes to `own` (already normalized), without allocating.
fn same_url(url: &str, own: &str) -> bool {
    url.trim().trim_end_matches('/').eq_ignore_ascii_case(own)
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

    #[test]
    fn a_repeated_url_signature_is_verified_once() {
        let key = SigningKey::generate().unwrap();
        let v = verifier(&key, SignatureForm::Url, 0).own_url("http://127.0.0.1:1");
        // The url form signs the url alone: every request carries the same pair.
        for reqnum in 1..=5 {
            assert!(v.verify(&signed(&key, SignatureForm::Url, reqnum)).is_ok());
        }
        assert_eq!(v.rsa_verifications(), 1);
        // The own-URL check still runs on a remembered signature.
        let elsewhere = verifier(&key, SignatureForm::Url, 0).own_url("http://127.0.0.1:2");
        let a = signed(&key, SignatureForm::Url, 1);
        assert!(elsewhere.verify(&a).is_err() && elsewhere.verify(&a).is_err());
        assert_eq!(
            elsewhere.rsa_verifications(),
            1,
            "remembered, and still refused"
        );
    }

    #[test]
    fn a_changed_signature_url_or_key_is_verified_and_a_forgery_refused() {
        let key = SigningKey::generate().unwrap();
        let v = verifier(&key, SignatureForm::Url, 0);
        let good = signed(&key, SignatureForm::Url, 1);
        assert!(v.verify(&good).is_ok());
        let mut other_url = good.clone();
        other_url
            .fields
            .insert("url".into(), json!("http://127.0.0.1:2"));
        let mut flipped = good.clone();
        let sig = good.str("signature").unwrap();
        let flip = if sig.starts_with('A') { "B" } else { "A" };
        flipped
            .fields
            .insert("signature".into(), json!(format!("{flip}{}", &sig[1..])));
        let other_key = signed(&SigningKey::generate().unwrap(), SignatureForm::Url, 1);
        for (n, forged) in [other_url, flipped, other_key].iter().enumerate() {
            assert!(v.verify(forged).is_err(), "forgery {n}");
            assert_eq!(
                v.rsa_verifications(),
                2 + n as u64,
                "forgery {n} was checked"
            );
        }
        let mut resigned = good.clone();
        resigned
            .fields
            .insert("url".into(), json!("http://127.0.0.1:2"));
        let message = signing::url_message(&resigned.fields);
        resigned.fields.insert(
            "signature".into(),
            json!(key.sign(message.as_bytes()).unwrap()),
        );
        assert!(v.verify(&resigned).is_ok(), "another url, signed");
        assert_eq!(v.rsa_verifications(), 5);
    }

    #[test]
    fn a_failed_signature_is_checked_again_each_time_and_never_admitted() {
        let key = SigningKey::generate().unwrap();
        let v = verifier(&key, SignatureForm::Url, 0);
        let forged = signed(&SigningKey::generate().unwrap(), SignatureForm::Url, 1);
        for n in 1..=3 {
            assert!(v.verify(&forged).is_err());
            assert_eq!(v.rsa_verifications(), n);
        }
        assert!(v.verify(&signed(&key, SignatureForm::Url, 1)).is_ok());
    }

    #[test]
    fn after_a_key_rotation_a_remembered_signature_of_the_old_key_is_refused() {
        let old = SigningKey::generate().unwrap();
        let new = SigningKey::generate().unwrap();
        let v = verifier(&old, SignatureForm::Url, 0);
        let by_old = signed(&old, SignatureForm::Url, 1);
        assert!(v.verify(&by_old).is_ok() && v.verify(&by_old).is_ok());
        assert_eq!(v.rsa_verifications(), 1);
        // A request under the new key fails before the worker has the new key...
        let by_new = signed(&new, SignatureForm::Url, 2);
        assert!(v.verify(&by_new).is_err());
        v.set_key(PublicKey::from_pem(new.public_key_pem()).unwrap());
        // ... and that failure does not outlive the rotation; the old key's success neither.
        assert!(v.verify(&by_new).is_ok());
        assert!(v.verify(&by_old).is_err());
        assert_eq!(v.rsa_verifications(), 4);
        // The same key fetched again keeps what it verified.
        v.set_key(PublicKey::from_pem(new.public_key_pem()).unwrap());
        assert!(v.verify(&by_new).is_ok());
        assert_eq!(v.rsa_verifications(), 4);
    }

    #[test]
    fn the_any_form_remembers_both_messages_and_replay_rules_still_apply() {
        let key = SigningKey::generate().unwrap();
        let v = verifier(&key, SignatureForm::Any, 2);
        let legacy = signed(&key, SignatureForm::Legacy, 1);
        assert!(v.verify(&legacy).is_ok());
        assert_eq!(
            v.rsa_verifications(),
            2,
            "the url message first, then legacy"
        );
        assert!(v.verify(&legacy).is_err(), "a replay, though remembered");
        assert!(v.verify_signature(&legacy).is_ok(), "a session's repeat");
        assert_eq!(v.rsa_verifications(), 2);
        let url = signed(&key, SignatureForm::Url, 2);
        assert!(v.verify(&url).is_ok() && v.verify_signature(&url).is_ok());
        assert_eq!(v.rsa_verifications(), 3);
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
