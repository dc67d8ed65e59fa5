//! Session ids. An id is a credential: a query-form request that names an open session is
//! served on it alone (so WebSockets and uploads of a session can authenticate), so ids are
//! 128 random bits from the system's generator (aws-lc-rs), never guessable, and logs show
//! only their first characters ([`short`]).

use crate::worker::error::WorkerError;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Random bytes in an id: 128 bits.
const ID_BYTES: usize = 16;
/// Characters of an id shown in logs and `/_vespa/status`.
const SHOWN: usize = 6;

/// A new session id: 128 random bits as URL-safe base64 without padding (22 characters).
pub fn new_id() -> Result<String, WorkerError> {
    let mut bytes = [0u8; ID_BYTES];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| WorkerError::NotReady {
        reason: "the system random generator failed".into(),
        retry_after: 1,
    })?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The id as logs and status show it: its first characters, enough to tell sessions apart,
/// far too few to use.
pub fn short(id: &str) -> String {
    let head: String = id.chars().take(SHOWN).collect();
    format!("{head}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_128_bit_url_safe_and_distinct() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 16);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn logs_show_only_the_first_characters() {
        assert_eq!(short("abcdefghijklmnopqrstuv"), "abcdef…");
    }
}
