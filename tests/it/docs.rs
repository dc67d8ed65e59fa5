//! The examples in docs/ work as written.

use crate::support::*;
use serde_json::{Value, json};
use std::sync::Arc;
use vespa::profile::bench::Bench;
use vespa::profile::{Profile, RequestView};

/// The first ```toml block after `heading` in a document.
fn toml_block(doc: &str, heading: &str) -> String {
    let at = doc
        .find(heading)
        .unwrap_or_else(|| panic!("heading {heading:?} not found"));
    let start = doc[at..].find("```toml\n").expect("a toml block") + at + "```toml\n".len();
    let end = doc[start..].find("```").expect("end of the block") + start;
    doc[start..end].to_string()
}

#[test]
fn the_documented_format_parses() {
    let doc = include_str!("../../docs/BENCHMARKS.md");
    let profile = Profile::parse(&toml_block(doc, "## The format"), "docs/BENCHMARKS.md").unwrap();
    let stream = profile
        .benchmark
        .stream
        .as_ref()
        .expect("the format shows [benchmark.stream]");
    assert_eq!(stream.path.as_deref(), Some("/generate_stream"));
    assert_eq!(profile.benchmark.window, std::time::Duration::from_secs(3));
    let routes: Vec<String> = profile.routes.patterns().collect();
    assert_eq!(routes, ["/v1/embeddings"]);
    let body = format!(r#"{{"input": "{}"}}"#, "x".repeat(1200));
    let view = RequestView {
        path: "/v1/embeddings",
        body: Some(body.as_bytes()),
        body_bytes: Some(body.len() as u64),
    };
    assert_eq!(profile.request_workload(&view), Ok(Some(1000.0)));
}

#[tokio::test]
async fn docs_example_profile_benchmarks_an_embeddings_server() {
    let doc = include_str!("../../docs/BENCHMARKS.md");
    let profile = Profile::parse(
        &toml_block(doc, "## A complete example"),
        "docs/BENCHMARKS.md",
    )
    .unwrap();
    assert_eq!(profile.name, "embeddings");
    // Requests without a cost count the documented constant.
    let view = RequestView {
        path: "/v1/embeddings",
        body: Some(br#"{"input": ["a"]}"#),
        body_bytes: Some(16),
    };
    assert_eq!(profile.request_workload(&view), Ok(Some(800.0)));
    // The documented rerank: (40 × 10 + 4000) / 4; other paths count DEFAULT_COST.
    let rerank = json!({"query": "q".repeat(40), "documents": vec!["d".repeat(400); 10]});
    let rerank = rerank.to_string();
    for (path, want) in [("/v1/rerank", Some(1100.0)), ("/v1/other", None)] {
        let view = RequestView {
            path,
            body: Some(rerank.as_bytes()),
            body_bytes: Some(rerank.len() as u64),
        };
        assert_eq!(profile.request_workload(&view), Ok(want), "{path}");
    }

    let mut backend = Backend::start(|seen| async move {
        let req: Value = serde_json::from_slice(&seen.body).unwrap();
        let inputs = req["input"].as_array().unwrap();
        let tokens: usize = inputs
            .iter()
            .map(|i| i.as_str().unwrap().split_whitespace().count())
            .sum();
        let data: Vec<Value> = (0..inputs.len())
            .map(|i| json!({"index": i, "embedding": [0.0, 1.0]}))
            .collect();
        json(
            200,
            json!({"data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
        )
    })
    .await;
    let bench = Bench::new(Arc::new(profile), &backend.url().to_string(), "embedder");
    let report = bench.run(&|_| {}).await.unwrap();
    assert!(report.max_perf > 0.0);
    assert!(report.levels.iter().all(|l| l.errors == 0), "{report:?}");
    let seen = backend.next_request().await;
    assert_eq!(seen.uri, "/v1/embeddings");
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body["model"], "embedder");
    assert_eq!(body["input"].as_array().unwrap().len(), 4);
    assert_eq!(body["input"][0].as_str().unwrap().split(' ').count(), 200);
}
