//! `POST {autoscaler}/route/` (PROTOCOL.md §1): one call, and the poll loop that waits for
//! a ready worker.

use super::{Client, ClientError, REPLAY_TIMEOUT_SECS};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

/// One answer of `/route/`.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteAnswer {
    /// A worker was assigned. The object is the `auth_data` to send, exactly as the
    /// autoscaler wrote it (JSON types kept: the signature may cover them).
    Assigned(Map<String, Value>),
    /// No worker is ready yet: poll again with `request_idx`.
    NotReady {
        /// The id to poll with (the autoscaler's, or the one sent when it gave none).
        request_idx: u64,
        /// The autoscaler's census of the endpoint's workers, `null` when absent.
        status: Value,
    },
}

impl Client {
    /// Calls `/route/` once for a request of workload `cost`; `request_idx` is 0 for a new
    /// request, or the id of an earlier answer when polling or retrying.
    pub async fn route(&self, cost: f64, request_idx: u64) -> Result<RouteAnswer, ClientError> {
        let c = &self.inner.config;
        let url = &self.inner.route_url;
        let body = json!({
            "endpoint": c.endpoint,
            "api_key": c.api_key,
            "cost": cost,
            "request_idx": request_idx,
            "replay_timeout": REPLAY_TIMEOUT_SECS,
        });
        let unavailable =
            |reason: String, source: Option<reqwest::Error>| ClientError::AutoscalerUnavailable {
                url: url.clone(),
                reason,
                source,
            };
        let resp = self
            .inner
            .control
            .post(url)
            .bearer_auth(&c.api_key)
            .timeout(c.route_call_timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| unavailable(format!("request failed: {e}"), Some(e)))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| unavailable(format!("reading the answer failed: {e}"), Some(e)))?;
        let message = || error_message(&text);
        match status {
            200..=299 => {}
            401 | 403 => {
                return Err(ClientError::Auth {
                    endpoint: c.endpoint.clone(),
                    status,
                    message: message(),
                });
            }
            404 => {
                return Err(ClientError::UnknownEndpoint {
                    endpoint: c.endpoint.clone(),
                    message: message(),
                });
            }
            400..=499 => {
                return Err(ClientError::RouteRejected {
                    status,
                    message: message(),
                });
            }
            _ => return Err(unavailable(format!("HTTP {status}: {}", message()), None)),
        }
        let Ok(Value::Object(answer)) = serde_json::from_str::<Value>(&text) else {
            return Err(unavailable(
                format!("the answer is not a JSON object: {}", excerpt(&text)),
                None,
            ));
        };
        match answer.get("url") {
            Some(Value::String(_)) => Ok(RouteAnswer::Assigned(answer)),
            Some(other) => Err(unavailable(
                format!("the answer's url is not a string: {other}"),
                None,
            )),
            None => Ok(RouteAnswer::NotReady {
                request_idx: answer
                    .get("request_idx")
                    .and_then(Value::as_u64)
                    .filter(|i| *i != 0)
                    .unwrap_or(request_idx),
                status: answer.get("status").cloned().unwrap_or(Value::Null),
            }),
        }
    }

    /// Polls `/route/` until a worker is assigned or the route timeout passes. Transport
    /// failures and 5xx are retried up to `max_attempts` times in a row; 4xx are final.
    pub(crate) async fn route_until_assigned(
        &self,
        cost: f64,
        mut request_idx: u64,
    ) -> Result<Map<String, Value>, ClientError> {
        let c = &self.inner.config;
        let started = Instant::now();
        let deadline = started + c.route_timeout;
        let (mut polls, mut failures) = (0u32, 0u32);
        loop {
            let delay = match self.route(cost, request_idx).await {
                Ok(RouteAnswer::Assigned(auth)) => return Ok(auth),
                Ok(RouteAnswer::NotReady {
                    request_idx: idx,
                    status,
                }) => {
                    request_idx = idx;
                    failures = 0;
                    if Instant::now() >= deadline {
                        return Err(ClientError::NoWorker {
                            endpoint: c.endpoint.clone(),
                            waited: started.elapsed(),
                            status,
                        });
                    }
                    tracing::debug!(request_idx, %status, "no worker ready; polling /route/ again");
                    polls += 1;
                    c.poll_backoff.delay(polls - 1)
                }
                Err(e) if e.is_autoscaler_unavailable() => {
                    failures += 1;
                    if failures >= c.max_attempts || Instant::now() >= deadline {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, failures, "route failed; retrying");
                    c.retry_backoff.delay(failures - 1)
                }
                Err(e) => return Err(e),
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(delay.min(remaining)).await;
        }
    }
}

/// The `error` field of a JSON error answer, else the start of the text on one line.
pub(crate) fn error_message(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => match o.get("error").or_else(|| o.get("detail")) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => excerpt(text),
        },
        _ => excerpt(text),
    }
}

/// The first 200 characters of `text`, its white space runs as single spaces.
fn excerpt(text: &str) -> String {
    const MAX: usize = 200;
    let t = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.is_empty() {
        return "(empty body)".into();
    }
    match t.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_answer_reads_as_its_error_field_or_the_start_of_its_body_on_one_line() {
        assert_eq!(
            error_message(r#"{"error": "no such endpoint"}"#),
            "no such endpoint"
        );
        assert_eq!(
            error_message("<html>\n  not\tfound </html>"),
            "<html> not found </html>"
        );
        assert_eq!(error_message(" \n"), "(empty body)");
        let long = error_message(&"é".repeat(300));
        assert_eq!(long, format!("{}…", "é".repeat(200)));
    }
}
