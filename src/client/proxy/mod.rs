//! `vespa proxy`: a local HTTP port in front of an endpoint, so any HTTP client (the OpenAI
//! SDK, curl, a browser) calls a serverless endpoint as if it were the model server.
//!
//! Each request, any method and path, is routed and signed by [`Client`]: the proxy adds
//! nothing but the two protocol hops. The response streams back frame by frame (SSE,
//! NDJSON, chunked), hop-by-hop headers are dropped both ways (RFC 9110 §7.6.1), and a
//! caller that disconnects drops the worker connection with it.
//!
//! The proxy's own route is `GET /_vespa/proxy/health`, under `/_vespa/` so it can never
//! shadow a backend path (PyWorker's proxy used `/health`, which hides vLLM's own).
//! Failures the proxy makes itself are JSON `{"error", "code"}` with a status saying whose
//! fault it was; [`error_response`] is the one place that mapping lives.

mod config;
mod sessions;

pub use config::{DEFAULT_LISTEN, Discovery, ProxyArgs, ProxyConfig, SessionsConfig};
pub(crate) use config::{ca_file, url};
use sessions::Sessions;
pub use sessions::{SESSION_HEADER, SessionError};

use super::discovery::{self, DiscoveryError};
use super::send::{SERVED_BY_HEADER, ServedBy};
use super::{Client, ClientError, ClientRequest};
use crate::env::Env;
use crate::http_util::{Body, json_response, strip_hop_by_hop};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// The proxy's health route.
pub const HEALTH_PATH: &str = "/_vespa/proxy/health";
/// The proxy's sessions: `GET` lists them, `DELETE {SESSIONS_PATH}/NAME` ends one.
pub const SESSIONS_PATH: &str = "/_vespa/proxy/sessions";
/// `Retry-After` of a `503 no_worker`, seconds: the longest poll interval.
pub const NO_WORKER_RETRY_AFTER: &str = "5";

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `--account-key` lookup failed.
    #[error("endpoint discovery failed: {0}")]
    Discovery(#[from] DiscoveryError),
    /// The client configuration is invalid.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A running proxy. Dropping it closes the listener and every open connection.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    client: Client,
    max_body_size: u64,
    sessions: Sessions,
}

