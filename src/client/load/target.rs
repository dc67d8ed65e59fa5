//! What a load run sends requests to: one worker, an endpoint (routed and signed), or any
//! plain HTTP URL (e.g. `vespa proxy`).
//!
//! Internal: plain http goes through hyper's client, the lightest on the CPU it shares with
//! the server under test; https through reqwest, whose rustls connector is already built
//! in, rather than a second TLS connector for hyper.

use super::report::Sample;
use crate::client::{Client, ClientError, ClientRequest, SERVED_BY_HEADER, ServedBy};
use crate::http_util::{Body, BoxError, strip_hop_by_hop};
use crate::tls::client::WorkerCa;
use bytes::Bytes;
use http::{HeaderValue, Method, Response};
use http_body_util::BodyExt;
use std::time::{Duration, Instant};

/// Where requests go.
#[derive(Debug, Clone)]
pub enum Target {
    /// Through the client library: an endpoint via the autoscaler, or one worker directly.
    Client(Client),
    /// Plain requests to `base` + path.
    Plain {
        /// HTTP client (boxed: it is large next to [`Client`]).
        http: Box<PlainClient>,
        /// Base URL without a trailing slash.
        base: String,
    },
    /// Plain requests to an https `base` + path.
    Https {
        /// HTTP client, from [`https_client`].
        http: reqwest::Client,
        /// Base URL without a trailing slash.
        base: String,
    },
}

/// A client for [`Target::Https`]: trusting only `ca` when given, else the system's roots.
pub fn https_client(ca: Option<&WorkerCa>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX);
    if let Some(ca) = ca {
        builder = builder.tls_backend_preconfigured(ca.client_config().map_err(|e| e.to_string())?);
    }
    builder.build().map_err(|e| format!("HTTP client: {e}"))
}

/// The HTTP client of [`Target::Plain`]: hyper's pooled client, the lightest on the CPU it
/// shares with the server under test.
pub type PlainClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
>;

/// A [`PlainClient`] with `TCP_NODELAY` and a pool large enough for any concurrency.
pub fn plain_client() -> Box<PlainClient> {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    Box::new(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(usize::MAX)
            .build(connector),
    )
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Job {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// JSON body, if any.
    pub body: Option<Bytes>,
}

fn client_error_class(e: &ClientError) -> &'static str {
    if e.is_no_worker() {
        "no_worker"
    } else if e.is_auth() {
        "endpoint_auth"
    } else if e.is_unknown_endpoint() {
        "unknown_endpoint"
    } else if e.is_autoscaler_unavailable() {
        "autoscaler_unavailable"
    } else if e.is_route_rejected() {
        "route_rejected"
    } else if e.is_worker_unavailable() {
        "worker_unavailable"
    } else if e.is_worker_tls() {
        "worker_tls"
    } else if e.is_worker_ca() {
        "worker_ca"
    } else {
        "config"
    }
}

fn hyper_class(e: &hyper_util::client::legacy::Error) -> &'static str {
    if e.is_connect() { "connect" } else { "request" }
}

fn reqwest_class(e: &reqwest::Error) -> &'static str {
    if crate::client::workers::tls_failure(e).is_some() {
        "tls"
    } else if e.is_connect() {
        "connect"
    } else {
        "request"
    }
}

impl Target {
    async fn send(&self, job: Job) -> Result<Response<Body>, &'static str> {
        match self {
            Target::Client(c) => {
                let mut req = ClientRequest::new(job.method, job.path);
                if let Some(b) = job.body {
                    req = req.body(b, HeaderValue::from_static("application/json"));
                }
                c.request(req).await.map_err(|e| client_error_class(&e))
            }
            Target::Plain { http, base } => {
                let mut req = http::Request::builder()
                    .method(job.method)
                    .uri(format!("{base}{}", job.path));
                if job.body.is_some() {
                    req = req.header(http::header::CONTENT_TYPE, "application/json");
                }
                let req = req
                    .body(http_body_util::Full::new(job.body.unwrap_or_default()))
                    .map_err(|_| "request")?;
                let resp = http.request(req).await.map_err(|e| hyper_class(&e))?;
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                let body = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
                Ok(Response::from_parts(parts, body))
            }
            Target::Https { http, base } => {
                let mut req = http.request(job.method, format!("{base}{}", job.path));
                if let Some(body) = job.body {
                    req = req
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(body);
                }
                let resp = req.send().await.map_err(|e| reqwest_class(&e))?;
                let mut resp = http::Response::from(resp);
                strip_hop_by_hop(resp.headers_mut());
                Ok(resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()))
            }
        }
    }

    /// Sends `job` and reads the whole answer, within `timeout`.
    pub async fn run(&self, job: Job, timeout: Duration) -> Sample {
        let t0 = Instant::now();
        let mut sample = Sample {
            latency: Duration::ZERO,
            ttfb: None,
            status: None,
            error: None,
            worker: None,
        };
        let attempt = async {
            let resp = match self.send(job).await {
                Ok(r) => r,
                Err(class) => {
                    sample.error = Some(class);
                    return;
                }
            };
            sample.status = Some(resp.status().as_u16());
            sample.worker = resp
                .extensions()
                .get::<ServedBy>()
                .map(|s| s.0.clone())
                .or_else(|| {
                    resp.headers()
                        .get(SERVED_BY_HEADER)?
                        .to_str()
                        .ok()
                        .map(str::to_string)
                });
            let mut body = resp.into_body();
            loop {
                match body.frame().await {
                    None => return,
                    Some(Ok(f)) => {
                        if f.is_data() && sample.ttfb.is_none() {
                            sample.ttfb = Some(t0.elapsed());
                        }
                    }
                    Some(Err(_)) => {
                        sample.error = Some("body");
                        return;
                    }
                }
            }
        };
        if tokio::time::timeout(timeout, attempt).await.is_err() {
            sample.error = Some("timeout");
        }
        sample.latency = t0.elapsed();
        sample
    }
}
