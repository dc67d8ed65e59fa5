//! Signed mode: the public key from the autoscaler, and 401 for anything it did not sign.

use crate::fake_autoscaler::FakeAutoscaler;
use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;
use vespa::signing::SignatureForm;
use vespa::worker::Worker;
use vespa::worker::config::WorkerConfig;
use vespa::worker::lifecycle::State;

fn signed_config(backend: &Backend, autoscaler: &FakeAutoscaler) -> WorkerConfig {
    let mut c = config(backend);
    c.unsecured = false;
    c.vast.report_addrs = vec![autoscaler.url().parse().unwrap()];
    c.report_tick = Duration::from_millis(20);
    c.report_retry_pause = Duration::from_millis(10);
    c.pubkey_backoff_unit = Duration::from_millis(10);
    c
}

fn body(auth: Value, payload: Value) -> String {
    json!({"auth_data": auth, "session_id": null, "payload": payload}).to_string()
}

#[tokio::test]
async fn signed_requests_are_served_and_forgeries_get_401() {
    let mut backend = Backend::start(|_| async { json(200, json!({"ok": true})) }).await;
    let mut autoscaler = FakeAutoscaler::start(true).await;
    let worker = start_worker(signed_config(&backend, &autoscaler)).await;
    let me = format!("http://{}", worker.local_addr());
    let client = h1_client();
    let post = |b: String| request("POST", &url(&worker, "/v1/completions"), b);

    let good = autoscaler.auth_data(&me, 1, json!(8));
    let (head, _) = send(&client, post(body(good.clone(), json!({"prompt": "x"})))).await;
    assert_eq!(head.status, 200);
    assert_eq!(backend.next_request().await.uri, "/v1/completions");

    let mut bad_sig = good.clone();
    bad_sig["signature"] = json!("AAAA");
    let mut bad_url = autoscaler.auth_data(&me, 2, json!(8));
    bad_url["url"] = json!("http://203.0.113.9:1");
    let other = FakeAutoscaler::start(true).await;
    let foreign = other.auth_data(&me, 3, json!(8));
    for (what, auth) in [
        ("tampered signature", bad_sig),
        ("tampered url", bad_url),
        ("another key", foreign),
    ] {
        let (head, b) = send(&client, post(body(auth, json!({})))).await;
        assert_eq!(head.status, 401, "{what}");
        assert_eq!(
            serde_json::from_slice::<Value>(&b).unwrap()["code"],
            "invalid_signature",
            "{what}"
        );
    }
    // A plain body and a non-JSON body without query auth are refused outright.
    let (head, _) = send(&client, post(json!({"prompt": "x"}).to_string())).await;
    assert_eq!(head.status, 422);
    backend.assert_quiet();
    // Forgeries never reach the books: their own counter, no record, no received count.
    let last = autoscaler.auth_data(&me, 10, json!(8));
    let (head, _) = send(&client, post(body(last, json!({})))).await;
    assert_eq!(head.status, 200);
    let snap = assert_settled(&worker).await;
    assert_eq!(
        (snap.totals.served.requests, snap.totals.rejected.requests),
        (2, 0)
    );
    assert_eq!(worker.shared().unauthorized_total(), 3);
    let mut reported = Vec::new();
    while !reported.contains(&10) {
        let batch = tokio::time::timeout(PATIENCE, autoscaler.deletes.recv())
            .await
            .expect("a deletion report")
            .unwrap();
        reported.extend(
            batch["requests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["request_idx"].as_u64().unwrap()),
        );
    }
    assert_eq!(reported, vec![1, 10], "no record for a forged request");
    let report = autoscaler
        .status_where(|r| r["num_requests_recieved"] == 2)
        .await;
    assert_eq!(report["rej_load"], 0.0);
}

#[tokio::test]
async fn a_worker_verifies_its_url_signature_once_and_still_refuses_forgeries() {
    let backend = Backend::start(|_| async { json(200, json!({"ok": true})) }).await;
    let autoscaler = FakeAutoscaler::start(true).await;
    let worker = start_worker(signed_config(&backend, &autoscaler)).await;
    let me = format!("http://{}", worker.local_addr());
    let client = h1_client();
    let post = |auth| request("POST", &url(&worker, "/x"), body(auth, json!({})));
    let verifications = || worker.shared().verifier().unwrap().rsa_verifications();
    for reqnum in 1..=50 {
        let auth = autoscaler.auth_data(&me, reqnum, json!(1));
        let (head, _) = send(&client, post(auth)).await;
        assert_eq!(head.status, 200, "request {reqnum}");
    }
    assert_eq!(verifications(), 1, "one url, one signature: verified once");
    let good = autoscaler.auth_data(&me, 51, json!(1));
    let mut forged = good.clone();
    let sig = good["signature"].as_str().unwrap();
    let flip = if sig.starts_with('A') { "B" } else { "A" };
    forged["signature"] = json!(format!("{flip}{}", &sig[1..]));
    let other = FakeAutoscaler::start(true).await;
    for (what, auth) in [
        ("flipped", forged),
        ("another key", other.auth_data(&me, 52, json!(1))),
    ] {
        let (head, b) = send(&client, post(auth)).await;
        assert_eq!(head.status, 401, "{what}");
        assert!(
            String::from_utf8_lossy(&b).contains("invalid_signature"),
            "{what}"
        );
    }
    assert_eq!(verifications(), 3, "each forgery was checked");
    let (head, _) = send(&client, post(good)).await;
    assert_eq!(head.status, 200);
    assert_eq!(verifications(), 3);
    assert_eq!(worker.shared().unauthorized_total(), 2);
}

/// `vespa_rsa_verifications_total` as `/_vespa/metrics` shows it.
async fn rsa_verifications_metric(client: &HttpClient, worker: &Worker) -> u64 {
    let (head, text) = send(client, request("GET", &url(worker, "/_vespa/metrics"), "")).await;
    assert_eq!(head.status, 200);
    let text = String::from_utf8(text.to_vec()).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("vespa_rsa_verifications_total "))
        .unwrap_or_else(|| panic!("no vespa_rsa_verifications_total in\n{text}"));
    line.parse().unwrap()
}

