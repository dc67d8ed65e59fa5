//! `vespa sim` flags and the validated configuration built from them.
//!
//! Flags are taken as text and parsed here rather than by clap, so every bad value becomes a
//! [`ConfigError`] naming its flag and the binary exits 64 before binding a port, like every
//! other Vespa command.

use crate::env::{ConfigError, NoEnv, Raw};
use std::net::SocketAddr;
use std::time::Duration;

crate::env::settings! {
    /// Flags of `vespa sim`.
    pub struct SimArgs {
        /// Log level: trace, debug, info, warning, error.
        #[arg(long, value_name = "LEVEL", default_value = "info")]
        pub log_level: String,
        /// Answer every request at once with a fixed completion instead of simulating a
        /// model: the cheapest backend, for measuring a proxy in front of it (see --echo-*).
        #[arg(long)]
        pub echo: bool,
    }

    /// Address to listen on; port 0 picks a free port.
    listen: "listen" "ADDR", default DEFAULT_LISTEN;
    /// Model name listed by `GET /v1/models`.
    model: "model" "NAME", default "model";
    /// Tokens per second each sequence decodes at.
    decode_tps: "decode-tps" "N", default "50";
    /// Sequences decoded together; more requests wait in a FIFO queue.
    max_batch: "max-batch" "N", default "16";
    /// Prefill time per prompt token, milliseconds, spent inside the batch slot.
    prefill_ms_per_token: "prefill-ms-per-token" "MS", default "0";
    /// Cap on completion tokens per request.
    max_output_tokens: "max-output-tokens" "N", unset "none";
    /// Seconds per 512×512, 20-step image; scales with width × height × steps.
    image_secs: "image-secs" "SECS", default "2";
    /// Images rendered at the same time.
    image_parallel: "image-parallel" "N", default "1";
    /// Input tokens (words) one batch slot embeds or reranks per second.
    embed_tps: "embed-tps" "N", default "10000";
    /// Seconds a batch slot takes to transcribe 30 s of 16 kHz 16-bit mono WAV (960,000 bytes) or to speak 500 characters; scales with the size.
    audio_secs: "audio-secs" "SECS", default "1";
    /// Seconds before `/health` answers 200 and API requests are served.
    startup_delay: "startup-delay" "SECS", default "0";
    /// Probability that an API request is answered with a 500 error.
    error_rate: "error-rate" "P", default "0";
    /// Probability that an API request is never answered.
    hang_rate: "hang-rate" "P", default "0";
    /// Streaming responses break the connection after this many chunks.
    die_after_chunks: "die-after-chunks" "N", unset "never";
    /// Seed of the fault generator, for reproducible runs.
    seed: "seed" "N", unset "random";
    /// With --echo: milliseconds between reading a request's body and answering it (query parameter echo_delay_ms overrides it).
    echo_delay_ms: "echo-delay-ms" "MS", default "0";
    /// With --echo: `data:` events of a streamed answer (a body with "stream": true), before `data: [DONE]` (query echo_chunks).
    echo_chunks: "echo-chunks" "N", default "20";
    /// With --echo: milliseconds between two events of a streamed answer; with 0 each is still written on its own (query echo_chunk_ms).
    echo_chunk_ms: "echo-chunk-ms" "MS", default "0";
}

/// Validated `vespa sim` configuration. Build it with [`SimConfig::default`] and set fields
/// (tests, embedders; call [`SimConfig::validate`] if the values are not your own), or with
/// [`SimConfig::from_args`].
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Address to listen on. Default is `127.0.0.1:8000`.
    pub listen: SocketAddr,
    /// Model name listed by `GET /v1/models`. Default is `"model"`.
    pub model: String,
    /// Decode speed of one sequence, tokens per second. Default is 50.
    pub decode_tps: f64,
    /// Sequences decoded at the same time (batch slots). Default is 16.
    pub max_batch: usize,
    /// Prefill time per prompt token, milliseconds. Default is 0.
    pub prefill_ms_per_token: f64,
    /// Cap on the completion tokens of one request. Default is `None` (no cap).
    pub max_output_tokens: Option<u64>,
    /// Seconds to render one 512×512, 20-step image. Default is 2.
    pub image_secs: f64,
    /// Images rendered at the same time. Default is 1.
    pub image_parallel: usize,
    /// Input tokens (words) one batch slot embeds or reranks per second. Default is 10000.
    pub embed_tps: f64,
    /// Seconds a batch slot takes to transcribe 960,000 bytes of upload (30 s of 16 kHz
    /// 16-bit mono WAV) or to speak 500 characters. Default is 1.
    pub audio_secs: f64,
    /// Time after start during which `/health` and API requests answer 503. Default is 0.
    pub startup_delay: Duration,
    /// Probability of an injected 500 answer per API request. Default is 0.
    pub error_rate: f64,
    /// Probability that an API request is never answered. Default is 0.
    pub hang_rate: f64,
    /// Streaming responses end with a broken connection after this many chunks.
    /// Default is `None` (never).
    pub die_after_chunks: Option<u64>,
    /// Seed of the fault generator. Default is `None` (seeded from the clock).
    pub seed: Option<u64>,
}

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";

