//! OpenMetrics text exposition shared by every Vespa server that serves metrics.
//!
//! Metrics are `prometheus-client` registries. A server keeps one long-lived registry for
//! the counters its requests move (created once with every label set they will ever use,
//! so the request path only increments an atomic) and may build a second one per scrape
//! for values read from its state at that moment (gauges of a pool, totals another part
//! already counts). [`response`] encodes them in order, then the `# EOF` line.
//!
//! Labelled metrics whose label sets are all known when they are made are a [`Series`]
//! rather than the crate's `Family`: no map or lock behind the handles, and the text comes
//! out in the order the series were added, the same at every scrape.
//!
//! The format is OpenMetrics 1.0 text, which Prometheus asks for first and parses by the
//! `Content-Type` below; counters carry the `_total` suffix there and in PromQL alike.
//! Help texts are given without a final period: the encoder adds one.

use crate::http_util::{Body, full};
use http::{HeaderValue, Response, StatusCode, header};
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// `Content-Type` of an OpenMetrics 1.0 text exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A labelled metric with a fixed list of series: each label set is added once, when the
/// metric is made, and encoded in that order.
#[derive(Debug)]
pub struct Series<S, M> {
    series: Vec<(S, M)>,
}

impl<S, M> Default for Series<S, M> {
    fn default() -> Self {
        Self { series: Vec::new() }
    }
}

impl<S, M: Clone> Series<S, M> {
    /// Adds the series `labels` with the metric `m`; returns a handle to it (metrics are
    /// shared handles: the clone moves the same value).
    pub fn add_with(&mut self, labels: S, m: M) -> M {
        self.series.push((labels, m.clone()));
        m
    }

    /// Adds the series `labels` at its default (zero); returns a handle to it.
    pub fn add(&mut self, labels: S) -> M
    where
        M: Default,
    {
        self.add_with(labels, M::default())
    }
}

impl<S, M> EncodeMetric for Series<S, M>
where
    S: EncodeLabelSet,
    M: EncodeMetric + TypedMetric,
{
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, m) in &self.series {
            m.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }

    fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

/// The exposition of `registries` (in order, then `# EOF`): 200 with [`CONTENT_TYPE`].
/// Metric names must be unique across the registries; that is the caller's contract.
pub fn response(registries: &[&Registry]) -> Response<Body> {
    match encode(registries) {
        Ok(text) => {
            let mut resp = Response::new(full(text));
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            resp
        }
        Err(_) => {
            // Internal: encoding into a String fails only when a label value's own encoder
            // fails, which none of Vespa's do; a 500 beats a truncated exposition.
            tracing::error!("metrics could not be encoded");
            let mut resp = Response::new(full("metrics could not be encoded\n"));
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            resp
        }
    }
}

/// The exposition text of `registries`.
pub fn encode(registries: &[&Registry]) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    for r in registries {
        encode_registry(&mut text, r)?;
    }
    encode_eof(&mut text)?;
    Ok(text)
}

/// Fails the test unless the exposition of `registry` has each of `lines` as a whole line;
/// returns the text.
#[cfg(test)]
pub(crate) fn assert_samples(registry: &Registry, lines: &[&str]) -> String {
    let text = encode(&[registry]).unwrap();
    for line in lines {
        assert!(
            text.lines().any(|l| l == *line),
            "{line} missing from\n{text}"
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;

    #[test]
    fn registries_are_encoded_in_order_and_end_with_eof() {
        let mut live = Registry::default();
        let c: Counter = Counter::default();
        live.register("vespa_test_requests", "Requests", c.clone());
        c.inc_by(3);
        let mut scrape = Registry::default();
        let g: Gauge = Gauge::default();
        scrape.register("vespa_test_busy", "Busy", g.clone());
        g.set(2);
        let text = encode(&[&live, &scrape]).unwrap();
        assert_eq!(
            text,
            "# HELP vespa_test_requests Requests.\n# TYPE vespa_test_requests counter\n\
             vespa_test_requests_total 3\n\
             # HELP vespa_test_busy Busy.\n# TYPE vespa_test_busy gauge\nvespa_test_busy 2\n\
             # EOF\n"
        );
        let resp = response(&[&live]);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
    }

    #[test]
    fn series_come_out_in_the_order_they_were_added() {
        let mut s = Series::<[(&str, &str); 1], Counter>::default();
        let handles: Vec<Counter> = ["c", "a", "b"]
            .into_iter()
            .map(|v| s.add([("k", v)]))
            .collect();
        handles[1].inc();
        let mut r = Registry::default();
        r.register("vespa_test_things", "Things", s);
        let text = encode(&[&r]).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                r#"vespa_test_things_total{k="c"} 0"#,
                r#"vespa_test_things_total{k="a"} 1"#,
                r#"vespa_test_things_total{k="b"} 0"#,
            ]
        );
    }
}
