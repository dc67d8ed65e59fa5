//! The ComfyUI API wrapper: `POST /runsync` with `{"input": {"workflow_json": graph}}`,
//! answered with one base64 PNG once the image's time has passed.
//!
//! The image's size and step count are read from the graph the way a benchmark counts its
//! workload (PROTOCOL.md §7): `EmptyLatentImage` width and height, `KSampler` steps; missing
//! values fall back to 512, 512 and 20. The picture itself is a constant 1×1 PNG: clients
//! need a decodable image, not art.

use super::Shared;
use super::error::SimError;
use super::metrics::Api;
use super::stats::Job;
use crate::http_util::{Body, json_response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

/// A 1×1 RGB PNG.
pub const PNG: [u8; 69] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90, 0x77, 0x53,
    0xde, 0x00, 0x00, 0x00, 0x0c, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0x68, 0x48, 0x38, 0x00,
    0x00, 0x03, 0x04, 0x01, 0xa1, 0x94, 0xe3, 0xaa, 0x95, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e,
    0x44, 0xae, 0x42, 0x60, 0x82,
];

/// The size of the image a graph renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ImageSize {
    pub width: u64,
    pub height: u64,
    pub steps: u64,
}

impl ImageSize {
    /// The benchmark's default graph: 512 × 512, 20 steps.
    pub(crate) const DEFAULT: ImageSize = ImageSize {
        width: 512,
        height: 512,
        steps: 20,
    };

    /// Reads the first `EmptyLatentImage` and `KSampler` (or `KSamplerAdvanced`) nodes of an
    /// API-format graph (`{"id": {"class_type", "inputs"}}`). Inputs wired to other nodes
    /// (`["id", slot]`) are not numbers and fall back to the default.
    pub(crate) fn of_graph(graph: &Map<String, Value>) -> ImageSize {
        let mut size = ImageSize::DEFAULT;
        let (mut latent, mut sampler) = (false, false);
        for node in graph.values() {
            let inputs = node.get("inputs");
            let input = |key: &str| inputs.and_then(|i| i.get(key)).and_then(Value::as_u64);
            match node.get("class_type").and_then(Value::as_str) {
                Some("EmptyLatentImage") if !latent => {
                    latent = true;
                    size.width = input("width").unwrap_or(size.width);
                    size.height = input("height").unwrap_or(size.height);
                }
                Some("KSampler" | "KSamplerAdvanced") if !sampler => {
                    sampler = true;
                    size.steps = input("steps").unwrap_or(size.steps);
                }
                _ => {}
            }
        }
        size
    }
}

/// `POST /runsync`.
pub(crate) async fn runsync(
    shared: &Shared,
    body: &Map<String, Value>,
) -> Result<Response<Body>, SimError> {
    let size = match body.get("input") {
        None | Some(Value::Null) => ImageSize::DEFAULT,
        Some(Value::Object(input)) => {
            match input.get("workflow_json").or_else(|| input.get("workflow")) {
                None | Some(Value::Null) => ImageSize::DEFAULT,
                Some(Value::Object(graph)) => ImageSize::of_graph(graph),
                Some(_) => {
                    return Err(SimError::BadRequest(
                        "input.workflow_json must be a JSON object (an API-format graph)".into(),
                    ));
                }
            }
        }
        Some(_) => return Err(SimError::BadRequest("input must be an object".into())),
    };
    let id = shared.next_id();
    let job = Job::queued(&shared.stats, Api::RunSync);
    shared
        .model
        .render(job, size.width, size.height, size.steps)
        .await;
    let answer = json!({
        "id": format!("sync-sim-{id}"),
        "status": "COMPLETED",
        "output": {
            "images": [{
                "filename": format!("ComfyUI_{id:05}_.png"),
                "type": "base64",
                "data": STANDARD.encode(PNG),
            }],
        },
    });
    Ok(json_response(StatusCode::OK, &answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_graph_gives_the_image_size() {
        let graph = json!({
            "3": {"class_type": "KSampler", "inputs": {"steps": 30, "model": ["4", 0]}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 768}},
        });
        assert_eq!(
            ImageSize::of_graph(graph.as_object().unwrap()),
            ImageSize {
                width: 1024,
                height: 768,
                steps: 30
            }
        );
    }

    #[test]
    fn missing_or_wired_inputs_fall_back_to_the_default() {
        let graph = json!({
            "3": {"class_type": "KSampler", "inputs": {"steps": ["9", 0]}},
            "9": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat"}},
        });
        assert_eq!(
            ImageSize::of_graph(graph.as_object().unwrap()),
            ImageSize::DEFAULT
        );
    }

    #[test]
    fn the_constant_image_is_a_png() {
        assert_eq!(&PNG[..8], b"\x89PNG\r\n\x1a\n");
    }
}
