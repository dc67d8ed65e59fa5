//! A public key that remembers the signatures it verified, so a repeated one costs no RSA.
//!
//! In the `url` form (PROTOCOL.md §3) the signed message is `{"url": …}`: the autoscaler
//! hands every client of a worker the same `(url, signature)` pair, so without a memory the
//! worker would run the same RSA-2048 verification, tens of microseconds, on every request
//! for the same answer. [`CachedKey`] keeps the last [`CAPACITY`] pairs that verified and
//! answers a repeat from them.
//!
//! Nothing unverified is ever admitted:
//! - an entry is the exact signature text and the exact signed bytes, both compared in full
//!   on every lookup (the signature first: a valid one is 344 characters of base64 that
//!   differ between messages from the first characters, so it is its own hash);
//! - entries belong to the key that verified them: a new key (rotation, refetch) is a new
//!   `CachedKey` with an empty memory, so a request signed by the old key is checked, and
//!   refused, under the new one;
//! - only successes are remembered: a failed signature is checked again each time, so a
//!   failure can never be turned into a refusal of a valid request after a rotation.
//!
//! Replay rules are not signatures: they apply to every request, remembered or not.

use super::{Message, PublicKey};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Mutex;

/// Most `(message, signature)` pairs a key remembers; the least recently used goes first.
/// A worker in the `url` form needs one (its own URL), a few more while a rotated key's
/// signatures are still in flight; sessions and repeated legacy messages use the rest.
pub const CAPACITY: usize = 64;

/// A public key and the last [`CAPACITY`] signatures it verified.
#[derive(Debug)]
pub struct CachedKey {
    key: PublicKey,
    verified: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    /// Lookups so far: each slot records the one that last used it.
    clock: u64,
    slots: Vec<Slot>,
}

#[derive(Debug)]
struct Slot {
    used: u64,
    signature: Box<str>,
    message: Box<[u8]>,
}

impl CachedKey {
    /// `key`, with nothing verified yet.
    pub fn new(key: PublicKey) -> Self {
        Self {
            key,
            verified: Mutex::new(Slots::default()),
        }
    }

    /// The key.
    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    /// Whether this key verified `signature` over `message` of `auth` before. Allocates
    /// nothing: the message is compared as it is written.
    pub fn verified_before(&self, message: Message, auth: &Map<String, Value>, sig: &str) -> bool {
        let mut slots = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        slots.clock += 1;
        let now = slots.clock;
        let hit = slots.slots.iter_mut().find(|s| {
            *s.signature == *sig && {
                let mut rest = Remaining(&s.message);
                message.write(&mut rest, auth).is_ok() && rest.0.is_empty()
            }
        });
        hit.map(|s| s.used = now).is_some()
    }

    /// Verifies `signature` over `message` of `auth` with RSA (always: call
    /// [`CachedKey::verified_before`] first), and remembers it when it verifies.
    pub fn verify(&self, message: Message, auth: &Map<String, Value>, sig: &str) -> bool {
        let bytes = message.build(auth);
        let valid = self.key.verify(bytes.as_bytes(), sig);
        if valid {
            self.remember(bytes.into_bytes(), sig);
        }
        valid
    }

    fn remember(&self, message: Vec<u8>, signature: &str) {
        let (message, signature) = (message.into_boxed_slice(), Box::<str>::from(signature));
        let mut guard = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let Slots { clock, slots } = &mut *guard;
        *clock += 1;
        let used = *clock;
        if let Some(same) = slots
            .iter_mut()
            .find(|s| s.signature == signature && s.message == message)
        {
            // Another request verified it at the same time.
            same.used = used;
            return;
        }
        let slot = Slot {
            used,
            signature,
            message,
        };
        if slots.len() < CAPACITY {
            slots.push(slot);
        } else if let Some(oldest) = slots.iter_mut().min_by_key(|s| s.used) {
            *oldest = slot;
        }
    }

    /// How many pairs are remembered.
    pub fn remembered(&self) -> usize {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .slots
            .len()
    }
}

/// The stored bytes not yet matched: a writer that fails as soon as what is written differs.
struct Remaining<'a>(&'a [u8]);

