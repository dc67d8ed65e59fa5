//! The benchmark cache (`BENCHMARK_CACHE`, default `.has_benchmark`): a restarted worker
//! skips the benchmark when the file holds a result for the same profile and backend.
//!
//! Format: `{"max_perf": 812.5, "profile": "openai", "backend": "http://127.0.0.1:8000"}`.
//! A plain number (PyWorker's format) is accepted as a result for any profile.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// A cached benchmark result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cached {
    /// Capacity, workload units per second.
    pub max_perf: f64,
    /// Profile it was measured with.
    pub profile: String,
    /// Backend it was measured on.
    pub backend: String,
}

/// The cached capacity for `profile` on `backend`, if the file holds one.
pub fn read(path: &Path, profile: &str, backend: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    if let Ok(n) = text.lines().next().unwrap_or("").trim().parse::<f64>() {
        return (n.is_finite() && n > 0.0).then_some(n);
    }
    let c: Cached = serde_json::from_str(text).ok()?;
    (c.profile == profile && c.backend == backend && c.max_perf.is_finite() && c.max_perf > 0.0)
        .then_some(c.max_perf)
}

/// Stores a result.
pub fn write(path: &Path, entry: &Cached) -> std::io::Result<()> {
    let text = serde_json::to_string(entry).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_kept_per_profile_and_backend_and_plain_numbers_are_accepted() {
        let dir = std::env::temp_dir().join(format!("vespa-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("has_benchmark");
        write(
            &path,
            &Cached {
                max_perf: 812.5,
                profile: "openai".into(),
                backend: "http://b".into(),
            },
        )
        .unwrap();
        assert_eq!(read(&path, "openai", "http://b"), Some(812.5));
        assert_eq!(read(&path, "tgi", "http://b"), None);
        assert_eq!(read(&path, "openai", "http://other"), None);
        std::fs::write(&path, "123.0\n").unwrap();
        assert_eq!(read(&path, "anything", "http://x"), Some(123.0));
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(read(&path, "openai", "http://b"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
