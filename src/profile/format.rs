//! The TOML profile format, and its validation into a [`Profile`](super::Profile).
//!
//! Errors carry the line they are about: toml's own (syntax, unknown keys, wrong types)
//! and ours (unknown generators, bad paths and formulas).

use super::routes::Routes;
use super::template::Template;
use super::workload::{BODY_BYTES, Expr, JsonPath, RequestRule, Var, WorkloadRule};
use super::{BenchMode, BenchRequest, BenchSettings, Profile, ProfileError, StreamCount};
use crate::env::MAX_SECS;
use http::Method;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    description: Option<String>,
    health: Option<Spanned<String>>,
    request: RawRequest,
    workload: RawWorkload,
    benchmark: Option<RawBench>,
    routes: Option<BTreeMap<String, Spanned<RawWorkload>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    method: Option<Spanned<String>>,
    path: Spanned<String>,
    timeout: Option<Spanned<f64>>,
    body: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    request: Option<Spanned<String>>,
    formula: Option<Spanned<String>>,
    vars: Option<BTreeMap<String, Spanned<String>>>,
    constant: Option<Spanned<f64>>,
    response: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBench {
    warmup: Option<bool>,
    mode: Option<Spanned<String>>,
    concurrency: Option<Spanned<u32>>,
    max_concurrency: Option<Spanned<u32>>,
    runs: Option<Spanned<u32>>,
    window: Option<Spanned<f64>>,
    stream: Option<RawStream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    path: Option<Spanned<String>>,
    body: Option<Spanned<toml::Value>>,
    unit: Spanned<String>,
    total: Option<Spanned<String>>,
}

/// Parses and validates profile text; `origin` names it in errors (a path or `built-in X`).
pub fn parse(text: &str, origin: &str) -> Result<Profile, ProfileError> {
    let err = |span: Option<Range<usize>>, message: String| ProfileError {
        origin: origin.to_string(),
        line: span.map(|s| line_of(text, s.start)),
        message,
    };
    let raw: RawProfile =
        toml::from_str(text).map_err(|e| err(e.span(), e.message().trim().to_string()))?;

    let method = match &raw.request.method {
        Some(m) => {
            Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()).map_err(|_| {
                err(
                    Some(m.span()),
                    format!("invalid HTTP method {:?}", m.get_ref()),
                )
            })?
        }
        None => Method::POST,
    };
    let path = &raw.request.path;
    if !path.get_ref().starts_with('/') {
        return Err(err(
            Some(path.span()),
            "request.path must start with /".into(),
        ));
    }
    let timeout = match &raw.request.timeout {
        Some(t) if !(*t.get_ref() > 0.0 && *t.get_ref() <= MAX_SECS) => {
            return Err(err(
                Some(t.span()),
                format!(
                    "request.timeout must be a positive number of seconds, at most {MAX_SECS:e}"
                ),
            ));
        }
        Some(t) => Duration::from_secs_f64(*t.get_ref()),
        None => Duration::from_secs(600),
    };
    let body = match &raw.request.body {
        None => None,
        Some(b) => {
            let json = serde_json::to_value(b.get_ref())
                .map_err(|e| err(Some(b.span()), format!("request.body: {e}")))?;
            let template = Template::compile(&json).map_err(|e| {
                // Point at the offending text when it can be found, else at the body.
                let at = e
                    .split("{{")
                    .nth(1)
                    .and_then(|g| {
                        text[b.span().start..]
                            .find(&format!("{{{{{}", g.split("}}").next().unwrap_or("")))
                    })
                    .map(|off| b.span().start + off..b.span().start + off + 1);
                err(at.or(Some(b.span())), format!("request.body: {e}"))
            })?;
            Some(template)
        }
    };
    let health = match &raw.health {
        Some(h) if !h.get_ref().starts_with('/') => {
            return Err(err(Some(h.span()), "health must start with /".into()));
        }
        Some(h) => Some(h.get_ref().clone()),
        None => None,
    };
    let workload = workload(&raw.workload, &err)?;
    let benchmark = bench_settings(raw.benchmark.as_ref(), &err)?;
    let benchmarked = [
        Some(path.get_ref().as_str()),
        benchmark.stream.as_ref().and_then(|s| s.path.as_deref()),
    ];
    let routes = routes(raw.routes.as_ref(), &benchmarked, &err)?;
    Ok(Profile {
        name: raw.name,
        description: raw.description.unwrap_or_default(),
        origin: origin.to_string(),
        health,
        request: BenchRequest {
            method,
            path: path.get_ref().clone(),
            timeout,
            body,
        },
        workload,
        routes,
        benchmark,
    })
}

