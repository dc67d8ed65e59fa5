//! The Vast root CA: downloaded once from the console (a loopback fake here) and cached.

use super::*;
use http::StatusCode;
use vespa::tls::vast_ca::{CA_PATH, default_cache_path, fetch_cached, worker_ca};

/// A fake console serving `body` with `status` at the CA path, counting requests.
pub struct Console {
    pub url: String,
    pub hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Console {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn console(status: StatusCode, body: &str) -> Console {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let (counter, body) = (hits.clone(), body.to_string());
    let task = tokio::spawn(vespa::serve::accept_loop(listener, move |req| {
        let (counter, body) = (counter.clone(), body.clone());
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut resp = Response::new(full(body));
            if req.uri().path() != CA_PATH {
                *resp.status_mut() = StatusCode::NOT_FOUND;
            } else {
                *resp.status_mut() = status;
            }
            resp
        }
    }));
    Console { url, hits, task }
}

/// True when `ca` verifies the certificate of `https`.
async fn trusts(ca: &WorkerCa, https: &Https) -> bool {
    connect(https.server.addr, ca, &[b"http/1.1"]).await.is_ok()
}

#[tokio::test]
async fn vast_ca_is_downloaded_once_and_cached() {
    let vast = Https::start(Ca::vast_quirk(), "127.0.0.1").await;
    let other = Https::start(Ca::new(), "127.0.0.1").await;
    let console = console(StatusCode::OK, &vast.ca.pem).await;
    let dir = TempDir::new();
    let cache = dir.path("cache/vast_root_ca.cer");

    let first = fetch_cached(&console.url, &cache).await.unwrap();
    assert_eq!(console.hits.load(Ordering::SeqCst), 1);
    assert_eq!(std::fs::read_to_string(&cache).unwrap(), vast.ca.pem);
    let second = fetch_cached(&console.url, &cache).await.unwrap();
    assert_eq!(console.hits.load(Ordering::SeqCst), 1);

    assert!(trusts(&first, &vast).await);
    assert!(trusts(&second, &vast).await);
    assert!(!trusts(&second, &other).await);
}

#[tokio::test]
async fn unusable_cache_is_downloaded_again() {
    let vast = Https::start(Ca::new(), "127.0.0.1").await;
    let console = console(StatusCode::OK, &vast.ca.pem).await;
    let dir = TempDir::new();
    let cache = dir.path("vast_root_ca.cer");
    std::fs::write(&cache, "garbage").unwrap();

    let ca = fetch_cached(&console.url, &cache).await.unwrap();
    assert_eq!(console.hits.load(Ordering::SeqCst), 1);
    assert!(trusts(&ca, &vast).await);
}

#[tokio::test]
async fn ca_file_is_used_without_downloading() {
    let given = Https::start(Ca::new(), "127.0.0.1").await;
    let console = console(StatusCode::OK, &Ca::new().pem).await;
    let dir = TempDir::new();
    let file = dir.path("ca.pem");
    std::fs::write(&file, &given.ca.pem).unwrap();

    let ca = worker_ca(Some(&file), &console.url, &dir.path("cache.cer"))
        .await
        .unwrap();
    assert_eq!(console.hits.load(Ordering::SeqCst), 0);
    assert!(trusts(&ca, &given).await);
}

#[tokio::test]
async fn missing_ca_file_is_an_error_naming_it() {
    let dir = TempDir::new();
    let file = dir.path("absent.pem");

    let err = worker_ca(Some(&file), "http://127.0.0.1:1", &dir.path("c"))
        .await
        .unwrap_err();
    assert!(err.is_missing());
    assert_eq!(err.path(), Some(file.as_path()));
}

#[tokio::test]
async fn failed_download_is_a_fetch_error() {
    let console = console(StatusCode::NOT_FOUND, "").await;
    let dir = TempDir::new();

    let err = fetch_cached(&console.url, &dir.path("c.cer"))
        .await
        .unwrap_err();
    assert!(err.is_fetch(), "{err}");
}

#[tokio::test]
async fn download_that_is_not_a_certificate_is_refused_and_not_cached() {
    let console = console(StatusCode::OK, "<html>maintenance</html>").await;
    let dir = TempDir::new();
    let cache = dir.path("c.cer");

    let err = fetch_cached(&console.url, &cache).await.unwrap_err();
    assert!(err.is_fetch(), "{err}");
    assert!(!cache.exists());
}

#[test]
fn cache_path_prefers_xdg_cache_home_then_home() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    assert_eq!(
        default_cache_path(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])),
        Path::new("/x/vespa/vast_root_ca.cer")
    );
    assert_eq!(
        default_cache_path(env(&[("XDG_CACHE_HOME", ""), ("HOME", "/h")])),
        Path::new("/h/.cache/vespa/vast_root_ca.cer")
    );
    assert!(default_cache_path(env(&[])).starts_with(std::env::temp_dir()));
}

/// How the client library's worker calls use the CA: reqwest with the rustls configuration.
#[tokio::test]
async fn reqwest_with_the_worker_ca_reaches_an_https_worker() {
    let https = Https::start(Ca::vast_quirk(), "127.0.0.1").await;
    let config = https.ca.worker_ca().client_config().unwrap();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .no_proxy()
        .build()
        .unwrap();

    let resp = client
        .get(format!("https://{}/", https.server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
}
