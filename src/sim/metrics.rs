//! `GET /_sim/metrics`: the sim's counters as Prometheus metrics (OpenMetrics text), so a
//! test or the demo can set what the backend saw beside what the worker reports.
//!
//! The counters are the same events as `/_sim/stats`, split by API: every label set is
//! created at start, and a request's [`Job`](super::stats::Job) increments its own
//! pre-made counter. The gauges are read from the stats snapshot at each scrape.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `vespa_sim_requests_total` | counter | `api`, `outcome` |
//! | `vespa_sim_tokens_generated_total` | counter | `api` (the LLM APIs) |
//! | `vespa_sim_active_requests` | gauge | — |
//! | `vespa_sim_queued_requests` | gauge | — |
//! | `vespa_sim_hanging_requests` | gauge | — |
//! | `vespa_sim_batch_slots` | gauge | — |
//! | `vespa_sim_capacity_tokens_per_second` | gauge | — |
//! | `vespa_sim_healthy` | gauge | — |

use super::SimConfig;
use super::stats::SimStats;
use crate::openmetrics::Series;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// The APIs served through the capacity model: the `api` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// `POST /v1/completions`.
    Completions,
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /generate` (TGI).
    Generate,
    /// `POST /generate_stream` (TGI).
    GenerateStream,
    /// `POST /runsync` (the ComfyUI API wrapper).
    RunSync,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/rerank`.
    Rerank,
    /// `POST /v1/images/generations`.
    ImageGenerations,
    /// `POST /v1/audio/transcriptions` (a multipart upload).
    Transcriptions,
    /// `POST /v1/audio/speech`.
    Speech,
    /// `POST /prompt` (ComfyUI's own queue).
    Prompt,
}

/// Number of APIs.
const APIS: usize = Api::ALL.len();

impl Api {
    /// In declaration order: the discriminant is the index of the API's counters.
    const ALL: [Api; 11] = [
        Self::Completions,
        Self::ChatCompletions,
        Self::Generate,
        Self::GenerateStream,
        Self::RunSync,
        Self::Embeddings,
        Self::Rerank,
        Self::ImageGenerations,
        Self::Transcriptions,
        Self::Speech,
        Self::Prompt,
    ];

    /// The label value.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Completions => "completions",
            Self::ChatCompletions => "chat_completions",
            Self::Generate => "generate",
            Self::GenerateStream => "generate_stream",
            Self::RunSync => "runsync",
            Self::Embeddings => "embeddings",
            Self::Rerank => "rerank",
            Self::ImageGenerations => "image_generations",
            Self::Transcriptions => "transcriptions",
            Self::Speech => "speech",
            Self::Prompt => "prompt",
        }
    }

    /// Whether the API generates completion tokens (the LLM APIs).
    fn generates_tokens(self) -> bool {
        matches!(
            self,
            Self::Completions | Self::ChatCompletions | Self::Generate | Self::GenerateStream
        )
    }
}

/// How an API request ended: the `outcome` label. Each request ends in exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Answered in full.
    Completed,
    /// The client left first (a hanging request ends so too).
    Cancelled,
    /// Failed on purpose: an injected 500, a stream broken by `--die-after-chunks`.
    Errored,
    /// 503 during `--startup-delay`.
    Rejected,
    /// 4xx: the body was not JSON, too large, or a field had the wrong type.
    Invalid,
}

impl Ended {
    /// In declaration order, as [`Api::ALL`].
    const ALL: [Ended; 5] = [
        Self::Completed,
        Self::Cancelled,
        Self::Errored,
        Self::Rejected,
        Self::Invalid,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Errored => "errored",
            Self::Rejected => "rejected",
            Self::Invalid => "invalid",
        }
    }
}

type Labels<const N: usize> = [(&'static str, &'static str); N];

/// The live counters and the registry they are encoded from.
#[derive(Debug)]
pub(crate) struct SimMetrics {
    registry: Registry,
    /// By API, then outcome (discriminants).
    requests: [[Counter; 5]; APIS],
    /// By API; only the LLM APIs' are registered (the others produce no tokens).
    tokens: [Counter; APIS],
}

