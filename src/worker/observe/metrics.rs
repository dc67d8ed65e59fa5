//! The worker's Prometheus metrics: names, labels, buckets, and the `/_vespa/metrics` text.
//!
//! Request metrics are fed by the [`Record`](super::Record) of each request; the gauges of
//! the worker's state (working set, capacity, estimated wait, lifecycle state, connections)
//! are read from the ledger, the lifecycle and the backend pool at scrape time, so nothing
//! on the request path updates them. `vespa_rsa_verifications_total` is counted by the
//! signature verifier itself ([`Metrics::rsa_verifications`]).
//!
//! Internal: every label value is a fixed enum, a `&'static str` or an integer, so counting a
//! request builds no string; a family's lock is taken once per request, never per frame.

use crate::worker::session::CloseReason;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::fmt::Write;
use std::sync::atomic::AtomicU64;

/// Buckets of `vespa_time_to_first_byte_seconds`: 5 ms to 60 s, closer between 0.5 and
/// 10 s, where a model's time to first token lies once requests queue (a quantile is read
/// by interpolating inside one bucket: with 1 and 2.5 s next to each other, a steady
/// 1.26 s read as 1.75).
pub const TTFB_BUCKETS: [f64; 18] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 5.0, 7.5, 10.0, 20.0, 30.0,
    60.0,
];

/// Buckets of `vespa_stream_gap_seconds`: 1 ms to 10 s.
pub const GAP_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of `vespa_request_duration_seconds`: 5 ms to 10 minutes.
pub const DURATION_BUCKETS: [f64; 17] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
    600.0,
];

/// Buckets of `vespa_queue_wait_seconds`: 1 ms to 60 s (`MAX_WAIT_TIME` is 10 s by default).
pub const QUEUE_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// How a proxied request ended: the `outcome` label, and the access log's `outcome` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// The backend's answer (below 500) was relayed in full.
    Ok,
    /// The backend could not be reached, answered 5xx, or failed mid-body.
    BackendError,
    /// The client went away before the response ended.
    ClientGone,
    /// Refused by admission: 429 (queue full), 503 (not ready, draining, overloaded).
    Rejected,
    /// The signature did not verify: 401.
    Unauthorized,
    /// The request was malformed: 413, 422.
    Invalid,
    /// 504 (no response head within `RESPONSE_START_TIMEOUT`), 408 (`BODY_READ_TIMEOUT`),
    /// or a backend silent mid-body past `IDLE_TIMEOUT`.
    Timeout,
    /// The request named a session that is not open (410), or its session closed (ended,
    /// expired, drained) before its response ended.
    SessionClosed,
}

impl RequestOutcome {
    /// Every outcome, for series that exist from the start.
    pub const ALL: [RequestOutcome; 8] = [
        RequestOutcome::Ok,
        RequestOutcome::BackendError,
        RequestOutcome::ClientGone,
        RequestOutcome::Rejected,
        RequestOutcome::Unauthorized,
        RequestOutcome::Invalid,
        RequestOutcome::Timeout,
        RequestOutcome::SessionClosed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Ok => "ok",
            RequestOutcome::BackendError => "backend_error",
            RequestOutcome::ClientGone => "client_gone",
            RequestOutcome::Rejected => "rejected",
            RequestOutcome::Unauthorized => "unauthorized",
            RequestOutcome::Invalid => "invalid",
            RequestOutcome::Timeout => "timeout",
            RequestOutcome::SessionClosed => "session_closed",
        }
    }
}

impl std::fmt::Display for RequestOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EncodeLabelValue for RequestOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

/// Which report a `vespa_reports_total` series counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportKind {
    /// `POST /worker_status/` (the failure beacon included).
    Status,
    /// `POST /delete_requests/`.
    DeleteRequests,
}

/// How a report went: taken by an autoscaler address, or failed on every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportResult {
    /// An address took it.
    Ok,
    /// Every address failed.
    Error,
}

impl EncodeLabelValue for ReportKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(match self {
            ReportKind::Status => "status",
            ReportKind::DeleteRequests => "delete_requests",
        })
    }
}

