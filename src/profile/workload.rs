//! Workload rules: how many workload units a request is worth.
//!
//! A rule reads the request (a JSON path such as `max_tokens`, a constant, or a formula
//! over named values such as `width * height * steps / 1000` or
//! `500 * clamp(chars / 600, 0.1, 8)`), and optionally the response
//! (`usage.completion_tokens`) when the benchmark has one to read. A rule that cannot size
//! a request says why ([`RuleError`]); the caller counts the request as `DEFAULT_COST`.

pub use super::formula::{Expr, Func, MAX_TOKENS};
pub use super::measure::{BODY_BYTES, CHARS_PER_TOKEN, Measure, Var};
use serde_json::Value;
use std::collections::BTreeMap;

/// A dotted path into JSON: object keys, or array indexes for arrays (`choices.0.text`).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath(Vec<String>);

impl JsonPath {
    /// Parses `a.b.0.c`; empty segments are an error.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<String> = s.trim().split('.').map(str::to_string).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!("invalid JSON path {s:?}: empty segment"));
        }
        Ok(Self(parts))
    }

    /// The value at this path.
    pub fn get<'a>(&self, mut v: &'a Value) -> Option<&'a Value> {
        for part in &self.0 {
            v = match v {
                Value::Object(o) => o.get(part)?,
                Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// The number at this path (a numeric string counts).
    pub fn number(&self, v: &Value) -> Option<f64> {
        as_number(self.get(v)?)
    }
}

/// A JSON number, or a string holding one.
pub(crate) fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl std::fmt::Display for JsonPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// Why a rule gave no workload for a request. The request is counted as `DEFAULT_COST`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    /// The rule reads the JSON body and the request has none (a GET, an empty POST):
    /// nothing to size, not a fault.
    #[error("the request has no body")]
    NoBody,
    /// The rule reads the JSON body and the body is streamed to the backend unread
    /// (`serverless_*` query auth, a non-JSON upload).
    #[error("the body is streamed to the backend, not read, so its JSON cannot be sized")]
    Streamed,
    /// The rule reads the JSON body and it does not parse.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// A value the rule reads is absent or of the wrong kind; the text says which.
    #[error("{0}")]
    Unreadable(String),
    /// The rule uses `body_bytes` and the request's size is unknown (a chunked upload
    /// without `Content-Length`).
    #[error("body_bytes is unknown: the request has no Content-Length")]
    NoBodySize,
    /// The formula divides by zero.
    #[error("the formula divides by zero")]
    DivisionByZero,
    /// The result is infinite or NaN.
    #[error("the result {0} is not a finite number")]
    NotFinite(f64),
    /// The result is below zero.
    #[error("the result {0} is negative")]
    Negative(f64),
}

/// What a rule may read of one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Input<'a> {
    /// The JSON body, parsed; `None` when the request has none the rule can read.
    pub json: Option<&'a Value>,
    /// Size of the body the backend receives, bytes (`body_bytes`), when known.
    pub body_bytes: Option<u64>,
}

/// How the workload of a request is counted from its payload.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestRule {
    /// The same number for every request.
    Constant(f64),
    /// A number in the payload.
    Path(JsonPath),
    /// A formula over values of the request.
    Formula {
        /// The expression.
        expr: Expr,
        /// Variable → where its value comes from. `body_bytes` is built in.
        vars: BTreeMap<String, Var>,
    },
}

impl RequestRule {
    /// Whether the rule reads the JSON body (and so the body must be parsed first).
    pub fn needs_json(&self) -> bool {
        match self {
            RequestRule::Constant(_) => false,
            RequestRule::Path(_) => true,
            RequestRule::Formula { vars, .. } => !vars.is_empty(),
        }
    }

    /// The workload of a request: a finite number >= 0, or why there is none.
    pub fn evaluate(&self, input: &Input<'_>) -> Result<f64, RuleError> {
        let json = || input.json.ok_or(RuleError::NoBody);
        let v = match self {
            RequestRule::Constant(c) => *c,
            RequestRule::Path(p) => p
                .number(json()?)
                .ok_or_else(|| RuleError::Unreadable(format!("{p}: no number there")))?,
            RequestRule::Formula { expr, vars } => expr.eval(&|name| {
                if name == BODY_BYTES {
                    return input
                        .body_bytes
                        .map(|b| b as f64)
                        .ok_or(RuleError::NoBodySize);
                }
                match vars.get(name) {
                    Some(var) => var.value(json()?),
                    // The parser checks every variable is bound; this is a rule built in code.
                    None => Err(RuleError::Unreadable(format!("{name}: not defined"))),
                }
            })?,
        };
        if !v.is_finite() {
            return Err(RuleError::NotFinite(v));
        }
        if v < 0.0 {
            return Err(RuleError::Negative(v));
        }
        Ok(v)
    }

