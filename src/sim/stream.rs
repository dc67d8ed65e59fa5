//! Streamed answers: one server-sent event per token, each its own write.
//!
//! [`TokenStream`] is the response body itself, not a task feeding a channel: it owns the
//! request's [`Job`] (and so its batch slot), waits for the slot and the prefill inside
//! `poll_frame`, then yields a token each time its interval ticks. When the client leaves,
//! hyper drops the body and the slot is free at once. `--die-after-chunks` makes the body
//! fail instead of yielding the next chunk, which hyper turns into an aborted chunked stream
//! (HTTP/1.1: no final chunk, connection closed; HTTP/2: `RST_STREAM`).

use super::model::Admission;
use super::stats::{Job, Outcome};
use crate::http_util::{Body, BoxError};
use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body::Frame;
use http_body_util::BodyExt;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// The event payloads of one API's stream.
pub(crate) trait Events: Send + 'static {
    /// The payload of token `index` (0-based); `last` is true for the final token.
    fn token(&mut self, index: u64, last: bool) -> String;
    /// Payloads sent right after the last token (a usage chunk, `[DONE]`).
    fn tail(&mut self) -> Vec<String>;
}

/// The error a stream ends with under `--die-after-chunks`.
#[derive(Debug, thiserror::Error)]
#[error("simulated backend failure after {0} chunks (--die-after-chunks)")]
pub struct Died(pub u64);

enum State {
    Admitting(Admission),
    Decoding {
        job: Job,
        ticks: Interval,
        next: u64,
    },
    Tail {
        job: Job,
        events: VecDeque<String>,
    },
    /// The backend "dies" when its next chunk is due. Internal: waiting here also returns
    /// `Pending` to hyper, which then flushes the chunks already yielded; failing at once
    /// would abort the connection with them still in its buffer.
    Dying {
        job: Job,
        due: Pin<Box<tokio::time::Sleep>>,
    },
    Done,
}

/// A streamed answer of `tokens` tokens.
pub(crate) struct TokenStream {
    state: State,
    tokens: u64,
    period: Duration,
    die_after: Option<u64>,
    sent: u64,
    events: Box<dyn Events>,
}

impl TokenStream {
    pub(crate) fn new(
        admission: Admission,
        tokens: u64,
        period: Duration,
        die_after: Option<u64>,
        events: Box<dyn Events>,
    ) -> TokenStream {
        TokenStream {
            state: State::Admitting(admission),
            tokens,
            period,
            die_after,
            sent: 0,
            events,
        }
    }

    /// The `text/event-stream` response carrying this stream.
    pub(crate) fn into_response(self) -> Response<Body> {
        event_stream(self.boxed_unsync())
    }

    fn frame(&mut self, payload: &str) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.sent += 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(format!(
            "data: {payload}\n\n"
        ))))))
    }
}

impl http_body::Body for TokenStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Admitting(admission) => {
                    let job = ready!(admission.as_mut().poll(cx));
                    // The first token is due one period after decoding starts, as in the
                    // non-streaming answer; `Burst` keeps later ticks on the original grid.
                    let mut ticks =
                        tokio::time::interval_at(Instant::now() + this.period, this.period);
                    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
                    this.state = State::Decoding {
                        job,
                        ticks,
                        next: 0,
                    };
                }
                State::Decoding { next, .. } if *next >= this.tokens => {
                    let State::Decoding { job, .. } =
                        std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!()
                    };
                    this.state = State::Tail {
                        job,
                        events: this.events.tail().into(),
                    };
                }
                State::Decoding { .. } | State::Tail { .. }
                    if this.die_after.is_some_and(|n| this.sent >= n) =>
                {
                    // After `die_after` chunks the next one is an error instead.
                    let job = this.take_job().expect("a decoding or tail state has a job");
                    let due = tokio::time::sleep(this.period.max(Duration::from_millis(1)));
                    this.state = State::Dying {
                        job,
                        due: Box::pin(due),
                    };
                }
                State::Dying { due, .. } => {
                    ready!(due.as_mut().poll(cx));
                    if let Some(job) = this.take_job() {
                        job.finish(Outcome::Errored);
                    }
                    return Poll::Ready(Some(Err(Box::new(Died(this.sent)))));
                }
                State::Decoding { job, ticks, next } => {
                    ready!(ticks.poll_tick(cx));
                    let index = *next;
                    *next += 1;
                    job.tokens(1);
                    let payload = this.events.token(index, index + 1 == this.tokens);
                    return this.frame(&payload);
                }
                State::Tail { events, .. } => {
                    let Some(payload) = events.pop_front() else {
                        this.finish();
                        continue;
                    };
                    if events.is_empty() {
                        this.finish();
                    }
                    return this.frame(&payload);
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }
}

impl TokenStream {
    fn take_job(&mut self) -> Option<Job> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Decoding { job, .. } | State::Tail { job, .. } | State::Dying { job, .. } => {
                Some(job)
            }
            State::Admitting(_) | State::Done => None,
        }
    }

    /// Counts the answer complete (the last chunk is on its way) and frees the slot.
    fn finish(&mut self) {
        if let Some(job) = self.take_job() {
            job.finish(Outcome::Completed);
        }
    }
}

/// A `text/event-stream` response (not cached) with `body`.
pub(super) fn event_stream<B>(body: B) -> Response<B> {
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
