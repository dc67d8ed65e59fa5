//! ComfyUI's own queue API: `POST /prompt` with `{"prompt": graph, "client_id": ID}`
//! answers `{"prompt_id", "number", "node_errors": {}}` at once and runs the graph in the
//! background; `GET /prompt` is the queue's size; `GET /history[/{prompt_id}]` holds
//! finished prompts and their outputs.
//!
//! A prompt runs as ComfyUI's executor reports one to its client's socket ([`super::ws`]):
//! `execution_start`, `execution_cached`, then for each node in execution order (the
//! output nodes' inputs first) `executing`, with one `progress` per sampler step
//! (`{"value": step, "max": steps, "prompt_id", "node"}`) and `executed` for each output
//! node, then `execution_success`, the queue's `status`, and `executing` with
//! `"node": null`. The image takes the time of [`super::model`], spread evenly over the
//! sampler's steps, in one of the same image slots as `/runsync`.

use super::Shared;
use super::comfyui::ImageSize;
use super::error::SimError;
use super::metrics::Api;
use super::stats::{Job, Outcome};
use crate::http_util::{Body, json_response};
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// Finished prompts kept for `GET /history`.
const MAX_HISTORY: usize = 1000;

/// Node classes that are outputs (ComfyUI's `OUTPUT_NODE`).
const OUTPUT_CLASSES: [&str; 2] = ["SaveImage", "PreviewImage"];

/// Node classes whose steps are reported as `progress`.
const SAMPLER_CLASSES: [&str; 2] = ["KSampler", "KSamplerAdvanced"];

/// The prompt queue's state.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    /// Prompts submitted and not finished (queued or running).
    remaining: AtomicU64,
    /// The next prompt's `number`.
    number: AtomicU64,
    /// The next output image's counter.
    images: AtomicU64,
    history: Mutex<History>,
}

#[derive(Debug, Default)]
struct History {
    order: VecDeque<String>,
    entries: HashMap<String, Value>,
}

impl Queue {
    /// `{"exec_info": {"queue_remaining": N}}`.
    pub(crate) fn status(&self) -> Value {
        json!({"exec_info": {"queue_remaining": self.remaining.load(Ordering::Relaxed)}})
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, prompt_id: &str, entry: Value) {
        let mut h = self.history();
        if h.entries.insert(prompt_id.to_string(), entry).is_none() {
            h.order.push_back(prompt_id.to_string());
        }
        while h.order.len() > MAX_HISTORY {
            if let Some(old) = h.order.pop_front() {
                h.entries.remove(&old);
            }
        }
    }
}

/// A prompt ready to run.
struct Prompt {
    id: String,
    number: u64,
    client_id: Option<String>,
    graph: Map<String, Value>,
    /// Node ids in execution order.
    order: Vec<String>,
    outputs: Vec<String>,
    sampler: Option<String>,
    size: ImageSize,
}

/// `POST /prompt`.
pub(crate) fn submit(
    shared: &Arc<Shared>,
    body: &Map<String, Value>,
) -> Result<Response<Body>, SimError> {
    let Some(Value::Object(graph)) = body.get("prompt") else {
        return Err(invalid("no_prompt", "No prompt provided", ""));
    };
    let class = |node: &Value| {
        node.get("class_type")
            .and_then(Value::as_str)
            .map(String::from)
    };
    let mut outputs = Vec::new();
    for (id, node) in graph {
        match class(node) {
            Some(c) if OUTPUT_CLASSES.contains(&c.as_str()) => outputs.push(id.clone()),
            Some(_) => {}
            None => {
                return Err(invalid(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    &format!("Node ID '#{id}'"),
                ));
            }
        }
    }
    if outputs.is_empty() {
        return Err(invalid("prompt_no_outputs", "Prompt has no outputs", ""));
    }
    let order = execution_order(graph, &outputs);
    let sampler = order
        .iter()
        .find(|id| {
            graph[id.as_str()]
                .get("class_type")
                .and_then(Value::as_str)
                .is_some_and(|c| SAMPLER_CLASSES.contains(&c))
        })
        .cloned();
    let client_id = body
        .get("client_id")
        .or_else(|| body.get("extra_data")?.get("client_id"))
        .and_then(Value::as_str)
        .map(String::from);
    let id = match body.get("prompt_id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => uuid4(),
    };
    let queue = &shared.queue;
    let prompt = Prompt {
        number: queue.number.fetch_add(1, Ordering::Relaxed),
        id,
        client_id,
        size: ImageSize::of_graph(graph),
        graph: graph.clone(),
        order,
        outputs,
        sampler,
    };
    let answer = json!({"prompt_id": prompt.id, "number": prompt.number, "node_errors": {}});
    let job = Job::queued(&shared.stats, Api::Prompt);
    queue.remaining.fetch_add(1, Ordering::Relaxed);
    shared
        .sockets
        .broadcast("status", json!({"status": queue.status()}));
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        tokio::select! {
            () = run(&shared, prompt, job) => {}
            () = shared.stopping() => {}
        }
    });
    Ok(json_response(StatusCode::OK, &answer))
}

fn invalid(kind: &'static str, message: &'static str, details: &str) -> SimError {
    SimError::InvalidPrompt {
        kind,
        message,
        details: details.to_string(),
    }
}

