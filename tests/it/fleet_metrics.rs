//! `GET /metrics` of `vespa autoscaler` and `GET /_sim/metrics` of `vespa sim`: after known
//! traffic, Prometheus' own parser reads exactly the counts that traffic makes.

use crate::scrape::scrape;
use crate::sim::{start, wait_stats};
use serde_json::{Value, json};
use vespa::autoscaler::{Autoscaler, AutoscalerConfig, WorkerAuth};
use vespa::signing::SigningKey;
use vespa::sim::{SimConfig, SimStats};

const MTOKEN: &str = "metrics-token";

fn autoscaler_config() -> AutoscalerConfig {
    let mut c = AutoscalerConfig::new(
        SigningKey::generate().unwrap(),
        WorkerAuth::MasterToken(MTOKEN.into()),
    )
    .endpoint("llm", "key-llm")
    .endpoint("other", "key-other");
    c.listen = "127.0.0.1:0".parse().unwrap();
    c
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn post(url: &str, body: impl Into<reqwest::Body>, bearer: Option<&str>) -> (u16, Value) {
    let mut req = http().post(url).body(body);
    if let Some(key) = bearer {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn report(id: u64, error_msg: &str) -> Value {
    json!({
        "id": id, "mtoken": MTOKEN, "loadtime": 1.0, "cur_load": 0.0, "max_perf": 10.0,
        "error_msg": error_msg, "url": format!("http://198.51.100.{id}:4000"),
    })
}

#[tokio::test]
async fn autoscaler_metrics_count_routes_reports_and_workers_exactly() {
    let a = Autoscaler::start(autoscaler_config()).await.unwrap();
    let url = |path: &str| format!("{}{path}", a.url());
    let route = |endpoint: &str, key: &str| {
        let body = json!({"endpoint": endpoint, "cost": 100}).to_string();
        let (route_url, key) = (url("/route/"), key.to_string());
        async move { post(&route_url, body, Some(&key)).await }
    };

    // Before any worker: polled, not routed.
    let (status, answer) = route("llm", "key-llm").await;
    assert_eq!((status, answer.get("url")), (200, None), "{answer}");

    // Reports: two taken (worker 2 in error), four refused.
    for r in [report(1, ""), report(2, "backend down")] {
        assert_eq!(
            post(&url("/worker_status/"), r.to_string(), None).await.0,
            200
        );
    }
    let mut wrong_token = report(3, "");
    wrong_token["mtoken"] = json!("wrong");
    let mut unknown_endpoint = report(4, "");
    unknown_endpoint["endpoint"] = json!("nope");
    for (body, status) in [
        (wrong_token.to_string(), 401),
        (unknown_endpoint.to_string(), 404),
        ("{not json".to_string(), 400),
        (json!({"mtoken": MTOKEN}).to_string(), 422),
    ] {
        assert_eq!(post(&url("/worker_status/"), body, None).await.0, status);
    }

    // Routes: three to worker 1, then one refusal of each kind.
    for _ in 0..3 {
        let (status, answer) = route("llm", "key-llm").await;
        assert_eq!(status, 200);
        assert_eq!(answer["url"], "http://198.51.100.1:4000");
    }
    assert_eq!(route("llm", "key-other").await.0, 401);
    assert_eq!(route("nope", "key-llm").await.0, 404);
    assert_eq!(post(&url("/route/"), "[]", Some("key-llm")).await.0, 400);

    // Finished requests: from worker 1, and from a worker that never reported.
    let finished = |worker: u64, statuses: &[&str]| {
        let requests: Vec<Value> = statuses.iter().map(|s| json!({"status": s})).collect();
        json!({"worker_id": worker, "mtoken": MTOKEN, "requests": requests}).to_string()
    };
    let delete = url("/delete_requests/");
    let body = finished(1, &["Success", "Success", "Error"]);
    assert_eq!(post(&delete, body, None).await.0, 200);
    assert_eq!(
        post(&delete, finished(99, &["Cancelled"]), None).await.0,
        200
    );

    // The operator's token is needed to read them.
    let metrics_url = url("/metrics");
    for bearer in [None, Some("wrong")] {
        let mut req = http().get(&metrics_url);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["code"], "invalid_token");
    }

    let m = scrape(&metrics_url, Some(MTOKEN), "vespa_autoscaler_").await;
    let routes = "vespa_autoscaler_route_requests_total";
    let llm = |result| [("endpoint", "llm"), ("result", result)];
    assert_eq!(m.value(routes, &llm("routed")), 3.0);
    assert_eq!(m.value(routes, &llm("no_worker")), 1.0);
    assert_eq!(m.value(routes, &llm("unauthorized")), 1.0);
    assert_eq!(m.value(routes, &[("result", "unknown_endpoint")]), 1.0);
    assert_eq!(m.value(routes, &[("result", "invalid")]), 1.0);
    assert_eq!(m.value(routes, &[("result", "error")]), 0.0);
    assert_eq!(m.sum(routes, &[("endpoint", "other")]), 0.0);
    assert_eq!(m.sum(routes, &[]), 7.0, "every /route/ counted once");

    let reports = "vespa_autoscaler_reports_total";
    let status = |result| [("kind", "status"), ("result", result)];
    assert_eq!(m.value(reports, &status("ok")), 2.0);
    assert_eq!(m.value(reports, &status("unauthorized")), 1.0);
    assert_eq!(m.value(reports, &status("unknown_endpoint")), 1.0);
    assert_eq!(m.value(reports, &status("invalid")), 2.0);
    assert_eq!(m.value(reports, &status("too_large")), 0.0);
    let deletes = |result| [("kind", "delete_requests"), ("result", result)];
    assert_eq!(m.value(reports, &deletes("ok")), 1.0);
    assert_eq!(m.value(reports, &deletes("unknown_worker")), 1.0);

    let finished = "vespa_autoscaler_finished_requests_total";
    assert_eq!(m.value(finished, &[("status", "success")]), 2.0);
    assert_eq!(m.value(finished, &[("status", "error")]), 1.0);
    assert_eq!(m.value(finished, &[("status", "cancelled")]), 1.0);
    assert_eq!(m.value(finished, &[("status", "rejected")]), 0.0);

    // Both workers serve both endpoints (their reports name none).
    let workers = "vespa_autoscaler_workers";
    for endpoint in ["llm", "other"] {
        let state = |s| [("endpoint", endpoint), ("state", s)];
        assert_eq!(m.value(workers, &state("ready")), 1.0);
        assert_eq!(m.value(workers, &state("error")), 1.0);
        assert_eq!(m.value(workers, &state("loading")), 0.0);
        assert_eq!(m.value(workers, &state("stale")), 0.0);
    }
    assert_eq!(m.value("vespa_autoscaler_registered_workers", &[]), 2.0);
    // Three routes of cost 100 since worker 1's report; finished records without a
    // request_idx take nothing off. Worker 2 is not ready, so neither counts.
    let llm = [("endpoint", "llm")];
    assert_eq!(m.value("vespa_autoscaler_workload", &llm), 300.0);
    assert_eq!(m.value("vespa_autoscaler_max_perf", &llm), 10.0);
    let removed = "vespa_autoscaler_workers_removed_total";
    assert_eq!(m.value(removed, &[("reason", "pruned")]), 0.0);
    assert_eq!(m.value(removed, &[("reason", "evicted")]), 0.0);
    assert_eq!(m.families[workers], "gauge");
    assert_eq!(m.families["vespa_autoscaler_route_requests"], "counter");
}

#[tokio::test]
async fn an_insecure_autoscaler_serves_metrics_to_anyone() {
    let mut c = autoscaler_config();
    c.worker_auth = WorkerAuth::Insecure;
    let a = Autoscaler::start(c).await.unwrap();
    let m = scrape(&format!("{}/metrics", a.url()), None, "vespa_autoscaler_").await;
    assert_eq!(m.value("vespa_autoscaler_registered_workers", &[]), 0.0);
}

/// `/_sim/stats` and the metrics count the same requests.
fn assert_metrics_match_stats(m: &crate::scrape::Exposition, s: &SimStats) {
    let requests = "vespa_sim_requests_total";
    for (outcome, n) in [
        ("completed", s.completed),
        ("cancelled", s.cancelled),
        ("errored", s.errored),
        ("rejected", s.rejected),
        ("invalid", s.invalid),
    ] {
        assert_eq!(
            m.sum(requests, &[("outcome", outcome)]),
            n as f64,
            "{outcome}"
        );
    }
    let tokens = m.sum("vespa_sim_tokens_generated_total", &[]);
    assert_eq!(tokens, s.tokens_generated as f64);
    assert_eq!(m.value("vespa_sim_active_requests", &[]), s.active as f64);
    assert_eq!(m.value("vespa_sim_queued_requests", &[]), s.queued as f64);
    assert_eq!(m.value("vespa_sim_hanging_requests", &[]), s.hanging as f64);
}

#[tokio::test]
async fn sim_metrics_count_requests_by_api_and_outcome_exactly() {
    let sim = start(SimConfig {
        decode_tps: 1000.0,
        max_batch: 2,
        image_secs: 0.01,
        die_after_chunks: Some(2),
        ..SimConfig::default()
    })
    .await;
    let url = |path: &str| format!("{}{path}", sim.url());

    for _ in 0..2 {
        let body = json!({"prompt": "a b c", "max_tokens": 5}).to_string();
        assert_eq!(post(&url("/v1/completions"), body, None).await.0, 200);
    }
    let body = json!({"inputs": "hi", "parameters": {"max_new_tokens": 3}}).to_string();
    assert_eq!(post(&url("/generate"), body, None).await.0, 200);
    assert_eq!(post(&url("/runsync"), "{}", None).await.0, 200);
    assert_eq!(
        post(&url("/generate_stream"), "{not json", None).await.0,
        400
    );
    // A stream that --die-after-chunks breaks after two tokens: errored.
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                      "stream": true});
    let resp = http()
        .post(url("/v1/chat/completions"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err(), "the stream breaks");
    wait_stats(&sim, |s| s.errored == 1).await;

    // A long answer holds a slot until its client leaves: cancelled, no tokens.
    let long = json!({"prompt": "x", "max_tokens": 1_000_000}).to_string();
    let completions = url("/v1/completions");
    let pending = tokio::spawn(async move { post(&completions, long, None).await });
    let busy = wait_stats(&sim, |s| s.active == 1).await;
    let m = scrape(&url("/_sim/metrics"), None, "vespa_sim_").await;
    assert_metrics_match_stats(&m, &busy);
    assert_eq!(m.value("vespa_sim_active_requests", &[]), 1.0);
    assert_eq!(m.value("vespa_sim_batch_slots", &[]), 2.0);
    assert_eq!(m.value("vespa_sim_capacity_tokens_per_second", &[]), 2000.0);
    assert_eq!(m.value("vespa_sim_healthy", &[]), 1.0);
    pending.abort();
    let stats = wait_stats(&sim, |s| s.cancelled == 1 && s.active == 0).await;

    let m = scrape(&url("/_sim/metrics"), None, "vespa_sim_").await;
    assert_metrics_match_stats(&m, &stats);
    let requests = "vespa_sim_requests_total";
    let at = |api, outcome| m.value(requests, &[("api", api), ("outcome", outcome)]);
    assert_eq!(at("completions", "completed"), 2.0);
    assert_eq!(at("completions", "cancelled"), 1.0);
    assert_eq!(at("generate", "completed"), 1.0);
    assert_eq!(at("runsync", "completed"), 1.0);
    assert_eq!(at("generate_stream", "invalid"), 1.0);
    assert_eq!(at("chat_completions", "errored"), 1.0);
    assert_eq!(at("chat_completions", "completed"), 0.0);
    assert_eq!(m.sum(requests, &[]), 7.0, "every API request counted once");
    let tokens = "vespa_sim_tokens_generated_total";
    assert_eq!(m.value(tokens, &[("api", "completions")]), 10.0);
    assert_eq!(m.value(tokens, &[("api", "generate")]), 3.0);
    assert_eq!(m.value(tokens, &[("api", "chat_completions")]), 2.0);
    assert_eq!(m.value(tokens, &[("api", "generate_stream")]), 0.0);
}

#[tokio::test]
async fn sim_metrics_count_start_up_rejections_and_injected_errors() {
    let loading = start(SimConfig {
        startup_delay: std::time::Duration::from_secs(3600),
        ..SimConfig::default()
    })
    .await;
    let failing = start(SimConfig {
        error_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let body = json!({"prompt": "a", "max_tokens": 1}).to_string();
    let status = post(
        &format!("{}/v1/completions", loading.url()),
        body.clone(),
        None,
    )
    .await;
    assert_eq!(status.0, 503);
    let status = post(&format!("{}/v1/completions", failing.url()), body, None).await;
    assert_eq!(status.0, 500);

    let m = scrape(
        &format!("{}/_sim/metrics", loading.url()),
        None,
        "vespa_sim_",
    )
    .await;
    let completions = |outcome| [("api", "completions"), ("outcome", outcome)];
    let requests = "vespa_sim_requests_total";
    assert_eq!(m.value(requests, &completions("rejected")), 1.0);
    assert_eq!(m.value("vespa_sim_healthy", &[]), 0.0);
    assert_metrics_match_stats(&m, &loading.stats());
    let m = scrape(
        &format!("{}/_sim/metrics", failing.url()),
        None,
        "vespa_sim_",
    )
    .await;
    assert_eq!(m.value(requests, &completions("errored")), 1.0);
    assert_metrics_match_stats(&m, &failing.stats());
}
