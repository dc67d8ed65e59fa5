//! The text-encoder APIs: `POST /v1/embeddings` (OpenAI's shape) and `POST /v1/rerank`
//! (the Cohere shape vLLM, TEI and Jina serve).
//!
//! Both hold a batch slot for `input tokens / embed_tps`, tokens being the input's
//! whitespace-separated words (a token id counts one). Vectors are derived from the text,
//! so equal inputs get equal vectors; relevance is the share of the query's words a
//! document holds.

use super::Shared;
use super::error::SimError;
use super::metrics::Api;
use super::model::count_words;
use super::stats::Job;
use crate::http_util::{Body, json_response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

/// Dimensions of a simulated embedding.
pub const DIMENSIONS: usize = 8;

/// `POST /v1/embeddings`: `input` is a string, a list of strings, a list of token ids, or a
/// list of lists of token ids. `encoding_format: "base64"` (the OpenAI SDK's default)
/// answers little-endian `f32`s in base64.
pub(crate) async fn embeddings(
    shared: &Shared,
    body: &Map<String, Value>,
) -> Result<Response<Body>, SimError> {
    let items: Vec<Item> = match body.get("input") {
        Some(Value::String(s)) => vec![Item::Text(s)],
        Some(Value::Array(list)) if list.is_empty() => return Err(SimError::bad("input is empty")),
        Some(Value::Array(list)) if list.iter().all(Value::is_u64) => vec![Item::Tokens(list)],
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(Item::Text(s)),
                Value::Array(ids) if ids.iter().all(Value::is_u64) => Ok(Item::Tokens(ids)),
                _ => Err(SimError::bad(
                    "input items must be strings or lists of token ids",
                )),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(SimError::bad(
                "input is required: a string, a list of strings or of token ids",
            ));
        }
    };
    let base64 = match body.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(_) => {
            return Err(SimError::bad(
                "encoding_format must be \"float\" or \"base64\"",
            ));
        }
    };
    let tokens: u64 = items.iter().map(Item::tokens).sum();
    let job = Job::queued(&shared.stats, Api::Embeddings);
    shared
        .model
        .hold_slot(job, shared.model.embed_time(tokens))
        .await;
    let data: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let v = item.vector();
            let embedding = if base64 {
                let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(STANDARD.encode(raw))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let answer = json!({
        "object": "list",
        "data": data,
        "model": model(shared, body),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    Ok(json_response(StatusCode::OK, &answer))
}

/// `POST /v1/rerank`: `query` against `documents` (strings), best first; `top_n` keeps the
/// best N, `return_documents` echoes each document's text.
pub(crate) async fn rerank(
    shared: &Shared,
    body: &Map<String, Value>,
) -> Result<Response<Body>, SimError> {
    let query = body
        .get("query")
        .and_then(Value::as_str)
        .ok_or_else(|| SimError::bad("query is required: a string"))?;
    let documents: Vec<&str> = match body.get("documents") {
        Some(Value::Array(d)) => d
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| SimError::bad("documents must be strings"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(SimError::bad("documents is required: a list of strings")),
    };
    let top_n = match body.get("top_n") {
        None | Some(Value::Null) => documents.len(),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| SimError::bad("top_n must be a whole number"))?,
    };
    let echo = body
        .get("return_documents")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // A cross-encoder reads the query with each document.
    let query_words = count_words(query);
    let tokens: u64 = documents.iter().map(|d| query_words + count_words(d)).sum();
    let job = Job::queued(&shared.stats, Api::Rerank);
    shared
        .model
        .hold_slot(job, shared.model.embed_time(tokens))
        .await;
    let mut scored: Vec<(usize, f64)> = documents
        .iter()
        .enumerate()
        .map(|(i, d)| (i, relevance(query, d)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let results: Vec<Value> = scored
        .into_iter()
        .take(top_n)
        .map(|(index, score)| {
            let mut r = json!({"index": index, "relevance_score": score});
            if echo {
                r["document"] = json!({"text": documents[index]});
            }
            r
        })
        .collect();
    let answer = json!({
        "id": format!("rerank-sim-{}", shared.next_id()),
        "model": model(shared, body),
        "results": results,
        "usage": {"total_tokens": tokens},
    });
    Ok(json_response(StatusCode::OK, &answer))
}

/// One input to embed.
enum Item<'a> {
    Text(&'a str),
    Tokens(&'a [Value]),
}

impl Item<'_> {
    fn tokens(&self) -> u64 {
        match self {
            Item::Text(s) => count_words(s),
            Item::Tokens(ids) => ids.len() as u64,
        }
    }

    /// A unit vector from the input's bytes: each byte adds to dimension `position % 8`.
    fn vector(&self) -> [f32; DIMENSIONS] {
        let mut v = [0.0f32; DIMENSIONS];
        let mut add = |i: usize, x: f32| v[i % DIMENSIONS] += x;
        match self {
            Item::Text(s) => s
                .bytes()
                .enumerate()
                .for_each(|(i, b)| add(i, f32::from(b))),
            Item::Tokens(ids) => ids
                .iter()
                .enumerate()
                .for_each(|(i, id)| add(i, id.as_u64().unwrap_or(0) as f32)),
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

/// Share of the query's words that occur in the document, ignoring case.
fn relevance(query: &str, document: &str) -> f64 {
    let doc: std::collections::HashSet<String> =
        document.split_whitespace().map(str::to_lowercase).collect();
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    if words.is_empty() {
        return 0.0;
    }
    words.iter().filter(|w| doc.contains(*w)).count() as f64 / words.len() as f64
}

/// The request's `model`, else the sim's.
fn model(shared: &Shared, body: &Map<String, Value>) -> String {
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => shared.config.model.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_unit_length_and_follow_the_text() {
        let a = Item::Text("hello world").vector();
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        assert_eq!(a, Item::Text("hello world").vector());
        assert_ne!(a, Item::Text("other text").vector());
        assert_eq!(Item::Text("").vector(), [0.0; DIMENSIONS]);
    }

    #[test]
    fn relevance_is_the_share_of_query_words_found() {
        assert_eq!(relevance("red fox", "The Red dog"), 0.5);
        assert_eq!(relevance("red fox", "a red fox"), 1.0);
        assert_eq!(relevance("", "x"), 0.0);
    }
}
