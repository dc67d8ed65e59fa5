//! Parsers for the worker's own value formats, each returning a [`ConfigError`] naming the
//! setting.

use super::{Benchmark, Readiness};
use crate::env::{ConfigError, Raw, Source};
use crate::profile::Profile;
use crate::worker::observe::TraceContext;
use crate::worker::session::listener::HttpPort;
use http::Uri;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// `--listen` takes `HOST:PORT` or a port; `WORKER_PORT` (PyWorker's) is a port on 0.0.0.0.
pub(super) fn listen(raw: &Raw) -> Result<SocketAddr, ConfigError> {
    if raw.source == Source::Env {
        let port =
            u16::try_from(raw.u64_min(0)?).map_err(|_| raw.error("expected a port number"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    host_port(raw)
}

pub(super) fn benchmark(raw: &Raw) -> Result<Benchmark, ConfigError> {
    match raw.value.trim() {
        "none" | "NONE" | "None" => Ok(Benchmark::None),
        spec => match Profile::resolve(spec) {
            Ok(p) => Ok(Benchmark::Profile {
                profile: Arc::new(p),
                measure: true,
            }),
            Err(e) => Err(ConfigError::new(raw.origin.clone(), e.to_string())),
        },
    }
}

fn host_port(raw: &Raw) -> Result<SocketAddr, ConfigError> {
    let v = raw.value.trim();
    if let Ok(port) = v.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    let v = v
        .strip_prefix("localhost:")
        .map(|p| format!("127.0.0.1:{p}"));
    let v = v.as_deref().unwrap_or(raw.value.trim());
    v.parse()
        .map_err(|_| raw.error("expected HOST:PORT, e.g. 127.0.0.1:3000, or a port"))
}

pub(super) fn http_url(raw: &Raw, s: &str) -> Result<Uri, ConfigError> {
    let uri: Uri = s
        .parse()
        .map_err(|_| raw.error(format!("{s:?} is not a URL")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(raw.error(format!("{s:?} must start with http:// or https://"))),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(raw.error(format!("{s:?} has no host")));
    }
    Ok(uri)
}

pub(super) fn backend_url(raw: &Raw) -> Result<Uri, ConfigError> {
    let uri = http_url(raw, raw.value.trim())?;
    if uri.query().is_some() {
        return Err(raw.error("must not contain a query string"));
    }
    Ok(uri)
}

pub(super) fn log_level(raw: &Raw) -> Result<String, ConfigError> {
    let level = match raw.value.trim().to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "critical" | "fatal" => "error",
        _ => return Err(raw.error("expected trace, debug, info, warning or error")),
    };
    Ok(level.to_string())
}

/// `TRACE_CONTEXT`: whether the worker creates a `traceparent` for requests without one.
pub(super) fn trace_context(raw: &Raw) -> Result<TraceContext, ConfigError> {
    match raw.value.trim().to_ascii_lowercase().as_str() {
        "passthrough" => Ok(TraceContext::Passthrough),
        "generate" => Ok(TraceContext::Generate),
        _ => Err(raw.error("expected passthrough or generate")),
    }
}

/// `READINESS`: how the worker decides the model is loaded.
pub(super) fn readiness(raw: &Raw) -> Result<Readiness, ConfigError> {
    match raw.value.trim().to_ascii_lowercase().as_str() {
        "healthcheck" | "health" => Ok(Readiness::Healthcheck),
        "logs" | "log" => Ok(Readiness::Logs),
        "both" => Ok(Readiness::Both),
        _ => Err(raw.error("expected healthcheck, logs or both")),
    }
}

/// `WORKER_HTTP_PORT`: a port, or `off`.
pub(super) fn http_port(raw: &Raw) -> Result<HttpPort, ConfigError> {
    let v = raw.value.trim();
    if v.eq_ignore_ascii_case("off") || v.eq_ignore_ascii_case("none") {
        return Ok(HttpPort::Off);
    }
    v.parse::<u16>()
        .map(HttpPort::Port)
        .map_err(|_| raw.error("expected a port number or off"))
}

#[cfg(test)]
mod proptests;
