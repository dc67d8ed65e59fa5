//! `GET /metrics`: the autoscaler's Prometheus metrics (OpenMetrics text).
//!
//! Counters of what the autoscaler was asked, kept live: every label set is created at
//! start (one per configured endpoint and result), so a request only increments an atomic.
//! Gauges of the pool (workers by state, ready load and capacity) and the registry's own
//! totals are read from the registry at each scrape, under its lock, so they are one
//! consistent picture.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `vespa_autoscaler_route_requests_total` | counter | `endpoint` (configured ones only), `result` |
//! | `vespa_autoscaler_reports_total` | counter | `kind` (`status`, `delete_requests`), `result` |
//! | `vespa_autoscaler_finished_requests_total` | counter | `status` |
//! | `vespa_autoscaler_workers` | gauge | `endpoint`, `state` (`ready`, `loading`, `error`, `stale`) |
//! | `vespa_autoscaler_registered_workers` | gauge | — |
//! | `vespa_autoscaler_workload` | gauge | `endpoint` |
//! | `vespa_autoscaler_max_perf` | gauge | `endpoint` |
//! | `vespa_autoscaler_workers_removed_total` | counter | `reason` (`pruned`, `evicted`) |

use super::error::AutoscalerError;
use super::messages::FINISHED_STATUSES;
use super::registry::Registry as Pool;
use crate::openmetrics::Series;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use tokio::time::Instant;

/// How a `/route/` request ended: the `result` label of
/// `vespa_autoscaler_route_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteResult {
    /// A worker was chosen and a signed `auth_data` returned.
    Routed,
    /// No worker of the endpoint was ready: the census was returned, the client polls.
    NoWorker,
    /// No API key, or not the endpoint's.
    Unauthorized,
    /// The endpoint is not configured (counted without an `endpoint` label).
    UnknownEndpoint,
    /// The body was not a valid `/route/` request (counted without an `endpoint` label).
    Invalid,
    /// Signing failed (counted without an `endpoint` label).
    Error,
}

impl RouteResult {
    /// Results counted per configured endpoint.
    const PER_ENDPOINT: [RouteResult; 3] = [Self::Routed, Self::NoWorker, Self::Unauthorized];
    /// Results counted without an endpoint: the request named none that is configured.
    const UNATTRIBUTED: [RouteResult; 3] = [Self::UnknownEndpoint, Self::Invalid, Self::Error];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Routed => "routed",
            Self::NoWorker => "no_worker",
            Self::Unauthorized => "unauthorized",
            Self::UnknownEndpoint => "unknown_endpoint",
            Self::Invalid => "invalid",
            Self::Error => "error",
        }
    }

    /// The result of a `/route/` request refused with `e`.
    pub fn of(e: &AutoscalerError) -> RouteResult {
        match e {
            AutoscalerError::InvalidApiKey(_) => Self::Unauthorized,
            AutoscalerError::UnknownEndpoint(_) => Self::UnknownEndpoint,
            AutoscalerError::Signing(_) => Self::Error,
            _ => Self::Invalid,
        }
    }
}

/// Which report: the `kind` label of `vespa_autoscaler_reports_total`, as the worker's
/// `vespa_reports_total` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// `POST /worker_status/`.
    Status,
    /// `POST /delete_requests/`.
    DeleteRequests,
}

impl ReportKind {
    const ALL: [ReportKind; 2] = [Self::Status, Self::DeleteRequests];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::DeleteRequests => "delete_requests",
        }
    }

    /// Whether a report of this kind can end with `result`: only `delete_requests` names
    /// a worker it may not know, only `worker_status` names an endpoint.
    fn can_end(self, result: ReportResult) -> bool {
        !matches!(
            (self, result),
            (Self::Status, ReportResult::UnknownWorker)
                | (Self::DeleteRequests, ReportResult::UnknownEndpoint)
        )
    }
}

/// How a worker report was taken: the `result` label of `vespa_autoscaler_reports_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportResult {
    /// Taken.
    Ok,
    /// Taken, but from a worker that never sent a `worker_status` (`delete_requests`
    /// only): its requests are counted, nothing else.
    UnknownWorker,
    /// Missing or wrong `mtoken`.
    Unauthorized,
    /// The report names an endpoint that is not configured.
    UnknownEndpoint,
    /// Larger than `--max-report-body` / `--max-delete-body`.
    TooLarge,
    /// Not JSON, or a field missing or out of range.
    Invalid,
}