#[tokio::test]
async fn the_metrics_show_one_rsa_verification_per_url_and_one_per_legacy_request() {
    const N: u64 = 20;
    let backend = Backend::start(|_| async { json(200, json!({"ok": true})) }).await;
    let autoscaler = FakeAutoscaler::start(true).await;
    let client = h1_client();
    for (form, expected) in [(SignatureForm::Url, 1), (SignatureForm::Legacy, N)] {
        let mut config = signed_config(&backend, &autoscaler);
        config.signature_form = form;
        let worker = start_worker(config).await;
        let me = format!("http://{}", worker.local_addr());
        assert_eq!(rsa_verifications_metric(&client, &worker).await, 0);
        for reqnum in 1..=N {
            let auth = match form {
                SignatureForm::Legacy => autoscaler.legacy_auth_data(&me, reqnum, json!(1)),
                _ => autoscaler.auth_data(&me, reqnum, json!(1)),
            };
            let post = request("POST", &url(&worker, "/x"), body(auth, json!({})));
            let (head, _) = send(&client, post).await;
            assert_eq!(head.status, 200, "{form:?} request {reqnum}");
        }
        assert_eq!(
            rsa_verifications_metric(&client, &worker).await,
            expected,
            "{form:?}"
        );
        assert_eq!(
            worker.shared().verifier().unwrap().rsa_verifications(),
            expected
        );
    }
}

