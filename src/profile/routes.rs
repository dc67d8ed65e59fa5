//! Which workload rule counts a request: the rule of its route.
//!
//! A worker serving more than one route (chat, embeddings, images, audio) divides every
//! request's workload by one capacity, measured on the benchmarked route, so each route
//! needs its own rule in the benchmark's units. `[workload]` is the benchmarked route's
//! rule; `[routes."PATH"]` tables give other routes theirs. For a request to `path` (its
//! query left out), the first of these that exists applies:
//!
//! 1. the benchmark request's path (`request.path`, and `benchmark.stream.path`):
//!    `[workload]`;
//! 2. the route of exactly `path`;
//! 3. the longest route ending in `*` that `path` starts with (the text before the `*`);
//! 4. in a profile without `[routes]`, `[workload]` for every path;
//! 5. none: the request counts `DEFAULT_COST`.

use super::Profile;
use super::workload::{Input, RequestRule, RuleError};
use std::collections::BTreeMap;

/// The route rules of a profile: exact paths, and prefixes (`/v1/audio/*`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routes {
    exact: BTreeMap<String, RequestRule>,
    /// (prefix without its `*`, rule), longest prefix first.
    prefixes: Vec<(String, RequestRule)>,
}

impl Routes {
    /// Checks one route pattern: a path starting with `/`, no query, `*` only at the end.
    pub fn check_pattern(pattern: &str) -> Result<(), String> {
        if !pattern.starts_with('/') {
            return Err(format!("route {pattern:?} must start with /"));
        }
        if pattern.contains('?') {
            return Err(format!(
                "route {pattern:?} has a query: routes match the path only"
            ));
        }
        if pattern.trim_end_matches('*').contains('*') || pattern.ends_with("**") {
            return Err(format!(
                "route {pattern:?}: * may only end a route (a prefix match)"
            ));
        }
        Ok(())
    }

    /// The routes of `(pattern, rule)` pairs. Patterns must pass [`Routes::check_pattern`].
    pub fn new(routes: impl IntoIterator<Item = (String, RequestRule)>) -> Routes {
        let mut out = Routes::default();
        for (pattern, rule) in routes {
            match pattern.strip_suffix('*') {
                Some(prefix) => out.prefixes.push((prefix.to_string(), rule)),
                None => {
                    out.exact.insert(pattern, rule);
                }
            }
        }
        out.prefixes
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        out
    }

    /// Whether there are no route rules.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    /// The rule of `path`: exact, else the longest prefix.
    pub fn find(&self, path: &str) -> Option<&RequestRule> {
        self.exact.get(path).or_else(|| {
            self.prefixes
                .iter()
                .find(|(prefix, _)| path.starts_with(prefix.as_str()))
                .map(|(_, rule)| rule)
        })
    }

    /// Every route pattern, exact ones first (`/v1/audio/*` for a prefix).
    pub fn patterns(&self) -> impl Iterator<Item = String> + '_ {
        self.exact
            .keys()
            .cloned()
            .chain(self.prefixes.iter().map(|(p, _)| format!("{p}*")))
    }
}

/// What a workload rule may see of one incoming request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The request path, without its query.
    pub path: &'a str,
    /// The body, when it is in memory (a JSON payload); `None` when there is none or it is
    /// streamed to the backend unread.
    pub body: Option<&'a [u8]>,
    /// Bytes of the body the backend receives: its length in memory, else the request's
    /// `Content-Length`; `None` when unknown.
    pub body_bytes: Option<u64>,
}

impl Profile {
    /// The rule that counts requests to `path` (see the module docs), if any.
    pub fn rule_for(&self, path: &str) -> Option<&RequestRule> {
        let benchmarked = path == self.request.path
            || self
                .benchmark
                .stream
                .as_ref()
                .and_then(|s| s.path.as_deref())
                == Some(path);
        if benchmarked || self.routes.is_empty() {
            return self.workload.request.as_ref();
        }
        self.routes.find(path)
    }

