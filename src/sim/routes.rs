//! Routing: the sim's own routes (`/health`, `/v1/models`, `/_sim/*`) and the API routes,
//! which pass the start-up gate and the fault draw before reaching their handler. Every
//! API request ends counted under its API: refused here, or by its [`Job`].

use super::Shared;
use super::error::SimError;
use super::faults::{Fate, Health};
use super::metrics::{Api, Ended};
use super::stats::Job;
use super::{audio, comfyui, embeddings, images, openai, prompt, tgi, ws};
use crate::http_util::{Body, json_response};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// Largest request body the sim reads: ComfyUI graphs can be large, and audio uploads up
/// to OpenAI's 25 MB must fit.
pub const MAX_BODY: usize = 32 << 20;

/// Serves one request. Never fails: errors become JSON answers.
pub(crate) async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    dispatch(shared, req).await.unwrap_or_else(|e| {
        tracing::debug!(status = %e.status(), error = %e, "request refused");
        e.into_response()
    })
}

async fn dispatch(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, SimError> {
    if let Some(id) = req.uri().path().strip_prefix("/history/") {
        allow(req.method(), Method::GET)?;
        return Ok(prompt::history(shared, Some(id)));
    }
    let api = match req.uri().path() {
        "/health" => {
            allow(req.method(), Method::GET)?;
            return Ok(health(shared));
        }
        "/v1/models" => {
            allow(req.method(), Method::GET)?;
            return Ok(models(shared));
        }
        "/_sim/stats" => {
            allow(req.method(), Method::GET)?;
            let stats = serde_json::to_value(shared.stats.snapshot()).unwrap_or_default();
            return Ok(json_response(StatusCode::OK, &stats));
        }
        "/_sim/metrics" => {
            allow(req.method(), Method::GET)?;
            return Ok(metrics(shared));
        }
        "/_sim/health" => {
            allow(req.method(), Method::POST)?;
            return set_health(shared, req).await;
        }
        "/v1/completions" => Api::Completions,
        "/v1/chat/completions" => Api::ChatCompletions,
        "/generate" => Api::Generate,
        "/generate_stream" => Api::GenerateStream,
        "/runsync" => Api::RunSync,
        "/v1/embeddings" => Api::Embeddings,
        "/v1/rerank" => Api::Rerank,
        "/v1/images/generations" => Api::ImageGenerations,
        "/v1/audio/transcriptions" => Api::Transcriptions,
        "/v1/audio/speech" => Api::Speech,
        "/ws" => {
            allow(req.method(), Method::GET)?;
            return ws::open(shared, req);
        }
        "/history" => {
            allow(req.method(), Method::GET)?;
            return Ok(prompt::history(shared, None));
        }
        "/prompt" if [Method::GET, Method::HEAD].contains(req.method()) => {
            return Ok(prompt::queue_info(shared));
        }
        "/prompt" => Api::Prompt,
        other => return Err(SimError::NotFound(other.to_string())),
    };
    allow(req.method(), Method::POST)?;
    let answer = serve_api(shared, api, req).await;
    if let Err(e) = &answer
        && e.is_invalid_request()
    {
        shared.stats.refused(api, Ended::Invalid);
    }
    answer
}

/// An API request past routing: the start-up gate, the fault draw, then its handler.
async fn serve_api(
    shared: &Arc<Shared>,
    api: Api,
    req: Request<Incoming>,
) -> Result<Response<Body>, SimError> {
    if !shared.faults.started() {
        shared.stats.refused(api, Ended::Rejected);
        return Err(SimError::Starting);
    }
    let (head, body) = req.into_parts();
    let bytes = read_bytes(body).await?;
    // Uploads are multipart, read by their handler; every other API takes a JSON object.
    let body = match api {
        Api::Transcriptions => Map::new(),
        _ => object(&bytes)?,
    };
    match shared.faults.fate() {
        Fate::Serve => {}
        Fate::Fail => {
            shared.stats.refused(api, Ended::Errored);
            return Err(SimError::Injected);
        }
        Fate::Hang => {
            // Counted as hanging until the client gives up and drops this future.
            let _job = Job::hanging(&shared.stats, api);
            return std::future::pending().await;
        }
    }
    match api {
        Api::Completions => openai::completions(shared, &body, openai::Kind::Text).await,
        Api::ChatCompletions => openai::completions(shared, &body, openai::Kind::Chat).await,
        Api::Generate => tgi::generate(shared, &body).await,
        Api::GenerateStream => tgi::generate_stream(shared, &body),
        Api::RunSync => comfyui::runsync(shared, &body).await,
        Api::Embeddings => embeddings::embeddings(shared, &body).await,
        Api::Rerank => embeddings::rerank(shared, &body).await,
        Api::ImageGenerations => images::generations(shared, &body).await,
        Api::Transcriptions => audio::transcriptions(shared, &head.headers, &bytes).await,
        Api::Speech => audio::speech(shared, &body).await,
        Api::Prompt => prompt::submit(shared, &body),
    }
}

fn allow(method: &Method, allowed: Method) -> Result<(), SimError> {
    if *method == allowed || (allowed == Method::GET && *method == Method::HEAD) {
        return Ok(());
    }
    Err(SimError::MethodNotAllowed {
        method: method.to_string(),
        allow: if allowed == Method::GET {
            "GET, HEAD"
        } else {
            "POST"
        },
    })
}

/// Reads the whole body, up to [`MAX_BODY`].
async fn read_bytes(body: Incoming) -> Result<Bytes, SimError> {
    Ok(Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                SimError::BodyTooLarge(MAX_BODY)
            } else {
                SimError::BadRequest(format!("cannot read the body: {e}"))
            }
        })?
        .to_bytes())
}

