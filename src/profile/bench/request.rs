//! One benchmark request, its work counted as it arrives (streamed) or when it ends (whole).

use super::Bench;
use crate::profile::StreamCount;
use crate::profile::sse;
use http::StatusCode;
use serde_json::Value;

/// Why a benchmark request failed.
#[derive(Debug, Clone)]
pub(super) enum RequestError {
    /// The backend answered with an error status.
    Status(StatusCode, String),
    /// Anything else: connection, timeout, an answer the rule cannot count.
    Other(String),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Status(_, text) | RequestError::Other(text) => f.write_str(text),
        }
    }
}

/// Bytes of an error answer quoted in the error.
const QUOTED_BYTES: usize = 200;

impl Bench {
    /// Sends one request (streamed when `stream` is given) and calls `on_units` with each
    /// amount of work as it is counted: per streamed event, or once for a whole answer.
    /// `on_units` returning false ends the request early (its connection is closed, so the
    /// backend stops generating).
    pub(super) async fn request(
        &self,
        stream: Option<&StreamCount>,
        on_units: &mut (dyn FnMut(f64) -> bool + Send),
    ) -> Result<(), RequestError> {
        let req = &self.profile.request;
        let mut payload = req.body.as_ref().map(|t| t.render(&self.ctx));
        let path = stream.and_then(|s| s.path.as_deref()).unwrap_or(&req.path);
        if let Some(s) = stream {
            let p = payload.get_or_insert_with(|| Value::Object(Default::default()));
            merge(p, &s.body);
        }
        let url = format!("{}{}", self.backend, path);
        let mut builder = self
            .client
            .request(req.method.clone(), &url)
            .timeout(req.timeout);
        if let Some(p) = &payload {
            builder = builder.json(p);
        }
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
        }
        let other = |what: &str, e: &reqwest::Error| {
            RequestError::Other(format!("{url}: {what}{}", crate::http_util::error_chain(e)))
        };
        let mut resp = builder.send().await.map_err(|e| other("", &e))?;
        let status = resp.status();
        if !status.is_success() {
            let mut quoted = Vec::new();
            while quoted.len() < QUOTED_BYTES {
                match resp.chunk().await {
                    Ok(Some(c)) => quoted.extend_from_slice(&c),
                    _ => break,
                }
            }
            quoted.truncate(QUOTED_BYTES);
            let text = String::from_utf8_lossy(&quoted);
            return Err(RequestError::Status(
                status,
                format!("{url} answered {status}: {text}"),
            ));
        }
        let is_sse = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if let (Some(s), true) = (stream, is_sse) {
            let mut counter = StreamCounter::new(s);
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| other("reading the stream: ", &e))?
            {
                let units = counter
                    .push(&chunk)
                    .map_err(|e| RequestError::Other(format!("{url}: reading the stream: {e}")))?;
                if units != 0.0 && !on_units(units) {
                    return Ok(());
                }
            }
            if counter.counted <= 0.0 {
                return Err(RequestError::Other(format!(
                    "{url}: the stream ended without an event the profile counts (benchmark.stream.unit = {:?})",
                    s.unit.to_string()
                )));
            }
            return Ok(());
        }
        // A whole answer (or a backend that answered a streamed request in one piece).
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| other("reading the answer: ", &e))?;
        let response: Option<Value> = serde_json::from_slice(&bytes).ok();
        let units = self
            .profile
            .workload
            .measured(payload.as_ref().unwrap_or(&Value::Null), response.as_ref())
            .ok_or_else(|| {
                RequestError::Other(format!(
                    "{url}: the workload rule found no workload in the request or answer"
                ))
            })?;
        on_units(units);
        Ok(())
    }
}

/// Merges `extra` into `into`: objects key by key, recursively; anything else replaces.
fn merge(into: &mut Value, extra: &Value) {
    match (into, extra) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// Counts the work of one streamed answer: one unit per event with a value at the unit
/// path; an event with the total replaces the count.
struct StreamCounter<'a> {
    rule: &'a StreamCount,
    events: sse::Events,
    counted: f64,
}

impl<'a> StreamCounter<'a> {
    fn new(rule: &'a StreamCount) -> Self {
        Self {
            rule,
            events: sse::Events::default(),
            counted: 0.0,
        }
    }

    /// Reads bytes of the stream; returns the units they added (negative when a total
    /// corrects an over-count).
    fn push(&mut self, bytes: &[u8]) -> Result<f64, String> {
        let before = self.counted;
        let (rule, counted) = (self.rule, &mut self.counted);
        self.events.push(bytes, |data| {
            if data == b"[DONE]" {
                return;
            }
            let Ok(event) = serde_json::from_slice::<Value>(data) else {
                return;
            };
            if rule.unit.get(&event).is_some_and(has_content) {
                *counted += 1.0;
            }
            if let Some(total) = rule.total.as_ref().and_then(|t| t.number(&event))
                && total.is_finite()
                && total >= 0.0
            {
                *counted = total;
            }
        })?;
        Ok(self.counted - before)
    }
}

/// A value that stands for generated output: not null, not an empty string.
fn has_content(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::workload::JsonPath;
    use serde_json::json;

    fn openai_rule() -> StreamCount {
        StreamCount {
            path: None,
            body: json!({"stream": true}),
            unit: JsonPath::parse("choices.0.text").unwrap(),
            total: Some(JsonPath::parse("usage.completion_tokens").unwrap()),
        }
    }

    #[test]
    fn chunks_count_one_unit_and_the_usage_total_corrects_them() {
        let rule = openai_rule();
        let mut c = StreamCounter::new(&rule);
        let chunk = |t: &str| format!("data: {}\n\n", json!({"choices": [{"text": t}]}));
        assert_eq!(c.push(chunk("a").as_bytes()).unwrap(), 1.0);
        // Two events in one read; an empty text (a final chunk) counts nothing.
        let two = format!("{}{}", chunk("b"), chunk(""));
        assert_eq!(c.push(two.as_bytes()).unwrap(), 1.0);
        // The server says four tokens were generated (a chunk held two).
        let usage = format!(
            "data: {}\n\ndata: [DONE]\n\n",
            json!({"choices": [], "usage": {"completion_tokens": 4}})
        );
        assert_eq!(c.push(usage.as_bytes()).unwrap(), 2.0);
        assert_eq!(c.counted, 4.0);
    }

    #[test]
    fn merge_adds_keys_recursively() {
        let mut body = json!({"a": 1, "o": {"x": 1}});
        merge(&mut body, &json!({"stream": true, "o": {"y": 2}}));
        assert_eq!(body, json!({"a": 1, "stream": true, "o": {"x": 1, "y": 2}}));
    }
}
