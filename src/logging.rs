//! Log setup for the binary: `tracing` to stderr, text or JSON lines, coloured only when
//! stderr is a terminal (a file, a pipe or a log collector gets no escape codes).
//!
//! Lines are batched: a line is appended to a buffer and a writer thread writes the buffer
//! [`FLUSH_DELAY`] after its first line, in one `write`. A worker logs one access line per
//! request; written one by one, the lines cost a system call each on the thread that serves
//! requests. A buffer past [`MAX_PENDING`] bytes is written at once by the thread that
//! filled it, so memory stays bounded and a stderr that blocks slows the logging thread
//! down, as an unbuffered write would, instead of losing lines. [`flush`] writes what is
//! pending; the binary calls it before it exits.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing_subscriber::EnvFilter;

/// How long a log line may wait in the buffer before it is written.
pub const FLUSH_DELAY: Duration = Duration::from_millis(20);

/// Bytes of log lines the buffer holds before the thread adding a line writes them itself.
pub const MAX_PENDING: usize = 64 * 1024;

/// The target of the worker's access log lines, shown at `info` whatever the log level.
pub const ACCESS_TARGET: &str = "vespa::access";

/// Installs the global subscriber. `level` is a `tracing` filter directive (e.g. `info`);
/// `RUST_LOG`, when set, wins.
pub fn init(level: &str, json: bool) {
    init_with(level, json, false)
}

/// [`init`], with the access log ([`ACCESS_TARGET`]) at `info` when `access_log` is set.
pub fn init_with(level: &str, json: bool, access_log: bool) {
    let mut directives = format!("warn,vespa={level}");
    if access_log {
        directives.push_str(&format!(",{ACCESS_TARGET}=info"));
    }
    let custom_filter = std::env::var_os("RUST_LOG").is_some();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    let ansi = std::io::stderr().is_terminal();
    PLAIN.store(
        access_log && !json && !ansi && !custom_filter,
        Ordering::Relaxed,
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(|| Batched);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Set when access lines may be written by [`access_line`]: text format, no colours, and the
/// access log on without a `RUST_LOG` filter that could turn it off.
static PLAIN: AtomicBool = AtomicBool::new(false);

/// Whether access lines are written by [`access_line`] rather than as `tracing` events.
pub fn plain_access_lines() -> bool {
    PLAIN.load(Ordering::Relaxed)
}

thread_local! {
    /// The line being written, and the date-time prefix (`2026-11-30T19:54:01.`) of the
    /// second it was made for.
    static LINE: RefCell<(String, i64, String)> = RefCell::new((String::with_capacity(512), i64::MIN, String::new()));
}

/// Writes one access line, exactly as the text subscriber formats an `info` event of
/// [`ACCESS_TARGET`] with the message `request` (`2026-11-30T19:54:01.402916Z  INFO
/// vespa::access: request k=v …`): `fields` appends ` k=v` pairs. Internal: the subscriber
/// records each field through a visitor and formats the time from scratch; an access line
/// is written on every request, so it is formatted here, into a reused buffer.
pub fn access_line(fields: impl FnOnce(&mut String)) {
    LINE.with_borrow_mut(|(line, second, prefix)| {
        line.clear();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let secs = now.as_secs() as i64;
        if *second != secs {
            *second = secs;
            prefix.clear();
            date_time_prefix(prefix, secs);
        }
        line.push_str(prefix);
        let _ = write!(
            line,
            "{:06}Z  INFO {ACCESS_TARGET}: request",
            now.subsec_micros()
        );
        fields(line);
        line.push('\n');
        Batch::get().add(line.as_bytes());
    });
}

/// `t` as log lines write it: `2026-11-30T19:54:01.402916Z`, UTC. For lines a command
/// prints on stdout (`vespa top` off a terminal) in the same form as its log lines.
pub fn timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut out = String::with_capacity(27);
    date_time_prefix(&mut out, since.as_secs() as i64);
    let _ = write!(out, "{:06}Z", since.subsec_micros());
    out
}

/// `YYYY-MM-DDTHH:MM:SS.` in UTC for `secs` since the Unix epoch (Howard Hinnant's
/// `civil_from_days`).
fn date_time_prefix(out: &mut String, secs: i64) {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
}

/// Writes the log lines still in the buffer to stderr.
pub fn flush() {
    if let Some(batch) = BATCH.get() {
        batch.write_out();
    }
}

/// The log buffer and the writer thread that empties it.
struct Batch {
    /// Lines not yet written.
    pending: Mutex<Vec<u8>>,
    /// The buffer being written, empty between writes. Internal: held across the swap and
    /// the write, so two writers cannot reorder their batches.
    writing: Mutex<Vec<u8>>,
    /// The writer thread, unparked by the line that makes the buffer non-empty; `None` when
    /// it could not be started (each line is then written at once).
    writer: Option<std::thread::Thread>,
}

static BATCH: OnceLock<Batch> = OnceLock::new();

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Batch {
    fn get() -> &'static Batch {
        BATCH.get_or_init(|| {
            let writer = std::thread::Builder::new()
                .name("vespa-log".into())
                .spawn(|| {
                    loop {
                        std::thread::park();
                        std::thread::sleep(FLUSH_DELAY);
                        flush();
                    }
                })
                .ok()
                .map(|h| h.thread().clone());
            Batch {
                pending: Mutex::new(Vec::with_capacity(MAX_PENDING)),
                writing: Mutex::new(Vec::with_capacity(MAX_PENDING)),
                writer,
            }
        })
    }

    fn add(&self, line: &[u8]) {
        let mut pending = lock(&self.pending);
        let first = pending.is_empty();
        pending.extend_from_slice(line);
        let full = pending.len() >= MAX_PENDING;
        drop(pending);
        match &self.writer {
            Some(writer) if !full => {
                if first {
                    writer.unpark();
                }
            }
            _ => self.write_out(),
        }
    }

    fn write_out(&self) {
        let mut writing = lock(&self.writing);
        std::mem::swap(&mut *writing, &mut *lock(&self.pending));
        if !writing.is_empty() {
            // Nowhere to report a failed write to stderr.
            let _ = std::io::stderr().lock().write_all(&writing);
            writing.clear();
            // The line that went past MAX_PENDING may have doubled the buffer: a burst does
            // not keep that much for good.
            writing.shrink_to(MAX_PENDING);
        }
    }
}