/// Reads the whole body (up to [`MAX_BODY`]) as a JSON object.
async fn read_object(req: Request<Incoming>) -> Result<Map<String, Value>, SimError> {
    object(&read_bytes(req.into_body()).await?)
}

/// A body that must be a JSON object.
fn object(bytes: &[u8]) -> Result<Map<String, Value>, SimError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(SimError::BadRequest("body is not a JSON object".into())),
        Err(e) => Err(SimError::BadRequest(format!("body is not JSON: {e}"))),
    }
}

/// `GET /health`: 200 once started and while healthy, else 503.
fn health(shared: &Shared) -> Response<Body> {
    let (status, text) = match shared.faults.health() {
        Health::Healthy => (StatusCode::OK, "ok"),
        Health::Starting => (StatusCode::SERVICE_UNAVAILABLE, "loading"),
        Health::Unhealthy => (StatusCode::SERVICE_UNAVAILABLE, "unhealthy"),
    };
    json_response(status, &json!({"status": text}))
}

/// `GET /_sim/metrics`: the counters by API, then the gauges read now.
fn metrics(shared: &Shared) -> Response<Body> {
    let healthy = shared.faults.health() == Health::Healthy;
    let snapshot = super::metrics::snapshot(&shared.stats.snapshot(), &shared.config, healthy);
    crate::openmetrics::response(&[shared.stats.metrics().registry(), &snapshot])
}

/// `POST /_sim/health` with `{"healthy": bool}`: switches what `/health` answers.
async fn set_health(shared: &Shared, req: Request<Incoming>) -> Result<Response<Body>, SimError> {
    let body = read_object(req).await?;
    let healthy = body
        .get("healthy")
        .and_then(Value::as_bool)
        .ok_or_else(|| SimError::BadRequest("expected {\"healthy\": true|false}".into()))?;
    shared.faults.set_healthy(healthy);
    tracing::info!(healthy, "health switched");
    Ok(json_response(StatusCode::OK, &json!({"healthy": healthy})))
}

/// `GET /v1/models`: the one model this server has.
fn models(shared: &Shared) -> Response<Body> {
    let body = json!({
        "object": "list",
        "data": [{
            "id": shared.config.model,
            "object": "model",
            "created": shared.created,
            "owned_by": "vespa-sim",
        }],
    });
    json_response(StatusCode::OK, &body)
}