    /// The workload of a benchmark `payload` (its `body_bytes` is its JSON text's length),
    /// when the rule finds what it needs and it is positive.
    pub fn eval(&self, payload: &Value) -> Option<f64> {
        let body_bytes = match self {
            RequestRule::Formula { expr, .. } if expr.mentions(BODY_BYTES) => {
                serde_json::to_vec(payload).ok().map(|b| b.len() as u64)
            }
            _ => None,
        };
        let input = Input {
            json: Some(payload),
            body_bytes,
        };
        self.evaluate(&input).ok().filter(|v| *v > 0.0)
    }
}

/// A profile's workload rule.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadRule {
    /// From the request payload.
    pub request: Option<RequestRule>,
    /// From the backend's response (benchmark only), preferred when present.
    pub response: Option<JsonPath>,
}

impl WorkloadRule {
    /// Workload of a benchmark request from its response, else its payload.
    pub fn measured(&self, payload: &Value, response: Option<&Value>) -> Option<f64> {
        let from_response = self
            .response
            .as_ref()
            .zip(response)
            .and_then(|(p, r)| p.number(r))
            .filter(|v| v.is_finite() && *v > 0.0);
        from_response.or_else(|| self.request.as_ref()?.eval(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_walk_objects_and_arrays() {
        let v = json!({"usage": {"completion_tokens": 7}, "choices": [{"n": "3"}], "g": {"5": {"w": 512}}});
        assert_eq!(
            JsonPath::parse("usage.completion_tokens")
                .unwrap()
                .number(&v),
            Some(7.0)
        );
        assert_eq!(
            JsonPath::parse("choices.0.n").unwrap().number(&v),
            Some(3.0)
        );
        assert_eq!(JsonPath::parse("g.5.w").unwrap().number(&v), Some(512.0));
        assert_eq!(JsonPath::parse("g.6.w").unwrap().number(&v), None);
        assert!(JsonPath::parse("a..b").is_err());
    }

    fn formula(src: &str, vars: &[(&str, &str)]) -> RequestRule {
        RequestRule::Formula {
            expr: Expr::parse(src).unwrap(),
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), Var::parse(v).unwrap()))
                .collect(),
        }
    }

    #[test]
    fn a_rule_fails_on_non_finite_negative_or_undefined_results() {
        let body = json!({"n": 2, "big": 1e308, "neg": -3, "nan": "NaN"});
        let input = Input {
            json: Some(&body),
            body_bytes: Some(10),
        };
        let eval = |src: &str| {
            formula(
                src,
                &[("n", "n"), ("big", "big"), ("neg", "neg"), ("nan", "nan")],
            )
            .evaluate(&input)
        };
        assert_eq!(eval("n * body_bytes"), Ok(20.0));
        assert_eq!(eval("big * 10"), Err(RuleError::NotFinite(f64::INFINITY)));
        assert!(matches!(eval("nan + 1"), Err(RuleError::NotFinite(v)) if v.is_nan()));
        assert!(matches!(
            eval("clamp(nan, 0.1, 8)"),
            Err(RuleError::NotFinite(_))
        ));
        assert!(matches!(
            eval("big * 10 - big * 10"),
            Err(RuleError::NotFinite(_))
        ));
        assert_eq!(eval("neg"), Err(RuleError::Negative(-3.0)));
        assert_eq!(eval("n / (n - 2)"), Err(RuleError::DivisionByZero));
        assert_eq!(eval("0 * n"), Ok(0.0));
        let no_size = Input {
            json: Some(&body),
            body_bytes: None,
        };
        assert_eq!(
            formula("body_bytes / 2", &[]).evaluate(&no_size),
            Err(RuleError::NoBodySize)
        );
        assert_eq!(
            RequestRule::Path(JsonPath::parse("m").unwrap()).evaluate(&no_size),
            Err(RuleError::Unreadable("m: no number there".into()))
        );
        assert_eq!(
            RequestRule::Path(JsonPath::parse("m").unwrap()).evaluate(&Input::default()),
            Err(RuleError::NoBody)
        );
        // A constant needs nothing of the request; body_bytes needs no JSON.
        assert_eq!(
            RequestRule::Constant(3.0).evaluate(&Input::default()),
            Ok(3.0)
        );
        assert!(!formula("body_bytes", &[]).needs_json());
    }

    #[test]
    fn a_benchmark_payload_counts_its_json_text_as_body_bytes() {
        let payload = json!({"a": 1});
        assert_eq!(formula("body_bytes", &[]).eval(&payload), Some(7.0));
        assert_eq!(formula("n", &[("n", "n or 0")]).eval(&payload), None);
    }

    #[test]
    fn response_wins_over_request_when_present() {
        let rule = WorkloadRule {
            request: Some(RequestRule::Path(JsonPath::parse("max_tokens").unwrap())),
            response: Some(JsonPath::parse("usage.completion_tokens").unwrap()),
        };
        let payload = json!({"max_tokens": 500});
        assert_eq!(
            rule.measured(
                &payload,
                Some(&json!({"usage": {"completion_tokens": 120}}))
            ),
            Some(120.0)
        );
        assert_eq!(rule.measured(&payload, Some(&json!({}))), Some(500.0));
        assert_eq!(rule.measured(&payload, None), Some(500.0));
        assert_eq!(rule.measured(&json!({"max_tokens": 0}), None), None);
    }
}
