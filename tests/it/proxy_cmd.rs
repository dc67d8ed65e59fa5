//! `vespa proxy`: plain HTTP in, routed and signed requests out, responses streamed back;
//! errors that say whose fault they were; the `vespa proxy` command line.

use crate::client::mock_console;
use crate::support::*;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use vespa::autoscaler::Autoscaler;
use vespa::client::discovery::{DEFAULT_CONSOLE_URL, DiscoveryError};
use vespa::client::proxy::{Discovery, Proxy, ProxyConfig, ProxyError};

/// A backend speaking OpenAI chat completions: JSON, or SSE with one event per word.
pub async fn openai_chat_backend() -> Backend {
    Backend::start(|seen| async move {
        let req: Value = serde_json::from_slice(&seen.body).unwrap_or(Value::Null);
        let words = ["Hello", " from", " vespa"];
        if req["stream"] == true {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            for w in words {
                let ev = json!({"id": "c-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": null}]});
                tx.send(Bytes::from(format!("data: {ev}\n\n"))).unwrap();
            }
            tx.send(Bytes::from_static(b"data: [DONE]\n\n")).unwrap();
            return streaming("text/event-stream", "sse", rx, seen.events);
        }
        json(
            200,
            json!({"id": "c-1", "object": "chat.completion", "created": 1, "model": "m",
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": words.concat()}}],
                   "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}}),
        )
    })
    .await
}

fn chat(stream: bool) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16, "stream": stream})
}

