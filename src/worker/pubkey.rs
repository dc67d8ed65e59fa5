//! Fetches the autoscaler's public key (PROTOCOL.md §3): `GET {REPORT_ADDR}/pubkey/`,
//! every address in order, 10 s timeout each; 1, 2, 4, 8 s back-off, then every 30 s until
//! it loads. After 5 failed attempts the worker reports itself errored, and keeps trying.

use crate::signing::PublicKey;
use std::time::Duration;

/// Back-off between attempts.
pub const BACKOFF: [u64; 4] = [1, 2, 4, 8];

/// `{addr}/pubkey/` with exactly one slash between.
pub fn pubkey_url(addr: &str) -> String {
    format!("{}/pubkey/", addr.trim_end_matches('/'))
}

async fn fetch_once(client: &reqwest::Client, addr: &str) -> Result<PublicKey, String> {
    let url = pubkey_url(addr);
    let resp = client
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("{url}: {}", crate::http_util::error_chain(&e)))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("{url}: {}", crate::http_util::error_chain(&e)))?;
    if !status.is_success() {
        return Err(format!("{url}: answered {status}"));
    }
    // Some deployments answer the PEM as a JSON string.
    let pem = serde_json::from_str::<String>(&text).unwrap_or(text);
    PublicKey::from_pem(&pem).map_err(|e| format!("{url}: {}", crate::http_util::error_chain(&e)))
}

/// One pass over `addrs` in order: the first key that loads.
pub async fn fetch_any(client: &reqwest::Client, addrs: &[String]) -> Result<PublicKey, String> {
    let mut last = String::from("no REPORT_ADDR configured");
    for addr in addrs {
        match fetch_once(client, addr).await {
            Ok(key) => {
                tracing::info!(%addr, bits = key.modulus_bits(), "autoscaler public key loaded");
                return Ok(key);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Attempts before the worker reports the key as failed (it keeps trying after).
pub const ATTEMPTS_BEFORE_ERROR: usize = BACKOFF.len() + 1;

/// Pause after failed attempt `n` (0-based): 1, 2, 4, 8 units, then [`RETRY_EVERY`] units.
pub fn pause(n: usize, unit: std::time::Duration) -> std::time::Duration {
    unit * BACKOFF.get(n).copied().unwrap_or(RETRY_EVERY) as u32
}

/// Back-off, in units, once the first attempts failed.
pub const RETRY_EVERY: u64 = 30;
