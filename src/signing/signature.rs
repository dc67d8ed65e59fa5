//! RSASSA-PKCS1-v1_5 / SHA-256 signatures over canonical `auth_data` bytes.
//!
//! The Vast.ai autoscaler signs `json.dumps(auth_data_without_signature,
//! indent=4, sort_keys=True)` (see [`super::canonical`]) with its RSA private
//! key and puts the standard-base64 signature in `auth_data.signature`.
//! PyWorker verifies it with PyCryptodome (`pkcs1_15` + `SHA256`) against the
//! PEM public key fetched from the autoscaler. This module provides:
//!
//! * [`PublicKey`]: the worker-side verifier, accepting either PEM form the
//!   autoscaler may serve (`BEGIN PUBLIC KEY` / `BEGIN RSA PUBLIC KEY`) and
//!   decoding the signature leniently, exactly like Python's
//!   `base64.b64decode` (non-`validate` mode);
//! * [`SigningKey`]: the signer used by a local (test / self-hosted)
//!   autoscaler, producing signatures byte-identical to OpenSSL's.
//!
//! Everything is backed by `aws-lc-rs`; no input can cause a panic.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::error::KeyRejected;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{
    KeyPair as _, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
    RsaSubjectPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// PEM label of an X.509 `SubjectPublicKeyInfo` (`openssl rsa -pubout`).
const LABEL_SPKI: &str = "PUBLIC KEY";
/// PEM label of a PKCS#1 `RSAPublicKey` (`openssl rsa -RSAPublicKey_out`).
const LABEL_PKCS1_PUBLIC: &str = "RSA PUBLIC KEY";
/// PEM label of a PKCS#8 `PrivateKeyInfo` (`openssl genpkey`).
const LABEL_PKCS8: &str = "PRIVATE KEY";
/// PEM label of a PKCS#1 `RSAPrivateKey` (`openssl genrsa -traditional`).
const LABEL_PKCS1_PRIVATE: &str = "RSA PRIVATE KEY";

/// Smallest modulus accepted by `RSA_PKCS1_2048_8192_SHA256`, in bits.
const MIN_MODULUS_BITS: usize = 2048;
/// Largest modulus accepted by `RSA_PKCS1_2048_8192_SHA256`, in bits.
const MAX_MODULUS_BITS: usize = 8192;

/// Why a key could not be loaded, generated or serialized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text contains no complete `-----BEGIN X-----` / `-----END X-----` block.
    #[error("no PEM block found")]
    NoPemBlock,
    /// The PEM body is not valid standard base64.
    #[error("PEM body is not valid base64")]
    BadBase64,
    /// A PEM block was found, but its label is not one this loader accepts.
    #[error("unsupported PEM label {0:?}")]
    UnsupportedPemLabel(String),
    /// The DER inside the PEM block is not a (valid) RSA key of the expected kind.
    #[error("not an RSA key: {0}")]
    NotRsa(&'static str),
    /// The RSA modulus size is outside the 2048..=8192-bit range accepted for verification.
    #[error("unsupported RSA modulus size: {0} bits (need 2048..=8192)")]
    UnsupportedKeySize(usize),
    /// The underlying crypto library failed (key generation, signing, or encoding).
    #[error("cryptographic operation failed")]
    Crypto,
}

impl From<KeyRejected> for KeyError {
    fn from(e: KeyRejected) -> Self {
        KeyError::NotRsa(e.description_())
    }
}

impl From<aws_lc_rs::error::Unspecified> for KeyError {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        KeyError::Crypto
    }
}

/// An RSA public key for verifying autoscaler signatures
/// (RSASSA-PKCS1-v1_5 with SHA-256).
///
/// Two keys are equal when they are the same RSA key, whichever PEM form each came in.
pub struct PublicKey {
    key: ParsedPublicKey,
    modulus_bits: usize,
    /// The key as X.509 `SubjectPublicKeyInfo` DER, for equality.
    spki: Box<[u8]>,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.spki == other.spki
    }
}

