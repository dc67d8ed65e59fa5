//! What the worker tells about its requests: Prometheus metrics (`/_vespa/metrics`), one
//! access log line per request, request ids and W3C trace context.
//!
//! Every proxied request gets a [`Record`] when it arrives (after the worker's own routes,
//! so health probes and `/_vespa/` are never counted). The record is classified once, when
//! the request ends, into a [`RequestOutcome`], and that one classification feeds both
//! `vespa_requests_total` and the access log line. Gauges of the worker's state are read at
//! scrape time ([`Metrics::encode`]).

mod headers;
mod metrics;
mod record;

pub use headers::{
    MAX_REQUEST_ID_LEN, RequestIds, SERVER_TIMING, TRACEPARENT, TraceContext, X_REQUEST_ID,
    new_traceparent, server_timing, trace_id,
};
pub use metrics::{
    DURATION_BUCKETS, Format, GAP_BUCKETS, Metrics, QUEUE_BUCKETS, ReportCounters, ReportKind,
    ReportLabels, ReportResult, RequestOutcome, Scrape, TTFB_BUCKETS, report_counters,
};
pub use record::{CLIENT_CLOSED_REQUEST, Ending, Record, refused_outcome, relayed_outcome};

use std::net::SocketAddr;
use std::sync::Arc;

/// Observability of one worker: its metrics and how requests are identified and logged.
#[derive(Debug)]
pub struct Observer {
    /// The worker's metrics.
    pub metrics: Metrics,
    access_log: bool,
    trace_context: TraceContext,
    ids: RequestIds,
}

impl Observer {
    /// An observer with `metrics`; `access_log` logs one line per request (`ACCESS_LOG`).
    pub fn new(metrics: Metrics, access_log: bool, trace_context: TraceContext) -> Self {
        Self {
            metrics,
            access_log,
            trace_context,
            ids: RequestIds::default(),
        }
    }

    /// Starts the record of a proxied request from `client`. Gives the request its id
    /// (the client's `X-Request-Id` when usable, else a new one) and, with
    /// `TRACE_CONTEXT=generate`, a `traceparent` when it has none: both are set on `parts`,
    /// so the backend receives them.
    pub fn record(
        self: &Arc<Self>,
        parts: &mut http::request::Parts,
        client: Option<SocketAddr>,
    ) -> Record {
        let id = self.ids.for_request(parts.headers.get(&X_REQUEST_ID));
        parts.headers.insert(X_REQUEST_ID.clone(), id.clone());
        if self.trace_context == TraceContext::Generate && !parts.headers.contains_key(&TRACEPARENT)
        {
            parts.headers.insert(TRACEPARENT.clone(), new_traceparent());
        }
        Record::new(Arc::clone(self), parts, client, id)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An observer that logs nothing.
    pub(crate) fn observer() -> Arc<Observer> {
        let metrics = Metrics::new(report_counters());
        Arc::new(Observer::new(metrics, false, TraceContext::Passthrough))
    }

    /// The record of a `GET /` from nowhere, by its own [`observer`].
    pub(crate) fn record() -> Record {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        observer().record(&mut parts, None)
    }
}
