//! https workers from the client side (the library, `vespa proxy`, `vespa load`): verified
//! against the CA given (`--ca-cert` / `VAST_CA_CERT`), else Vast's root CA fetched once from
//! the console and cached; chain and address checks kept; plain http never fetches anything.

use crate::proxy_cmd::{error_of, post_completion};
use crate::support::*;
use crate::tls::vast_ca::{Console, console};
use crate::tls::{Ca, Https, TempDir};
use http::StatusCode;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use vespa::client::load::{Live, plan_from_args, run_load};
use vespa::client::proxy::{Proxy, ProxyArgs, ProxyConfig};
use vespa::client::{Client, ClientConfig, ClientError, ClientRequest};

fn https_url(worker: &Https) -> String {
    format!("https://{}", worker.server.addr)
}

/// A client sending straight to `worker`, fetching Vast's CA (if it needs it) from `console`
/// into `cache`.
fn config(worker: &str, console: &Console, cache: &Path) -> ClientConfig {
    let mut c = test_config(worker, "ep", "");
    c.debug_worker_url = Some(worker.to_string());
    c.console_url = console.url.clone();
    c.ca_cache = cache.to_path_buf();
    c
}

/// The status of one request through `client`, or why it failed; a hang fails the test.
async fn call(client: &Client) -> Result<u16, ClientError> {
    let req = ClientRequest::post_json("/v1/completions", &json!({"prompt": "hi"}));
    let resp = tokio::time::timeout(PATIENCE, client.request(req))
        .await
        .expect("an answer, not a hang")?;
    Ok(resp.status().as_u16())
}

fn hits(console: &Console) -> usize {
    console.hits.load(Ordering::SeqCst)
}

#[tokio::test]
async fn client_reaches_an_https_worker_signed_by_the_quirky_ca_it_was_given() {
    let worker = Https::start(Ca::vast_quirk(), "127.0.0.1").await;
    let console = console(StatusCode::OK, &Ca::new().pem).await;
    let dir = TempDir::new();
    let mut c = config(&https_url(&worker), &console, &dir.path("ca.cer"));
    c.worker_ca = Some(worker.ca.worker_ca());

    assert_eq!(call(&Client::new(c).unwrap()).await.unwrap(), 200);
    assert_eq!(hits(&console), 0);
}

