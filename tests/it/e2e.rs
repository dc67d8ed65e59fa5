//! The whole serverless flow in one process: `vespa autoscaler`, two signed workers and a
//! backend; clients route, sign and send as the official client does.

use crate::support::*;
use http::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use vespa::autoscaler::Autoscaler;
use vespa::worker::Worker;

const KEY: &str = "endpoint-key";

async fn route(http: &reqwest::Client, autoscaler: &Autoscaler, request_idx: u64) -> Value {
    let resp = http
        .post(format!("{}/route/", autoscaler.url()))
        .bearer_auth(KEY)
        .json(&json!({"endpoint": "ep", "api_key": KEY, "cost": 10, "request_idx": request_idx, "replay_timeout": 60.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Routes until the autoscaler assigns a worker (it may not have its reports yet).
async fn route_to_worker(http: &reqwest::Client, autoscaler: &Autoscaler) -> Value {
    let mut idx = 0;
    let wait = async {
        loop {
            let answer = route(http, autoscaler, idx).await;
            if answer.get("url").is_some() {
                return answer;
            }
            idx = answer["request_idx"].as_u64().unwrap();
            // The worker reports every 20 ms; poll at that pace, as a client polls /route/.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("a worker in time")
}

async fn call(http: &reqwest::Client, auth: &Value) -> (StatusCode, Value) {
    let url = format!(
        "{}/v1/completions?api_key={KEY}",
        auth["url"].as_str().unwrap()
    );
    let body = json!({"auth_data": auth, "session_id": null, "payload": {"prompt": "hi", "max_tokens": 10}});
    let resp = http
        .post(url)
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// An autoscaler and two signed workers (ids 1 and 2), each with its own backend.
struct Flow {
    backend_a: Backend,
    _backend_b: Backend,
    autoscaler: Autoscaler,
    w1: Worker,
    w2: Worker,
    http: reqwest::Client,
}

impl Flow {
    async fn start() -> Flow {
        let backend_a = Backend::start(|_| async { json(200, json!({"from": "a"})) }).await;
        let backend_b = Backend::start(|_| async { json(200, json!({"from": "b"})) }).await;
        let autoscaler = Autoscaler::start(local_autoscaler("ep", KEY))
            .await
            .unwrap();
        let w1 = signed_worker(&backend_a, &autoscaler, 1).await;
        let w2 = signed_worker(&backend_b, &autoscaler, 2).await;
        Flow {
            backend_a,
            _backend_b: backend_b,
            autoscaler,
            w1,
            w2,
            http: reqwest::Client::new(),
        }
    }
}

#[tokio::test]
async fn routed_signed_requests_reach_both_workers_and_reports_add_up() {
    let Flow {
        backend_a: _backend_a,
        _backend_b,
        autoscaler,
        w1,
        w2,
        http,
    } = Flow::start().await;

    // Wait until both workers are routable, then route a burst: the autoscaler counts what
    // it routed since each worker's last report, so the burst spreads over both.
    let wait = async {
        loop {
            let list: Value = http
                .get(format!(
                    "{}/get_endpoint_workers/?endpoint=ep",
                    autoscaler.url()
                ))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let ready = list
                .as_array()
                .map(|l| l.iter().filter(|w| w["status"] == "ready").count())
                .unwrap_or(0);
            if ready == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("both workers ready at the autoscaler");
    let mut burst = Vec::new();
    for _ in 0..8 {
        burst.push(route_to_worker(&http, &autoscaler).await);
    }
    let mut by_worker: BTreeMap<String, u32> = BTreeMap::new();
    for auth in &burst {
        let (status, body) = call(&http, auth).await;
        assert_eq!(status, 200, "{body}");
        *by_worker
            .entry(auth["url"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        by_worker.len(),
        2,
        "both workers received traffic: {by_worker:?}"
    );

    // Forgeries: a changed signature, a changed url, and a key the worker does not know.
    let auth = route_to_worker(&http, &autoscaler).await;
    let mut bad = auth.clone();
    bad["signature"] = json!("Zm9yZ2Vk");
    assert_eq!(call(&http, &bad).await.0, 401);
    let mut moved = auth.clone();
    let target = moved["url"].as_str().unwrap().to_string();
    moved["url"] = json!(target.replace("127.0.0.1", "localhost"));
    assert_eq!(call(&http, &moved).await.0, 401);

    for w in [&w1, &w2] {
        let snap = assert_settled(w).await;
        assert_eq!(
            snap.totals.served.workload,
            10.0 * snap.totals.served.requests as f64
        );
    }
    let served: u64 = [&w1, &w2]
        .iter()
        .map(|w| w.shared().ledger.snapshot().totals.served.requests)
        .sum();
    assert_eq!(served, 8);
}

#[tokio::test]
async fn an_unhealthy_worker_stops_being_routed_and_comes_back() {
    let Flow {
        backend_a,
        _backend_b,
        autoscaler,
        w1,
        w2,
        http,
    } = Flow::start().await;
    let w1_url = format!("http://{}", w1.local_addr());
    let w2_url = format!("http://{}", w2.local_addr());

    // Both routable first.
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        seen.insert(
            route_to_worker(&http, &autoscaler).await["url"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    backend_a.set_health(StatusCode::SERVICE_UNAVAILABLE);
    wait_state(&w1, |s| s.error().is_some()).await;
    // Once the error report lands, every route goes to the healthy worker.
    let mut consecutive = 0;
    let wait = async {
        while consecutive < 10 {
            let auth = route_to_worker(&http, &autoscaler).await;
            if auth["url"] == w2_url.as_str() {
                consecutive += 1;
            } else {
                consecutive = 0;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("errored worker leaves the pool");
    backend_a.set_health(StatusCode::OK);
    let wait = async {
        loop {
            if route_to_worker(&http, &autoscaler).await["url"] == w1_url.as_str() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("recovered worker rejoins the pool");
}