/// Work units of the default ComfyUI graph: 512 × 512 × 20 steps / 1000 (PROTOCOL.md §7).
pub const DEFAULT_IMAGE_UNITS: f64 = 512.0 * 512.0 * 20.0 / 1000.0;

/// Slowest decode speed accepted, so per-request times stay representable.
const MIN_DECODE_TPS: f64 = 0.001;

impl Default for SimConfig {
    /// The declared defaults of [`SimArgs`].
    fn default() -> Self {
        SimConfig::from_args(&SimArgs::default()).expect("the declared defaults are valid")
    }
}

impl SimConfig {
    /// True LLM capacity: `decode_tps × max_batch` tokens per second.
    pub fn capacity_tokens_per_sec(&self) -> f64 {
        self.decode_tps * self.max_batch as f64
    }

    /// True ComfyUI capacity in benchmark units (`width × height × steps / 1000`) per second:
    /// `5242.88 × image_parallel / image_secs`, whatever the graph's size.
    pub fn comfyui_units_per_sec(&self) -> f64 {
        DEFAULT_IMAGE_UNITS * self.image_parallel as f64 / self.image_secs
    }

    /// Validates the flags. Every error names its flag (the binary exits 64 on it).
    pub fn from_args(args: &SimArgs) -> Result<SimConfig, ConfigError> {
        let env = &NoEnv;
        let (listen, model) = listen_and_model(args)?;
        let optional_u64 = |raw: Option<Raw>| raw.map(|r| r.u64_min(0)).transpose();
        let c = SimConfig {
            listen,
            model,
            decode_tps: args.decode_tps().get(env).f64_min(MIN_DECODE_TPS)?,
            max_batch: count(&args.max_batch().get(env))?,
            prefill_ms_per_token: args.prefill_ms_per_token().get(env).f64_min(0.0)?,
            max_output_tokens: optional_u64(args.max_output_tokens().get(env))?,
            image_secs: args.image_secs().get(env).f64_min(0.0)?,
            image_parallel: count(&args.image_parallel().get(env))?,
            embed_tps: args.embed_tps().get(env).f64_min(MIN_DECODE_TPS)?,
            audio_secs: args.audio_secs().get(env).f64_min(0.0)?,
            startup_delay: Duration::from_secs_f64(
                args.startup_delay().get(env).f64_min(0.0)?.min(1e9),
            ),
            error_rate: probability(&args.error_rate().get(env))?,
            hang_rate: probability(&args.hang_rate().get(env))?,
            die_after_chunks: optional_u64(args.die_after_chunks().get(env))?,
            seed: optional_u64(args.seed().get(env))?,
        };
        c.validate()?;
        Ok(c)
    }

    /// Checks the values a flag cannot check on its own, and those of a configuration built
    /// in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.decode_tps.is_finite() && self.decode_tps >= MIN_DECODE_TPS) {
            return Err(ConfigError::new(
                "--decode-tps",
                format!("expected a number >= {MIN_DECODE_TPS}"),
            ));
        }
        if self.max_batch == 0 || self.max_batch > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(ConfigError::new(
                "--max-batch",
                "expected a whole number >= 1",
            ));
        }
        if !(self.prefill_ms_per_token.is_finite() && self.prefill_ms_per_token >= 0.0) {
            return Err(ConfigError::new(
                "--prefill-ms-per-token",
                "expected a number >= 0",
            ));
        }
        if !(self.image_secs.is_finite() && self.image_secs > 0.0) {
            return Err(ConfigError::new("--image-secs", "expected a number > 0"));
        }
        if !(self.embed_tps.is_finite() && self.embed_tps >= MIN_DECODE_TPS) {
            return Err(ConfigError::new(
                "--embed-tps",
                format!("expected a number >= {MIN_DECODE_TPS}"),
            ));
        }
        if !(self.audio_secs.is_finite() && self.audio_secs >= 0.0) {
            return Err(ConfigError::new("--audio-secs", "expected a number >= 0"));
        }
        if self.image_parallel == 0 || self.image_parallel > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(ConfigError::new(
                "--image-parallel",
                "expected a whole number >= 1",
            ));
        }
        for (rate, flag) in [
            (self.error_rate, "--error-rate"),
            (self.hang_rate, "--hang-rate"),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(ConfigError::new(flag, "expected a probability in [0, 1]"));
            }
        }
        if self.error_rate + self.hang_rate > 1.0 {
            return Err(ConfigError::new(
                "--hang-rate",
                format!(
                    "--error-rate + --hang-rate must be at most 1 (got {} + {})",
                    self.error_rate, self.hang_rate
                ),
            ));
        }
        Ok(())
    }
}

