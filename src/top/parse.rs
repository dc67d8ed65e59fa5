//! Reading what the fleet already serves: a worker's `/_vespa/metrics` (Prometheus text)
//! and `/_vespa/status` (JSON), and the autoscaler's `/get_endpoint_workers/` list.
//!
//! Parsing is lenient: unknown series and fields are skipped, a missing gauge is `None`
//! rather than zero, so a worker of another version still shows what it has. Only an answer
//! with none of the worker's series at all is an error: it is not a Vespa worker's metrics.

use super::histogram::Histogram;
use serde_json::Value;

/// The figures of one scrape of a worker's `/_vespa/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// The lifecycle state (`vespa_state{state}` at 1).
    pub state: Option<String>,
    /// Capacity, workload units per second (`vespa_max_perf`).
    pub max_perf: Option<f64>,
    /// Workload of the requests queued and in flight (`vespa_working_set_workload`).
    pub working_set: Option<f64>,
    /// Estimated wait for a new request, seconds (`vespa_estimated_wait_seconds`).
    pub estimated_wait: Option<f64>,
    /// Requests being served by the backend (`vespa_in_flight_requests`).
    pub in_flight: Option<f64>,
    /// Admitted requests waiting for a backend slot (`vespa_queued_requests`).
    pub queued: Option<f64>,
    /// Requests ended since start, every code and outcome (`vespa_requests_total`).
    pub requests: f64,
    /// Of those, answered 429 (`code="429"`): the estimated wait was past the limit.
    pub rejected_429: f64,
    /// Of those, failed by the backend or not answered in time (`outcome` `backend_error`
    /// or `timeout`), as the operations guide's error ratio counts them.
    pub errors: f64,
    /// `vespa_time_to_first_byte_seconds`, cumulative since start.
    pub ttfb: Histogram,
}

/// Parses Prometheus text (0.0.4) from a worker's `/_vespa/metrics`.
pub fn metrics(text: &str) -> Result<Reading, String> {
    let mut r = Reading::default();
    let mut ttfb = Vec::new();
    let mut known = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, labels, value)) = sample(line) else {
            continue;
        };
        let label = |key: &str| {
            labels
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        known |= name.starts_with("vespa_") && !name.starts_with("vespa_sim_");
        match name {
            "vespa_state" if value == 1.0 => r.state = label("state").map(str::to_string),
            "vespa_max_perf" => r.max_perf = Some(value),
            "vespa_working_set_workload" => r.working_set = Some(value),
            "vespa_estimated_wait_seconds" => r.estimated_wait = Some(value),
            "vespa_in_flight_requests" => r.in_flight = Some(value),
            "vespa_queued_requests" => r.queued = Some(value),
            "vespa_requests_total" => {
                r.requests += value;
                if label("code") == Some("429") {
                    r.rejected_429 += value;
                }
                if matches!(label("outcome"), Some("backend_error" | "timeout")) {
                    r.errors += value;
                }
            }
            "vespa_time_to_first_byte_seconds_bucket" => {
                if let Some(le) = label("le").and_then(number) {
                    ttfb.push((le, value));
                }
            }
            _ => {}
        }
    }
    if !known {
        return Err("the answer holds no vespa_ series: not a Vespa worker's metrics".into());
    }
    r.ttfb = Histogram::new(ttfb);
    Ok(r)
}

/// A sample's labels: `(name, value)` in the order written.
type Labels = Vec<(String, String)>;

/// One sample line: name, labels, value. `None` for a line that is not one.
fn sample(line: &str) -> Option<(&str, Labels, f64)> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = label_set(inner)?;
        labels = parsed;
        rest = after;
    }
    // A timestamp may follow the value.
    let value = number(rest.split_whitespace().next()?)?;
    Some((name, labels, value))
}

/// `key="value",…}` and what follows the closing brace.
fn label_set(mut s: &str) -> Option<(Labels, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        let quoted = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut chars = quoted.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        s = &quoted[end + 1..];
        labels.push((key, value));
    }
}

