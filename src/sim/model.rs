//! The capacity model: batch slots and timing, the only place the sim's speed is decided.
//!
//! An LLM request takes one of `max_batch` slots (a fair semaphore, so waiting requests are
//! served in arrival order), spends `prefill_ms_per_token × prompt tokens` in it, then
//! decodes its completion tokens at `decode_tps`. A non-streaming request sleeps prefill and
//! decode in one sleep; a stream emits one token per `1 / decode_tps` from an interval that
//! bursts to catch up, so long streams do not drift. With every slot busy the server
//! produces exactly `decode_tps × max_batch` tokens per second, which is what a benchmark
//! must measure. Images take one of `image_parallel` slots for
//! `image_secs × width × height × steps / (512 × 512 × 20)`. The other routes share the
//! batch slots with the LLM, as they would share a GPU: an embedding or rerank holds one
//! for `input tokens / embed_tps`, a transcription for `audio_secs × bytes / 960,000`
//! (30 s of 16 kHz 16-bit mono WAV), speech for `audio_secs × characters / 500`.

use super::SimConfig;
use super::stats::{Job, Outcome};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Pixels × steps of the reference image that takes `image_secs`.
const REFERENCE_IMAGE: f64 = 512.0 * 512.0 * 20.0;

/// Bytes of the reference upload that takes `audio_secs` to transcribe: 30 s of 16 kHz
/// 16-bit mono WAV.
pub(crate) const REFERENCE_AUDIO_BYTES: f64 = 960_000.0;

/// Characters of the reference text that takes `audio_secs` to speak.
pub(crate) const REFERENCE_SPEECH_CHARS: f64 = 500.0;

/// A job that is waiting for its slot and prefilling; it yields the job once tokens can flow.
pub(crate) type Admission = Pin<Box<dyn Future<Output = Job> + Send>>;

/// Slots and timing of one simulated server.
#[derive(Debug)]
pub(crate) struct Model {
    llm_slots: Arc<Semaphore>,
    image_slots: Arc<Semaphore>,
    decode_tps: f64,
    prefill_ms_per_token: f64,
    max_output_tokens: Option<u64>,
    image_secs: f64,
    embed_tps: f64,
    audio_secs: f64,
}

impl Model {
    pub(crate) fn new(config: &SimConfig) -> Model {
        Model {
            llm_slots: Arc::new(Semaphore::new(config.max_batch)),
            image_slots: Arc::new(Semaphore::new(config.image_parallel)),
            decode_tps: config.decode_tps,
            prefill_ms_per_token: config.prefill_ms_per_token,
            max_output_tokens: config.max_output_tokens,
            image_secs: config.image_secs,
            embed_tps: config.embed_tps,
            audio_secs: config.audio_secs,
        }
    }

    /// Completion tokens of a request that asked for `requested`: all of them, up to
    /// `--max-output-tokens`.
    pub(crate) fn completion_tokens(&self, requested: u64) -> u64 {
        self.max_output_tokens
            .map_or(requested, |cap| requested.min(cap))
    }

    /// Time between two streamed tokens.
    pub(crate) fn token_period(&self) -> Duration {
        secs(1.0 / self.decode_tps)
    }

    fn prefill_time(&self, prompt_tokens: u64) -> Duration {
        secs(self.prefill_ms_per_token * prompt_tokens as f64 / 1000.0)
    }

    fn decode_time(&self, tokens: u64) -> Duration {
        secs(tokens as f64 / self.decode_tps)
    }

    /// Seconds of one image of `width × height` pixels and `steps` steps.
    pub(crate) fn image_time(&self, width: u64, height: u64, steps: u64) -> Duration {
        let work = width as f64 * height as f64 * steps as f64;
        secs(self.image_secs * work / REFERENCE_IMAGE)
    }

    /// Generates `tokens` for a non-streaming request: waits for a slot, then prefill and
    /// decode in one sleep. Dropped midway, the job is cancelled and the slot freed.
    pub(crate) async fn generate(&self, job: Job, prompt_tokens: u64, tokens: u64) {
        let job = job.admit(&self.llm_slots).await;
        tokio::time::sleep(self.prefill_time(prompt_tokens) + self.decode_time(tokens)).await;
        job.tokens(tokens);
        job.finish(Outcome::Completed);
    }

