//! Readiness from the model server's log, the way Vast's workers decide "model loaded".
//!
//! The log file (`MODEL_LOG`) is followed like `tail -F`: lines written before the worker
//! started count, a file that appears later is picked up, and a file that is truncated or
//! replaced (rotation: a new inode at the path) is read again from its start. Each complete
//! line is matched by substring against the markers: a load marker means the model is
//! loaded, an error marker before that means it never will be (the worker goes `errored`
//! with that line), an info marker is only logged. Once loaded, error lines are only logged:
//! the log then also echoes what clients send, and the health checks decide.
//!
//! [`Engine`] holds the markers, log path, health path and profile of the engines Vast's
//! templates run, so `ENGINE=vllm` is all most users set.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

/// What to look for in the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Markers {
    /// Substrings that mean the model is loaded.
    pub load: Vec<String>,
    /// Substrings that mean the model failed for good.
    pub error: Vec<String>,
    /// Substrings worth logging.
    pub info: Vec<String>,
}

/// A line that matched a marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// The model is loaded.
    Loaded(String),
    /// The model failed; the line says how.
    Error(String),
    /// Progress worth logging.
    Info(String),
}

impl Markers {
    /// The event a line means, if any. Error markers win over load markers on one line.
    pub fn classify(&self, line: &str) -> Option<LogEvent> {
        let hit = |list: &[String]| {
            list.iter()
                .any(|m| !m.is_empty() && line.contains(m.as_str()))
        };
        let line = line.trim_end();
        if hit(&self.error) {
            Some(LogEvent::Error(line.to_string()))
        } else if hit(&self.load) {
            Some(LogEvent::Loaded(line.to_string()))
        } else if hit(&self.info) {
            Some(LogEvent::Info(line.to_string()))
        } else {
            None
        }
    }
}

/// Splits a newline-separated list of markers (`MODEL_ERROR_LOG_MSGS` and friends), each
/// trimmed, empty ones dropped.
pub fn marker_list(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// A model server Vast's templates run, with the defaults Vast's own workers use for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// vLLM.
    Vllm,
    /// SGLang.
    Sglang,
    /// llama.cpp's server.
    LlamaCpp,
    /// ComfyUI behind the API wrapper.
    Comfyui,
    /// Text Generation Inference.
    Tgi,
    /// Ollama.
    Ollama,
}

/// Names `ENGINE` accepts.
pub const ENGINE_NAMES: &str = "vllm, sglang, llama.cpp, comfyui, tgi, ollama";

impl std::str::FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "vllm" | "openai" => Engine::Vllm,
            "sglang" => Engine::Sglang,
            "llama.cpp" | "llamacpp" | "llama-cpp" | "llama" => Engine::LlamaCpp,
            "comfyui" | "comfyui-json" => Engine::Comfyui,
            "tgi" => Engine::Tgi,
            "ollama" => Engine::Ollama,
            _ => return Err(format!("unknown engine (expected one of {ENGINE_NAMES})")),
        })
    }
}

const TRACEBACK: &str = "Traceback (most recent call last):";

impl Engine {
    /// The log file the engine writes on Vast's images.
    pub fn log_path(self) -> &'static str {
        match self {
            Engine::Vllm => "/var/log/portal/vllm.log",
            Engine::Sglang => "/var/log/portal/sglang.log",
            Engine::LlamaCpp => "/var/log/portal/llama.log",
            Engine::Comfyui => "/var/log/portal/api-wrapper.log",
            Engine::Tgi => "/var/log/portal/tgi.log",
            Engine::Ollama => "/var/log/portal/ollama.log",
        }
    }

    /// Load and error markers.
    pub fn markers(self) -> Markers {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (load, error) = match self {
            Engine::Vllm => (
                v(&["Application startup complete."]),
                v(&["INFO exited: vllm", "RuntimeError: Engine", TRACEBACK]),
            ),
            Engine::Sglang => (
                v(&["The server is fired up and ready to roll!"]),
                v(&["INFO exited: sglang", TRACEBACK]),
            ),
            // "model loaded" prints after /health flips to 200; "listening on" comes earlier.
            Engine::LlamaCpp => (
                v(&["model loaded"]),
                v(&[
                    "INFO exited: llama",
                    "error loading model",
                    "failed to load model",
                ]),
            ),
            Engine::Comfyui => (
                v(&["BACKENDS_READY"]),
                v(&[
                    "BACKENDS_READY_TIMEOUT",
                    "BACKEND_UNRECOVERABLE",
                    "Application startup failed",
                ]),
            ),
            Engine::Tgi => (
                v(&[
                    r#""message":"Connected","target":"text_generation_router""#,
                    r#""target":"text_generation_router::server""#,
                ]),
                v(&[
                    "Error: WebserverFailed",
                    "Error: DownloadError",
                    "Error: ShardCannotStart",
                ]),
            ),
            Engine::Ollama => (
                v(&["llama runner started"]),
                v(&["Error: pull model manifest:", "stalled; retrying"]),
            ),
        };
        Markers {
            load,
            error,
            info: v(&[r#""message":"Download"#, "Downloading:"]),
        }
    }

    /// The backend path that answers 200 once the engine serves.
    pub fn health_path(self) -> &'static str {
        match self {
            Engine::Ollama => "/api/version",
            _ => "/health",
        }
    }

    /// The built-in backend profile for the engine.
    pub fn profile(self) -> &'static str {
        match self {
            Engine::Comfyui => "comfyui",
            Engine::Tgi => "tgi",
            _ => "openai",
        }
    }
}