    /// Workload of an incoming request by its route's rule: `Ok(Some(units))` when the rule
    /// gives a positive number, `Ok(None)` when no rule applies or there is nothing to size
    /// (no body, or a rule giving 0), and the reason when the rule fails on the request.
    /// Either way without a number, the request counts `DEFAULT_COST`.
    pub fn request_workload(&self, req: &RequestView<'_>) -> Result<Option<f64>, RuleError> {
        let Some(rule) = self.rule_for(req.path) else {
            return Ok(None);
        };
        let parsed;
        let json = if rule.needs_json() {
            match req.body {
                Some(b) if !b.iter().all(u8::is_ascii_whitespace) => {
                    parsed = serde_json::from_slice::<serde_json::Value>(b)
                        .map_err(|e| RuleError::NotJson(e.to_string()))?;
                    Some(&parsed)
                }
                None if req.body_bytes.is_some_and(|n| n > 0) => {
                    return Err(RuleError::Streamed);
                }
                _ => return Ok(None),
            }
        } else {
            None
        };
        let input = Input {
            json,
            body_bytes: req.body_bytes,
        };
        match rule.evaluate(&input) {
            Ok(v) => Ok((v > 0.0).then_some(v)),
            Err(RuleError::NoBody) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(n: f64) -> RequestRule {
        RequestRule::Constant(n)
    }

    #[test]
    fn exact_routes_win_then_the_longest_prefix() {
        let routes = Routes::new([
            ("/v1/audio/*".to_string(), rule(1.0)),
            ("/v1/*".to_string(), rule(2.0)),
            ("/v1/audio/speech".to_string(), rule(3.0)),
        ]);
        assert_eq!(routes.find("/v1/audio/speech"), Some(&rule(3.0)));
        assert_eq!(routes.find("/v1/audio/transcriptions"), Some(&rule(1.0)));
        assert_eq!(routes.find("/v1/embeddings"), Some(&rule(2.0)));
        assert_eq!(routes.find("/v2/x"), None);
        assert_eq!(
            routes.patterns().collect::<Vec<_>>(),
            ["/v1/audio/speech", "/v1/audio/*", "/v1/*"]
        );
    }

    /// Workload of a JSON `body` posted to `path` under the built-in profile `name`.
    fn workload(name: &str, path: &str, body: serde_json::Value) -> Result<Option<f64>, RuleError> {
        let text = body.to_string();
        let view = RequestView {
            path,
            body: Some(text.as_bytes()),
            body_bytes: Some(text.len() as u64),
        };
        Profile::built_in(name).unwrap().request_workload(&view)
    }

    /// Workload of a streamed upload of `bytes` to `path` under the built-in `openai`.
    fn upload(path: &str, bytes: Option<u64>) -> Result<Option<f64>, RuleError> {
        let view = RequestView {
            path,
            body: None,
            body_bytes: bytes,
        };
        Profile::built_in("openai").unwrap().request_workload(&view)
    }

    #[test]
    fn built_in_openai_counts_images_in_benchmark_requests() {
        let image = |body| workload("openai", "/v1/images/generations", body);
        assert_eq!(image(json!({"prompt": "a cat"})), Ok(Some(500.0)));
        assert_eq!(image(json!({"size": "1024x1024"})), Ok(Some(500.0)));
        assert_eq!(image(json!({"size": "auto", "n": 1})), Ok(Some(500.0)));
        assert_eq!(image(json!({"size": "2048x2048"})), Ok(Some(2000.0)));
        assert_eq!(
            image(json!({"size": "1024x1024", "n": 3})),
            Ok(Some(1500.0))
        );
        assert_eq!(
            image(json!({"size": "4096x4096", "n": 4})),
            Ok(Some(4000.0))
        );
        assert_eq!(image(json!({"size": "512x512"})), Ok(Some(125.0)));
        assert_eq!(image(json!({"size": "64x64"})), Ok(Some(50.0)));
    }

    #[test]
    fn built_in_openai_counts_text_routes_by_characters() {
        let embed = |input| workload("openai", "/v1/embeddings", json!({"input": input}));
        assert_eq!(embed(json!("x".repeat(600))), Ok(Some(500.0)));
        assert_eq!(
            embed(json!(["x".repeat(300), "y".repeat(900)])),
            Ok(Some(1000.0))
        );
        assert_eq!(embed(json!([[1, 2, 3]])), Ok(Some(50.0)));
        assert_eq!(embed(json!("x".repeat(100_000))), Ok(Some(4000.0)));
        let docs: Vec<String> = (0..16).map(|_| "d".repeat(250)).collect();
        let rerank = workload(
            "openai",
            "/v1/rerank",
            json!({"query": "q".repeat(60), "documents": docs}),
        );
        assert_eq!(rerank, Ok(Some(500.0)));
        let speech = |n: usize| {
            workload(
                "openai",
                "/v1/audio/speech",
                json!({"input": "s".repeat(n)}),
            )
        };
        assert_eq!(speech(500), Ok(Some(500.0)));
        assert_eq!(speech(250), Ok(Some(250.0)));
    }

    #[test]
    fn built_in_openai_counts_uploads_by_their_size() {
        for path in ["/v1/audio/transcriptions", "/v1/audio/translations"] {
            assert_eq!(upload(path, Some(960_000)), Ok(Some(500.0)));
            assert_eq!(upload(path, Some(3 * 960_000)), Ok(Some(1500.0)));
            assert_eq!(upload(path, Some(1)), Ok(Some(50.0)));
            assert_eq!(upload(path, Some(1 << 30)), Ok(Some(4000.0)));
            // A chunked upload without Content-Length has no size.
            assert_eq!(upload(path, None), Err(RuleError::NoBodySize));
        }
    }

    #[test]
    fn built_in_openai_counts_tokens_on_completions_and_chat() {
        let chat = |body| workload("openai", "/v1/chat/completions", body);
        assert_eq!(
            workload("openai", "/v1/completions", json!({"max_tokens": 300})),
            Ok(Some(300.0))
        );
        assert_eq!(chat(json!({"max_tokens": 64})), Ok(Some(64.0)));
        assert_eq!(chat(json!({"max_completion_tokens": 80})), Ok(Some(80.0)));
        assert_eq!(chat(json!({"messages": []})), Ok(None));
        assert_eq!(
            workload(
                "openai-chat",
                "/v1/chat/completions",
                json!({"max_completion_tokens": 9})
            ),
            Ok(Some(9.0))
        );
        assert_eq!(
            workload("openai-chat", "/v1/completions", json!({"max_tokens": 7})),
            Ok(Some(7.0))
        );
        assert_eq!(
            workload(
                "openai-chat",
                "/v1/embeddings",
                json!({"input": "x".repeat(1200)})
            ),
            Ok(Some(1000.0))
        );
    }

    #[test]
    fn routes_without_a_rule_and_bodies_without_json_count_the_default() {
        assert_eq!(
            workload("openai", "/v1/models", json!({"max_tokens": 9})),
            Ok(None)
        );
        assert_eq!(upload("/v1/images/edits", Some(5_000_000)), Ok(None));
        assert_eq!(upload("/v1/embeddings", None), Ok(None));
        assert_eq!(upload("/v1/embeddings", Some(10)), Err(RuleError::Streamed));
        let view = RequestView {
            path: "/v1/embeddings",
            body: Some(b"--boundary\r\n"),
            body_bytes: Some(12),
        };
        let p = Profile::built_in("openai").unwrap();
        assert!(matches!(
            p.request_workload(&view),
            Err(RuleError::NotJson(_))
        ));
        // Without [routes], the one rule counts every path, as before route rules.
        assert_eq!(
            workload(
                "tgi",
                "/generate_stream",
                json!({"parameters": {"max_new_tokens": 5}})
            ),
            Ok(Some(5.0))
        );
        assert_eq!(
            workload(
                "tgi",
                "/anything",
                json!({"parameters": {"max_new_tokens": 5}})
            ),
            Ok(Some(5.0))
        );
    }

    #[test]
    fn patterns_are_paths_with_at_most_a_trailing_star() {
        for ok in ["/", "/*", "/v1/embeddings", "/v1/audio/*"] {
            assert!(Routes::check_pattern(ok).is_ok(), "{ok}");
        }
        for (bad, needle) in [
            ("v1/x", "must start with /"),
            ("/v1/x?a=1", "query"),
            ("/v1/*/x", "may only end"),
            ("/v1/**", "may only end"),
        ] {
            let e = Routes::check_pattern(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
