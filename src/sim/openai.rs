//! The OpenAI API: `POST /v1/completions` and `POST /v1/chat/completions`, as JSON or as a
//! stream of `data: {chunk}` events ending with `data: [DONE]`.
//!
//! Shapes follow OpenAI (and vLLM, which copies them): every answer finishes with
//! `"finish_reason": "length"` because the sim always generates exactly `max_tokens`. With
//! `stream_options.include_usage`, token chunks carry `"usage": null` and one extra chunk
//! with empty `choices` and the usage precedes `[DONE]`.

use super::Shared;
use super::error::SimError;
use super::metrics::Api;
use super::model::{completion_text, count_words, token_text};
use super::stats::Job;
use super::stream::{Events, TokenStream};
use crate::http_util::{Body, json_response};
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

/// `max_tokens` when the request gives none (OpenAI's legacy completions default).
pub const DEFAULT_MAX_TOKENS: u64 = 16;

/// Which endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `/v1/completions`: a `prompt`, answers carry `text`.
    Text,
    /// `/v1/chat/completions`: `messages`, answers carry a `message` or a `delta`.
    Chat,
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
struct Ask {
    model: String,
    prompt_tokens: u64,
    max_tokens: u64,
    stream: bool,
    include_usage: bool,
}

impl Ask {
    fn parse(body: &Map<String, Value>, kind: Kind, default_model: &str) -> Result<Ask, SimError> {
        let prompt_tokens = match kind {
            Kind::Text => prompt_tokens(body.get("prompt"))?,
            Kind::Chat => message_tokens(body.get("messages"))?,
        };
        let max_tokens = match kind {
            Kind::Chat if is_set(body.get("max_completion_tokens")) => {
                count(body, "max_completion_tokens")?
            }
            _ => count(body, "max_tokens")?,
        };
        let include_usage = match body.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => flag(o, "include_usage", "stream_options.include_usage")?,
            Some(_) => return Err(bad("stream_options must be an object")),
        };
        Ok(Ask {
            model: match body.get("model") {
                Some(Value::String(m)) if !m.is_empty() => m.clone(),
                _ => default_model.to_string(),
            },
            prompt_tokens,
            max_tokens: max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            stream: flag(body, "stream", "stream")?,
            include_usage,
        })
    }

    fn usage(&self, completion_tokens: u64) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        })
    }
}

/// Serves one completion request, streamed or not.
pub(crate) async fn completions(
    shared: &Shared,
    body: &Map<String, Value>,
    kind: Kind,
) -> Result<Response<Body>, SimError> {
    let ask = Ask::parse(body, kind, &shared.config.model)?;
    let tokens = shared.model.completion_tokens(ask.max_tokens);
    let id = match kind {
        Kind::Text => format!("cmpl-sim-{}", shared.next_id()),
        Kind::Chat => format!("chatcmpl-sim-{}", shared.next_id()),
    };
    let created = super::unix_now();
    let api = match kind {
        Kind::Text => Api::Completions,
        Kind::Chat => Api::ChatCompletions,
    };
    let job = Job::queued(&shared.stats, api);
    if ask.stream {
        let events = Chunks {
            id,
            created,
            kind,
            usage: ask.include_usage.then(|| ask.usage(tokens)),
            model: ask.model,
        };
        let stream = TokenStream::new(
            shared.model.admit_stream(job, ask.prompt_tokens),
            tokens,
            shared.model.token_period(),
            shared.config.die_after_chunks,
            Box::new(events),
        );
        return Ok(stream.into_response());
    }
    shared.model.generate(job, ask.prompt_tokens, tokens).await;
    let text = completion_text(tokens);
    let (object, choice) = match kind {
        Kind::Text => (
            "text_completion",
            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": "length"}),
        ),
        Kind::Chat => (
            "chat.completion",
            json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": "length",
            }),
        ),
    };
    let answer = json!({
        "id": id,
        "object": object,
        "created": created,
        "model": ask.model,
        "choices": [choice],
        "usage": ask.usage(tokens),
    });
    Ok(json_response(StatusCode::OK, &answer))
}

/// The chunks of one streamed completion.
struct Chunks {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    /// `Some` when the client asked for `stream_options.include_usage`.
    usage: Option<Value>,
}

impl Chunks {
    fn chunk(&self, choices: Value) -> Value {
        let object = match self.kind {
            Kind::Text => "text_completion",
            Kind::Chat => "chat.completion.chunk",
        };
        let mut chunk = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if self.usage.is_some() {
            chunk["usage"] = Value::Null;
        }
        chunk
    }
}