impl Eq for PublicKey {}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("modulus_bits", &self.modulus_bits)
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Parses a PEM public key: either `-----BEGIN PUBLIC KEY-----`
    /// (SubjectPublicKeyInfo) or `-----BEGIN RSA PUBLIC KEY-----` (PKCS#1).
    ///
    /// Surrounding text, blank lines, indentation and CRLF line endings are
    /// tolerated. The first block with a supported label is used.
    ///
    /// # Errors
    /// See [`KeyError`]; keys smaller than 2048 bits are rejected up front
    /// because they could never verify.
    pub fn from_pem(pem: &str) -> Result<PublicKey, KeyError> {
        let block = find_pem_block(pem, &[LABEL_SPKI, LABEL_PKCS1_PUBLIC])?;
        Self::from_der(&block.der)
    }

    /// Parses a DER public key, either SubjectPublicKeyInfo or PKCS#1 `RSAPublicKey`.
    ///
    /// # Errors
    /// [`KeyError::NotRsa`] if the bytes are not an RSA public key,
    /// [`KeyError::UnsupportedKeySize`] if the modulus is not 2048..=8192 bits.
    pub fn from_der(der: &[u8]) -> Result<PublicKey, KeyError> {
        let modulus_bits = RsaSubjectPublicKey::from_der(der)?.modulus_len() * 8;
        if !(MIN_MODULUS_BITS..=MAX_MODULUS_BITS).contains(&modulus_bits) {
            return Err(KeyError::UnsupportedKeySize(modulus_bits));
        }
        let key = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der)?;
        let spki: PublicKeyX509Der<'static> = key.as_der()?;
        Ok(PublicKey {
            spki: spki.as_ref().into(),
            key,
            modulus_bits,
        })
    }

    /// Size of the RSA modulus in bits (e.g. 2048).
    #[must_use]
    pub fn modulus_bits(&self) -> usize {
        self.modulus_bits
    }

    /// Returns `true` iff `signature_b64` is a valid RSASSA-PKCS1-v1_5/SHA-256
    /// signature of `message` under this key.
    ///
    /// `signature_b64` is decoded like Python's `base64.b64decode(s)`:
    /// standard alphabet, characters outside it are skipped, decoding stops
    /// at the first complete padding, and bad padding or non-ASCII input
    /// makes verification fail (never panic).
    ///
    /// Difference from PyWorker's PyCryptodome `pkcs1_15.verify`: PyCryptodome
    /// additionally accepts an encoded `DigestInfo` whose `NULL` algorithm
    /// parameters are omitted; aws-lc (like OpenSSL) only accepts the
    /// standard encoding that every mainstream signer produces. Keys outside
    /// 2048..=8192 bits are rejected when loading.
    #[must_use]
    pub fn verify(&self, message: &[u8], signature_b64: &str) -> bool {
        match python_b64decode(signature_b64) {
            Some(signature) => self.verify_raw(message, &signature),
            None => false,
        }
    }

    /// Like [`PublicKey::verify`] but takes the already-decoded signature bytes.
    #[must_use]
    pub fn verify_raw(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
    }
}

/// An RSA private key that produces RSASSA-PKCS1-v1_5/SHA-256 signatures
/// in the format the worker expects (standard base64).
pub struct SigningKey {
    key: KeyPair,
    public_pem: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public_key_pem", &self.public_pem)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a fresh RSA-2048 key.
    ///
    /// # Errors
    /// [`KeyError::Crypto`] if key generation fails.
    pub fn generate() -> Result<SigningKey, KeyError> {
        Self::from_key_pair(KeyPair::generate(KeySize::Rsa2048)?)
    }

