//! OpenAI audio: `POST /v1/audio/transcriptions` (a multipart upload, read in full) and
//! `POST /v1/audio/speech` (text in, WAV bytes out).
//!
//! A transcription holds a batch slot for `audio_secs × bytes / 960,000` and answers
//! `{"text"}` with as many words as a speaker says in the upload's duration (taken as
//! 16 kHz 16-bit mono WAV), plus the file's size and SHA-256 under `vespa_sim`, so a test
//! can check what arrived. Speech holds a slot for `audio_secs × characters / 500` and
//! answers a silent WAV as long as the text takes to say.

use super::Shared;
use super::error::SimError;
use super::metrics::Api;
use super::model::completion_text;
use super::multipart;
use super::stats::Job;
use crate::http_util::{Body, full, json_response};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value, json};

/// Bytes per second of the audio an upload is taken to be: 16 kHz, 16-bit, mono.
const UPLOAD_BYTES_PER_SEC: f64 = 32_000.0;
/// Words per second of transcribed speech (150 a minute).
const WORDS_PER_SEC: f64 = 2.5;
/// Characters of text spoken per second.
const SPOKEN_CHARS_PER_SEC: f64 = 15.0;
/// Sample rate of the speech answer: 8 kHz, 8-bit, mono (small, and any player reads it).
const SPEECH_RATE: u32 = 8_000;
/// Most characters of `input` speech takes (OpenAI's limit).
pub const MAX_SPEECH_CHARS: usize = 4_096;

/// `POST /v1/audio/transcriptions`: a form with a `file` part (and `model`,
/// `response_format` `json` (default), `text` or `verbose_json`).
pub(crate) async fn transcriptions(
    shared: &Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response<Body>, SimError> {
    let boundary = multipart::boundary(headers)?;
    let parts = multipart::parts(body, &boundary)?;
    let file = parts
        .iter()
        .find(|p| p.name == "file")
        .ok_or_else(|| SimError::bad("file is required: a multipart part named \"file\""))?;
    let format = match parts.iter().find(|p| p.name == "response_format") {
        None => "json".to_string(),
        Some(p) => String::from_utf8_lossy(p.data).trim().to_string(),
    };
    if !["json", "text", "verbose_json"].contains(&format.as_str()) {
        return Err(SimError::bad(format!(
            "response_format {format:?}: the sim answers json, text or verbose_json"
        )));
    }
    let bytes = file.data.len() as u64;
    let job = Job::queued(&shared.stats, Api::Transcriptions);
    shared
        .model
        .hold_slot(job, shared.model.transcribe_time(bytes))
        .await;
    let seconds = bytes as f64 / UPLOAD_BYTES_PER_SEC;
    let text = completion_text((seconds * WORDS_PER_SEC).ceil() as u64)
        .trim_start()
        .to_string();
    if format == "text" {
        return Ok(plain(text.into_bytes(), "text/plain; charset=utf-8"));
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, file.data);
    let sha256: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let mut answer = json!({
        "text": text,
        "usage": {"type": "duration", "seconds": seconds.ceil()},
        "vespa_sim": {"file_bytes": bytes, "file_sha256": sha256, "filename": file.filename},
    });
    if format == "verbose_json" {
        answer["task"] = json!("transcribe");
        answer["language"] = json!("english");
        answer["duration"] = json!(seconds);
    }
    Ok(json_response(StatusCode::OK, &answer))
}

/// `POST /v1/audio/speech`: `input` (at most 4096 characters) spoken as a WAV file.
pub(crate) async fn speech(
    shared: &Shared,
    body: &Map<String, Value>,
) -> Result<Response<Body>, SimError> {
    let input = body
        .get("input")
        .and_then(Value::as_str)
        .ok_or_else(|| SimError::bad("input is required: the text to speak"))?;
    let chars = input.chars().count();
    if chars > MAX_SPEECH_CHARS {
        return Err(SimError::bad(format!(
            "input is {chars} characters; at most {MAX_SPEECH_CHARS}"
        )));
    }
    let job = Job::queued(&shared.stats, Api::Speech);
    shared
        .model
        .hold_slot(job, shared.model.speech_time(chars as u64))
        .await;
    let samples = (chars as f64 / SPOKEN_CHARS_PER_SEC * f64::from(SPEECH_RATE)) as u32;
    Ok(plain(silent_wav(samples), "audio/wav"))
}

/// A mono 8-bit WAV file of `samples` silent samples at [`SPEECH_RATE`].
fn silent_wav(samples: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(44 + samples as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + samples).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&SPEECH_RATE.to_le_bytes());
    out.extend_from_slice(&SPEECH_RATE.to_le_bytes()); // bytes per second
    out.extend_from_slice(&1u16.to_le_bytes()); // block align
    out.extend_from_slice(&8u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&samples.to_le_bytes());
    out.resize(44 + samples as usize, 0x80); // 8-bit PCM is unsigned: 128 is silence
    out
}

/// A 200 answer of `body` with `content_type`.
fn plain(body: Vec<u8>, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_is_a_wav_file_of_the_right_length() {
        let wav = silent_wav(8_000);
        assert_eq!(&wav[..4], b"RIFF");
        assert_eq!(&wav[8..16], b"WAVEfmt ");
        assert_eq!(wav.len(), 44 + 8_000);
        assert_eq!(u32::from_le_bytes(wav[40..44].try_into().unwrap()), 8_000);
        assert!(wav[44..].iter().all(|b| *b == 0x80));
    }
}
