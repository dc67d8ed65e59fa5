//! docs/OPERATIONS.md cannot drift from the code: every metric name and own route it
//! uses exists, its YAML parses, and its manifests fit the worker (a valid configuration,
//! probes on routes that answer, stop timeouts that cover the drain).

use crate::scrape::{WORKER_METRICS, known_metric_names, scrape};
use crate::sim::start as start_sim;
use crate::support::*;
use bytes::Bytes;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use vespa::autoscaler::Autoscaler;
use vespa::sim::SimConfig;
use vespa::worker::CLOSE_GRACE;
use vespa::worker::config::{WorkerArgs, WorkerConfig};

const GUIDE: &str = include_str!("../../docs/OPERATIONS.md");

/// The words of `text` that start with `prefix` (at a word boundary) and go on with
/// `[a-z0-9_]`: `vespa_…` metric names, `/_vespa/…` routes. The prefix alone is no word.
fn words_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices(prefix) {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[at + prefix.len()..];
        let len = rest.find(|c: char| !word(c)).unwrap_or(rest.len());
        if len > 0 {
            found.insert(format!("{prefix}{}", &rest[..len]));
        }
    }
    found
}

#[tokio::test]
async fn every_metric_name_in_the_guide_exists() {
    let known = known_metric_names().await;
    let used = words_after(GUIDE, "vespa_");
    assert!(used.len() > 30, "the guide names the metrics: {used:?}");
    let unknown: Vec<&String> = used
        .iter()
        .filter(|name| {
            // A name that ends in `_` is a prefix (`vespa_autoscaler_…`).
            if name.ends_with('_') {
                !known.iter().any(|k| k.starts_with(name.as_str()))
            } else {
                !known.contains(*name)
            }
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/OPERATIONS.md names metrics nothing serves: {unknown:?}"
    );
    for (family, _) in WORKER_METRICS {
        assert!(
            used.iter().any(|u| u.starts_with(family)),
            "the guide does not describe {family}"
        );
    }
}

#[tokio::test]
async fn every_own_route_in_the_guide_answers() {
    let backend = Backend::start(|_| async { json(200, serde_json::json!({})) }).await;
    let worker = start_worker(config(&backend)).await;
    let sim = start_sim(SimConfig::default()).await;
    let client = h1_client();
    let routes: Vec<(String, String)> = words_after(GUIDE, "/_vespa/")
        .into_iter()
        .map(|r| (url(&worker, &r), r))
        .chain(
            words_after(GUIDE, "/_sim/")
                .into_iter()
                .map(|r| (format!("{}{r}", sim.url()), r)),
        )
        .collect();
    assert!(
        routes.iter().any(|(_, r)| r == "/_vespa/ready"),
        "{routes:?}"
    );
    for (url, route) in routes {
        let (parts, body) = send(&client, request("GET", &url, Bytes::new())).await;
        // The sim's POST-only routes answer 405 to a GET: they exist.
        assert!(
            parts.status != 404,
            "{route} is not served: {}",
            String::from_utf8_lossy(&body)
        );
    }
}

/// The ```yaml blocks of the guide, parsed by PyYAML: one list of documents per block.
async fn yaml_documents() -> Vec<Value> {
    let guide = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/OPERATIONS.md");
    let out = python_output("doc_yaml.py", &[guide]).await;
    let blocks: Vec<Vec<Value>> = serde_json::from_slice(&out).unwrap();
    blocks.into_iter().flatten().collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the guide"))
}

fn container<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} container"))
}

fn pre_stop_secs(container: &Value) -> Duration {
    let secs = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or_else(|| panic!("a preStop sleep in {container}"));
    Duration::from_secs(secs)
}

/// Loads `env` as the worker would, failing the test on an invalid setting.
fn worker_config(env: HashMap<String, String>, source: &str) -> WorkerConfig {
    WorkerConfig::load(&WorkerArgs::default(), &env)
        .unwrap_or_else(|e| panic!("{source}'s environment is not a valid worker: {e}"))
}