impl EncodeLabelValue for ReportResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(match self {
            ReportResult::Ok => "ok",
            ReportResult::Error => "error",
        })
    }
}

/// Labels of `vespa_reports_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReportLabels {
    /// Which report.
    pub kind: ReportKind,
    /// How it went.
    pub result: ReportResult,
}

/// `vespa_reports_total`: kept by the reporter, shown by the worker's registry.
pub type ReportCounters = Family<ReportLabels, Counter>;

/// A report counter family with its four series at zero, so dashboards see them before the
/// first report.
pub fn report_counters() -> ReportCounters {
    let family = ReportCounters::default();
    for kind in [ReportKind::Status, ReportKind::DeleteRequests] {
        for result in [ReportResult::Ok, ReportResult::Error] {
            drop(family.get_or_create(&ReportLabels { kind, result }));
        }
    }
    family
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    code: u16,
    outcome: RequestOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: RequestOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

type F64Gauge = Gauge<f64, AtomicU64>;
type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

/// The two exposition formats `/_vespa/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0 text, for scrapers that ask for it (Prometheus does).
    OpenMetrics,
    /// Prometheus text 0.0.4, for everyone else (`curl`, older scrapers).
    Prometheus,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it, as Prometheus's own client libraries
    /// negotiate; Prometheus text otherwise.
    pub fn negotiate(headers: &http::HeaderMap) -> Format {
        let asks = headers
            .get_all(http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("application/openmetrics-text"));
        if asks {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// What a scrape reads from the worker's state.
#[derive(Debug, Clone, Copy)]
pub struct Scrape {
    /// Requests being served by the backend.
    pub in_flight: usize,
    /// Admitted requests waiting for a backend slot.
    pub queued: usize,
    /// Σ workload of the working set.
    pub working_set_workload: f64,
    /// Capacity, workload units per second.
    pub max_perf: f64,
    /// Estimated wait for a new request, seconds.
    pub estimated_wait: f64,
    /// The lifecycle state's name.
    pub state: &'static str,
    /// Pooled backend connections waiting for a request.
    pub idle_connections: usize,
    /// Open backend connections, idle ones included.
    pub open_connections: usize,
    /// Open sessions.
    pub sessions_open: usize,
}

/// Every metric of one worker and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily<OutcomeLabels>,
    ttfb: Histogram,
    stream_gap: Histogram,
    queue_wait: Histogram,
    in_flight: Gauge,
    queued: Gauge,
    working_set_workload: F64Gauge,
    max_perf: F64Gauge,
    estimated_wait: F64Gauge,
    state: Family<StateLabels, Gauge>,
    backend_connections: Family<StateLabels, Gauge>,
    sessions_open: Gauge,
    sessions_closed: Family<ReasonLabels, Counter>,
    rsa_verifications: Counter,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Metrics {
    /// The worker's metrics, showing `reports` as `vespa_reports_total`.
    pub fn new(reports: ReportCounters) -> Self {
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            ttfb: Histogram::new(TTFB_BUCKETS),
            stream_gap: Histogram::new(GAP_BUCKETS),
            queue_wait: Histogram::new(QUEUE_BUCKETS),
            in_flight: Gauge::default(),
            queued: Gauge::default(),
            working_set_workload: F64Gauge::default(),
            max_perf: F64Gauge::default(),
            estimated_wait: F64Gauge::default(),
            state: Family::default(),
            backend_connections: Family::default(),
            sessions_open: Gauge::default(),
            sessions_closed: Family::default(),
            rsa_verifications: Counter::default(),
        };
        for outcome in RequestOutcome::ALL {
            drop(m.duration.get_or_create(&OutcomeLabels { outcome }));
        }
        for reason in CloseReason::ALL {
            drop(m.sessions_closed.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            }));
        }
        m.register(reports)
    }

    fn register(mut self, reports: ReportCounters) -> Self {
        let r = &mut self.registry;
        r.register(
            "vespa_requests",
            "Proxied requests by HTTP status code and outcome (health and /_vespa/ routes are not counted)",
            self.requests.clone(),
        );
        r.register_with_unit(
            "vespa_request_duration",
            "Time from a request's arrival to the end of its response, by outcome",
            Unit::Seconds,
            self.duration.clone(),
        );
        r.register_with_unit(
            "vespa_time_to_first_byte",
            "Time from sending a request to the backend to its response head arriving",
            Unit::Seconds,
            self.ttfb.clone(),
        );
        r.register_with_unit(
            "vespa_stream_gap",
            "Time between two body frames of a backend response",
            Unit::Seconds,
            self.stream_gap.clone(),
        );
        r.register_with_unit(
            "vespa_queue_wait",
            "Time an admitted request waited for a backend slot",
            Unit::Seconds,
            self.queue_wait.clone(),
        );
        r.register(
            "vespa_in_flight_requests",
            "Requests being served by the backend",
            self.in_flight.clone(),
        );
        r.register(
            "vespa_queued_requests",
            "Admitted requests waiting for a backend slot",
            self.queued.clone(),
        );
        r.register(
            "vespa_working_set_workload",
            "Workload units of the requests queued and in flight",
            self.working_set_workload.clone(),
        );
        r.register(
            "vespa_max_perf",
            "Capacity in workload units per second (measured or MAX_PERF; 0 until known)",
            self.max_perf.clone(),
        );
        r.register_with_unit(
            "vespa_estimated_wait",
            "Estimated wait for a new request: working set workload over capacity (429 above MAX_WAIT_TIME)",
            Unit::Seconds,
            self.estimated_wait.clone(),
        );
        r.register(
            "vespa_state",
            "1 for the worker's current lifecycle state, 0 for the others",
            self.state.clone(),
        );
        r.register(
            "vespa_reports",
            "Reports to the autoscaler by kind and result",
            reports,
        );
        r.register(
            "vespa_backend_connections",
            "Open backend connections, idle (pooled) or busy",
            self.backend_connections.clone(),
        );
        r.register(
            "vespa_sessions_open",
            "Open sessions (each one working request of its cost in cur_load)",
            self.sessions_open.clone(),
        );
        r.register(
            "vespa_sessions_closed",
            "Closed sessions by reason: ended (/session/end), expired, drained",
            self.sessions_closed.clone(),
        );
        r.register(
            "vespa_rsa_verifications",
            "RSA signature verifications run (a signature the public key verified before is not verified again)",
            self.rsa_verifications.clone(),
        );
        self
    }

    /// `vespa_rsa_verifications_total`, for the signature verifier to count in: a handle
    /// on the same counter. Stays 0 in unsecured mode.
    pub fn rsa_verifications(&self) -> Counter {
        self.rsa_verifications.clone()
    }

    /// Counts a closed session.
    pub fn session_closed(&self, reason: CloseReason) {
        self.sessions_closed
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Counts a finished request.
    pub fn request(&self, code: u16, outcome: RequestOutcome, total_secs: f64) {
        self.requests
            .get_or_create(&RequestLabels { code, outcome })
            .inc();
        self.duration
            .get_or_create(&OutcomeLabels { outcome })
            .observe(total_secs);
    }

    /// A backend response head arrived `secs` after the request was sent.
    pub fn time_to_first_byte(&self, secs: f64) {
        self.ttfb.observe(secs);
    }

    /// `secs` passed between two body frames of a response.
    pub fn stream_gap(&self, secs: f64) {
        self.stream_gap.observe(secs);
    }

    /// An admitted request got its backend slot after `secs`.
    pub fn queue_wait(&self, secs: f64) {
        self.queue_wait.observe(secs);
    }

    /// The exposition text, with the state gauges set from `now`.
    pub fn encode(&self, now: &Scrape, format: Format) -> String {
        self.in_flight
            .set(i64::try_from(now.in_flight).unwrap_or(i64::MAX));
        self.queued
            .set(i64::try_from(now.queued).unwrap_or(i64::MAX));
        self.working_set_workload.set(now.working_set_workload);
        self.max_perf.set(now.max_perf);
        self.estimated_wait.set(now.estimated_wait);
        self.sessions_open
            .set(i64::try_from(now.sessions_open).unwrap_or(i64::MAX));
        for state in crate::worker::lifecycle::State::NAMES {
            let value = i64::from(state == now.state);
            self.state.get_or_create(&StateLabels { state }).set(value);
        }
        let idle = now.idle_connections.min(now.open_connections);
        for (state, n) in [("idle", idle), ("busy", now.open_connections - idle)] {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            self.backend_connections
                .get_or_create(&StateLabels { state })
                .set(n);
        }
        let mut out = String::with_capacity(16 * 1024);
        let written = match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
        };
        written.expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape() -> Scrape {
        Scrape {
            in_flight: 2,
            queued: 1,
            working_set_workload: 30.0,
            max_perf: 10.0,
            estimated_wait: 3.0,
            state: "ready",
            idle_connections: 1,
            open_connections: 3,
            sessions_open: 1,
        }
    }

    #[test]
    fn accept_naming_openmetrics_gets_openmetrics_and_anything_else_prometheus_text() {
        let mut h = http::HeaderMap::new();
        assert_eq!(Format::negotiate(&h), Format::Prometheus);
        h.insert(
            http::header::ACCEPT,
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4"
                .parse()
                .unwrap(),
        );
        assert_eq!(Format::negotiate(&h), Format::OpenMetrics);
    }

    #[test]
    fn openmetrics_text_ends_with_eof_and_prometheus_text_does_not() {
        let m = Metrics::new(report_counters());
        let om = m.encode(&scrape(), Format::OpenMetrics);
        assert!(om.ends_with("# EOF\n"), "{om}");
        let prom = m.encode(&scrape(), Format::Prometheus);
        assert!(!prom.contains("# EOF"), "{prom}");
    }

    #[test]
    fn metrics_text_wire_format() {
        let m = Metrics::new(report_counters());
        m.request(200, RequestOutcome::Ok, 0.3);
        m.request(499, RequestOutcome::ClientGone, 12.0);
        m.time_to_first_byte(0.02);
        m.stream_gap(0.004);
        m.queue_wait(0.0);
        m.session_closed(CloseReason::Expired);
        m.rsa_verifications().inc();
        let prometheus = m.encode(&scrape(), Format::Prometheus);
        insta::assert_snapshot!("prometheus_text", in_stable_order(&prometheus));
        let openmetrics = m.encode(&scrape(), Format::OpenMetrics);
        insta::assert_snapshot!("openmetrics_text", in_stable_order(&openmetrics));
    }

    /// `text` with the samples of each family sorted: a family lists its label sets in
    /// hash order, which changes from run to run.
    fn in_stable_order(text: &str) -> String {
        let mut out = Vec::new();
        let mut samples: Vec<&str> = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                samples.sort_unstable();
                out.append(&mut samples);
                out.push(line);
            } else {
                samples.push(line);
            }
        }
        samples.sort_unstable();
        out.append(&mut samples);
        out.join("\n")
    }

    #[test]
    fn state_gauges_read_the_scrape() {
        let m = Metrics::new(report_counters());
        let text = m.encode(&scrape(), Format::Prometheus);
        for line in [
            "vespa_in_flight_requests 2",
            "vespa_queued_requests 1",
            "vespa_working_set_workload 30.0",
            "vespa_max_perf 10.0",
            "vespa_estimated_wait_seconds 3.0",
            "vespa_state{state=\"ready\"} 1",
            "vespa_state{state=\"draining\"} 0",
            "vespa_backend_connections{state=\"idle\"} 1",
            "vespa_backend_connections{state=\"busy\"} 2",
            "vespa_reports_total{kind=\"delete_requests\",result=\"error\"} 0",
            "vespa_sessions_open 1",
            "vespa_sessions_closed_total{reason=\"drained\"} 0",
            "vespa_rsa_verifications_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn a_counted_request_shows_its_code_outcome_and_duration() {
        let m = Metrics::new(report_counters());
        m.request(429, RequestOutcome::Rejected, 0.002);
        let text = m.encode(&scrape(), Format::Prometheus);
        assert!(
            text.contains("vespa_requests_total{code=\"429\",outcome=\"rejected\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("vespa_request_duration_seconds_count{outcome=\"rejected\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("vespa_request_duration_seconds_count{outcome=\"ok\"} 0"),
            "{text}"
        );
    }
}