/// A sample value: a float, `+Inf`, `-Inf` or `NaN`.
fn number(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// What `vespa top` reads of a worker's `/_vespa/status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusDoc {
    /// Why the worker is `errored`.
    pub error: Option<String>,
    /// `MAX_WAIT_TIME`: an estimated wait above it gets 429.
    pub max_wait_time: Option<f64>,
}

/// Parses a worker's `/_vespa/status` document.
pub fn status(body: &str) -> Result<StatusDoc, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(o) = v else {
        return Err("not a JSON object".into());
    };
    Ok(StatusDoc {
        error: o
            .get("error")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        max_wait_time: o.get("max_wait_time").and_then(Value::as_f64),
    })
}

/// One worker of the autoscaler's `/get_endpoint_workers/` list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listed {
    /// The worker's id (`CONTAINER_ID`).
    pub id: Option<u64>,
    /// Where it serves; empty when it reported none.
    pub url: String,
    /// The autoscaler's view: `ready`, `loading`, `error`, `stale`.
    pub status: Option<String>,
    /// The `error_msg` of its last report.
    pub error: Option<String>,
}

/// Parses the autoscaler's worker list: a JSON list of workers, each with `url` (or
/// `last_report.url`), `id`, `status` and `last_report.error_msg`, all optional.
pub fn worker_list(body: &str) -> Result<Vec<Listed>, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Array(items) = v else {
        return Err("not a JSON list of workers".into());
    };
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    Ok(items
        .iter()
        .map(|w| {
            let report = w.get("last_report");
            Listed {
                id: w.get("id").and_then(Value::as_u64),
                url: text(w.get("url"))
                    .or_else(|| text(report.and_then(|r| r.get("url"))))
                    .unwrap_or_default()
                    .trim_end_matches('/')
                    .to_string(),
                status: text(w.get("status")),
                error: text(report.and_then(|r| r.get("error_msg"))),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::observe::{Format, Metrics, RequestOutcome, Scrape, report_counters};

    fn worker_text() -> String {
        let m = Metrics::new(report_counters());
        m.request(200, RequestOutcome::Ok, 0.3);
        m.request(200, RequestOutcome::Ok, 0.3);
        m.request(429, RequestOutcome::Rejected, 0.001);
        m.request(502, RequestOutcome::BackendError, 0.1);
        m.request(504, RequestOutcome::Timeout, 30.0);
        m.request(499, RequestOutcome::ClientGone, 1.0);
        for secs in [0.02, 0.04, 0.3] {
            m.time_to_first_byte(secs);
        }
        m.encode(
            &Scrape {
                in_flight: 3,
                queued: 2,
                working_set_workload: 1600.0,
                max_perf: 3200.0,
                estimated_wait: 0.5,
                state: "ready",
                idle_connections: 0,
                open_connections: 3,
                sessions_open: 0,
            },
            Format::Prometheus,
        )
    }

    #[test]
    fn a_workers_metrics_give_its_state_gauges_counters_and_ttfb() {
        let r = metrics(&worker_text()).unwrap();
        assert_eq!(r.state.as_deref(), Some("ready"));
        assert_eq!(r.max_perf, Some(3200.0));
        assert_eq!(r.working_set, Some(1600.0));
        assert_eq!(r.estimated_wait, Some(0.5));
        assert_eq!((r.in_flight, r.queued), (Some(3.0), Some(2.0)));
        assert_eq!((r.requests, r.rejected_429, r.errors), (6.0, 1.0, 2.0));
        assert_eq!(r.ttfb.count(), 3.0);
        assert_eq!(
            r.ttfb.buckets.len(),
            crate::worker::observe::TTFB_BUCKETS.len() + 1,
            "the bounds and +Inf"
        );
        assert_eq!(r.ttfb.buckets[0], (0.005, 0.0));
        assert_eq!(r.ttfb.buckets[3], (0.05, 2.0));
    }

    #[test]
    fn a_steady_time_to_first_byte_reads_close_to_itself() {
        // The demo's answers: every first byte after about 1.26 s.
        let m = Metrics::new(report_counters());
        for i in 0..100 {
            m.time_to_first_byte(1.25 + f64::from(i) * 0.0002);
        }
        let text = m.encode(
            &Scrape {
                in_flight: 0,
                queued: 0,
                working_set_workload: 0.0,
                max_perf: 1.0,
                estimated_wait: 0.0,
                state: "ready",
                idle_connections: 0,
                open_connections: 0,
                sessions_open: 0,
            },
            Format::Prometheus,
        );
        let ttfb = metrics(&text).unwrap().ttfb;
        for q in [0.5, 0.99] {
            let read = ttfb.quantile(q).unwrap();
            assert!((1.0..=1.5).contains(&read), "p{q}: {read}");
        }
    }

    #[test]
    fn the_openmetrics_form_reads_the_same() {
        let m = Metrics::new(report_counters());
        m.request(429, RequestOutcome::Rejected, 0.001);
        let scrape = Scrape {
            in_flight: 1,
            queued: 0,
            working_set_workload: 10.0,
            max_perf: 100.0,
            estimated_wait: 0.1,
            state: "draining",
            idle_connections: 0,
            open_connections: 0,
            sessions_open: 0,
        };
        let r = metrics(&m.encode(&scrape, Format::OpenMetrics)).unwrap();
        assert_eq!(r.state.as_deref(), Some("draining"));
        assert_eq!((r.requests, r.rejected_429), (1.0, 1.0));
    }

    #[test]
    fn labels_with_escapes_commas_and_braces_parse() {
        let (name, labels, v) =
            sample(r#"x_total{a="q\"uo,te}",b="back\\slash",c="n\nl"} 7 1700000000"#).unwrap();
        assert_eq!((name, v), ("x_total", 7.0));
        assert_eq!(
            labels,
            [
                ("a".to_string(), "q\"uo,te}".to_string()),
                ("b".into(), "back\\slash".into()),
                ("c".into(), "n\nl".into())
            ]
        );
        assert_eq!(sample("y +Inf").unwrap().2, f64::INFINITY);
        assert!(sample("garbage{a=").is_none());
    }

    #[test]
    fn an_answer_without_worker_series_is_an_error() {
        let e = metrics("<html>not found</html>").unwrap_err();
        assert!(e.contains("not a Vespa worker"), "{e}");
        assert!(metrics("vespa_sim_healthy 1\n").is_err());
    }

    #[test]
    fn a_missing_gauge_is_unknown_not_zero() {
        let r = metrics("vespa_max_perf 10\n").unwrap();
        assert_eq!(r.max_perf, Some(10.0));
        assert_eq!((r.state, r.in_flight, r.ttfb.count()), (None, None, 0.0));
    }

    #[test]
    fn status_gives_the_error_and_the_wait_limit() {
        let s = status(r#"{"state":"errored","error":"backend down","max_wait_time":10.0}"#);
        assert_eq!(
            s.unwrap(),
            StatusDoc {
                error: Some("backend down".into()),
                max_wait_time: Some(10.0)
            }
        );
        assert_eq!(status(r#"{"error":null}"#).unwrap(), StatusDoc::default());
        assert!(status("[]").is_err());
    }

    #[test]
    fn the_worker_list_reads_url_id_status_and_report_error() {
        let body = r#"[
            {"id": 1, "url": "http://10.0.0.1:3000/", "status": "ready", "last_report": {"error_msg": ""}},
            {"id": 2, "status": "error", "last_report": {"url": "http://10.0.0.2:3000", "error_msg": "OOM"}},
            {"status": "loading"}
        ]"#;
        let list = worker_list(body).unwrap();
        assert_eq!(
            list[0],
            Listed {
                id: Some(1),
                url: "http://10.0.0.1:3000".into(),
                status: Some("ready".into()),
                error: None
            }
        );
        assert_eq!(list[1].url, "http://10.0.0.2:3000");
        assert_eq!(list[1].error.as_deref(), Some("OOM"));
        assert_eq!((list[2].id, list[2].url.as_str()), (None, ""));
        assert!(worker_list(r#"{"error": "x"}"#).is_err());
    }
}