/// Follows `path` like `tail -F`, sending every complete line; ends when the receiver is
/// dropped. Checks for new data every `poll`.
pub async fn follow(path: PathBuf, poll: Duration, lines: mpsc::Sender<String>) {
    let mut tail = Tail::new(path);
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        for line in tail.read_new().await {
            if lines.send(line).await.is_err() {
                return;
            }
        }
        if lines.is_closed() {
            return;
        }
    }
}

/// The read position in a followed file.
struct Tail {
    path: PathBuf,
    open: Option<(tokio::fs::File, u64)>,
    pos: u64,
    partial: Vec<u8>,
}

/// Identity of a file at a path: a new one after rotation.
#[cfg(unix)]
fn identity(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino() ^ meta.dev().rotate_left(32)
}

#[cfg(not(unix))]
fn identity(_meta: &std::fs::Metadata) -> u64 {
    0
}

impl Tail {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            open: None,
            pos: 0,
            partial: Vec::new(),
        }
    }

    /// Complete lines written since the last call.
    async fn read_new(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let at_path = tokio::fs::metadata(&self.path).await.ok();
        let replaced = match (&self.open, &at_path) {
            (Some((_, id)), Some(meta)) => *id != identity(meta),
            (Some(_), None) => false,
            (None, _) => true,
        };
        if replaced {
            // Finish the old file first: a writer may have added lines before rotating.
            if self.open.is_some() {
                self.read_available(&mut out).await;
                self.flush_partial(&mut out);
            }
            self.open = match tokio::fs::File::open(&self.path).await {
                Ok(f) => at_path.as_ref().map(|m| (f, identity(m))),
                Err(_) => None,
            };
            self.pos = 0;
            self.partial.clear();
        }
        if let Some(meta) = &at_path
            && meta.len() < self.pos
        {
            // Truncated in place (`> file`, copytruncate): start over.
            self.pos = 0;
            self.partial.clear();
        }
        self.read_available(&mut out).await;
        out
    }

    async fn read_available(&mut self, out: &mut Vec<String>) {
        let Some((file, _)) = &mut self.open else {
            return;
        };
        if file.seek(SeekFrom::Start(self.pos)).await.is_err() {
            return;
        }
        let mut buf = Vec::new();
        // Internal: a bounded read per poll, so a huge log cannot stall the task.
        let read = (&mut *file)
            .take(4 << 20)
            .read_to_end(&mut buf)
            .await
            .unwrap_or(0);
        self.pos += read as u64;
        self.partial.extend_from_slice(&buf);
        // Internal: split with an offset and drain once, so a large read stays linear.
        let mut start = 0;
        while let Some(nl) = self.partial[start..].iter().position(|b| *b == b'\n') {
            let line = &self.partial[start..start + nl];
            out.push(String::from_utf8_lossy(line).trim_end().to_string());
            start += nl + 1;
        }
        self.partial.drain(..start);
        if self.partial.len() > 1 << 20 {
            // A "line" over 1 MiB is noise (binary output, progress bars): drop it.
            self.partial.clear();
        }
    }

    fn flush_partial(&mut self, out: &mut Vec<String>) {
        if !self.partial.is_empty() {
            out.push(
                String::from_utf8_lossy(&self.partial)
                    .trim_end()
                    .to_string(),
            );
            self.partial.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::Path;

    fn append(path: &Path, s: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    }

    #[tokio::test]
    async fn lines_before_start_count_and_partial_lines_wait_for_their_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.log");
        append(&path, "loading\nweights 50%");
        let mut tail = Tail::new(path.clone());
        assert_eq!(tail.read_new().await, vec!["loading"]);
        append(&path, " done\nApplication startup complete.\n");
        assert_eq!(
            tail.read_new().await,
            vec!["weights 50% done", "Application startup complete."]
        );
        assert!(tail.read_new().await.is_empty());
    }

    #[tokio::test]
    async fn a_file_that_appears_later_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.log");
        let mut tail = Tail::new(path.clone());
        assert!(tail.read_new().await.is_empty());
        append(&path, "hello\n");
        assert_eq!(tail.read_new().await, vec!["hello"]);
    }

    #[tokio::test]
    async fn truncation_and_rotation_start_over_without_losing_the_old_files_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.log");
        append(&path, "one\ntwo\n");
        let mut tail = Tail::new(path.clone());
        assert_eq!(tail.read_new().await.len(), 2);
        std::fs::write(&path, "x\n").unwrap();
        assert_eq!(tail.read_new().await, vec!["x"], "truncated in place");
        append(&path, "last words\n");
        std::fs::rename(&path, dir.path().join("model.log.1")).unwrap();
        append(&path, "fresh\n");
        assert_eq!(tail.read_new().await, vec!["last words", "fresh"]);
    }

    #[test]
    fn markers_classify_lines_with_errors_first() {
        let m = Engine::Vllm.markers();
        assert_eq!(
            m.classify("INFO:     Application startup complete.\n"),
            Some(LogEvent::Loaded(
                "INFO:     Application startup complete.".into()
            ))
        );
        assert!(matches!(
            m.classify("RuntimeError: Engine core initialization failed"),
            Some(LogEvent::Error(_))
        ));
        assert!(matches!(
            m.classify("Downloading: 40%"),
            Some(LogEvent::Info(_))
        ));
        assert_eq!(m.classify("INFO loading weights"), None);
        assert_eq!(marker_list(" a \n\n b\n"), vec!["a", "b"]);
    }

    #[test]
    fn every_engine_name_parses_and_has_markers() {
        for name in ENGINE_NAMES.split(", ") {
            let e: Engine = name.parse().unwrap();
            assert!(!e.markers().load.is_empty() && !e.markers().error.is_empty());
        }
        assert!("tensorrt".parse::<Engine>().is_err());
    }
}
