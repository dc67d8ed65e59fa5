//! Prometheus scrapes in tests: `tests/python/check_metrics.py` fetches a metrics route,
//! checks it with Prometheus' own Python parsers (strict OpenMetrics and the classic text
//! format, which must agree) and hands the samples back, so tests assert exact values on
//! what Prometheus would read.

#![allow(dead_code)]

use crate::support::{LOCAL_MASTER_TOKEN, local_autoscaler, python_output};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use vespa::autoscaler::Autoscaler;
use vespa::sim::{Sim, SimConfig};

/// The worker's metric families (`GET /_vespa/metrics`) and their types, as specified.
///
/// Pending: the worker serves them once its metrics land. Then [`known_metric_names`]
/// should scrape a live worker instead, like the autoscaler and the sim, and this list
/// goes.
pub const WORKER_METRICS: &[(&str, &str)] = &[
    ("vespa_requests", "counter"),
    ("vespa_request_duration_seconds", "histogram"),
    ("vespa_time_to_first_byte_seconds", "histogram"),
    ("vespa_stream_gap_seconds", "histogram"),
    ("vespa_queue_wait_seconds", "histogram"),
    ("vespa_in_flight_requests", "gauge"),
    ("vespa_queued_requests", "gauge"),
    ("vespa_working_set_workload", "gauge"),
    ("vespa_max_perf", "gauge"),
    ("vespa_estimated_wait_seconds", "gauge"),
    ("vespa_state", "gauge"),
    ("vespa_reports", "counter"),
    ("vespa_backend_connections", "gauge"),
    ("vespa_sessions_open", "gauge"),
    ("vespa_sessions_closed", "counter"),
    ("vespa_rsa_verifications", "counter"),
];

/// One sample as the parser read it.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition: families (name → type) and samples.
#[derive(Debug, Clone)]
pub struct Exposition {
    pub families: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the sample `name` whose labels are exactly `labels`; fails the test
    /// when there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .unwrap_or_else(|| panic!("no sample {name}{want:?} in {:#?}", self.samples))
            .value
    }

    /// The sum of the samples `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Every name a PromQL query may use for these families: the family itself and its
    /// sample names (`_total` of a counter; `_bucket`, `_sum`, `_count` of a histogram).
    pub fn names(&self) -> Vec<String> {
        self.families
            .iter()
            .flat_map(|(f, t)| sample_names(f, t))
            .collect()
    }
}

/// A family's name and the sample names its type gives it.
pub fn sample_names(family: &str, kind: &str) -> Vec<String> {
    let suffixes: &[&str] = match kind {
        "counter" => &["", "_total"],
        "histogram" => &["", "_bucket", "_sum", "_count"],
        _ => &[""],
    };
    suffixes.iter().map(|s| format!("{family}{s}")).collect()
}

/// Scrapes `url` (with `Authorization: Bearer bearer` when given) through
/// `check_metrics.py`; every family must be named `prefix…`. Fails the test, with the
/// parser's reason, unless the answer is 200 OpenMetrics text both parsers read alike.
pub async fn scrape(url: &str, bearer: Option<&str>, prefix: &str) -> Exposition {
    let mut args = vec![url, "--prefix", prefix];
    if let Some(token) = bearer {
        args.extend(["--bearer", token]);
    }
    let out = python_output("check_metrics.py", &args).await;
    let v: Value = serde_json::from_slice(&out).expect("check_metrics.py prints JSON");
    let families = v["families"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, f)| (name.clone(), f["type"].as_str().unwrap().to_string()))
        .collect();
    let samples = v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap().to_string(),
            labels: s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect();
    Exposition { families, samples }
}

/// Every metric name Vespa serves, with its sample names: scraped from a live autoscaler,
/// sim and worker (which must serve every family of [`WORKER_METRICS`]), plus the sample
/// names of those families (labelled counters have no sample before their first event).
pub async fn known_metric_names() -> BTreeSet<String> {
    let autoscaler = Autoscaler::start(local_autoscaler("ep", "key"))
        .await
        .unwrap();
    let sim = Sim::start(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut names = BTreeSet::new();
    let url = format!("{}/metrics", autoscaler.url());
    let found = scrape(&url, Some(LOCAL_MASTER_TOKEN), "vespa_autoscaler_").await;
    names.extend(found.names());
    let found = scrape(&format!("{}/_sim/metrics", sim.url()), None, "vespa_sim_").await;
    names.extend(found.names());
    let worker = crate::support::start_worker(vespa::worker::config::WorkerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        unsecured: true,
        ..vespa::worker::config::WorkerConfig::new(sim.url().parse().unwrap(), 1000.0)
    })
    .await;
    // `vespa_requests_total` has a series per code and outcome once one is seen.
    let answer = reqwest::Client::new()
        .post(crate::support::url(&worker, "/v1/completions"))
        .json(&serde_json::json!({"prompt": "a", "max_tokens": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    answer.bytes().await.unwrap();
    // The request is counted once its response is sent, just after the client has it.
    let metrics = crate::support::url(&worker, "/_vespa/metrics");
    let deadline = std::time::Instant::now() + crate::support::PATIENCE;
    let found = loop {
        let found = scrape(&metrics, None, "vespa_").await;
        if found.families.contains_key("vespa_requests") || std::time::Instant::now() > deadline {
            break found;
        }
    };
    for (family, kind) in WORKER_METRICS {
        assert_eq!(
            found.families.get(*family).map(String::as_str),
            Some(*kind),
            "the worker does not serve {family} as a {kind}: {:?}",
            found.families
        );
    }
    names.extend(found.names());
    names.extend(WORKER_METRICS.iter().flat_map(|(f, t)| sample_names(f, t)));
    names
}