impl ReportResult {
    const ALL: [ReportResult; 6] = [
        Self::Ok,
        Self::UnknownWorker,
        Self::Unauthorized,
        Self::UnknownEndpoint,
        Self::TooLarge,
        Self::Invalid,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::UnknownWorker => "unknown_worker",
            Self::Unauthorized => "unauthorized",
            Self::UnknownEndpoint => "unknown_endpoint",
            Self::TooLarge => "too_large",
            Self::Invalid => "invalid",
        }
    }

    /// The result of a report refused with `e`.
    pub fn of(e: &AutoscalerError) -> ReportResult {
        match e {
            AutoscalerError::InvalidToken => Self::Unauthorized,
            AutoscalerError::UnknownEndpoint(_) => Self::UnknownEndpoint,
            AutoscalerError::BodyTooLarge { .. } => Self::TooLarge,
            _ => Self::Invalid,
        }
    }
}

/// Label values of `vespa_autoscaler_finished_requests_total`, by the index of the
/// status in [`FINISHED_STATUSES`].
const FINISHED_LABELS: [&str; 5] = ["success", "error", "cancelled", "rejected", "unknown"];

type Labels = Vec<(&'static str, String)>;
type StaticLabels<const N: usize> = [(&'static str, &'static str); N];
type FloatGauge = Gauge<f64, AtomicU64>;

/// The live counters and the registry they are encoded from.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Per configured endpoint, by the index in [`RouteResult::PER_ENDPOINT`].
    routes: BTreeMap<String, [Counter; 3]>,
    /// By the index in [`RouteResult::UNATTRIBUTED`].
    unattributed: [Counter; 3],
    /// By [`ReportKind::ALL`] then [`ReportResult::ALL`] index.
    reports: [[Counter; 6]; 2],
    /// By the index in [`FINISHED_STATUSES`].
    finished: [Counter; 5],
}

impl Metrics {
    /// Every counter at zero, with one label set per configured endpoint and result.
    pub fn new<'a>(endpoints: impl IntoIterator<Item = &'a String>) -> Metrics {
        let mut registry = Registry::default();

        let mut route_series = Series::<Labels, Counter>::default();
        let routes = endpoints
            .into_iter()
            .map(|e| {
                let counters = RouteResult::PER_ENDPOINT.map(|r| {
                    route_series.add(vec![("endpoint", e.clone()), ("result", r.name().into())])
                });
                (e.clone(), counters)
            })
            .collect();
        let unattributed =
            RouteResult::UNATTRIBUTED.map(|r| route_series.add(vec![("result", r.name().into())]));
        registry.register(
            "vespa_autoscaler_route_requests",
            "POST /route/ requests by endpoint and result (routed, no_worker, unauthorized; unknown_endpoint, invalid and error carry no endpoint)",
            route_series,
        );

        let mut report_series = Series::<StaticLabels<2>, Counter>::default();
        let reports = ReportKind::ALL.map(|k| {
            ReportResult::ALL.map(|r| {
                if k.can_end(r) {
                    report_series.add([("kind", k.name()), ("result", r.name())])
                } else {
                    Counter::default() // never moves, so never shown
                }
            })
        });
        registry.register(
            "vespa_autoscaler_reports",
            "Worker reports received, by kind (status, delete_requests) and result",
            report_series,
        );

        let mut finished_series = Series::<StaticLabels<1>, Counter>::default();
        let finished = FINISHED_LABELS.map(|s| finished_series.add([("status", s)]));
        registry.register(
            "vespa_autoscaler_finished_requests",
            "Finished requests workers reported in /delete_requests/, by status",
            finished_series,
        );

        Metrics {
            registry,
            routes,
            unattributed,
            reports,
            finished,
        }
    }

    /// Counts one `/route/` request that named `endpoint` (when it could be read) and
    /// ended with `result`. Results of [`RouteResult::PER_ENDPOINT`] are counted under a
    /// configured endpoint; a request naming none is counted without it.
    pub fn route(&self, endpoint: Option<&str>, result: RouteResult) {
        let per_endpoint = RouteResult::PER_ENDPOINT.iter().position(|r| *r == result);
        let counters = endpoint.and_then(|e| self.routes.get(e));
        match (per_endpoint, counters) {
            (Some(i), Some(counters)) => counters[i].inc(),
            _ => {
                // Internal: a per-endpoint result for an endpoint that is not configured
                // cannot happen (authentication fails first); count it as unknown.
                let i = RouteResult::UNATTRIBUTED
                    .iter()
                    .position(|r| *r == result)
                    .unwrap_or(0);
                self.unattributed[i].inc()
            }
        };
    }

    /// Counts one worker report of `kind` that ended with `result`.
    pub fn report(&self, kind: ReportKind, result: ReportResult) {
        // Internal: `ALL` lists each enum in declaration order, so the discriminant is the
        // index the counters were created at.
        self.reports[kind as usize][result as usize].inc();
    }

    /// Counts finished requests by status (each one of [`FINISHED_STATUSES`]).
    pub fn finished<'a>(&self, statuses: impl IntoIterator<Item = &'a str>) {
        for status in statuses {
            let i = FINISHED_STATUSES
                .iter()
                .position(|s| *s == status)
                .unwrap_or(FINISHED_STATUSES.len() - 1);
            self.finished[i].inc();
        }
    }

    /// The live counters' registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The pool's gauges for `endpoints` at `now`, and the registry's removal totals, as a
