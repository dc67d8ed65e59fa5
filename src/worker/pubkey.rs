//! Fetches the autoscaler's public key (PROTOCOL.md §3): `GET {REPORT_ADDR}/pubkey/`,
//! 5 attempts with 1, 2, 4, 8 s back-off and a 10 s timeout each, every address in order.

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

/// Fetches and parses the key, with the back-off above. `backoff_unit` is 1 s in
/// production; tests shrink it.
pub async fn fetch(
    client: &reqwest::Client,
    addrs: &[String],
    backoff_unit: Duration,
) -> Result<PublicKey, String> {
    let mut last = String::from("no REPORT_ADDR configured");
    for attempt in 0..=BACKOFF.len() {
        for addr in addrs {
            match fetch_once(client, addr).await {
                Ok(key) => {
                    tracing::info!(%addr, bits = key.modulus_bits(), "autoscaler public key loaded");
                    return Ok(key);
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt = attempt + 1, "cannot fetch the autoscaler public key");
                    last = e;
                }
            }
        }
        if let Some(secs) = BACKOFF.get(attempt) {
            tokio::time::sleep(backoff_unit * (*secs as u32)).await;
        }
    }
    Err(format!(
        "failed to get the autoscaler public key after {} attempts: {last}",
        BACKOFF.len() + 1
    ))
}
