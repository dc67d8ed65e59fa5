//! Finding an endpoint's API key from the account key, as PyWorker's
//! `utils/endpoint_util.py` (`get_endpoint_api_key`) does: `GET
//! {console}/api/v0/endptjobs/?autoscaler_instance=prod` with `Authorization: Bearer
//! <account key>`, then the `api_key` of the `results[]` item whose `endpoint_name` is the
//! endpoint's name. Users then need only their account key, not one key per endpoint.

use serde_json::Value;
use std::time::Duration;

/// Vast's console.
pub const DEFAULT_CONSOLE_URL: &str = "https://console.vast.ai";
/// Timeout of the listing call (PyWorker's: 8 s).
pub const TIMEOUT: Duration = Duration::from_secs(8);

/// Why the endpoint's key could not be found.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The console refused the account key (401 or 403).
    #[error("the console at {url} refused the account key (HTTP {status}); check --account-key")]
    BadAccountKey {
        /// The listing URL.
        url: String,
        /// 401 or 403.
        status: u16,
    },
    /// The account has no endpoint of that name.
    #[error(
        "the account has no endpoint named {name:?}; its endpoints: {}",
        list(available)
    )]
    UnknownEndpoint {
        /// The name looked for.
        name: String,
        /// Every `endpoint_name` in the listing.
        available: Vec<String>,
    },
    /// The console answered, but not with a listing this client understands.
    #[error("unexpected answer from {url}: {problem}")]
    Malformed {
        /// The listing URL.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The console could not be reached.
    #[error("cannot reach the console at {url}: {source}")]
    Unreachable {
        /// The listing URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// The API key of endpoint `name`, from the console at `console_url`.
pub async fn endpoint_api_key(
    console_url: &str,
    account_key: &str,
    name: &str,
) -> Result<String, DiscoveryError> {
    let url = format!(
        "{}/api/v0/endptjobs/?autoscaler_instance=prod",
        console_url.trim_end_matches('/')
    );
    let malformed = |problem: String| DiscoveryError::Malformed {
        url: url.clone(),
        problem,
    };
    let unreachable = |source| DiscoveryError::Unreachable {
        url: url.clone(),
        source,
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(TIMEOUT)
        .build()
        .map_err(unreachable)?;
    let resp = http
        .get(&url)
        .bearer_auth(account_key)
        .send()
        .await
        .map_err(unreachable)?;
    let status = resp.status().as_u16();
    if status == 401 || status == 403 {
        return Err(DiscoveryError::BadAccountKey { url, status });
    }
    if !(200..300).contains(&status) {
        return Err(malformed(format!("HTTP {status}")));
    }
    let text = resp.text().await.map_err(unreachable)?;
    let body: Value =
        serde_json::from_str(&text).map_err(|e| malformed(format!("not JSON: {e}")))?;
    let Some(results) = body.get("results").and_then(Value::as_array) else {
        return Err(malformed("no `results` list".into()));
    };
    let found = results
        .iter()
        .find(|r| r.get("endpoint_name").and_then(Value::as_str) == Some(name));
    let Some(item) = found else {
        return Err(DiscoveryError::UnknownEndpoint {
            name: name.to_string(),
            available: results
                .iter()
                .filter_map(|r| r.get("endpoint_name")?.as_str().map(str::to_string))
                .collect(),
        });
    };
    match item.get("api_key").and_then(Value::as_str) {
        Some(key) if !key.is_empty() => Ok(key.to_string()),
        _ => Err(malformed(format!(
            "endpoint {name:?} has no `api_key` in the listing"
        ))),
    }
}
