//! Vast's root CA: fetched once from the console, as the Vast client does, and cached.
//!
//! The Vast client downloads `https://console.vast.ai/static/jvastai_root.cer` once per
//! process. Vespa keeps it in a cache file, so only the first run on a machine needs the
//! console; `--ca-cert` / `VAST_CA_CERT` skip the download altogether.

use super::TlsError;
use super::client::WorkerCa;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Path of the CA on the console.
pub const CA_PATH: &str = "/static/jvastai_root.cer";
/// Cache file name under the cache directory.
pub const CACHE_FILE: &str = "vast_root_ca.cer";
/// Time allowed for the download. Default is 10 s.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the CA is cached: `$XDG_CACHE_HOME/vespa/vast_root_ca.cer`, else
/// `$HOME/.cache/vespa/vast_root_ca.cer`, else the same name in the temp directory.
/// `env` looks up an environment variable (injectable so tests never touch the real one).
pub fn default_cache_path(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    let non_empty = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = non_empty("XDG_CACHE_HOME")
        .or_else(|| non_empty("HOME").map(|h| h.join(".cache")))
        .map(|d| d.join("vespa"))
        .unwrap_or_else(|| std::env::temp_dir().join("vespa"));
    dir.join(CACHE_FILE)
}

/// The CA for https workers: `ca_file` when given, else the cached or downloaded Vast root
/// CA (see [`fetch_cached`]).
pub async fn worker_ca(
    ca_file: Option<&Path>,
    console_url: &str,
    cache: &Path,
) -> Result<WorkerCa, TlsError> {
    match ca_file {
        Some(path) => WorkerCa::from_file(path),
        None => fetch_cached(console_url, cache).await,
    }
}

/// The Vast root CA from `cache` if it holds a usable one, else downloaded from
/// `{console_url}/static/jvastai_root.cer` and written to `cache`. A cache that cannot be
/// written is only logged: the downloaded CA is still returned.
pub async fn fetch_cached(console_url: &str, cache: &Path) -> Result<WorkerCa, TlsError> {
    match WorkerCa::from_file(cache) {
        Ok(ca) => return Ok(ca),
        Err(e) if e.is_missing() => {}
        Err(e) => tracing::warn!(error = %e, "cached Vast root CA unusable; downloading it again"),
    }
    let url = format!("{}{CA_PATH}", console_url.trim_end_matches('/'));
    let bytes = download(&url).await?;
    let ca = WorkerCa::from_bytes(cache, &bytes).map_err(|e| TlsError::BadDownload {
        url: url.clone(),
        reason: e.to_string(),
    })?;
    if let Err(e) = write_atomically(cache, &bytes) {
        tracing::warn!(path = %cache.display(), error = %e, "cannot cache the Vast root CA");
    }
    Ok(ca)
}

async fn download(url: &str) -> Result<bytes::Bytes, TlsError> {
    let fetch = async {
        reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .no_proxy()
            .build()?
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await
    };
    fetch.await.map_err(|source| TlsError::Fetch {
        url: url.to_string(),
        source,
    })
}

/// Writes through a temporary file and a rename, so a concurrent reader never sees half a
/// certificate.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