type Err<'a> = dyn Fn(Option<Range<usize>>, String) -> ProfileError + 'a;

fn json_path(s: &Spanned<String>, what: &str, err: &Err) -> Result<JsonPath, ProfileError> {
    JsonPath::parse(s.get_ref()).map_err(|e| err(Some(s.span()), format!("{what}: {e}")))
}

fn workload(w: &RawWorkload, err: &Err) -> Result<WorkloadRule, ProfileError> {
    let request = request_rule(w, "workload", err)?;
    let response = w
        .response
        .as_ref()
        .map(|p| json_path(p, "workload.response", err))
        .transpose()?;
    if request.is_none() && response.is_none() {
        return Err(err(
            None,
            "[workload] needs request, formula, constant or response".into(),
        ));
    }
    Ok(WorkloadRule { request, response })
}

/// The `[routes."PATH"]` tables: each a request rule like `[workload]`'s.
fn routes(
    raw: Option<&BTreeMap<String, Spanned<RawWorkload>>>,
    benchmarked: &[Option<&str>],
    err: &Err,
) -> Result<Routes, ProfileError> {
    let Some(raw) = raw else {
        return Ok(Routes::default());
    };
    let mut rules = Vec::with_capacity(raw.len());
    for (pattern, table) in raw {
        let at = Some(table.span());
        let name = format!("routes.{pattern:?}");
        Routes::check_pattern(pattern).map_err(|e| err(at.clone(), e))?;
        if benchmarked.contains(&Some(pattern.as_str())) {
            return Err(err(
                at,
                format!("[{name}]: {pattern} is the benchmarked route, counted by [workload]"),
            ));
        }
        let w = table.get_ref();
        if let Some(r) = &w.response {
            return Err(err(
                Some(r.span()),
                format!("{name}.response: only [workload] reads the benchmark's response"),
            ));
        }
        let rule = request_rule(w, &name, err)?
            .ok_or_else(|| err(at, format!("[{name}] needs request, formula or constant")))?;
        rules.push((pattern.clone(), rule));
    }
    Ok(Routes::new(rules))
}