impl SimMetrics {
    pub(crate) fn new() -> SimMetrics {
        let mut registry = Registry::default();
        let mut requests_series = Series::<Labels<2>, Counter>::default();
        let requests = Api::ALL.map(|api| {
            Ended::ALL.map(|o| requests_series.add([("api", api.name()), ("outcome", o.name())]))
        });
        registry.register(
            "vespa_sim_requests",
            "API requests by API and outcome (completed, cancelled, errored, rejected, invalid)",
            requests_series,
        );
        let mut tokens_series = Series::<Labels<1>, Counter>::default();
        let tokens = Api::ALL.map(|api| {
            if api.generates_tokens() {
                tokens_series.add([("api", api.name())])
            } else {
                Counter::default()
            }
        });
        registry.register(
            "vespa_sim_tokens_generated",
            "Completion tokens produced: all of a completed answer, each chunk sent of a stream",
            tokens_series,
        );
        SimMetrics {
            registry,
            requests,
            tokens,
        }
    }

    /// Counts one request of `api` that ended `how`.
    pub(crate) fn ended(&self, api: Api, how: Ended) {
        self.requests[api as usize][how as usize].inc();
    }

    /// Counts `n` tokens generated for `api`.
    pub(crate) fn tokens(&self, api: Api, n: u64) {
        self.tokens[api as usize].inc_by(n);
    }

    /// The live counters' registry.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The gauges at one scrape: slots and queue from `stats`, capacity from `config`.
pub(crate) fn snapshot(stats: &SimStats, config: &SimConfig, healthy: bool) -> Registry {
    let mut r = Registry::default();
    let gauge = |v: u64| {
        let g: Gauge = Gauge::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        g
    };
    r.register(
        "vespa_sim_active_requests",
        "Requests holding a batch or image slot: prefilling, decoding, rendering",
        gauge(stats.active),
    );
    r.register(
        "vespa_sim_queued_requests",
        "Requests waiting for a slot, in FIFO order",
        gauge(stats.queued),
    );
    r.register(
        "vespa_sim_hanging_requests",
        "Requests that will never be answered (--hang-rate), until their client leaves",
        gauge(stats.hanging),
    );
    r.register(
        "vespa_sim_batch_slots",
        "Sequences decoded together (--max-batch)",
        gauge(u64::try_from(config.max_batch).unwrap_or(u64::MAX)),
    );
    let capacity = Gauge::<f64, AtomicU64>::default();
    capacity.set(config.capacity_tokens_per_sec());
    r.register(
        "vespa_sim_capacity_tokens_per_second",
        "True LLM capacity, decode_tps x max_batch: what a benchmark must find",
        capacity,
    );
    r.register(
        "vespa_sim_healthy",
        "1 while /health answers 200, else 0",
        gauge(u64::from(healthy)),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_wire_format() {
        let m = SimMetrics::new();
        let snapshot = snapshot(&SimStats::default(), &SimConfig::default(), true);
        insta::assert_snapshot!(crate::openmetrics::encode(&[m.registry(), &snapshot]).unwrap());
    }
    use crate::openmetrics::assert_samples;

    #[test]
    fn counters_exist_for_every_api_and_outcome_from_the_start() {
        let m = SimMetrics::new();
        m.ended(Api::GenerateStream, Ended::Cancelled);
        m.tokens(Api::ChatCompletions, 7);
        m.tokens(Api::RunSync, 1);
        let text = assert_samples(
            m.registry(),
            &[
                r#"vespa_sim_requests_total{api="generate_stream",outcome="cancelled"} 1"#,
                r#"vespa_sim_requests_total{api="runsync",outcome="invalid"} 0"#,
                r#"vespa_sim_tokens_generated_total{api="chat_completions"} 7"#,
                r#"vespa_sim_tokens_generated_total{api="completions"} 0"#,
            ],
        );
        assert!(!text.contains(r#"tokens_generated_total{api="runsync"}"#));
        assert_eq!(text.matches("vespa_sim_requests_total{").count(), 55);
        assert!(!text.contains(r#"tokens_generated_total{api="embeddings"}"#));
        assert!(!text.contains(r#"tokens_generated_total{api="prompt"}"#));
    }
}