    /// The first part of a stream: waits for a slot, then prefills. Owns the job, so
    /// dropping the stream before it starts cancels it.
    pub(crate) fn admit_stream(&self, job: Job, prompt_tokens: u64) -> Admission {
        let slots = Arc::clone(&self.llm_slots);
        let prefill = self.prefill_time(prompt_tokens);
        Box::pin(async move {
            let job = job.admit(&slots).await;
            if !prefill.is_zero() {
                tokio::time::sleep(prefill).await;
            }
            job
        })
    }

    /// Time to embed (or rerank) `tokens` input tokens: `tokens / embed_tps`.
    pub(crate) fn embed_time(&self, tokens: u64) -> Duration {
        secs(tokens as f64 / self.embed_tps)
    }

    /// Time to transcribe an upload of `bytes`: `audio_secs × bytes / 960,000`.
    pub(crate) fn transcribe_time(&self, bytes: u64) -> Duration {
        secs(self.audio_secs * bytes as f64 / REFERENCE_AUDIO_BYTES)
    }

    /// Time to speak `chars` characters: `audio_secs × chars / 500`.
    pub(crate) fn speech_time(&self, chars: u64) -> Duration {
        secs(self.audio_secs * chars as f64 / REFERENCE_SPEECH_CHARS)
    }

    /// Does `time` of work in a batch slot: waits for one (FIFO), holds it for `time`, and
    /// completes the job. Dropped midway, the job is cancelled and the slot freed.
    pub(crate) async fn hold_slot(&self, job: Job, time: Duration) {
        let job = job.admit(&self.llm_slots).await;
        tokio::time::sleep(time).await;
        job.finish(Outcome::Completed);
    }

    /// Waits for an image slot: the job is then active.
    pub(crate) async fn start_image(&self, job: Job) -> Job {
        job.admit(&self.image_slots).await
    }

    /// Renders one image: waits for an image slot, then sleeps the image's time.
    pub(crate) async fn render(&self, job: Job, width: u64, height: u64, steps: u64) {
        let job = self.start_image(job).await;
        tokio::time::sleep(self.image_time(width, height, steps)).await;
        job.finish(Outcome::Completed);
    }
}

/// Seconds as a duration; huge or invalid values saturate to about a century, which is
/// "never" for a simulated request and still safe to add to an `Instant`.
pub(crate) fn secs(s: f64) -> Duration {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    Duration::try_from_secs_f64(s).map_or(CENTURY, |d| d.min(CENTURY))
}

/// Text of completion token `i`: a fixed cycle of words, so answers are deterministic.
pub(crate) fn token_text(i: u64) -> &'static str {
    const WORDS: [&str; 8] = [
        " lorem",
        " ipsum",
        " dolor",
        " sit",
        " amet",
        " consectetur",
        " adipiscing",
        " elit",
    ];
    WORDS[(i % WORDS.len() as u64) as usize]
}

/// Text of a whole completion of `n` tokens.
pub(crate) fn completion_text(n: u64) -> String {
    (0..n).map(token_text).collect()
}

/// Prompt tokens of a text: its whitespace-separated words.
pub(crate) fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_follows_the_configuration() {
        let config = SimConfig {
            decode_tps: 50.0,
            prefill_ms_per_token: 2.0,
            max_output_tokens: Some(100),
            image_secs: 2.0,
            embed_tps: 1000.0,
            audio_secs: 3.0,
            ..SimConfig::default()
        };
        let m = Model::new(&config);
        assert_eq!(m.token_period(), Duration::from_millis(20));
        assert_eq!(m.decode_time(10), Duration::from_millis(200));
        assert_eq!(m.prefill_time(250), Duration::from_millis(500));
        assert_eq!(m.completion_tokens(500), 100);
        assert_eq!(m.completion_tokens(7), 7);
        assert_eq!(m.image_time(512, 512, 20), Duration::from_secs(2));
        assert_eq!(m.image_time(1024, 1024, 10), Duration::from_secs(4));
        assert_eq!(m.embed_time(250), Duration::from_millis(250));
        assert_eq!(m.transcribe_time(480_000), Duration::from_millis(1500));
        assert_eq!(m.speech_time(1000), Duration::from_secs(6));
    }

    #[test]
    fn absurd_durations_saturate() {
        assert_eq!(secs(f64::INFINITY), secs(1e300));
        assert!(secs(f64::NAN) > Duration::from_secs(1 << 30));
    }

    #[test]
    fn text_is_deterministic() {
        assert_eq!(completion_text(3), " lorem ipsum dolor");
        assert_eq!(count_words("  a b\n c\td "), 4);
    }
}