#[tokio::test]
async fn query_auth_signs_get_requests() {
    let mut backend = Backend::start(|_| async { json(200, json!({"data": []})) }).await;
    let autoscaler = FakeAutoscaler::start(true).await;
    let worker = start_worker(signed_config(&backend, &autoscaler)).await;
    let me = format!("http://{}", worker.local_addr());
    let a = autoscaler.auth_data(&me, 4, json!(1));
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("serverless_cost", "1")
        .append_pair("serverless_endpoint", a["endpoint"].as_str().unwrap())
        .append_pair("serverless_reqnum", "4")
        .append_pair("serverless_request_idx", "4")
        .append_pair("serverless_signature", a["signature"].as_str().unwrap())
        .append_pair("serverless_url", &me)
        .append_pair("limit", "5")
        .finish();
    let (head, _) = send(
        &h1_client(),
        request("GET", &url(&worker, &format!("/v1/models?{q}")), ""),
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(backend.next_request().await.uri, "/v1/models?limit=5");
}

#[tokio::test]
async fn without_the_public_key_the_worker_is_never_ready_and_answers_401() {
    let mut backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let mut autoscaler = FakeAutoscaler::start(false).await;
    let worker = Worker::start(signed_config(&backend, &autoscaler))
        .await
        .unwrap();
    let state = wait_state(&worker, |s| matches!(s, State::Errored(_))).await;
    assert!(state.error().unwrap().contains("public key"), "{state:?}");
    let me = format!("http://{}", worker.local_addr());
    let auth = autoscaler.auth_data(&me, 1, json!(1));
    let (head, _) = send(
        &h1_client(),
        request("POST", &url(&worker, "/x"), body(auth, json!({}))),
    )
    .await;
    assert_eq!(head.status, 401);
    backend.assert_quiet();
    // The autoscaler hears why.
    let report = autoscaler
        .status_where(|r| {
            r["error_msg"]
                .as_str()
                .is_some_and(|e| e.contains("public key"))
        })
        .await;
    assert_eq!(report["loadtime"], 0.0);
    assert_eq!(report["max_perf"], 0.0);
    // The worker keeps trying: once the key is served it becomes ready, no restart.
    autoscaler.serve_key();
    wait_state(&worker, |s| *s == State::Ready).await;
    let auth = autoscaler.auth_data(&me, 2, json!(1));
    let (head, _) = send(
        &h1_client(),
        request("POST", &url(&worker, "/x"), body(auth, json!({}))),
    )
    .await;
    assert_eq!(head.status, 200);
}

#[tokio::test]
async fn a_rotated_autoscaler_key_is_fetched_again_after_a_failed_signature() {
    let backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let mut autoscaler = FakeAutoscaler::start(true).await;
    let worker = start_worker(signed_config(&backend, &autoscaler)).await;
    let me = format!("http://{}", worker.local_addr());
    let client = h1_client();
    let post = |auth| request("POST", &url(&worker, "/x"), body(auth, json!({})));
    autoscaler.rotate_key();
    // The first request under the new key fails and asks for the key again.
    let (head, _) = send(&client, post(autoscaler.auth_data(&me, 1, json!(1)))).await;
    assert_eq!(head.status, 401);
    let served = tokio::time::timeout(PATIENCE, async {
        for n in 2.. {
            let (head, _) = send(&client, post(autoscaler.auth_data(&me, n, json!(1)))).await;
            if head.status == 200 {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(served.is_ok(), "the rotated key was never picked up");
}

#[tokio::test]
async fn a_signature_issued_for_another_worker_is_refused_unless_the_check_is_off() {
    let backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let autoscaler = FakeAutoscaler::start(true).await;
    let worker = start_worker(signed_config(&backend, &autoscaler)).await;
    let other = autoscaler.auth_data("http://203.0.113.9:41234", 1, json!(1));
    let post = |auth| request("POST", &url(&worker, "/x"), body(auth, json!({})));
    let (head, b) = send(&h1_client(), post(other.clone())).await;
    assert_eq!(head.status, 401);
    assert!(String::from_utf8_lossy(&b).contains("another worker"));
    let mut cfg = signed_config(&backend, &autoscaler);
    cfg.check_signed_url = false;
    let behind_nat = start_worker(cfg).await;
    let (head, _) = send(
        &h1_client(),
        request("POST", &url(&behind_nat, "/x"), body(other, json!({}))),
    )
    .await;
    assert_eq!(head.status, 200);
}