#[tokio::test]
async fn the_kubernetes_manifests_fit_the_worker() {
    let docs = yaml_documents().await;
    let deployment = of_kind(&docs, "Deployment");
    let vespa = container(deployment, "vespa");
    let env = vespa["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let value = e["value"].as_str().expect("env values are strings");
            (e["name"].as_str().unwrap().to_string(), value.to_string())
        })
        .collect();
    let config = worker_config(env, "the vespa container");
    assert_eq!(config.listen.port(), 3000);

    let port = &vespa["ports"][0];
    assert_eq!(port["containerPort"], 3000);
    for (probe, path) in [
        ("readinessProbe", "/_vespa/ready"),
        ("livenessProbe", "/_vespa/health"),
    ] {
        assert_eq!(vespa[probe]["httpGet"]["path"], path);
        assert_eq!(vespa[probe]["httpGet"]["port"], port["name"]);
    }

    // Stop: the worker's preStop, then the drain and its close grace, all within the
    // grace period; the model server gets SIGTERM only after that.
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .map(Duration::from_secs)
        .unwrap();
    let worker_done = pre_stop_secs(vespa) + config.drain_timeout + CLOSE_GRACE;
    let model_stops = pre_stop_secs(container(deployment, "model"));
    assert!(
        worker_done <= model_stops,
        "{worker_done:?} > {model_stops:?}"
    );
    assert!(model_stops < grace, "{model_stops:?} >= {grace:?}");

    let service = of_kind(&docs, "Service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port["name"]);
    let scaled = of_kind(&docs, "ScaledObject");
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "prometheus");
    let query = trigger["metadata"]["query"].as_str().unwrap();
    assert!(query.contains("vespa_estimated_wait_seconds"), "{query}");
}

#[tokio::test]
async fn the_scrape_configuration_reads_the_metrics_routes() {
    let docs = yaml_documents().await;
    let scrape_configs = docs
        .iter()
        .find_map(|d| d.get("scrape_configs"))
        .and_then(Value::as_array)
        .expect("a Prometheus scrape configuration");
    let job = |name: &str| {
        let job = scrape_configs
            .iter()
            .find(|j| j["job_name"] == name)
            .unwrap_or_else(|| panic!("no job {name}"));
        job["metrics_path"].as_str().unwrap().to_string()
    };
    let sim = start_sim(SimConfig::default()).await;
    let worker = start_worker(WorkerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        unsecured: true,
        ..WorkerConfig::new(sim.url().parse().unwrap(), 1000.0)
    })
    .await;
    scrape(&url(&worker, &job("vespa-worker")), None, "vespa_").await;

    let autoscaler = Autoscaler::start(local_autoscaler("ep", "key"))
        .await
        .unwrap();
    let url = format!("{}{}", autoscaler.url(), job("vespa-autoscaler"));
    scrape(&url, Some(LOCAL_MASTER_TOKEN), "vespa_autoscaler_").await;
    scrape(
        &format!("{}{}", sim.url(), job("vespa-sim")),
        None,
        "vespa_sim_",
    )
    .await;
}

/// The `Key=Value` lines of the guide's systemd unit (the ```ini block), in order.
fn systemd_unit() -> Vec<(String, String)> {
    let start = GUIDE.find("```ini\n").expect("a systemd unit") + "```ini\n".len();
    let end = GUIDE[start..].find("```").unwrap() + start;
    GUIDE[start..end]
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_systemd_unit_fits_the_worker() {
    let unit = systemd_unit();
    let get = |key: &str| {
        unit.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
    };
    let mut env: HashMap<String, String> = unit
        .iter()
        .filter(|(k, _)| k == "Environment")
        .map(|(_, v)| {
            let (name, value) = v.split_once('=').unwrap();
            (name.to_string(), value.to_string())
        })
        .collect();
    assert_eq!(get("EnvironmentFile"), "-/etc/vespa/worker.env");
    // What the unit says the EnvironmentFile holds: the signed mode's settings.
    for (name, value) in [
        ("REPORT_ADDR", "http://127.0.0.1:8080"),
        ("CONTAINER_ID", "1"),
        ("PUBLIC_IPADDR", "127.0.0.1"),
        ("MASTER_TOKEN", "token"),
    ] {
        env.insert(name.into(), value.into());
    }
    let config = worker_config(env, "the systemd unit");
    assert_eq!(get("KillSignal"), "SIGTERM", "SIGTERM drains");
    let stop: u64 = get("TimeoutStopSec").parse().unwrap();
    assert!(
        Duration::from_secs(stop) >= config.drain_timeout + CLOSE_GRACE,
        "TimeoutStopSec={stop} does not cover DRAIN_TIMEOUT"
    );
    assert_eq!(
        get("RestartPreventExitStatus"),
        "64",
        "an invalid setting exits 64"
    );
    assert_eq!(get("ExecStart"), "/usr/local/bin/vespa worker");
}