/// registry to encode after [`Metrics::registry`]. Prunes first, as every reader does.
pub fn pool_snapshot<'a>(
    pool: &mut Pool,
    endpoints: impl IntoIterator<Item = &'a String>,
    now: Instant,
) -> Registry {
    pool.prune(now);
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let mut workers = Series::<Labels, Gauge>::default();
    let mut workload = Series::<Labels, FloatGauge>::default();
    let mut max_perf = Series::<Labels, FloatGauge>::default();
    for e in endpoints {
        let c = pool.census(e, now);
        for (state, n) in [
            ("ready", c.ready),
            ("loading", c.loading),
            ("error", c.error),
            ("stale", c.stale),
        ] {
            workers
                .add(vec![("endpoint", e.clone()), ("state", state.into())])
                .set(count(n));
        }
        let (load, perf) = pool.ready_load(e, now);
        workload.add(vec![("endpoint", e.clone())]).set(load);
        max_perf.add(vec![("endpoint", e.clone())]).set(perf);
    }
    let registered: Gauge = Gauge::default();
    registered.set(count(pool.len()));
    let mut removed = Series::<StaticLabels<1>, Counter>::default();
    let (pruned, evicted) = pool.removed();
    removed.add([("reason", "pruned")]).inc_by(pruned);
    removed.add([("reason", "evicted")]).inc_by(evicted);

    let mut r = Registry::default();
    r.register(
        "vespa_autoscaler_workers",
        "Workers serving the endpoint, by state (ready, loading, error, stale)",
        workers,
    );
    r.register(
        "vespa_autoscaler_registered_workers",
        "Workers in the registry, each counted once whatever endpoints it serves",
        registered,
    );
    r.register(
        "vespa_autoscaler_workload",
        "Workload on the endpoint's ready workers: their reported cur_load plus what was routed to them since",
        workload,
    );
    r.register(
        "vespa_autoscaler_max_perf",
        "Capacity of the endpoint's ready workers: the sum of their max_perf (workload per second)",
        max_perf,
    );
    r.register(
        "vespa_autoscaler_workers_removed",
        "Workers removed from the registry: pruned after --prune-after of silence, evicted beyond --max-workers",
        removed,
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscaler::registry::Limits;
    use crate::openmetrics::{assert_samples, encode};
    use std::time::Duration;

    #[test]
    fn metrics_wire_format() {
        // Every label set is there from the start, at zero, in a fixed order.
        let endpoints = ["llm".to_string(), "other".to_string()];
        let m = Metrics::new(&endpoints);
        let mut pool = Pool::new(Limits {
            stale_after: Duration::from_secs(30),
            prune_after: Duration::from_secs(60),
            max_workers: 10,
            max_routed_per_worker: 10,
        });
        let snapshot = pool_snapshot(&mut pool, &endpoints, Instant::now());
        insta::assert_snapshot!(encode(&[m.registry(), &snapshot]).unwrap());
    }

    #[test]
    fn a_result_lands_on_its_endpoint_or_on_none() {
        let endpoints = ["llm".to_string()];
        let m = Metrics::new(&endpoints);
        m.route(Some("llm"), RouteResult::Routed);
        m.route(Some("nope"), RouteResult::UnknownEndpoint);
        m.route(None, RouteResult::Invalid);
        m.finished(["Success", "Rejected", "Success"]);
        assert_samples(
            m.registry(),
            &[
                r#"vespa_autoscaler_route_requests_total{endpoint="llm",result="routed"} 1"#,
                r#"vespa_autoscaler_route_requests_total{result="unknown_endpoint"} 1"#,
                r#"vespa_autoscaler_route_requests_total{result="invalid"} 1"#,
                r#"vespa_autoscaler_finished_requests_total{status="success"} 2"#,
                r#"vespa_autoscaler_finished_requests_total{status="rejected"} 1"#,
            ],
        );
    }
}
