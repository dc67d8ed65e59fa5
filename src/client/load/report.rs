//! What a load run measured: samples in, a report out.

use super::histogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::time::Duration;

/// One request's outcome.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Start to the end of the body (or the error).
    pub latency: Duration,
    /// Start to the first body byte, when one arrived.
    pub ttfb: Option<Duration>,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// Error class, when the request failed before or during the body.
    pub error: Option<&'static str>,
    /// The worker that answered, when known.
    pub worker: Option<String>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `values` (sorted here).
    pub fn of(values: &mut [Duration]) -> Percentiles {
        if values.is_empty() {
            return Percentiles::default();
        }
        values.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            values[rank - 1].as_secs_f64() * 1000.0
        };
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// The report of a load run (`--json` prints it as one object).
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Requests sent.
    pub requests: u64,
    /// Responses with a 2xx status and a complete body.
    pub ok: u64,
    /// Wall time from the first request to the last completion, seconds.
    pub duration_secs: f64,
    /// Responses (any status) per second.
    pub throughput: f64,
    /// Latency of responses, start to end of body.
    pub latency_ms: Percentiles,
    /// Time to the first body byte of responses.
    pub ttfb_ms: Percentiles,
    /// Responses by status code.
    pub status: BTreeMap<String, u64>,
    /// Failures by class (`connect`, `timeout`, `body`, `no_worker`, …).
    pub errors: BTreeMap<String, u64>,
    /// Responses by worker URL (when known).
    pub workers: BTreeMap<String, u64>,
    /// The histogram of `latency_ms` (text only: the JSON report stays as it was).
    #[serde(skip)]
    pub latency_histogram: Histogram,
}

/// `key: count` pairs joined by commas, or `none`.
pub fn counts_line<K: Display>(counts: impl IntoIterator<Item = (K, u64)>) -> String {
    let items: Vec<String> = counts
        .into_iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

impl LoadReport {
    /// Builds the report of `samples` taken over `elapsed`.
    pub fn from_samples(samples: Vec<Sample>, elapsed: Duration) -> LoadReport {
        let mut latencies = Vec::with_capacity(samples.len());
        let mut ttfbs = Vec::with_capacity(samples.len());
        let (mut status, mut errors, mut workers) =
            (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        let mut ok = 0;
        for s in &samples {
            if let Some(e) = s.error {
                *errors.entry(e.to_string()).or_insert(0) += 1;
            }
            let Some(code) = s.status else { continue };
            *status.entry(code.to_string()).or_insert(0) += 1;
            if let Some(w) = &s.worker {
                *workers.entry(w.clone()).or_insert(0) += 1;
            }
            if s.error.is_none() {
                latencies.push(s.latency);
                if (200..300).contains(&code) {
                    ok += 1;
                }
            }
            if let Some(t) = s.ttfb {
                ttfbs.push(t);
            }
        }
        let responses: u64 = status.values().sum();
        let latency_histogram = Histogram::of(&latencies);
        let secs = elapsed.as_secs_f64();
        LoadReport {
            requests: samples.len() as u64,
            ok,
            duration_secs: secs,
            throughput: if secs > 0.0 {
                responses as f64 / secs
            } else {
                0.0
            },
            latency_ms: Percentiles::of(&mut latencies),
            ttfb_ms: Percentiles::of(&mut ttfbs),
            status,
            errors,
            workers,
            latency_histogram,
        }
    }

    /// The human-readable report.
    pub fn text(&self) -> String {
        let p = |x: &Percentiles| {
            format!(
                "p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
                x.p50, x.p90, x.p99, x.max
            )
        };
        let list = |m: &BTreeMap<String, u64>| counts_line(m.iter().map(|(k, v)| (k, *v)));
        let failed: u64 = self.errors.values().sum();
        let mut out = format!(
            "requests    {} ({} ok, {} failed) in {:.2} s\nthroughput  {:.1} responses/s\nlatency ms  {}\nTTFB ms     {}\nstatus      {}\nerrors      {}\n",
            self.requests,
            self.ok,
            failed,
            self.duration_secs,
            self.throughput,
            p(&self.latency_ms),
            p(&self.ttfb_ms),
            list(&self.status),
            list(&self.errors),
        );
        if !self.workers.is_empty() {
            let total: u64 = self.workers.values().sum();
            let spread: Vec<String> = self
                .workers
                .iter()
                .map(|(w, n)| format!("{w}: {n} ({:.0} %)", 100.0 * *n as f64 / total as f64))
                .collect();
            out.push_str(&format!("workers     {}\n", spread.join(", ")));
        }
        out
    }

    /// The latency histogram as text bars `width` characters wide, under a heading line;
    /// empty when no response was read whole.
    pub fn histogram_text(&self, rows: usize, width: usize) -> String {
        let n = self.latency_histogram.total();
        if n == 0 {
            return String::new();
        }
        format!(
            "histogram   latency ms of {n} responses\n{}",
            self.latency_histogram.bars(rows, width)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<Duration> = (1..=100).map(ms).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
    }

    #[test]
    fn report_counts_statuses_errors_and_workers() {
        let s = |status: Option<u16>, error: Option<&'static str>, worker: Option<&str>| Sample {
            latency: ms(10),
            ttfb: status.map(|_| ms(2)),
            status,
            error,
            worker: worker.map(str::to_string),
        };
        let r = LoadReport::from_samples(
            vec![
                s(Some(200), None, Some("a")),
                s(Some(200), None, Some("b")),
                s(Some(429), None, Some("a")),
                s(None, Some("connect"), None),
                s(Some(200), Some("body"), Some("b")),
            ],
            Duration::from_secs(2),
        );
        assert_eq!((r.requests, r.ok), (5, 2));
        assert_eq!(r.throughput, 2.0);
        assert_eq!(r.status["200"], 3);
        assert_eq!(r.status["429"], 1);
        assert_eq!(r.errors["connect"], 1);
        assert_eq!(r.errors["body"], 1);
        assert_eq!(r.workers["a"], 2);
        assert!(r.text().contains("errors      body: 1, connect: 1"));
    }

    #[test]
    fn text_report_lines_are_pinned() {
        let s = |ms_: u64, status: Option<u16>, error: Option<&'static str>| Sample {
            latency: ms(ms_),
            ttfb: status.map(|_| ms(ms_ / 2)),
            status,
            error,
            worker: status.map(|_| "http://w1".to_string()),
        };
        let r = LoadReport::from_samples(
            vec![
                s(10, Some(200), None),
                s(20, Some(200), None),
                s(40, Some(503), None),
                s(5, None, Some("timeout")),
            ],
            Duration::from_millis(1500),
        );
        assert_eq!(
            r.text(),
            "requests    4 (2 ok, 1 failed) in 1.50 s\n\
             throughput  2.0 responses/s\n\
             latency ms  p50 20.0  p90 40.0  p99 40.0  max 40.0\n\
             TTFB ms     p50 10.0  p90 20.0  p99 20.0  max 20.0\n\
             status      200: 2, 503: 1\n\
             errors      timeout: 1\n\
             workers     http://w1: 3 (100 %)\n"
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"requests":4,"ok":2,"duration_secs":1.5,"throughput":2.0,"#.to_string()
                + r#""latency_ms":{"p50":20.0,"p90":40.0,"p99":40.0,"max":40.0},"#
                + r#""ttfb_ms":{"p50":10.0,"p90":20.0,"p99":20.0,"max":20.0},"#
                + r#""status":{"200":2,"503":1},"errors":{"timeout":1},"workers":{"http://w1":3}}"#
        );
    }
}