/// The `tracing` writer: each formatted line goes to the [`Batch`].
struct Batched;

impl Write for Batched {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        Batch::get().add(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A rate limit for a log line that a client can trigger at will: at most one line per
/// interval, so a flood cannot fill the disk.
#[derive(Debug)]
pub struct Every {
    interval: std::time::Duration,
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Every {
    /// At most once per `interval`.
    pub fn new(interval: std::time::Duration) -> Self {
        Self {
            interval,
            last: std::sync::Mutex::new(None),
        }
    }

    /// Whether to log now.
    pub fn allow(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        match *last {
            Some(t) if now.duration_since(t) < self.interval => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_past_the_limit_leaves_buffers_of_the_usual_size() {
        let batch = Batch {
            pending: Mutex::new(Vec::with_capacity(MAX_PENDING)),
            writing: Mutex::new(Vec::with_capacity(MAX_PENDING)),
            writer: Some(std::thread::current()),
        };
        // Blank lines: what the test writes to stderr stays out of sight.
        let line = [b'\n'; 1000];
        for _ in 0..MAX_PENDING / line.len() + 2 {
            batch.add(&line);
        }
        batch.write_out();
        for buffer in [&batch.pending, &batch.writing] {
            assert!(lock(buffer).capacity() <= MAX_PENDING);
        }
    }

    #[test]
    fn date_time_prefixes_are_utc_civil_times() {
        for (secs, want) in [
            (0, "1970-01-01T00:00:00."),
            (951_782_400, "2000-02-29T00:00:00."),
            (1_709_251_199, "2024-02-29T23:59:59."),
            (1_796_069_641, "2026-11-30T20:14:01."),
            (4_102_444_799, "2099-12-31T23:59:59."),
        ] {
            let mut s = String::new();
            date_time_prefix(&mut s, secs);
            assert_eq!(s, want, "{secs}");
        }
    }

    #[test]
    fn a_timestamp_has_microseconds_and_a_zone() {
        let t = UNIX_EPOCH + Duration::from_micros(1_796_069_641_402_916);
        assert_eq!(timestamp(t), "2026-11-30T20:14:01.402916Z");
    }
}