/// Every node the outputs depend on, each after its inputs, then the output.
fn execution_order(graph: &Map<String, Value>, outputs: &[String]) -> Vec<String> {
    fn visit(
        graph: &Map<String, Value>,
        id: &str,
        seen: &mut HashSet<String>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(id.to_string()) {
            return;
        }
        let inputs = graph
            .get(id)
            .and_then(|n| n.get("inputs"))
            .and_then(Value::as_object);
        for value in inputs.into_iter().flat_map(|i| i.values()) {
            // A link is `["node id", output slot]`.
            if let Some(Value::String(from)) = value.as_array().and_then(|a| a.first())
                && graph.contains_key(from)
            {
                visit(graph, from, seen, out);
            }
        }
        out.push(id.to_string());
    }
    let (mut seen, mut out) = (HashSet::new(), Vec::new());
    for id in outputs {
        visit(graph, id, &mut seen, &mut out);
    }
    out
}

/// Runs a prompt once it has an image slot, sending its messages as it goes.
async fn run(shared: &Shared, prompt: Prompt, job: Job) {
    let job = shared.model.start_image(job).await;
    let sid = prompt.client_id.as_deref();
    let send = |kind: &str, data: Value| {
        if let Some(sid) = sid {
            shared.sockets.send(sid, kind, data);
        }
    };
    let id = prompt.id.as_str();
    let mut messages = Vec::new();
    let mut stamped = |kind: &str, data: Value| {
        let mut data = data;
        data["timestamp"] = json!(super::unix_millis());
        messages.push(json!([kind, data]));
        send(kind, data);
    };
    stamped("execution_start", json!({"prompt_id": id}));
    stamped("execution_cached", json!({"nodes": [], "prompt_id": id}));
    let s = prompt.size;
    let total = shared.model.image_time(s.width, s.height, s.steps);
    let mut outputs = Map::new();
    for node in &prompt.order {
        send(
            "executing",
            json!({"node": node, "display_node": node, "prompt_id": id}),
        );
        if prompt.sampler.as_deref() == Some(node) {
            let started = Instant::now();
            for step in 1..=s.steps {
                tokio::time::sleep_until(started + total.mul_f64(step as f64 / s.steps as f64))
                    .await;
                send(
                    "progress",
                    json!({"value": step, "max": s.steps, "prompt_id": id, "node": node}),
                );
            }
        } else if prompt.sampler.is_none() && Some(node) == prompt.outputs.first() {
            tokio::time::sleep(total).await;
        }
        if prompt.outputs.contains(node) {
            let output = json!({"images": [image(shared, &prompt.graph[node.as_str()])]});
            send(
                "executed",
                json!({"node": node, "display_node": node, "output": output, "prompt_id": id}),
            );
            outputs.insert(node.clone(), output);
        }
    }
    stamped("execution_success", json!({"prompt_id": id}));
    job.finish(Outcome::Completed);
    let meta: Map<String, Value> = outputs
        .keys()
        .map(|n| {
            let m =
                json!({"node_id": n, "display_node": n, "parent_node": null, "real_node_id": n});
            (n.clone(), m)
        })
        .collect();
    let extra = match sid {
        Some(sid) => json!({"client_id": sid}),
        None => json!({}),
    };
    let entry = json!({
        "prompt": [prompt.number, id, prompt.graph, extra, prompt.outputs],
        "outputs": outputs,
        "status": {"status_str": "success", "completed": true, "messages": messages},
        "meta": meta,
    });
    // As ComfyUI: the history and the queue's status before the final `executing`, so a
    // client that sees it finds the result.
    shared.queue.remember(id, entry);
    shared.queue.remaining.fetch_sub(1, Ordering::Relaxed);
    shared
        .sockets
        .broadcast("status", json!({"status": shared.queue.status()}));
    send("executing", json!({"node": null, "prompt_id": id}));
}

/// The image an output node saves: `{"filename", "subfolder", "type"}`.
fn image(shared: &Shared, node: &Value) -> Value {
    let n = shared.queue.images.fetch_add(1, Ordering::Relaxed) + 1;
    let class = node.get("class_type").and_then(Value::as_str);
    if class == Some("PreviewImage") {
        return json!({"filename": format!("ComfyUI_temp_{n:05}_.png"), "subfolder": "", "type": "temp"});
    }
    let prefix = node
        .get("inputs")
        .and_then(|i| i.get("filename_prefix"))
        .and_then(Value::as_str)
        .unwrap_or("ComfyUI");
    json!({"filename": format!("{prefix}_{n:05}_.png"), "subfolder": "", "type": "output"})
}

/// `GET /prompt`.
pub(crate) fn queue_info(shared: &Shared) -> Response<Body> {
    json_response(StatusCode::OK, &shared.queue.status())
}

/// `GET /history` (every finished prompt kept) or `GET /history/{prompt_id}` (that one,
/// or `{}`).
pub(crate) fn history(shared: &Shared, prompt_id: Option<&str>) -> Response<Body> {
    let h = shared.queue.history();
    let mut out = Map::new();
    match prompt_id {
        Some(id) => {
            if let Some(entry) = h.entries.get(id) {
                out.insert(id.to_string(), entry.clone());
            }
        }
        None => {
            for id in &h.order {
                out.insert(id.clone(), h.entries[id].clone());
            }
        }
    }
    json_response(StatusCode::OK, &Value::Object(out))
}

/// `n` random bytes in lowercase hex.
pub(crate) fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A random (version 4) UUID, as ComfyUI names prompts.
fn uuid4() -> String {
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_run_after_their_inputs_and_only_for_outputs() {
        let graph = json!({
            "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "latent_image": ["5", 0]}},
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}},
            "10": {"class_type": "CLIPTextEncode", "inputs": {"text": "unused"}},
        });
        let order = execution_order(graph.as_object().unwrap(), &["9".to_string()]);
        // Inputs in key order: latent_image (5) before model (4).
        assert_eq!(order, ["5", "4", "3", "8", "9"]);
    }

    #[test]
    fn prompt_ids_are_version_4_uuids() {
        let id = uuid4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, uuid4());
        assert_eq!(random_hex(16).len(), 32);
    }
}