/// The request rule of a `[workload]` or `[routes."PATH"]` table named `table`.
fn request_rule(
    w: &RawWorkload,
    table: &str,
    err: &Err,
) -> Result<Option<RequestRule>, ProfileError> {
    let given = [
        w.request.is_some(),
        w.formula.is_some(),
        w.constant.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given > 1 {
        return Err(err(
            None,
            format!("[{table}]: give only one of request, formula, constant"),
        ));
    }
    Ok(if let Some(p) = &w.request {
        Some(RequestRule::Path(json_path(
            p,
            &format!("{table}.request"),
            err,
        )?))
    } else if let Some(c) = &w.constant {
        if !(c.get_ref().is_finite() && *c.get_ref() > 0.0) {
            return Err(err(Some(c.span()), format!("{table}.constant must be > 0")));
        }
        Some(RequestRule::Constant(*c.get_ref()))
    } else if let Some(f) = &w.formula {
        let expr = Expr::parse(f.get_ref())
            .map_err(|e| err(Some(f.span()), format!("{table}.formula: {e}")))?;
        let raw_vars = w.vars.clone().unwrap_or_default();
        if let Some(v) = raw_vars.get(BODY_BYTES) {
            return Err(err(
                Some(v.span()),
                format!(
                    "{table}.vars: {BODY_BYTES} is built in (the request body's size in bytes)"
                ),
            ));
        }
        let mut used = Vec::new();
        expr.vars(&mut used);
        if let Some(missing) = used
            .iter()
            .find(|v| *v != BODY_BYTES && !raw_vars.contains_key(*v))
        {
            return Err(err(
                Some(f.span()),
                format!("{table}.formula uses {missing:?}, which [{table}.vars] does not define"),
            ));
        }
        let vars = raw_vars
            .iter()
            .map(|(k, v)| {
                let var = Var::parse(v.get_ref())
                    .map_err(|e| err(Some(v.span()), format!("{table}.vars.{k}: {e}")))?;
                Ok((k.clone(), var))
            })
            .collect::<Result<_, ProfileError>>()?;
        Some(RequestRule::Formula { expr, vars })
    } else {
        None
    })
}

fn bench_settings(b: Option<&RawBench>, err: &Err) -> Result<BenchSettings, ProfileError> {
    let mut s = BenchSettings::default();
    let Some(b) = b else { return Ok(s) };
    if let Some(w) = b.warmup {
        s.warmup = w;
    }
    if let Some(m) = &b.mode {
        s.mode = match m.get_ref().as_str() {
            "ramp" => BenchMode::Ramp,
            "rounds" => BenchMode::Rounds,
            other => {
                return Err(err(
                    Some(m.span()),
                    format!("benchmark.mode {other:?}: expected ramp or rounds"),
                ));
            }
        };
    }
    let positive = |v: &Spanned<u32>, name: &str| {
        if *v.get_ref() == 0 {
            Err(err(
                Some(v.span()),
                format!("benchmark.{name} must be at least 1"),
            ))
        } else {
            Ok(*v.get_ref() as usize)
        }
    };
    if let Some(c) = &b.concurrency {
        s.concurrency = positive(c, "concurrency")?;
    }
    if let Some(c) = &b.max_concurrency {
        s.max_concurrency = positive(c, "max_concurrency")?;
    }
    if let Some(r) = &b.runs {
        s.runs = positive(r, "runs")?;
    }
    if s.max_concurrency < s.concurrency {
        s.max_concurrency = s.concurrency;
    }
    if let Some(w) = &b.window {
        let secs = *w.get_ref();
        if !(MIN_WINDOW_SECS..=MAX_WINDOW_SECS).contains(&secs) {
            return Err(err(
                Some(w.span()),
                format!(
                    "benchmark.window must be between {MIN_WINDOW_SECS} and {MAX_WINDOW_SECS} seconds"
                ),
            ));
        }
        s.window = Duration::from_secs_f64(secs);
    }
    if let Some(st) = &b.stream {
        s.stream = Some(stream_count(st, err)?);
    }
    Ok(s)
}

/// Shortest and longest ramp window, seconds.
const MIN_WINDOW_SECS: f64 = 0.1;
const MAX_WINDOW_SECS: f64 = 600.0;

fn stream_count(st: &RawStream, err: &Err) -> Result<StreamCount, ProfileError> {
    let path = match &st.path {
        Some(p) if !p.get_ref().starts_with('/') => {
            return Err(err(
                Some(p.span()),
                "benchmark.stream.path must start with /".into(),
            ));
        }
        Some(p) => Some(p.get_ref().clone()),
        None => None,
    };
    let body = match &st.body {
        None => serde_json::Value::Object(Default::default()),
        Some(b) => match serde_json::to_value(b.get_ref()) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            _ => {
                return Err(err(
                    Some(b.span()),
                    "benchmark.stream.body must be a table (merged into the request body)".into(),
                ));
            }
        },
    };
    Ok(StreamCount {
        path,
        body,
        unit: json_path(&st.unit, "benchmark.stream.unit", err)?,
        total: st
            .total
            .as_ref()
            .map(|t| json_path(t, "benchmark.stream.total", err))
            .transpose()?,
    })
}

/// 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}
