//! The TGI API: `POST /generate` (one JSON answer) and `POST /generate_stream` (one
//! `data: {"token": …}` event per token, the last carrying the full `generated_text`).
//!
//! TGI streams end without a `[DONE]` marker; the final event is the one whose
//! `generated_text` is not null.

use super::Shared;
use super::error::SimError;
use super::metrics::Api;
use super::model::{completion_text, count_words, token_text};
use super::stats::Job;
use super::stream::{Events, TokenStream};
use crate::http_util::{Body, json_response};
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

/// `parameters.max_new_tokens` when the request gives none.
pub const DEFAULT_MAX_NEW_TOKENS: u64 = 20;

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
struct Ask {
    prompt_tokens: u64,
    max_new_tokens: u64,
}

impl Ask {
    fn parse(body: &Map<String, Value>) -> Result<Ask, SimError> {
        let bad = |m: &str| SimError::BadRequest(m.to_string());
        let Some(Value::String(inputs)) = body.get("inputs") else {
            return Err(bad("inputs is required: a string"));
        };
        let max_new_tokens = match body.get("parameters") {
            None | Some(Value::Null) => None,
            Some(Value::Object(p)) => match p.get("max_new_tokens") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_u64().ok_or_else(|| {
                    bad("parameters.max_new_tokens must be a non-negative integer")
                })?),
            },
            Some(_) => return Err(bad("parameters must be an object")),
        };
        Ok(Ask {
            prompt_tokens: count_words(inputs),
            max_new_tokens: max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS),
        })
    }
}

fn details(tokens: u64) -> Value {
    json!({"finish_reason": "length", "generated_tokens": tokens, "seed": null})
}

/// `POST /generate`.
pub(crate) async fn generate(
    shared: &Shared,
    body: &Map<String, Value>,
) -> Result<Response<Body>, SimError> {
    let ask = Ask::parse(body)?;
    let tokens = shared.model.completion_tokens(ask.max_new_tokens);
    let job = Job::queued(&shared.stats, Api::Generate);
    shared.model.generate(job, ask.prompt_tokens, tokens).await;
    let answer = json!({"generated_text": completion_text(tokens), "details": details(tokens)});
    Ok(json_response(StatusCode::OK, &answer))
}

/// `POST /generate_stream`.
pub(crate) fn generate_stream(
    shared: &Shared,
    body: &Map<String, Value>,
) -> Result<Response<Body>, SimError> {
    let ask = Ask::parse(body)?;
    let tokens = shared.model.completion_tokens(ask.max_new_tokens);
    let job = Job::queued(&shared.stats, Api::GenerateStream);
    let stream = TokenStream::new(
        shared.model.admit_stream(job, ask.prompt_tokens),
        tokens,
        shared.model.token_period(),
        shared.config.die_after_chunks,
        Box::new(TokenEvents {
            text: String::new(),
            tokens,
        }),
    );
    Ok(stream.into_response())
}

/// The events of one TGI stream; accumulates the text for the final event.
struct TokenEvents {
    text: String,
    tokens: u64,
}

impl Events for TokenEvents {
    fn token(&mut self, index: u64, last: bool) -> String {
        let text = token_text(index);
        self.text.push_str(text);
        let token = json!({"id": index, "text": text, "logprob": 0.0, "special": false});
        let event = if last {
            json!({
                "index": index,
                "token": token,
                "generated_text": self.text,
                "details": details(self.tokens),
            })
        } else {
            json!({"index": index, "token": token, "generated_text": null, "details": null})
        };
        event.to_string()
    }

    fn tail(&mut self) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_default_to_twenty_new_tokens() {
        let body = json!({"inputs": "a b c"});
        let a = Ask::parse(body.as_object().unwrap()).unwrap();
        assert_eq!(
            a,
            Ask {
                prompt_tokens: 3,
                max_new_tokens: DEFAULT_MAX_NEW_TOKENS
            }
        );
        let body = json!({"inputs": "", "parameters": {"max_new_tokens": 7, "temperature": 0.5}});
        assert_eq!(
            Ask::parse(body.as_object().unwrap())
                .unwrap()
                .max_new_tokens,
            7
        );
        let body = json!({"inputs": 3});
        assert!(Ask::parse(body.as_object().unwrap()).is_err());
    }

    #[test]
    fn only_the_last_event_carries_the_text() {
        let mut e = TokenEvents {
            text: String::new(),
            tokens: 2,
        };
        let first: Value = serde_json::from_str(&e.token(0, false)).unwrap();
        assert_eq!(first["generated_text"], Value::Null);
        assert_eq!(first["token"]["text"], " lorem");
        let last: Value = serde_json::from_str(&e.token(1, true)).unwrap();
        assert_eq!(last["generated_text"], " lorem ipsum");
        assert_eq!(last["details"]["generated_tokens"], 2);
        assert!(e.tail().is_empty());
    }
}