#[tokio::test]
async fn proxy_relays_json_and_sse_through_a_signed_worker() {
    let mut backend = openai_chat_backend().await;
    let flow = Chain::start(backend.url(), |c| {
        c.profile = Some(std::sync::Arc::new(
            vespa::profile::Profile::resolve("openai-chat").unwrap(),
        ));
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", flow.proxy.url());

    let resp = http.post(&url).json(&chat(false)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from vespa");
    let seen = backend.next_request().await;
    assert_eq!(seen.uri, "/v1/chat/completions");
    assert_eq!(
        serde_json::from_slice::<Value>(&seen.body).unwrap(),
        chat(false)
    );

    let resp = http.post(&url).json(&chat(true)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    assert_eq!(text.matches("data: ").count(), 4, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");

    let snap = assert_settled(&flow.worker).await;
    assert_eq!(snap.totals.served.requests, 2);
    assert_eq!(
        snap.totals.served.workload, 32.0,
        "the profile's max_tokens rule priced each request at 16"
    );
}

#[tokio::test]
async fn sse_frames_pass_through_the_proxy_one_by_one() {
    let (backend, chunks) = streaming_backend("sse").await;
    let flow = Chain::start(backend.url(), |_| {}).await;
    let client = h1_client();
    let req = request(
        "POST",
        &format!("{}/v1/completions", flow.proxy.url()),
        chat(true).to_string(),
    );
    let resp = tokio::time::timeout(PATIENCE, client.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    for i in 0..3 {
        let event = format!("data: {i}\n\n");
        chunks.send(Bytes::from(event.clone())).unwrap();
        let frame = tokio::time::timeout(PATIENCE, body.frame())
            .await
            .expect("each event arrives before the next is produced")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), event);
    }
    drop(chunks);
    let rest = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .unwrap()
        .unwrap();
    assert!(rest.to_bytes().is_empty());
}

#[tokio::test]
async fn proxy_health_is_its_own_and_backend_health_is_proxied() {
    let backend = openai_chat_backend().await;
    let flow = Chain::start(backend.url(), |_| {}).await;
    let http = reqwest::Client::new();
    let own: Value = http
        .get(format!("{}/_vespa/proxy/health", flow.proxy.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(own, json!({"status": "healthy", "endpoint": "ep"}));
    let resp = http
        .get(format!("{}/health", flow.proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok", "the backend's /health");
}

#[tokio::test]
async fn debug_worker_url_skips_routing_and_hop_by_hop_headers_stop_at_the_proxy() {
    // An unsecured worker accepts the unsigned synthetic auth_data.
    let backend = openai_chat_backend().await;
    let worker = start_worker(config(&backend)).await;
    let nowhere = refused_url().await;
    let mut c = test_config(&nowhere, "ep", "");
    c.debug_worker_url = Some(url(&worker, ""));
    let proxy = start_proxy(c).await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(assert_settled(&worker).await.totals.served.requests, 1);

    // Straight at a recording server: what the proxy itself sends and returns.
    let mut raw = Backend::start(|_| async {
        let mut r = json(200, json!({}));
        let h = r.headers_mut();
        h.insert("connection", "x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        r
    })
    .await;
    let mut c = test_config(&nowhere, "ep", "");
    c.debug_worker_url = Some(raw.url().to_string());
    let proxy = start_proxy(c).await;
    let resp = http
        .post(format!("{}/v1/x?q=1", proxy.url()))
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("proxy-authorization", "secret")
        .header("x-serverless-cost", "9")
        .header("x-kept", "1")
        .json(&json!({"a": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-secret").is_none(), "{resp:?}");
    assert_eq!(resp.headers()["x-kept"], "1");
    let seen = raw.next_request().await;
    assert_eq!(seen.uri, "/v1/x?q=1");
    for gone in ["x-hop", "proxy-authorization", "x-serverless-cost"] {
        assert!(
            seen.headers.get(gone).is_none(),
            "{gone}: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.headers["x-kept"], "1");
    let env: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(env["payload"], json!({"a": 1}));
    assert_eq!(env["auth_data"]["cost"], 9.0);
    assert!(env["auth_data"]["reqnum"].as_u64().unwrap() > 0);
}

/// `POST /v1/completions` through `proxy`.
pub async fn post_completion(proxy: &Proxy) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/completions", proxy.url()))
        .json(&json!({"prompt": "hi"}))
        .send()
        .await
        .unwrap()
}

/// Status, headers and JSON body of a request the proxy fails.
pub async fn error_of(proxy: &Proxy) -> (StatusCode, http::HeaderMap, Value) {
    let resp = post_completion(proxy).await;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap())
}

#[tokio::test]
async fn proxy_errors_say_whose_fault_it_was() {
    let autoscaler = Autoscaler::start(local_autoscaler("ep", KEY))
        .await
        .unwrap();
    let a = autoscaler.url();
    let nowhere = refused_url().await;
    let mut no_worker = test_config(&a, "ep", KEY);
    no_worker.route_timeout = Duration::from_millis(100);
    let mut unreachable = test_config(&nowhere, "ep", KEY);
    unreachable.max_attempts = 2;
    let mut dead_worker = test_config(&nowhere, "ep", KEY);
    dead_worker.debug_worker_url = Some(nowhere.clone());
    let cases = [
        (test_config(&a, "ep", "bad-key"), 401, "endpoint_auth"),
        (test_config(&a, "no-such-ep", KEY), 404, "unknown_endpoint"),
        (no_worker, 503, "no_worker"),
        (unreachable, 502, "autoscaler_unavailable"),
        (dead_worker, 502, "worker_unavailable"),
    ];
    for (config, status, code) in cases {
        let proxy = start_proxy(config).await;
        let (got, headers, body) = error_of(&proxy).await;
        assert_eq!(
            (got.as_u16(), body["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(body["error"].as_str().unwrap().len() > 10, "{body}");
        assert_eq!(
            headers.get("retry-after").is_some(),
            code == "no_worker",
            "{headers:?}"
        );
    }
}

#[tokio::test]
async fn account_key_discovery_finds_the_endpoint_key_at_start() {
    let backend = openai_chat_backend().await;
    let autoscaler = Autoscaler::start(local_autoscaler("ep", KEY))
        .await
        .unwrap();
    let _worker = signed_worker(&backend, &autoscaler, 1).await;
    let console = mock_console(json!({"results": [{"endpoint_name": "ep", "api_key": KEY}]})).await;
    let discover = |account_key: &str| {
        let mut c = ProxyConfig::new(test_config(&autoscaler.url(), "ep", ""));
        c.listen = "127.0.0.1:0".parse().unwrap();
        c.discovery = Some(Discovery {
            console_url: console.url().to_string(),
            account_key: account_key.into(),
        });
        c
    };
    let proxy = Proxy::start(discover("acct-key")).await.unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let err = Proxy::start(discover("wrong")).await.unwrap_err();
    assert!(
        matches!(
            err,
            ProxyError::Discovery(DiscoveryError::BadAccountKey { .. })
        ),
        "{err}"
    );
    assert!(DEFAULT_CONSOLE_URL.starts_with("https://"));
}

fn vespa_cmd(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_vespa"));
    cmd.arg("proxy").args(args).env_clear().kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn invalid_proxy_flags_exit_64_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--endpoint", "ep"], "--api-key"),
        (&["--api-key", "k"], "--endpoint"),
        (
            &["--endpoint", "ep", "--api-key", "k", "--listen", "x"],
            "--listen",
        ),
        (
            &[
                "--endpoint",
                "ep",
                "--api-key",
                "k",
                "--route-timeout",
                "soon",
            ],
            "--route-timeout",
        ),
        (
            &[
                "--endpoint",
                "ep",
                "--api-key",
                "k",
                "--autoscaler-url",
                "run.vast.ai",
            ],
            "--autoscaler-url",
        ),
    ];
    for (args, flag) in cases {
        let out = vespa_cmd(args).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn vespa_proxy_prints_its_address_and_serves() {
    let backend = openai_chat_backend().await;
    let worker = start_worker(config(&backend)).await;
    let mut child = vespa_cmd(&[
        "--listen",
        "127.0.0.1:0",
        "--debug-worker-url",
        &url(&worker, ""),
    ])
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("the address in time")
        .unwrap()
        .unwrap();
    let base = line.strip_prefix("listening on ").expect(&line).to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    child.kill().await.unwrap();
}

#[tokio::test]
async fn openai_python_sdk_works_through_the_proxy_unchanged() {
    let backend = openai_chat_backend().await;
    let flow = Chain::start(backend.url(), |c| {
        c.profile = Some(std::sync::Arc::new(
            vespa::profile::Profile::resolve("openai-chat").unwrap(),
        ));
    })
    .await;
    run_python_script(
        "test_openai_proxy.py",
        &[
            ("VESPA_PROXY_URL", flow.proxy.url().as_str()),
            ("VESPA_EXPECTED_TEXT", "Hello from vespa"),
        ],
    )
    .await;
    let snap = assert_settled(&flow.worker).await;
    assert_eq!(snap.totals.served.requests, 2);
    assert_eq!(snap.totals.served.workload, 32.0, "max_tokens 16 each");
}