impl Events for Chunks {
    fn token(&mut self, index: u64, last: bool) -> String {
        let text = token_text(index);
        let finish = if last { json!("length") } else { Value::Null };
        let choice = match self.kind {
            Kind::Text => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
            }
            Kind::Chat => {
                let delta = if index == 0 {
                    json!({"role": "assistant", "content": text})
                } else {
                    json!({"content": text})
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
        };
        self.chunk(json!([choice])).to_string()
    }

    fn tail(&mut self) -> Vec<String> {
        let mut tail = Vec::new();
        if let Some(usage) = self.usage.take() {
            let mut chunk = self.chunk(json!([]));
            chunk["usage"] = usage;
            tail.push(chunk.to_string());
        }
        tail.push("[DONE]".to_string());
        tail
    }
}

fn bad(message: impl Into<String>) -> SimError {
    SimError::BadRequest(message.into())
}

fn is_set(v: Option<&Value>) -> bool {
    !matches!(v, None | Some(Value::Null))
}

/// A non-negative integer field; `None` when absent or null.
fn count(body: &Map<String, Value>, key: &str) -> Result<Option<u64>, SimError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(format!("{key} must be a non-negative integer"))),
    }
}

/// A boolean field; false when absent or null.
fn flag(body: &Map<String, Value>, key: &str, name: &str) -> Result<bool, SimError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(format!("{name} must be a boolean"))),
    }
}

/// Words of a `prompt`: a string, a list of strings, or token ids (one token each).
fn prompt_tokens(prompt: Option<&Value>) -> Result<u64, SimError> {
    fn walk(v: &Value) -> Option<u64> {
        match v {
            Value::String(s) => Some(count_words(s)),
            Value::Number(_) => Some(1),
            Value::Array(items) => items.iter().map(walk).sum(),
            _ => None,
        }
    }
    prompt
        .and_then(walk)
        .ok_or_else(|| bad("prompt is required: a string, a list of strings or token ids"))
}

/// Words of every message's `content`: a string or a list of `{"type": "text", "text"}`
/// parts (other parts count nothing).
fn message_tokens(messages: Option<&Value>) -> Result<u64, SimError> {
    let Some(Value::Array(messages)) = messages else {
        return Err(bad("messages is required: a list of messages"));
    };
    let mut words = 0;
    for m in messages {
        words += match m.get("content") {
            Some(Value::String(s)) => count_words(s),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .map(count_words)
                .sum(),
            None | Some(Value::Null) => 0,
            Some(_) => return Err(bad("message content must be a string or a list of parts")),
        };
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(body: Value, kind: Kind) -> Result<Ask, SimError> {
        Ask::parse(body.as_object().unwrap(), kind, "model")
    }

    #[test]
    fn completion_requests_count_prompt_words_and_default_max_tokens() {
        let a = ask(json!({"prompt": "one two  three"}), Kind::Text).unwrap();
        assert_eq!(
            a,
            Ask {
                model: "model".into(),
                prompt_tokens: 3,
                max_tokens: DEFAULT_MAX_TOKENS,
                stream: false,
                include_usage: false,
            }
        );
        let a = ask(
            json!({"prompt": ["a b", [1, 2, 3]], "max_tokens": 5}),
            Kind::Text,
        )
        .unwrap();
        assert_eq!((a.prompt_tokens, a.max_tokens), (5, 5));
    }

    #[test]
    fn chat_requests_count_every_message() {
        let body = json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi there you"}]},
            ],
            "max_completion_tokens": 9,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let a = ask(body, Kind::Chat).unwrap();
        assert_eq!(
            (a.model.as_str(), a.prompt_tokens, a.max_tokens),
            ("m", 5, 9)
        );
        assert!(a.stream && a.include_usage);
    }

    #[test]
    fn malformed_fields_are_refused() {
        for (body, kind) in [
            (json!({}), Kind::Text),
            (json!({"prompt": "x", "max_tokens": -1}), Kind::Text),
            (json!({"prompt": "x", "max_tokens": 1.5}), Kind::Text),
            (json!({"prompt": "x", "stream": "yes"}), Kind::Text),
            (json!({"messages": "hi"}), Kind::Chat),
            (json!({"messages": [{"content": 3}]}), Kind::Chat),
        ] {
            assert!(
                matches!(ask(body.clone(), kind), Err(SimError::BadRequest(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn stream_chunks_put_usage_last_then_done() {
        let mut c = Chunks {
            id: "chatcmpl-sim-1".into(),
            created: 0,
            model: "m".into(),
            kind: Kind::Chat,
            usage: Some(json!({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3})),
        };
        let first: Value = serde_json::from_str(&c.token(0, false)).unwrap();
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(first["usage"], Value::Null);
        let last: Value = serde_json::from_str(&c.token(1, true)).unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "length");
        let tail = c.tail();
        assert_eq!(tail.len(), 2);
        let usage: Value = serde_json::from_str(&tail[0]).unwrap();
        assert_eq!(usage["usage"]["total_tokens"], 3);
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(tail[1], "[DONE]");
    }
}