#[tokio::test]
async fn client_refuses_an_https_worker_signed_by_another_ca() {
    let worker = Https::start(Ca::new(), "127.0.0.1").await;
    let console = console(StatusCode::OK, &Ca::new().pem).await;
    let dir = TempDir::new();
    let mut c = config(&https_url(&worker), &console, &dir.path("ca.cer"));
    c.worker_ca = Some(Ca::vast_quirk().worker_ca());

    let err = call(&Client::new(c).unwrap()).await.unwrap_err();
    assert!(err.is_worker_tls(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("UnknownIssuer") && msg.contains("--ca-cert"),
        "{msg}"
    );
}

#[tokio::test]
async fn client_refuses_a_certificate_for_another_address() {
    let worker = Https::start(Ca::vast_quirk(), "10.1.2.3").await;
    let console = console(StatusCode::OK, &worker.ca.pem).await;
    let dir = TempDir::new();
    let mut c = config(&https_url(&worker), &console, &dir.path("ca.cer"));
    c.worker_ca = Some(worker.ca.worker_ca());

    let err = call(&Client::new(c).unwrap()).await.unwrap_err();
    assert!(err.is_worker_tls(), "{err}");
    assert!(err.to_string().contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn without_a_ca_vast_ca_is_fetched_once_and_the_next_client_uses_the_cache() {
    let worker = Https::start(Ca::vast_quirk(), "127.0.0.1").await;
    let console = console(StatusCode::OK, &worker.ca.pem).await;
    let dir = TempDir::new();
    let cache = dir.path("cache/vespa/vast_root_ca.cer");
    let first = Client::new(config(&https_url(&worker), &console, &cache)).unwrap();

    // Two first requests at once share one download.
    let (a, b) = tokio::join!(call(&first), call(&first));
    assert_eq!((a.unwrap(), b.unwrap()), (200, 200));
    assert_eq!(call(&first).await.unwrap(), 200);
    assert_eq!(hits(&console), 1);
    assert_eq!(std::fs::read_to_string(&cache).unwrap(), worker.ca.pem);

    let second = Client::new(config(&https_url(&worker), &console, &cache)).unwrap();
    assert_eq!(call(&second).await.unwrap(), 200);
    assert_eq!(hits(&console), 1);
}

#[tokio::test]
async fn a_fetched_ca_keeps_the_chain_check() {
    let worker = Https::start(Ca::new(), "127.0.0.1").await;
    let console = console(StatusCode::OK, &Ca::vast_quirk().pem).await;
    let dir = TempDir::new();
    let client = Client::new(config(&https_url(&worker), &console, &dir.path("ca.cer"))).unwrap();

    let err = call(&client).await.unwrap_err();
    assert!(err.is_worker_tls(), "{err}");
    assert_eq!(hits(&console), 1);
}

#[tokio::test]
async fn a_failed_ca_download_is_a_clear_error_and_is_tried_again() {
    let worker = Https::start(Ca::vast_quirk(), "127.0.0.1").await;
    let console = console(StatusCode::NOT_FOUND, "").await;
    let dir = TempDir::new();
    let cache = dir.path("ca.cer");
    let client = Client::new(config(&https_url(&worker), &console, &cache)).unwrap();

    let err = call(&client).await.unwrap_err();
    assert!(err.is_worker_ca(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&console.url) && msg.contains("--ca-cert"),
        "{msg}"
    );
    assert!(call(&client).await.unwrap_err().is_worker_ca());
    assert_eq!(hits(&console), 2);
    assert!(!cache.exists());
}

#[tokio::test]
async fn plain_http_workers_never_fetch_a_ca() {
    let backend = Backend::start(|_| async { json(200, json!({})) }).await;
    let console = console(StatusCode::OK, &Ca::new().pem).await;
    let dir = TempDir::new();
    let cache = dir.path("ca.cer");
    let worker = backend.url().to_string();
    let client = Client::new(config(worker.trim_end_matches('/'), &console, &cache)).unwrap();

    assert_eq!(call(&client).await.unwrap(), 200);
    assert_eq!(hits(&console), 0);
    assert!(!cache.exists());
}

/// `vespa proxy` flags in front of `worker`, with the CA file given by flag or by variable.
fn proxy_args(worker: &Https, console: &Console) -> ProxyArgs {
    ProxyArgs {
        listen: Some("127.0.0.1:0".into()),
        debug_worker_url: Some(https_url(worker)),
        console_url: Some(console.url.clone()),
        ..ProxyArgs::default()
    }
}

#[tokio::test]
async fn proxy_reaches_an_https_worker_with_ca_cert_or_vast_ca_cert() {
    let worker = Https::start(Ca::vast_quirk(), "127.0.0.1").await;
    let console = console(StatusCode::OK, &Ca::new().pem).await;
    let file = worker.dir.path("vast-ca.pem");
    std::fs::write(&file, &worker.ca.pem).unwrap();
    let path = file.to_str().unwrap();
    let by_flag = ProxyArgs {
        ca_cert: Some(path.into()),
        ..proxy_args(&worker, &console)
    };
    let empty: [(&str, &str); 0] = [];
    let configs = [
        ProxyConfig::from_args(&by_flag, &empty).unwrap(),
        ProxyConfig::from_args(&proxy_args(&worker, &console), &[("VAST_CA_CERT", path)]).unwrap(),
    ];

    for config in configs {
        let proxy = Proxy::start(config).await.unwrap();
        let resp = post_completion(&proxy).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["x-vespa-worker"],
            https_url(&worker).as_str()
        );
    }
    assert_eq!(hits(&console), 0);
}

#[tokio::test]
async fn proxy_answers_502_worker_tls_for_a_worker_the_ca_does_not_verify() {
    let worker = Https::start(Ca::new(), "127.0.0.1").await;
    let console = console(StatusCode::OK, &Ca::new().pem).await;
    let file = worker.dir.path("other-ca.pem");
    std::fs::write(&file, Ca::vast_quirk().pem).unwrap();
    let args = ProxyArgs {
        ca_cert: Some(file.to_str().unwrap().into()),
        ..proxy_args(&worker, &console)
    };
    let empty: [(&str, &str); 0] = [];
    let proxy = Proxy::start(ProxyConfig::from_args(&args, &empty).unwrap())
        .await
        .unwrap();

    let (status, _, body) = error_of(&proxy).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("worker_tls"))
    );
}

