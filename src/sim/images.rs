//! OpenAI image generation: `POST /v1/images/generations`, answered with `n` base64 PNGs
//! (the sim's constant 1×1 picture) once the images' time has passed.
//!
//! Each image renders in an image slot like a ComfyUI graph of its size at 20 steps
//! (`--image-secs` per 512×512), so a 1024×1024 image takes four times the reference.

use super::Shared;
use super::comfyui::{ImageSize, PNG};
use super::error::SimError;
use super::metrics::Api;
use super::stats::Job;
use crate::http_util::{Body, json_response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

/// Most images one request may ask for (OpenAI's limit).
pub const MAX_IMAGES: u64 = 10;

/// Largest width or height accepted.
const MAX_SIDE: u64 = 16_384;

/// `POST /v1/images/generations`: `prompt` (required), `n` (1 to 10, default 1), `size`
/// (`"WIDTHxHEIGHT"`, default and `"auto"` 1024x1024), `response_format` `b64_json` (the
/// sim has no URL to give).
pub(crate) async fn generations(
    shared: &Shared,
    body: &Map<String, Value>,
) -> Result<Response<Body>, SimError> {
    if !body.get("prompt").is_some_and(Value::is_string) {
        return Err(SimError::bad("prompt is required: a string"));
    }
    let n = match body.get("n") {
        None | Some(Value::Null) => 1,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_IMAGES).contains(n))
            .ok_or_else(|| {
                SimError::bad(format!("n must be a whole number from 1 to {MAX_IMAGES}"))
            })?,
    };
    let (width, height) = match body.get("size") {
        None | Some(Value::Null) => (1024, 1024),
        Some(Value::String(s)) if s == "auto" => (1024, 1024),
        Some(Value::String(s)) => parse_size(s)
            .ok_or_else(|| SimError::bad(format!("size {s:?}: expected WIDTHxHEIGHT or auto")))?,
        Some(_) => return Err(SimError::bad("size must be a string")),
    };
    match body.get("response_format") {
        None | Some(Value::Null) => {}
        Some(Value::String(f)) if f == "b64_json" => {}
        Some(_) => {
            return Err(SimError::bad(
                "response_format: the sim answers b64_json only",
            ));
        }
    }
    let job = Job::queued(&shared.stats, Api::ImageGenerations);
    let steps = ImageSize::DEFAULT.steps * n;
    shared.model.render(job, width, height, steps).await;
    let image = json!({"b64_json": STANDARD.encode(PNG)});
    let answer = json!({
        "created": super::unix_now(),
        "data": vec![image; n as usize],
    });
    Ok(json_response(StatusCode::OK, &answer))
}

/// `"1024x768"` → (1024, 768), each side from 1 to [`MAX_SIDE`].
fn parse_size(s: &str) -> Option<(u64, u64)> {
    let (w, h) = s.split_once(['x', 'X'])?;
    let side = |v: &str| {
        v.trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=MAX_SIDE).contains(n))
    };
    Some((side(w)?, side(h)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_width_by_height_within_bounds() {
        assert_eq!(parse_size("1024x768"), Some((1024, 768)));
        assert_eq!(parse_size("512X512"), Some((512, 512)));
        assert_eq!(parse_size("0x5"), None);
        assert_eq!(parse_size("99999x1"), None);
        assert_eq!(parse_size("big"), None);
    }
}