    /// Parses a PEM private key: PKCS#8 `-----BEGIN PRIVATE KEY-----` or
    /// PKCS#1 `-----BEGIN RSA PRIVATE KEY-----` (unencrypted only).
    ///
    /// # Errors
    /// See [`KeyError`]. Encrypted PEM (`Proc-Type` headers or
    /// `ENCRYPTED PRIVATE KEY`) is not supported.
    pub fn from_pem(pem: &str) -> Result<SigningKey, KeyError> {
        let block = find_pem_block(pem, &[LABEL_PKCS8, LABEL_PKCS1_PRIVATE])?;
        let key = if block.label == LABEL_PKCS8 {
            KeyPair::from_pkcs8(&block.der)?
        } else {
            KeyPair::from_der(&block.der)?
        };
        Self::from_key_pair(key)
    }

    fn from_key_pair(key: KeyPair) -> Result<SigningKey, KeyError> {
        let spki: PublicKeyX509Der<'static> = key.public_key().as_der()?;
        let public_pem = encode_pem(LABEL_SPKI, spki.as_ref());
        Ok(SigningKey { key, public_pem })
    }

    /// Serializes the private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    ///
    /// # Errors
    /// [`KeyError::Crypto`] if encoding fails.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        let der: Pkcs8V1Der<'static> = self.key.as_der()?;
        Ok(encode_pem(LABEL_PKCS8, der.as_ref()))
    }

    /// The public half as SubjectPublicKeyInfo PEM
    /// (`-----BEGIN PUBLIC KEY-----`, 64-character lines, trailing newline),
    /// identical to `openssl rsa -pubout` output.
    #[must_use]
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// Signs `message` with RSASSA-PKCS1-v1_5/SHA-256 and returns the
    /// signature as standard base64 (with padding). Deterministic: the same
    /// key and message always give the same signature.
    ///
    /// # Errors
    /// [`KeyError::Crypto`] if the crypto library fails (not expected for a
    /// key that loaded successfully).
    pub fn sign(&self, message: &[u8]) -> Result<String, KeyError> {
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            message,
            &mut signature,
        )?;
        Ok(STANDARD.encode(signature))
    }
}

/// A decoded PEM block.
struct PemBlock {
    label: &'static str,
    der: Vec<u8>,
}