/// `--listen` and `--model`, which the simulated model and the echo backend share.
pub(super) fn listen_and_model(args: &SimArgs) -> Result<(SocketAddr, String), ConfigError> {
    let raw = args.listen().get(&NoEnv);
    let listen = raw
        .value
        .trim()
        .parse()
        .map_err(|_| raw.error("expected IP:PORT"))?;
    let raw = args.model().get(&NoEnv);
    if raw.value.trim().is_empty() {
        return Err(raw.error("expected a non-empty name"));
    }
    Ok((listen, raw.value.trim().to_string()))
}

fn count(raw: &Raw) -> Result<usize, ConfigError> {
    let n = raw.u64_min(1)?;
    usize::try_from(n)
        .ok()
        .filter(|n| *n <= tokio::sync::Semaphore::MAX_PERMITS)
        .ok_or_else(|| raw.error("too large"))
}

fn probability(raw: &Raw) -> Result<f64, ConfigError> {
    let p = raw.f64_min(0.0)?;
    if p > 1.0 {
        return Err(raw.error("expected a probability in [0, 1]"));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_give_the_documented_capacities() {
        let c = SimConfig::from_args(&SimArgs::default()).unwrap();
        assert_eq!(c, SimConfig::default());
        assert_eq!(c.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(c.capacity_tokens_per_sec(), 800.0);
        assert!((c.comfyui_units_per_sec() - 2621.44).abs() < 1e-9);
    }

    #[test]
    fn flags_set_the_capacity_model() {
        let args = SimArgs {
            decode_tps: Some("12.5".into()),
            max_batch: Some("4".into()),
            image_secs: Some("0.5".into()),
            image_parallel: Some("2".into()),
            die_after_chunks: Some("3".into()),
            seed: Some("7".into()),
            ..SimArgs::default()
        };
        let c = SimConfig::from_args(&args).unwrap();
        assert_eq!(c.capacity_tokens_per_sec(), 50.0);
        assert!((c.comfyui_units_per_sec() - 5242.88 * 4.0).abs() < 1e-9);
        assert_eq!(c.die_after_chunks, Some(3));
        assert_eq!(c.seed, Some(7));
    }

    #[test]
    fn each_bad_flag_is_named() {
        let cases: Vec<(SimArgs, &str)> = vec![
            (
                SimArgs {
                    listen: Some("localhost".into()),
                    ..SimArgs::default()
                },
                "--listen",
            ),
            (
                SimArgs {
                    decode_tps: Some("0".into()),
                    ..SimArgs::default()
                },
                "--decode-tps",
            ),
            (
                SimArgs {
                    max_batch: Some("0".into()),
                    ..SimArgs::default()
                },
                "--max-batch",
            ),
            (
                SimArgs {
                    prefill_ms_per_token: Some("-1".into()),
                    ..SimArgs::default()
                },
                "--prefill-ms-per-token",
            ),
            (
                SimArgs {
                    image_secs: Some("0".into()),
                    ..SimArgs::default()
                },
                "--image-secs",
            ),
            (
                SimArgs {
                    image_parallel: Some("many".into()),
                    ..SimArgs::default()
                },
                "--image-parallel",
            ),
            (
                SimArgs {
                    embed_tps: Some("0".into()),
                    ..SimArgs::default()
                },
                "--embed-tps",
            ),
            (
                SimArgs {
                    audio_secs: Some("-1".into()),
                    ..SimArgs::default()
                },
                "--audio-secs",
            ),
            (
                SimArgs {
                    startup_delay: Some("soon".into()),
                    ..SimArgs::default()
                },
                "--startup-delay",
            ),
            (
                SimArgs {
                    error_rate: Some("1.5".into()),
                    ..SimArgs::default()
                },
                "--error-rate",
            ),
            (
                SimArgs {
                    error_rate: Some("0.6".into()),
                    hang_rate: Some("0.6".into()),
                    ..SimArgs::default()
                },
                "--hang-rate",
            ),
            (
                SimArgs {
                    die_after_chunks: Some("-2".into()),
                    ..SimArgs::default()
                },
                "--die-after-chunks",
            ),
            (
                SimArgs {
                    seed: Some("x".into()),
                    ..SimArgs::default()
                },
                "--seed",
            ),
            (
                SimArgs {
                    model: Some(" ".into()),
                    ..SimArgs::default()
                },
                "--model",
            ),
        ];
        for (a, flag) in cases {
            let e = SimConfig::from_args(&a).unwrap_err();
            assert_eq!(e.setting, flag, "{a:?}: {e}");
        }
    }
}