#[tokio::test]
async fn a_missing_or_invalid_ca_file_exits_64_naming_the_file_before_binding() {
    let dir = TempDir::new();
    let missing = dir.path("missing.pem");
    let garbage = dir.path("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    // The proxy would listen on a busy port, so exit 64 shows nothing was bound first.
    let busy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let worker = "https://127.0.0.1:1";
    for file in [&missing, &garbage] {
        let path = file.to_str().unwrap();
        let proxy = ["proxy", "--listen", &busy, "--debug-worker-url", worker];
        let load = ["load", "--worker", worker, "-n", "1"];
        for (cmd, by_env) in [(&proxy[..], false), (&proxy[..], true), (&load[..], false)] {
            let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_vespa"));
            command.args(cmd).env_clear().kill_on_drop(true);
            if by_env {
                command.env("VAST_CA_CERT", path);
            } else {
                command.args(["--ca-cert", path]);
            }
            let out = tokio::time::timeout(PATIENCE, command.output())
                .await
                .unwrap()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{cmd:?}: {stderr}");
            assert!(stderr.contains(path), "{cmd:?}: {stderr}");
        }
    }
}

/// `vespa load` flags for four requests to `target` (`--worker` or `--url`), trusting the
/// CA in `ca`.
fn load_args(flag: &str, target: String, ca: &Path) -> vespa::client::load::LoadArgs {
    let mut a = vespa::client::load::LoadArgs {
        requests: Some(4),
        concurrency: Some(2),
        timeout: PATIENCE.as_secs_f64(),
        ca_cert: Some(ca.to_str().unwrap().into()),
        ..Default::default()
    };
    match flag {
        "--worker" => a.worker = Some(target),
        _ => a.url = Some(target),
    }
    a
}

async fn load(args: &vespa::client::load::LoadArgs) -> vespa::client::load::LoadReport {
    let empty: [(&str, &str); 0] = [];
    let (target, generator, plan) = plan_from_args(args, &empty).unwrap();
    tokio::time::timeout(
        PATIENCE,
        run_load(target, generator, plan, Arc::new(Live::default())),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn load_reaches_an_https_worker_or_url_with_ca_cert() {
    let worker = Https::start(Ca::vast_quirk(), "127.0.0.1").await;
    let good = worker.dir.path("vast-ca.pem");
    std::fs::write(&good, &worker.ca.pem).unwrap();
    let other = worker.dir.path("other-ca.pem");
    std::fs::write(&other, Ca::new().pem).unwrap();

    for flag in ["--worker", "--url"] {
        let report = load(&load_args(flag, https_url(&worker), &good)).await;
        assert_eq!(report.ok, 4, "{flag}: {report:?}");
        let report = load(&load_args(flag, https_url(&worker), &other)).await;
        assert_eq!(report.ok, 0, "{flag}: {report:?}");
        let class = if flag == "--worker" {
            "worker_tls"
        } else {
            "tls"
        };
        assert_eq!(report.errors.get(class), Some(&4), "{flag}: {report:?}");
    }
}