impl fmt::Write for Remaining<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let rest = self.0.strip_prefix(s.as_bytes()).ok_or(fmt::Error)?;
        self.0 = rest;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::SigningKey;
    use serde_json::json;

    fn auth(url: &str, reqnum: u64) -> Map<String, Value> {
        json!({"cost": 1.5, "endpoint": "e", "reqnum": reqnum, "request_idx": reqnum, "url": url})
            .as_object()
            .unwrap()
            .clone()
    }

    fn sign(key: &SigningKey, message: Message, auth: &Map<String, Value>) -> String {
        key.sign(message.build(auth).as_bytes()).unwrap()
    }

    fn cached(key: &SigningKey) -> CachedKey {
        CachedKey::new(PublicKey::from_pem(key.public_key_pem()).unwrap())
    }

    #[test]
    fn a_verified_pair_is_remembered_and_nothing_else_matches_it() {
        let signer = SigningKey::generate().unwrap();
        let key = cached(&signer);
        let a = auth("http://127.0.0.1:1", 1);
        let sig = sign(&signer, Message::Legacy, &a);
        assert!(!key.verified_before(Message::Legacy, &a, &sig));
        assert!(key.verify(Message::Legacy, &a, &sig));
        assert!(key.verified_before(Message::Legacy, &a, &sig));
        // Same signature, other bytes: a longer, a shorter and a changed message.
        let mut longer = a.clone();
        longer.insert("url".into(), json!("http://127.0.0.1:10"));
        let mut shorter = a.clone();
        shorter.insert("url".into(), json!("http://127.0.0.1:"));
        let mut float = a.clone();
        float.insert("reqnum".into(), json!(1.0));
        for other in [longer, shorter, float] {
            assert!(!key.verified_before(Message::Legacy, &other, &sig));
        }
        assert!(!key.verified_before(Message::Url, &a, &sig), "other form");
        // Same bytes, other signature text (even one that decodes to the same bytes).
        assert!(!key.verified_before(Message::Legacy, &a, &format!(" {sig}")));
        assert_eq!(key.remembered(), 1);
    }

    #[test]
    fn a_failed_signature_is_not_remembered() {
        let signer = SigningKey::generate().unwrap();
        let key = cached(&signer);
        let a = auth("http://127.0.0.1:1", 1);
        let forged = sign(&SigningKey::generate().unwrap(), Message::Url, &a);
        assert!(!key.verify(Message::Url, &a, &forged));
        assert!(!key.verified_before(Message::Url, &a, &forged));
        assert_eq!(key.remembered(), 0);
    }

    #[test]
    fn the_memory_is_bounded_and_forgets_the_least_recently_used() {
        let signer = SigningKey::generate().unwrap();
        let key = cached(&signer);
        let pairs: Vec<_> = (0..=CAPACITY as u64)
            .map(|n| {
                let a = auth("http://127.0.0.1:1", n);
                let sig = sign(&signer, Message::Legacy, &a);
                (a, sig)
            })
            .collect();
        for (a, sig) in &pairs[..CAPACITY] {
            assert!(key.verify(Message::Legacy, a, sig));
        }
        assert_eq!(key.remembered(), CAPACITY);
        // The first is used again: the second is now the least recently used.
        assert!(key.verified_before(Message::Legacy, &pairs[0].0, &pairs[0].1));
        let (a, sig) = &pairs[CAPACITY];
        assert!(key.verify(Message::Legacy, a, sig));
        assert_eq!(key.remembered(), CAPACITY);
        let remembered =
            |(a, sig): &(Map<String, Value>, String)| key.verified_before(Message::Legacy, a, sig);
        assert!(remembered(&pairs[0]) && remembered(&pairs[CAPACITY]));
        assert!(!remembered(&pairs[1]), "the least recently used went first");
        assert!(pairs[2..CAPACITY].iter().all(remembered));
    }

    #[test]
    fn verifying_a_remembered_pair_again_does_not_take_a_second_slot() {
        let signer = SigningKey::generate().unwrap();
        let key = cached(&signer);
        let a = auth("http://127.0.0.1:1", 1);
        let sig = sign(&signer, Message::Url, &a);
        assert!(key.verify(Message::Url, &a, &sig) && key.verify(Message::Url, &a, &sig));
        assert_eq!(key.remembered(), 1);
    }
}