impl Proxy {
    /// Resolves the API key (with `discovery`), builds the client and binds.
    pub async fn start(mut config: ProxyConfig) -> Result<Proxy, ProxyError> {
        if let Some(d) = &config.discovery {
            config.client.api_key = discovery::endpoint_api_key(
                &d.console_url,
                &d.account_key,
                &config.client.endpoint,
            )
            .await?;
            tracing::info!(endpoint = %config.client.endpoint, "found the endpoint's API key at the console");
        }
        let client = Client::new(config.client)?;
        let listener = crate::serve::bind(config.listen).map_err(|source| ProxyError::Bind {
            addr: config.listen,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| ProxyError::Bind {
            addr: config.listen,
            source,
        })?;
        let state = Arc::new(State {
            client,
            max_body_size: config.max_body_size,
            sessions: Sessions::new(config.sessions),
        });
        let shared = Arc::clone(&state);
        let task = tokio::spawn(crate::serve::accept_loop(listener, move |req| {
            let state = Arc::clone(&shared);
            async move { handle(&state, req).await }
        }));
        Ok(Proxy { addr, task, state })
    }

    /// Ends every session the proxy holds (before it exits).
    pub async fn close_sessions(&self) {
        self.state.sessions.close_all(&self.state.client).await;
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    if req.uri().path() == HEALTH_PATH && req.method() == Method::GET {
        let c = state.client.config();
        return json_response(
            StatusCode::OK,
            &json!({"status": "healthy", "endpoint": c.endpoint}),
        );
    }
    if let Some(rest) = req.uri().path().strip_prefix(SESSIONS_PATH) {
        return session_route(state, req.method(), rest).await;
    }
    let (mut parts, body) = req.into_parts();
    let session = match state.sessions.name_of(&mut parts.headers) {
        Ok(s) => s,
        Err(e) => return session_error(&e),
    };
    let body = match Limited::new(body, state.max_body_size as usize)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            let msg = format!(
                "request body is larger than the proxy's limit of {} bytes (--max-body-size)",
                state.max_body_size
            );
            return refusal(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", msg);
        }
        Err(e) => {
            let msg = format!("could not read the request body: {e}");
            return refusal(StatusCode::BAD_REQUEST, "bad_request", msg);
        }
    };
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let request = ClientRequest {
        method: parts.method,
        path,
        headers,
        body,
        cost: None,
    };
    let sent = match &session {
        None => state.client.request(request).await,
        Some(name) => match state.sessions.request(&state.client, name, request).await {
            Ok(resp) => Ok(resp),
            Err(SessionError::Client(e)) => Err(e),
            Err(e) => return session_error(&e),
        },
    };
    match sent {
        Ok(mut resp) => {
            let served_by = resp.extensions().get::<ServedBy>().map(|s| s.0.clone());
            if let Some(v) = served_by.and_then(|w| HeaderValue::from_str(&w).ok()) {
                resp.headers_mut().insert(SERVED_BY_HEADER, v);
            }
            resp
        }
        Err(e) => {
            tracing::warn!(error = %e, "request failed");
            error_response(&e)
        }
    }
}

/// `GET /_vespa/proxy/sessions` and `DELETE /_vespa/proxy/sessions/NAME`.
async fn session_route(state: &State, method: &Method, rest: &str) -> Response<Body> {
    match (method, rest.strip_prefix('/')) {
        (&Method::GET, None | Some("")) => {
            json_response(StatusCode::OK, &state.sessions.list().await)
        }
        (&Method::DELETE, Some(name)) if !name.is_empty() => {
            let name = percent_decode(name);
            match state.sessions.close(&state.client, &name).await {
                Ok(true) => json_response(StatusCode::OK, &json!({"ended": name})),
                Ok(false) => refusal(
                    StatusCode::NOT_FOUND,
                    "unknown_session",
                    format!("the proxy holds no session named {name:?}"),
                ),
                Err(e) => error_response(&e),
            }
        }
        _ => refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "bad_request",
            format!("use GET {SESSIONS_PATH} or DELETE {SESSIONS_PATH}/NAME"),
        ),
    }
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("n={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn session_error(e: &SessionError) -> Response<Body> {
    match e {
        SessionError::BadName => refusal(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
        SessionError::TooMany(_) => refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_sessions",
            e.to_string(),
        ),
        SessionError::Client(e) => error_response(e),
    }
}

/// The proxy's answer for a failed request: whose fault it was, as a status and a code.
///
/// | error | status | code |
/// |---|---|---|
/// | key refused by `/route/` (401/403) | 401 | `endpoint_auth` |
/// | endpoint unknown to `/route/` (404) | 404 | `unknown_endpoint` |
/// | no worker within the route timeout | 503 + `Retry-After` | `no_worker` |
/// | autoscaler unreachable, 5xx or malformed | 502 | `autoscaler_unavailable` |
/// | `/route/` rejected the request (other 4xx) | 502 | `route_rejected` |
/// | no worker reachable after every attempt | 502 | `worker_unavailable` |
/// | TLS with an https worker failed (certificate not verified) | 502 | `worker_tls` |
/// | no CA for https workers (download failed) | 502 | `worker_ca` |
/// | bad request path | 400 | `bad_request` |
/// | a worker refused to open a session (full, draining) on every attempt | 503 + `Retry-After` | `session_unavailable` |
/// | a worker refused another session call | 502 | `session_refused` |
pub fn error_response(e: &ClientError) -> Response<Body> {
    let (status, code) = match e {
        ClientError::Auth { .. } => (StatusCode::UNAUTHORIZED, "endpoint_auth"),
        ClientError::UnknownEndpoint { .. } => (StatusCode::NOT_FOUND, "unknown_endpoint"),
        ClientError::NoWorker { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_worker"),
        ClientError::AutoscalerUnavailable { .. } => {
            (StatusCode::BAD_GATEWAY, "autoscaler_unavailable")
        }
        ClientError::RouteRejected { .. } => (StatusCode::BAD_GATEWAY, "route_rejected"),
        ClientError::WorkerUnavailable { .. } => (StatusCode::BAD_GATEWAY, "worker_unavailable"),
        ClientError::WorkerTls { .. } => (StatusCode::BAD_GATEWAY, "worker_tls"),
        ClientError::WorkerCa(_) => (StatusCode::BAD_GATEWAY, "worker_ca"),
        ClientError::Config(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        ClientError::SessionRefused {
            status: 429 | 503, ..
        } => (StatusCode::SERVICE_UNAVAILABLE, "session_unavailable"),
        ClientError::SessionRefused { .. } => (StatusCode::BAD_GATEWAY, "session_refused"),
    };
    let mut resp = refusal(status, code, e.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(NO_WORKER_RETRY_AFTER),
        );
    }
    resp
}

fn refusal(status: StatusCode, code: &str, message: String) -> Response<Body> {
    json_response(status, &json!({"error": message, "code": code}))
}

/// Runs `vespa proxy` until interrupted; returns the exit code (64 for invalid flags, 1
/// when discovery or binding fails).
pub async fn run(args: &ProxyArgs, env: &dyn Env) -> i32 {
    let config = match ProxyConfig::from_args(args, env) {
        Ok(c) => c,
        Err(e) => return e.eprint(),
    };
    crate::logging::init(&args.log_level, false);
    let c = &config.client;
    match &c.debug_worker_url {
        Some(url) => {
            tracing::warn!(worker = %url, "debug mode: no routing, unsigned requests (the worker must be UNSECURED)")
        }
        None => tracing::info!(endpoint = %c.endpoint, autoscaler = %c.autoscaler_url,
            route_timeout_secs = c.route_timeout.as_secs_f64(), max_attempts = c.max_attempts,
            profile = c.profile.as_ref().map(|p| p.name.as_str()), "proxy configured"),
    }
    match &c.worker_ca {
        Some(_) => tracing::info!("https workers verified against the --ca-cert CA"),
        None => tracing::info!(console = %c.console_url, cache = %c.ca_cache.display(),
            "https workers verified against Vast's root CA (fetched on the first one)"),
    }
    let proxy = match Proxy::start(config).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vespa: {e}");
            return 1;
        }
    };
    let stop = crate::serve::shutdown_signal();
    println!("listening on {}", proxy.url());
    stop.await;
    proxy.close_sessions().await;
    0
}
