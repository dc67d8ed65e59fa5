//! `vespa autoscaler` over real HTTP on 127.0.0.1:0: routing, signatures, reports.

use serde_json::{Value, json};
use std::time::Duration;
use vespa::autoscaler::{Autoscaler, AutoscalerConfig, WorkerAuth};
use vespa::signing::{PublicKey, SignatureForm, SigningKey, legacy_message, url_message};

const KEY_PEM: &str = include_str!("../fixtures/rsa_key.pem");
const ENDPOINT: &str = "llm";
const API_KEY: &str = "key-llm";
const MTOKEN: &str = "s3cret";

fn config() -> AutoscalerConfig {
    let mut c = AutoscalerConfig::new(
        SigningKey::from_pem(KEY_PEM).unwrap(),
        WorkerAuth::MasterToken(MTOKEN.into()),
    )
    .endpoint(ENDPOINT, API_KEY)
    .endpoint("other", "key-other");
    c.listen = "127.0.0.1:0".parse().unwrap();
    c
}

/// An autoscaler and a client for it.
struct Harness {
    autoscaler: Autoscaler,
    http: reqwest::Client,
}

impl Harness {
    async fn start(config: AutoscalerConfig) -> Harness {
        Harness {
            autoscaler: Autoscaler::start(config).await.unwrap(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.autoscaler.url())
    }

    async fn answer(resp: reqwest::Response) -> (u16, Value) {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn post_raw(&self, path: &str, body: &str, bearer: Option<&str>) -> (u16, Value) {
        let mut req = self.http.post(self.url(path)).body(body.to_string());
        if let Some(key) = bearer {
            req = req.bearer_auth(key);
        }
        Self::answer(req.send().await.unwrap()).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_raw(path, &body.to_string(), None).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        Self::answer(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    /// `get_endpoint_workers` for [`ENDPOINT`].
    async fn workers(&self) -> (u16, Value) {
        self.get(&format!(
            "/get_endpoint_workers/?endpoint={ENDPOINT}&api_key={API_KEY}"
        ))
        .await
    }

    /// `/route/` for [`ENDPOINT`] with the right key in the header, plus `extra` fields.
    async fn route(&self, extra: Value) -> Value {
        let mut body = json!({"endpoint": ENDPOINT, "cost": 100});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, answer) = self
            .post_raw("/route/", &body.to_string(), Some(API_KEY))
            .await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    /// Reports a loaded, healthy worker with `max_perf` 10, plus `extra` fields.
    async fn report(&self, id: u64, extra: Value) {
        let mut body = ready_report(id);
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, answer) = self.post("/worker_status/", body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer, json!({}));
    }

    async fn public_key(&self) -> PublicKey {
        let resp = self.http.get(self.url("/pubkey/")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let pem = resp.text().await.unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
        PublicKey::from_pem(&pem).unwrap()
    }
}

/// A worker_status body as PROTOCOL.md §5.1 lists it, loaded and healthy.
fn ready_report(id: u64) -> Value {
    json!({
        "id": id, "mtoken": MTOKEN, "version": "test", "loadtime": 12.5, "new_load": 0.0,
        "cur_load": 0.0, "rej_load": 0.0, "max_perf": 10.0, "cur_perf": 0.0, "error_msg": "",
        "num_requests_working": 0, "num_requests_recieved": 0, "additional_disk_usage": 0.0,
        "disk_usage": 1.0, "working_request_idxs": [], "cur_capacity": 0, "max_capacity": 0,
        "url": worker_url(id),
    })
}

fn worker_url(id: u64) -> String {
    format!("http://198.51.100.{id}:4000{id}")
}

fn auth_map(answer: &Value) -> serde_json::Map<String, Value> {
    answer.as_object().unwrap().clone()
}

#[tokio::test]
async fn served_public_key_verifies_route_signatures() {
    let h = Harness::start(config()).await;
    h.report(1, json!({})).await;
    let answer = h.route(json!({})).await;
    let key = h.public_key().await;
    let signature = answer["signature"].as_str().unwrap();
    assert!(key.verify(url_message(&auth_map(&answer)).as_bytes(), signature));
    assert!(!key.verify(legacy_message(&auth_map(&answer)).as_bytes(), signature));
    assert_eq!(
        h.autoscaler.public_key_pem(),
        include_str!("../fixtures/rsa_pub_spki.pem")
    );
}

#[tokio::test]
async fn route_refuses_bad_keys_with_401_and_unknown_endpoints_with_404() {
    let h = Harness::start(config()).await;
    let body = json!({"endpoint": ENDPOINT, "cost": 1}).to_string();
    let (status, e) = h.post_raw("/route/", &body, None).await;
    assert_eq!((status, e["code"].as_str()), (401, Some("invalid_api_key")));
    let (status, _) = h.post_raw("/route/", &body, Some("key-other")).await;
    assert_eq!(status, 401, "another endpoint's key is not this one's");
    let in_body = json!({"endpoint": ENDPOINT, "api_key": API_KEY}).to_string();
    let (status, _) = h.post_raw("/route/", &in_body, None).await;
    assert_eq!(status, 200, "api_key in the body is accepted");
    let unknown = json!({"endpoint": "nope", "cost": 1}).to_string();
    let (status, e) = h.post_raw("/route/", &unknown, Some(API_KEY)).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (404, Some("unknown_endpoint"))
    );
}

#[tokio::test]
async fn malformed_route_bodies_get_4xx_json_errors() {
    let h = Harness::start(config()).await;
    let cases = [
        ("", 400),
        ("{not json", 400),
        ("[1, 2]", 400),
        ("\"llm\"", 400),
        (r#"{"cost": 1}"#, 422),
        (r#"{"endpoint": ["llm"]}"#, 422),
        (r#"{"endpoint": "llm", "cost": "a lot"}"#, 422),
        (r#"{"endpoint": "llm", "request_idx": -1}"#, 422),
    ];
    for (body, expected) in cases {
        let (status, e) = h.post_raw("/route/", body, Some(API_KEY)).await;
        assert_eq!(status, expected, "{body}: {e}");
        assert!(
            e["error"].is_string() && e["code"].is_string(),
            "{body}: {e}"
        );
    }
}

#[tokio::test]
async fn without_a_ready_worker_route_answers_without_url_but_with_a_request_idx() {
    let h = Harness::start(config()).await;
    let first = h.route(json!({"request_idx": 0})).await;
    assert!(first.get("url").is_none(), "{first}");
    let idx = first["request_idx"].as_u64().unwrap();
    assert!(idx > 0);
    assert_eq!(first["endpoint"], ENDPOINT);
    assert_eq!(
        first["status"],
        json!({"ready": 0, "loading": 0, "error": 0, "stale": 0})
    );

    h.report(1, json!({"loadtime": 0.0})).await;
    let poll = h.route(json!({"request_idx": idx})).await;
    assert_eq!(poll["request_idx"], idx, "polling keeps the request_idx");
    assert_eq!(poll["status"]["loading"], 1);

    h.report(1, json!({})).await;
    let assigned = h.route(json!({"request_idx": idx})).await;
    assert_eq!(assigned["url"], worker_url(1));
    assert_eq!(assigned["request_idx"], idx);
}

#[tokio::test]
async fn ready_worker_gets_signed_routes_with_increasing_reqnum_and_kept_types() {
    let h = Harness::start(config()).await;
    h.report(1, json!({})).await;
    let key = h.public_key().await;
    let a = h.route(json!({"cost": 256})).await;
    let b = h.route(json!({"cost": 242.0})).await;
    let c = h.route(json!({"request_idx": a["request_idx"]})).await;
    for answer in [&a, &b, &c] {
        let fields: Vec<&str> = answer
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            [
                "__request_id",
                "cost",
                "endpoint",
                "reqnum",
                "request_idx",
                "signature",
                "url"
            ]
        );
        let sig = answer["signature"].as_str().unwrap();
        assert!(key.verify(url_message(&auth_map(answer)).as_bytes(), sig));
    }
    assert!(a["cost"].is_u64() && a["cost"] == 256, "int stays int: {a}");
    assert!(
        b["cost"].is_f64() && b["cost"] == 242.0,
        "float stays float: {b}"
    );
    let reqnums: Vec<u64> = [&a, &b, &c]
        .iter()
        .map(|x| x["reqnum"].as_u64().unwrap())
        .collect();
    assert!(reqnums.windows(2).all(|w| w[0] < w[1]), "{reqnums:?}");
    assert_ne!(a["request_idx"], b["request_idx"]);
    assert_eq!(
        c["request_idx"], a["request_idx"],
        "a retry keeps its request_idx"
    );
    assert_ne!(a["__request_id"], c["__request_id"]);
}

#[tokio::test]
async fn legacy_form_signs_the_five_fields() {
    let mut cfg = config();
    cfg.signature_form = SignatureForm::Legacy;
    let h = Harness::start(cfg).await;
    h.report(1, json!({})).await;
    let answer = h.route(json!({"cost": 3.5})).await;
    let key = h.public_key().await;
    let sig = answer["signature"].as_str().unwrap();
    let message = legacy_message(&auth_map(&answer));
    assert!(message.contains("\"cost\": 3.5,"), "{message}");
    assert!(key.verify(message.as_bytes(), sig));
    assert!(!key.verify(url_message(&auth_map(&answer)).as_bytes(), sig));
}

#[tokio::test]
async fn a_worker_reporting_an_error_is_not_routed() {
    let h = Harness::start(config()).await;
    h.report(1, json!({"error_msg": "backend unhealthy"})).await;
    let answer = h.route(json!({})).await;
    assert!(answer.get("url").is_none(), "{answer}");
    assert_eq!(answer["status"]["error"], 1);
    h.report(1, json!({"error_msg": ""})).await;
    assert_eq!(h.route(json!({})).await["url"], worker_url(1), "recovers");
}

#[tokio::test]
async fn a_stale_worker_is_not_routed() {
    let mut cfg = config();
    cfg.stale_after = Duration::ZERO; // every report is stale the moment it lands
    let h = Harness::start(cfg).await;
    h.report(1, json!({})).await;
    let answer = h.route(json!({})).await;
    assert!(answer.get("url").is_none(), "{answer}");
    assert_eq!(answer["status"]["stale"], 1);
    let (_, workers) = h
        .get(&format!(
            "/get_endpoint_workers/?endpoint={ENDPOINT}&api_key={API_KEY}"
        ))
        .await;
    assert_eq!(workers[0]["status"], "stale");
}

#[tokio::test]
async fn a_burst_over_two_equal_workers_alternates_between_them() {
    let h = Harness::start(config()).await;
    h.report(2, json!({})).await;
    h.report(1, json!({})).await;
    let mut urls = Vec::new();
    for _ in 0..6 {
        urls.push(
            h.route(json!({"cost": 10})).await["url"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let (one, two) = (worker_url(1), worker_url(2));
    assert_eq!(
        urls,
        [&one, &two, &one, &two, &one, &two].map(String::clone)
    );
}

#[tokio::test]
async fn the_less_loaded_worker_is_chosen() {
    let h = Harness::start(config()).await;
    h.report(1, json!({"cur_load": 500.0})).await;
    h.report(2, json!({"cur_load": 10.0})).await;
    assert_eq!(h.route(json!({})).await["url"], worker_url(2));
}

#[tokio::test]
async fn reports_without_the_master_token_are_401() {
    let h = Harness::start(config()).await;
    for mtoken in [json!(null), json!(""), json!("wrong"), json!(7)] {
        let mut report = ready_report(1);
        report["mtoken"] = mtoken.clone();
        let (status, e) = h.post("/worker_status/", report).await;
        assert_eq!(
            (status, e["code"].as_str()),
            (401, Some("invalid_token")),
            "{mtoken}"
        );
        let (status, e) = h
            .post(
                "/delete_requests/",
                json!({"worker_id": 1, "mtoken": mtoken, "requests": []}),
            )
            .await;
        assert_eq!((status, e["code"].as_str()), (401, Some("invalid_token")));
    }
    let (_, workers) = h.workers().await;
    assert_eq!(workers, json!([]), "no refused report joined the pool");
    h.report(1, json!({})).await;
    let (status, _) = h
        .post(
            "/delete_requests/",
            json!({"worker_id": 1, "mtoken": MTOKEN, "requests": []}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_insecure_autoscaler_takes_reports_without_a_token() {
    let mut cfg = config();
    cfg.worker_auth = WorkerAuth::Insecure;
    let h = Harness::start(cfg).await;
    let mut report = ready_report(1);
    report.as_object_mut().unwrap().remove("mtoken");
    let (status, _) = h.post("/worker_status/", report).await;
    assert_eq!(status, 200);
    assert_eq!(h.route(json!({})).await["url"], worker_url(1));
}

#[tokio::test]
async fn worker_status_without_id_or_with_bad_json_is_4xx() {
    let h = Harness::start(config()).await;
    let (status, e) = h
        .post(
            "/worker_status/",
            json!({"url": "http://x", "mtoken": MTOKEN}),
        )
        .await;
    assert_eq!((status, e["code"].as_str()), (422, Some("invalid_request")));
    let (status, _) = h.post_raw("/worker_status/", "{", None).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn delete_requests_are_counted_and_both_workers_are_listed() {
    let h = Harness::start(config()).await;
    h.report(1, json!({})).await;
    h.report(2, json!({})).await;
    let routed = h.route(json!({})).await;
    assert_eq!(routed["url"], worker_url(1));
    let done = json!({"worker_id": 1, "mtoken": MTOKEN, "requests": [
        {"request_idx": routed["request_idx"], "success": true, "status": "Success",
         "entered_queue_at": 1.0, "work_started_at": 1.5, "work_completed_at": 2.0},
        {"request_idx": 999, "success": true, "status": "Cancelled",
         "entered_queue_at": 1.0, "work_started_at": null, "work_completed_at": null},
    ]});
    let (status, answer) = h.post("/delete_requests/", done).await;
    assert_eq!((status, answer), (200, json!({})));

    let resp = h
        .http
        .post(h.url("/get_endpoint_workers/"))
        .bearer_auth(API_KEY)
        .json(&json!({"endpoint": ENDPOINT}))
        .send()
        .await
        .unwrap();
    let (status, workers) = Harness::answer(resp).await;
    assert_eq!(status, 200, "{workers}");
    let workers = workers.as_array().unwrap();
    assert_eq!(workers.len(), 2);
    let w1 = &workers[0];
    assert_eq!(w1["id"], 1);
    assert_eq!(w1["url"], worker_url(1));
    assert_eq!(w1["status"], "ready");
    assert_eq!(w1["routed"], 1);
    assert_eq!(
        w1["routed_since_report"], 0,
        "finished requests leave the routed sum"
    );
    assert_eq!(w1["finished"], json!({"Success": 1, "Cancelled": 1}));
    assert_eq!(w1["last_report"]["max_perf"], 10.0);
    assert!(
        w1["last_report"].get("mtoken").is_none(),
        "the token is never echoed"
    );
    assert!(w1["seconds_since_report"].as_f64().unwrap() >= 0.0);
    assert_eq!(workers[1]["id"], 2);

    let (status, _) = h
        .get(&format!("/get_endpoint_workers/?endpoint={ENDPOINT}"))
        .await;
    assert_eq!(status, 401, "the endpoint key is required");
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let h = Harness::start(config()).await;
    let (status, e) = h.get("/nope/").await;
    assert_eq!((status, e["code"].as_str()), (404, Some("not_found")));
    let resp = h.http.get(h.url("/route/")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    let (status, _) = h.post("/pubkey/", json!({})).await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let h = Harness::start(config()).await;
    let (status, _) = h.get("/nope/").await;
    assert_eq!(status, 404);
    let Harness { autoscaler, http } = h;
    let url = format!("{}/pubkey/", autoscaler.url());
    drop(autoscaler);
    let result = tokio::time::timeout(Duration::from_secs(10), async {
        // The aborted task releases the listener and the kept-alive connection.
        loop {
            match http.get(&url).send().await {
                Err(_) => return,
                Ok(_) => tokio::task::yield_now().await,
            }
        }
    })
    .await;
    assert!(result.is_ok(), "still serving after drop");
}

#[tokio::test]
async fn a_worker_that_stops_reporting_is_pruned() {
    let mut cfg = config();
    cfg.stale_after = Duration::ZERO;
    cfg.prune_after = Duration::from_millis(50);
    let h = Harness::start(cfg).await;
    h.report(1, json!({})).await;
    let pruned = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (status, workers) = h.workers().await;
            assert_eq!(status, 200, "{workers}");
            if workers == json!([]) {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(pruned.is_ok(), "worker 1 still listed");
    let answer = h.route(json!({})).await;
    assert_eq!(answer["status"]["stale"], 0, "gone, not stale: {answer}");
    h.report(1, json!({})).await;
    assert_eq!(
        h.workers().await.1.as_array().unwrap().len(),
        1,
        "it may come back"
    );
}

#[tokio::test]
async fn report_bodies_over_their_limits_are_413() {
    let mut cfg = config();
    cfg.max_report_body = 2048;
    cfg.max_delete_body = 4096;
    let h = Harness::start(cfg).await;
    let mut report = ready_report(1);
    report["padding"] = json!("x".repeat(2048));
    let (status, e) = h.post("/worker_status/", report).await;
    assert_eq!((status, e["code"].as_str()), (413, Some("body_too_large")));
    assert!(e["error"].as_str().unwrap().contains("2048"), "{e}");
    h.report(1, json!({})).await;
    let requests: Vec<Value> = (0..400).map(|i| json!({"request_idx": i})).collect();
    let body = json!({"worker_id": 1, "mtoken": MTOKEN, "requests": requests});
    let (status, e) = h.post("/delete_requests/", body).await;
    assert_eq!((status, e["code"].as_str()), (413, Some("body_too_large")));
    let few: Vec<Value> = (0..20).map(|i| json!({"request_idx": i})).collect();
    let body = json!({"worker_id": 1, "mtoken": MTOKEN, "requests": few});
    assert_eq!(h.post("/delete_requests/", body).await.0, 200, "3 KiB fits");
}

#[tokio::test]
async fn a_huge_delete_list_within_the_limit_is_counted_under_known_statuses() {
    let h = Harness::start(config()).await;
    h.report(1, json!({})).await;
    let requests: Vec<Value> = (0..100_000u64)
        .map(|i| json!({"request_idx": u64::MAX - i, "status": format!("s{}", i % 3)}))
        .collect();
    let body = json!({"worker_id": 1, "mtoken": MTOKEN, "requests": requests});
    let (status, answer) = h.post("/delete_requests/", body).await;
    assert_eq!((status, answer), (200, json!({})));
    let (_, workers) = h.workers().await;
    assert_eq!(workers[0]["finished"], json!({"Unknown": 100_000}));
}

#[tokio::test]
async fn beyond_max_workers_the_oldest_report_leaves() {
    let mut cfg = config();
    cfg.max_workers = 2;
    let h = Harness::start(cfg).await;
    for id in [1, 2, 3] {
        h.report(id, json!({})).await;
    }
    let (_, workers) = h.workers().await;
    let ids: Vec<u64> = workers
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [2, 3]);
}

#[tokio::test]
async fn routed_since_report_is_capped() {
    let mut cfg = config();
    cfg.max_routed_per_worker = 2;
    let h = Harness::start(cfg).await;
    h.report(1, json!({})).await;
    for _ in 0..5 {
        assert_eq!(h.route(json!({})).await["url"], worker_url(1));
    }
    let (_, workers) = h.workers().await;
    assert_eq!(workers[0]["routed"], 5);
    assert_eq!(workers[0]["routed_since_report"], 2);
}

#[tokio::test]
async fn extreme_client_numbers_route_without_overflow() {
    let h = Harness::start(config()).await;
    h.report(1, json!({"cur_load": 1.7e308, "max_perf": 1e-300}))
        .await;
    h.report(2, json!({})).await;
    let max = h
        .route(json!({"request_idx": u64::MAX, "cost": u64::MAX}))
        .await;
    assert_eq!(max["request_idx"], u64::MAX);
    assert_eq!(max["cost"], u64::MAX, "cost echoed as sent");
    assert_eq!(max["url"], worker_url(2));
    let again = h
        .route(json!({"request_idx": u64::MAX, "cost": 1.7e308}))
        .await;
    assert_eq!(again["request_idx"], u64::MAX);
    let fresh = h.route(json!({"request_idx": 0})).await;
    assert_eq!(
        fresh["request_idx"], 1,
        "a client's u64::MAX does not move the counter"
    );
    let done = json!({"worker_id": 2, "mtoken": MTOKEN,
                      "requests": [{"request_idx": u64::MAX, "success": true}]});
    assert_eq!(h.post("/delete_requests/", done).await.0, 200);
}

#[tokio::test]
async fn non_finite_negative_and_out_of_range_numbers_are_refused() {
    let h = Harness::start(config()).await;
    for (body, expected) in [
        (r#"{"endpoint": "llm", "cost": "NaN"}"#, 422),
        (r#"{"endpoint": "llm", "cost": "inf"}"#, 422),
        (r#"{"endpoint": "llm", "cost": -1}"#, 422),
        (r#"{"endpoint": "llm", "cost": 1e400}"#, 400),
        (
            r#"{"endpoint": "llm", "request_idx": 18446744073709551616}"#,
            422,
        ),
        (r#"{"endpoint": "llm", "request_idx": -1}"#, 422),
    ] {
        let (status, e) = h.post_raw("/route/", body, Some(API_KEY)).await;
        assert_eq!(status, expected, "{body}: {e}");
        assert!(e["code"].is_string(), "{body}: {e}");
    }
    for extra in [
        json!({"cur_load": -5.0}),
        json!({"max_perf": -1}),
        json!({"loadtime": -0.5}),
        json!({"id": -1}),
        json!({"url": "x".repeat(5000)}),
    ] {
        let mut report = ready_report(1);
        report
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, e) = h.post("/worker_status/", report).await;
        assert_eq!(
            (status, e["code"].as_str()),
            (422, Some("invalid_request")),
            "{extra}"
        );
    }
    let (status, _) = h
        .post_raw(
            "/worker_status/",
            &format!(r#"{{"id": 1, "mtoken": "{MTOKEN}", "cur_load": 1e400}}"#),
            None,
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(h.workers().await.1, json!([]));
}

mod cli {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");

    fn vespa(args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_vespa"))
            .arg("autoscaler")
            .args(args)
            .env_clear()
            .output()
            .unwrap()
    }

    #[test]
    fn print_pubkey_prints_the_key_files_public_half() {
        for key in ["rsa_key.pem", "rsa_key_pkcs1.pem"] {
            let path = format!("{FIXTURES}{key}");
            let out = vespa(&["--key-file", &path, "--print-pubkey"]);
            assert_eq!(out.status.code(), Some(0), "{key}");
            let pem = String::from_utf8(out.stdout).unwrap();
            assert!(
                pem.starts_with("-----BEGIN PUBLIC KEY-----"),
                "{key}: {pem}"
            );
        }
        let out = vespa(&[
            "--key-file",
            &format!("{FIXTURES}rsa_key.pem"),
            "--print-pubkey",
        ]);
        let expected = std::fs::read_to_string(format!("{FIXTURES}rsa_pub_spki.pem")).unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    }

    #[test]
    fn invalid_flags_exit_64_naming_the_flag() {
        let key = format!("{FIXTURES}rsa_key.pem");
        let cases: &[(&[&str], &str)] = &[
            (&[], "--endpoint"),
            (&["--endpoint", "no-key"], "--endpoint"),
            (&["--endpoint", "a=1", "--listen", "nowhere"], "--listen"),
            (
                &["--endpoint", "a=1", "--signature-form", "both"],
                "--signature-form",
            ),
            (
                &["--endpoint", "a=1", "--stale-after", "soon"],
                "--stale-after",
            ),
            (
                &["--endpoint", "a=1", "--prune-after", "5"],
                "--prune-after",
            ),
            (
                &["--endpoint", "a=1", "--max-workers", "0"],
                "--max-workers",
            ),
            (
                &["--endpoint", "a=1", "--max-report-body", "1TB"],
                "--max-report-body",
            ),
            (
                &["--endpoint", "a=1", "--key-file", "/nonexistent.pem"],
                "--key-file",
            ),
            (
                &[
                    "--endpoint",
                    "a=1",
                    "--key-file",
                    &format!("{FIXTURES}rsa_pub_spki.pem"),
                ],
                "--key-file",
            ),
        ];
        for (args, flag) in cases {
            let mut args = args.to_vec();
            if !args.contains(&"--key-file") {
                args.extend(["--key-file", &key]);
            }
            args.extend(["--master-token", "t"]);
            let out = vespa(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
            assert!(
                stderr.contains(flag),
                "{args:?}: should name {flag}: {stderr}"
            );
        }
    }

    #[test]
    fn without_a_master_token_or_insecure_it_exits_64_before_binding() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let key = format!("{FIXTURES}rsa_key.pem");
        let base = ["--endpoint", "a=1", "--key-file", &key, "--listen", &addr];
        let out = vespa(&base);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{stderr}");
        assert!(
            stderr.contains("--master-token") && stderr.contains("--insecure"),
            "{stderr}"
        );
        // With a token it gets as far as binding (taken here, so exit 1, not 64).
        let out = vespa(&[&base[..], &["--master-token", "t"]].concat());
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let both = vespa(&[&base[..], &["--master-token", "t", "--insecure"]].concat());
        assert_eq!(both.status.code(), Some(64));
        assert!(String::from_utf8_lossy(&both.stderr).contains("--insecure"));
    }

    #[test]
    fn prints_the_bound_address_on_one_line() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vespa"))
            .args(["autoscaler", "--listen", "127.0.0.1:0", "--endpoint", "a=1"])
            .args(["--key-file", &format!("{FIXTURES}rsa_key.pem")])
            .env_clear()
            .env("MASTER_TOKEN", "from-the-environment")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let addr = line.trim().strip_prefix("listening on http://127.0.0.1:");
        let port: u16 = addr.and_then(|p| p.parse().ok()).unwrap_or(0);
        assert_ne!(port, 0, "{line:?}");
    }
}