/// Finds the first PEM block whose label is in `accepted` and decodes it.
///
/// Returns [`KeyError::UnsupportedPemLabel`] (naming the first label seen)
/// if blocks exist but none has an accepted label.
fn find_pem_block(pem: &str, accepted: &[&'static str]) -> Result<PemBlock, KeyError> {
    let mut first_label: Option<&str> = None;
    let mut rest = pem;
    while let Some((label, body, after)) = next_pem_block(rest) {
        if let Some(&known) = accepted.iter().find(|&&l| l == label) {
            let der = decode_pem_body(body)?;
            return Ok(PemBlock { label: known, der });
        }
        first_label.get_or_insert(label);
        rest = after;
    }
    match first_label {
        Some(label) => Err(KeyError::UnsupportedPemLabel(label.to_owned())),
        None => Err(KeyError::NoPemBlock),
    }
}

/// Splits off the next complete `BEGIN`/`END` block: `(label, body, remainder)`.
fn next_pem_block(text: &str) -> Option<(&str, &str, &str)> {
    const BEGIN: &str = "-----BEGIN ";
    const DASHES: &str = "-----";
    let start = text.find(BEGIN)? + BEGIN.len();
    let after_begin = &text[start..];
    let label_len = after_begin.find(DASHES)?;
    let label = &after_begin[..label_len];
    if label.contains(['\n', '\r']) {
        return next_pem_block(after_begin);
    }
    let body_and_rest = &after_begin[label_len + DASHES.len()..];
    let end_marker = format!("-----END {label}-----");
    let body_len = body_and_rest.find(&end_marker)?;
    let body = &body_and_rest[..body_len];
    let remainder = &body_and_rest[body_len + end_marker.len()..];
    Some((label, body, remainder))
}

/// Strict standard-base64 decode of a PEM body, ignoring ASCII whitespace.
fn decode_pem_body(body: &str) -> Result<Vec<u8>, KeyError> {
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    match STANDARD.decode(compact) {
        Ok(der) if !der.is_empty() => Ok(der),
        _ => Err(KeyError::BadBase64),
    }
}

/// Encodes `der` as a PEM block with 64-character lines and a trailing newline.
fn encode_pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    let mut remaining = b64.as_str();
    while !remaining.is_empty() {
        let (line, tail) = remaining.split_at(remaining.len().min(64));
        out.push_str(line);
        out.push('\n');
        remaining = tail;
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Value of a standard-alphabet base64 character, if it is one.
fn b64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes base64 exactly like CPython's `base64.b64decode(s)` with
/// `validate=False` (i.e. `binascii.a2b_base64(s, strict_mode=False)`).
///
/// * non-ASCII `str` input raises `ValueError` in Python → `None`;
/// * bytes outside the standard alphabet (and stray `=`) are skipped;
/// * a `=` completing a quantum (after 2 or 3 data characters) ends
///   decoding; anything after it is ignored;
/// * leftover data characters without padding → `None`
///   ("Incorrect padding" / "1 more than a multiple of 4").
fn python_b64decode(s: &str) -> Option<Vec<u8>> {
    if !s.is_ascii() {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut quad_pos = 0u8;
    let mut left = 0u8;
    let mut pads = 0u8;
    for &byte in s.as_bytes() {
        if byte == b'=' {
            if quad_pos >= 2 {
                pads += 1;
                if quad_pos + pads >= 4 {
                    return Some(out);
                }
            }
            continue;
        }
        let Some(v) = b64_value(byte) else {
            continue;
        };
        pads = 0;
        match quad_pos {
            0 => left = v,
            1 => {
                out.push((left << 2) | (v >> 4));
                left = v & 0x0f;
            }
            2 => {
                out.push((left << 4) | (v >> 2));
                left = v & 0x03;
            }
            _ => out.push((left << 6) | v),
        }
        quad_pos = (quad_pos + 1) % 4;
    }
    (quad_pos == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    // `super::super` is the crate root here and `crate::auth` once copied
    // into the main crate, so this path works in both layouts.
    use crate::signing::canonical::python_json_dumps;

    /// Includes a file from `<crate>/tests/fixtures/` (layout-independent).
    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/",
                $name
            ))
        };
    }

    const KEY_PKCS8: &str = fixture!("rsa_key.pem");
    const KEY_PKCS1: &str = fixture!("rsa_key_pkcs1.pem");
    const PUB_SPKI: &str = fixture!("rsa_pub_spki.pem");
    const PUB_PKCS1: &str = fixture!("rsa_pub_pkcs1.pem");
    const OTHER_PUB: &str = fixture!("other_pub_spki.pem");
    const MSG_URL: &str = fixture!("msg_url.txt");
    const SIG_URL: &str = fixture!("msg_url.sig.b64");
    const MSG_LEGACY: &str = fixture!("msg_legacy.txt");
    const SIG_LEGACY: &str = fixture!("msg_legacy.sig.b64");

    fn public_keys() -> [PublicKey; 2] {
        [
            PublicKey::from_pem(PUB_SPKI).expect("SPKI PEM loads"),
            PublicKey::from_pem(PUB_PKCS1).expect("PKCS#1 PEM loads"),
        ]
    }

    fn cases() -> [(&'static str, &'static str); 2] {
        [(MSG_URL, SIG_URL), (MSG_LEGACY, SIG_LEGACY)]
    }

    #[test]
    fn fixture_messages_are_canonical_dumps() {
        let url = serde_json::json!({"url": "https://203.0.113.7:41234"});
        assert_eq!(python_json_dumps(&url), MSG_URL);
        let legacy = serde_json::json!({
            "cost": 242.0, "endpoint": "my-endpoint", "reqnum": 1234,
            "request_idx": 5678, "url": "https://203.0.113.7:41234",
        });
        assert_eq!(python_json_dumps(&legacy), MSG_LEGACY);
    }

    #[test]
    fn both_pem_forms_verify_openssl_signatures() {
        for key in public_keys() {
            assert_eq!(key.modulus_bits(), 2048);
            for (msg, sig) in cases() {
                assert!(key.verify(msg.as_bytes(), sig), "{key:?} on {msg}");
            }
        }
    }

    #[test]
    fn tampered_message_fails() {
        for key in public_keys() {
            for (msg, sig) in cases() {
                let tampered = msg.replace("41234", "41235");
                assert!(!key.verify(tampered.as_bytes(), sig));
                let mut extra = msg.as_bytes().to_vec();
                extra.push(b'\n');
                assert!(!key.verify(&extra, sig));
            }
        }
    }

    #[test]
    fn tampered_signature_fails() {
        let [key, _] = public_keys();
        for (msg, sig) in cases() {
            let mut raw = STANDARD.decode(sig.trim()).expect("fixture base64");
            raw[100] ^= 0x01;
            assert!(!key.verify(msg.as_bytes(), &STANDARD.encode(&raw)));
            // Truncated / empty / garbage signatures.
            assert!(!key.verify(msg.as_bytes(), &sig[..sig.len() - 8]));
            assert!(!key.verify(msg.as_bytes(), ""));
            assert!(!key.verify(msg.as_bytes(), "not base64 at all!"));
            assert!(!key.verify(msg.as_bytes(), "é"));
        }
    }

    #[test]
    fn digest_info_without_null_params_is_rejected() {
        // Known, accepted deviation: PyCryptodome (PyWorker) accepts this
        // non-standard encoding, aws-lc and OpenSSL reject it.
        let sig = fixture!("msg_url.nonull.sig.b64");
        for key in public_keys() {
            assert!(!key.verify(MSG_URL.as_bytes(), sig));
        }
    }

    #[test]
    fn keys_are_equal_when_they_are_the_same_key_in_either_form() {
        let [spki, pkcs1] = public_keys();
        assert_eq!(spki, pkcs1);
        assert_ne!(
            spki,
            PublicKey::from_pem(OTHER_PUB).expect("other key loads")
        );
    }

    #[test]
    fn wrong_key_fails() {
        let other = PublicKey::from_pem(OTHER_PUB).expect("other key loads");
        for (msg, sig) in cases() {
            assert!(!other.verify(msg.as_bytes(), sig));
        }
    }

    #[test]
    fn lenient_base64_like_python() {
        let [key, _] = public_keys();
        // Python's b64decode discards non-alphabet characters such as newlines.
        let wrapped: String = SIG_URL
            .trim()
            .as_bytes()
            .chunks(64)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("\r\n");
        assert!(key.verify(MSG_URL.as_bytes(), &format!(" {wrapped}\n")));
        // Data after the terminating padding is ignored.
        let trailing = format!("{}garbage", SIG_URL.trim());
        assert!(key.verify(MSG_URL.as_bytes(), &trailing));
    }

    #[test]
    fn python_b64decode_matches_cpython() {
        // Expected values checked against CPython 3.11 `base64.b64decode`.
        let ok: &[(&str, &[u8])] = &[
            ("aGVsbG8=", b"hello"),
            ("aGVs\nbG8=", b"hello"),
            ("aGVsbG8=junk", b"hello"),
            ("a=GVsbG8=", b"hello"),
            ("aGVsbA==", b"hell"),
            ("aGVsbB==", b"hell"),
            ("aGVsbA=x=", b"hell\x0c"),
            ("aG=Vs", b"hel"),
            ("", b""),
            ("====", b""),
            ("-_-_", b""),
        ];
        for (input, expected) in ok {
            assert_eq!(
                python_b64decode(input).as_deref(),
                Some(*expected),
                "{input:?}"
            );
        }
        for input in ["aGVsbG8", "aGVsbG", "aGVsb", "aGVsbA=", "aGVsbG8=\u{e9}"] {
            assert_eq!(python_b64decode(input), None, "{input:?}");
        }
    }

    #[test]
    fn signing_key_round_trip() {
        let signer = SigningKey::generate().expect("generate");
        let verifier = PublicKey::from_pem(signer.public_key_pem()).expect("public pem");
        let sig = signer.sign(MSG_LEGACY.as_bytes()).expect("sign");
        assert!(verifier.verify(MSG_LEGACY.as_bytes(), &sig));
        assert!(!verifier.verify(MSG_URL.as_bytes(), &sig));

        let reloaded =
            SigningKey::from_pem(&signer.to_pkcs8_pem().expect("pkcs8")).expect("reload pkcs8");
        assert_eq!(reloaded.public_key_pem(), signer.public_key_pem());
        assert_eq!(
            reloaded.sign(b"x").expect("sign"),
            signer.sign(b"x").expect("sign")
        );
    }

    #[test]
    fn signing_key_matches_openssl() {
        for pem in [KEY_PKCS8, KEY_PKCS1] {
            let signer = SigningKey::from_pem(pem).expect("openssl key loads");
            assert_eq!(signer.public_key_pem(), PUB_SPKI);
            for (msg, sig) in cases() {
                assert_eq!(signer.sign(msg.as_bytes()).expect("sign"), sig.trim());
            }
        }
        let signer = SigningKey::from_pem(KEY_PKCS8).expect("loads");
        assert_eq!(signer.to_pkcs8_pem().expect("pkcs8"), KEY_PKCS8);
    }

    #[test]
    fn pem_parsing_is_tolerant() {
        let crlf = PUB_SPKI.replace('\n', "\r\n");
        let noisy = format!("\n\n  some preamble\r\n{crlf}\r\n\ttrailer\n");
        assert!(PublicKey::from_pem(&noisy).is_ok());
        let indented: String = PUB_PKCS1.lines().map(|l| format!("   {l}  \n")).collect();
        assert!(PublicKey::from_pem(&indented).is_ok());
        // A supported block after an unsupported one is found.
        let both = format!("-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n{PUB_SPKI}");
        assert!(PublicKey::from_pem(&both).is_ok());
    }

    #[test]
    fn pem_errors() {
        assert_eq!(PublicKey::from_pem("").unwrap_err(), KeyError::NoPemBlock);
        assert_eq!(
            PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n").unwrap_err(),
            KeyError::NoPemBlock
        );
        assert_eq!(
            PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----")
                .unwrap_err(),
            KeyError::BadBase64
        );
        assert_eq!(
            PublicKey::from_pem(KEY_PKCS8).unwrap_err(),
            KeyError::UnsupportedPemLabel("PRIVATE KEY".into())
        );
        assert_eq!(
            SigningKey::from_pem(PUB_SPKI).unwrap_err(),
            KeyError::UnsupportedPemLabel("PUBLIC KEY".into())
        );
        let garbage = encode_pem(LABEL_SPKI, b"definitely not DER");
        assert!(matches!(
            PublicKey::from_pem(&garbage),
            Err(KeyError::NotRsa(_))
        ));
        let garbage = encode_pem(LABEL_PKCS8, b"definitely not DER");
        assert!(matches!(
            SigningKey::from_pem(&garbage),
            Err(KeyError::NotRsa(_))
        ));
    }

    #[test]
    fn non_rsa_and_small_keys_are_rejected() {
        let ec = fixture!("ec_pub_spki.pem");
        assert!(matches!(PublicKey::from_pem(ec), Err(KeyError::NotRsa(_))));
        let small = fixture!("rsa1024_pub_spki.pem");
        assert_eq!(
            PublicKey::from_pem(small).unwrap_err(),
            KeyError::UnsupportedKeySize(1024)
        );
    }
}
