//! `vespa sim --echo`: a backend that costs as little as possible, for measuring what a
//! proxy in front of it costs (`scripts/overhead.sh`).
//!
//! Every request, whatever its method and path (`GET /health` included), is answered 200
//! as soon as its body is read, with a small fixed OpenAI-like completion; after
//! [`EchoConfig::delay`] when one is set. A body holding `"stream": true` is answered with
//! [`EchoConfig::chunks`] SSE `data:` events, [`EchoConfig::chunk_gap`] apart, then
//! `data: [DONE]`. A query parameter overrides each setting for one request
//! (`echo_delay_ms`, `echo_chunks`, `echo_chunk_ms`), so one backend, and the one proxy in
//! front of it, serve every scenario of a benchmark run.
//!
//! Internal: the hot path is kept bare so the proxy's cost is what a benchmark sees. A plain
//! HTTP/1.1 connection per task with no timers (not the shared accept loop and its
//! limits), answers built once at start and shared by reference count, no JSON parsing
//! (`"stream": true` is found with a substring search, so a prompt that quotes it counts
//! too), no per-request logging. It is a benchmark tool: it bounds nothing but the body
//! size.

use super::config::{SimArgs, listen_and_model};
use crate::env::{ConfigError, NoEnv, Raw};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Sleep;

/// Largest request body the echo backend reads; a larger one is answered 413.
pub const MAX_ECHO_BODY: usize = 64 << 20;

/// Longest delay or gap accepted, milliseconds (1e9 s, like every other duration setting).
const MAX_MS: u64 = 1_000_000_000_000;

/// Validated `vespa sim --echo` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoConfig {
    /// Address to listen on. Default is `127.0.0.1:8000`.
    pub listen: SocketAddr,
    /// Model name in the answers. Default is `"model"`.
    pub model: String,
    /// Time between reading a request's body and answering it. Default is 0.
    pub delay: Duration,
    /// `data:` events of a streamed answer, before `data: [DONE]`. Default is 20.
    pub chunks: u64,
    /// Time between two events of a streamed answer. Default is 0: each event is still
    /// written on its own, right after the previous one.
    pub chunk_gap: Duration,
}

impl Default for EchoConfig {
    /// The declared defaults of [`SimArgs`] with `--echo`.
    fn default() -> Self {
        let args = SimArgs {
            echo: true,
            ..SimArgs::default()
        };
        EchoConfig::from_args(&args)
            .expect("the declared defaults are valid")
            .expect("--echo is set")
    }
}

impl EchoConfig {
    /// The echo configuration when `--echo` is given, else `None`. An `--echo-*` flag
    /// without `--echo`, or a flag of the simulated model with it, is an error naming the
    /// flag (it would be silently ignored).
    pub fn from_args(args: &SimArgs) -> Result<Option<EchoConfig>, ConfigError> {
        let env = &NoEnv;
        if !args.echo {
            let echo_flags = [
                (&args.echo_delay_ms, "--echo-delay-ms"),
                (&args.echo_chunks, "--echo-chunks"),
                (&args.echo_chunk_ms, "--echo-chunk-ms"),
            ];
            return match echo_flags.iter().find(|(v, _)| v.is_some()) {
                Some((_, flag)) => Err(ConfigError::new(*flag, "only used with --echo")),
                None => Ok(None),
            };
        }
        let model_flags = [
            (&args.decode_tps, "--decode-tps"),
            (&args.max_batch, "--max-batch"),
            (&args.prefill_ms_per_token, "--prefill-ms-per-token"),
            (&args.max_output_tokens, "--max-output-tokens"),
            (&args.image_secs, "--image-secs"),
            (&args.image_parallel, "--image-parallel"),
            (&args.embed_tps, "--embed-tps"),
            (&args.audio_secs, "--audio-secs"),
            (&args.startup_delay, "--startup-delay"),
            (&args.error_rate, "--error-rate"),
            (&args.hang_rate, "--hang-rate"),
            (&args.die_after_chunks, "--die-after-chunks"),
            (&args.seed, "--seed"),
        ];
        if let Some((_, flag)) = model_flags.iter().find(|(v, _)| v.is_some()) {
            return Err(ConfigError::new(*flag, "not used with --echo"));
        }
        let (listen, model) = listen_and_model(args)?;
        Ok(Some(EchoConfig {
            listen,
            model,
            delay: millis(&args.echo_delay_ms().get(env))?,
            chunks: args.echo_chunks().get(env).u64_min(0)?,
            chunk_gap: millis(&args.echo_chunk_ms().get(env))?,
        }))
    }
}

fn millis(raw: &Raw) -> Result<Duration, ConfigError> {
    let ms = raw.u64_min(0)?;
    if ms > MAX_MS {
        return Err(raw.error(format!("expected at most {MAX_MS} ms")));
    }
    Ok(Duration::from_millis(ms))
}

/// The answers, built once.
#[derive(Debug)]
struct Answers {
    config: EchoConfig,
    completion: Bytes,
    chunk: Bytes,
}

const DONE: &[u8] = b"data: [DONE]\n\n";

impl Answers {
    fn new(config: EchoConfig) -> Self {
        // The model name is the only variable part: serialise it as a JSON string once.
        let model = serde_json::to_string(&config.model).expect("a string serialises");
        let completion = format!(
            r#"{{"id":"cmpl-echo","object":"text_completion","created":0,"model":{model},"choices":[{{"index":0,"text":" echo","logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}}}"#
        );
        let chunk = format!(
            "data: {{\"id\":\"cmpl-echo\",\"object\":\"text_completion\",\"created\":0,\"model\":{model},\"choices\":[{{\"index\":0,\"text\":\" echo\",\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
        );
        Self {
            config,
            completion: Bytes::from(completion),
            chunk: Bytes::from(chunk),
        }
    }
}

/// A running echo backend. Dropping it closes the listener and every open connection.
#[derive(Debug)]
pub struct Echo {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Echo {
    /// Binds `config.listen` and starts serving.
    pub async fn start(config: EchoConfig) -> std::io::Result<Echo> {
        let listener = crate::serve::bind(config.listen)?;
        Ok(Self::serve(listener, config))
    }

    /// Starts serving on an already bound listener.
    pub fn serve(listener: TcpListener, config: EchoConfig) -> Echo {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let answers = Arc::new(Answers::new(config));
        let task = tokio::spawn(accept_loop(listener, answers));
        Echo { addr, task }
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the base URL to use as a worker's `BACKEND_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Internal: connections are tasks of a [`JoinSet`] owned by the loop, so aborting the loop
/// closes them all.
async fn accept_loop(listener: TcpListener, answers: Arc<Answers>) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let answers = Arc::clone(&answers);
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let answers = Arc::clone(&answers);
                async move { Ok::<_, Infallible>(answer(&answers, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The body of an echo answer: whole, or streamed.
type EchoBody = Either<Full<Bytes>, Events>;

async fn answer(answers: &Answers, req: Request<Incoming>) -> Response<EchoBody> {
    let (head, body) = req.into_parts();
    let mut plan = Plan::from(&answers.config);
    if let Some(query) = head.uri.query()
        && let Err(message) = plan.override_with(query)
    {
        return whole(StatusCode::BAD_REQUEST, Bytes::from(message));
    }
    let body = match Limited::new(body, MAX_ECHO_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return whole(
                StatusCode::PAYLOAD_TOO_LARGE,
                Bytes::from_static(b"request body larger than the echo backend reads"),
            );
        }
        // The client left mid-body: nobody reads this answer.
        Err(_) => return whole(StatusCode::BAD_REQUEST, Bytes::new()),
    };
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    if !asks_to_stream(&body) {
        let mut resp = whole(StatusCode::OK, answers.completion.clone());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return resp;
    }
    let events = Events {
        chunk: answers.chunk.clone(),
        left: plan.chunks,
        gap: plan.chunk_gap,
        wait: Wait::First,
        done: false,
    };
    super::stream::event_stream(Either::Right(events))
}

fn whole(status: StatusCode, body: Bytes) -> Response<EchoBody> {
    let mut resp = Response::new(Either::Left(Full::new(body)));
    *resp.status_mut() = status;
    resp
}

/// How one request is answered: the configuration, overridden by its query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    delay: Duration,
    chunks: u64,
    chunk_gap: Duration,
}

impl From<&EchoConfig> for Plan {
    fn from(c: &EchoConfig) -> Self {
        Plan {
            delay: c.delay,
            chunks: c.chunks,
            chunk_gap: c.chunk_gap,
        }
    }
}

impl Plan {
    /// Applies `echo_delay_ms`, `echo_chunks` and `echo_chunk_ms` from `query`; other
    /// parameters are ignored. The error is the 400 answer's text.
    fn override_with(&mut self, query: &str) -> Result<(), String> {
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match key {
                "echo_delay_ms" => &mut self.delay,
                "echo_chunk_ms" => &mut self.chunk_gap,
                "echo_chunks" => {
                    self.chunks = value.parse().map_err(|_| {
                        format!("echo_chunks: expected a whole number, got {value:?}")
                    })?;
                    continue;
                }
                _ => continue,
            };
            let ms: u64 = value
                .parse()
                .ok()
                .filter(|ms| *ms <= MAX_MS)
                .ok_or_else(|| {
                    format!("{key}: expected a whole number of milliseconds, got {value:?}")
                })?;
            *slot = Duration::from_millis(ms);
        }
        Ok(())
    }
}

/// Whether a request body asks for a streamed answer: `"stream"`, optional whitespace, `:`,
/// optional whitespace, `true`, anywhere in it.
fn asks_to_stream(body: &[u8]) -> bool {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    memchr::memmem::find_iter(body, b"\"stream\"").any(|at| {
        let rest = &body[at + b"\"stream\"".len()..];
        let rest = &rest[rest.iter().take_while(|b| is_space(b)).count()..];
        let Some(rest) = rest.strip_prefix(b":") else {
            return false;
        };
        let rest = &rest[rest.iter().take_while(|b| is_space(b)).count()..];
        rest.starts_with(b"true")
    })
}

/// A streamed answer: `left` events, `gap` apart (the first at once), then `[DONE]`.
#[derive(Debug)]
pub struct Events {
    chunk: Bytes,
    left: u64,
    gap: Duration,
    wait: Wait,
    done: bool,
}

/// What stands between one event and the next.
#[derive(Debug)]
enum Wait {
    /// Nothing: the first event goes out with the head.
    First,
    /// No gap: one turn of the runtime, so the connection writes each event on its own (as
    /// a fast model's tokens arrive) instead of all of them in one write. `true` once the
    /// turn was given.
    Yield(bool),
    /// The gap: one timer per stream, reset for each event.
    Timer(Pin<Box<Sleep>>),
}

impl Events {
    /// Ready when the next event may go.
    fn poll_gap(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.wait {
            Wait::First => {
                self.wait = if self.gap.is_zero() {
                    Wait::Yield(false)
                } else {
                    Wait::Timer(Box::pin(tokio::time::sleep(self.gap)))
                };
                Poll::Ready(())
            }
            Wait::Yield(given) => {
                *given = !*given;
                if *given {
                    // Internal: Pending makes hyper flush what it holds before polling again.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(())
            }
            Wait::Timer(sleep) => {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let next = sleep.deadline() + self.gap;
                sleep.as_mut().reset(next);
                Poll::Ready(())
            }
        }
    }
}

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.poll_gap(cx).is_pending() {
            return Poll::Pending;
        }
        if self.left == 0 {
            self.done = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(DONE)))));
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// Runs the echo backend until interrupted; returns the exit code.
///
/// Prints `listening on http://ADDR` on stdout.
pub(super) async fn run(config: EchoConfig) -> i32 {
    let listen = config.listen;
    let (delay, chunks, gap) = (config.delay, config.chunks, config.chunk_gap);
    let echo = match Echo::start(config).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("vespa: cannot listen on {listen}: {e}");
            return 1;
        }
    };
    tracing::info!(
        delay_ms = delay.as_millis() as u64,
        chunks,
        chunk_gap_ms = gap.as_millis() as u64,
        "echo backend configured"
    );
    let stop = crate::serve::shutdown_signal();
    println!("listening on {}", echo.url());
    stop.await;
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(flags: &[&str]) -> SimArgs {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            sim: SimArgs,
        }
        let argv = std::iter::once("vespa-sim").chain(flags.iter().copied());
        Cli::try_parse_from(argv).unwrap().sim
    }

    #[test]
    fn echo_flags_configure_the_echo_backend() {
        let c = EchoConfig::from_args(&args(&[
            "--echo",
            "--listen",
            "127.0.0.1:0",
            "--echo-delay-ms",
            "50",
            "--echo-chunks",
            "3",
            "--echo-chunk-ms",
            "7",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.delay, Duration::from_millis(50));
        assert_eq!(c.chunks, 3);
        assert_eq!(c.chunk_gap, Duration::from_millis(7));
        assert_eq!(c.listen.port(), 0);
        let d = EchoConfig::default();
        assert_eq!(
            (d.delay, d.chunks, d.chunk_gap),
            (Duration::ZERO, 20, Duration::ZERO)
        );
        assert_eq!(EchoConfig::from_args(&args(&[])).unwrap(), None);
    }

    #[test]
    fn echo_flags_without_echo_are_refused_by_name() {
        for flag in ["--echo-delay-ms", "--echo-chunks", "--echo-chunk-ms"] {
            let e = EchoConfig::from_args(&args(&[flag, "1"])).unwrap_err();
            assert_eq!(e.setting, flag, "{e}");
        }
    }

    #[test]
    fn every_model_flag_is_refused_with_echo() {
        // Every setting the echo backend does not read, so a new sim flag cannot be silently
        // ignored under --echo.
        let used = [
            "listen",
            "model",
            "echo-delay-ms",
            "echo-chunks",
            "echo-chunk-ms",
        ];
        for s in SimArgs::SETTINGS.iter().filter(|s| !used.contains(&s.flag)) {
            let flag = format!("--{}", s.flag);
            let e = EchoConfig::from_args(&args(&["--echo", &flag, "1"])).unwrap_err();
            assert_eq!(e.setting, flag, "{e}");
        }
    }

    #[test]
    fn bad_echo_values_are_refused_by_name() {
        for (flag, value) in [
            ("--echo-delay-ms", "-1"),
            ("--echo-delay-ms", "1.5"),
            ("--echo-chunk-ms", "1000000000001"),
            ("--echo-chunks", "many"),
        ] {
            let given = format!("{flag}={value}");
            let e = EchoConfig::from_args(&args(&["--echo", &given])).unwrap_err();
            assert_eq!(e.setting, flag, "{flag} {value}: {e}");
        }
    }

    #[test]
    fn the_query_overrides_the_plan_for_one_request() {
        let mut plan = Plan::from(&EchoConfig::default());
        plan.override_with("a=1&echo_delay_ms=50&echo_chunks=2&echo_chunk_ms=3&flag")
            .unwrap();
        let want = Plan {
            delay: Duration::from_millis(50),
            chunks: 2,
            chunk_gap: Duration::from_millis(3),
        };
        assert_eq!(plan, want);
        for bad in [
            "echo_chunks=-1",
            "echo_delay_ms=x",
            "echo_chunk_ms=1000000000001",
        ] {
            let e = plan.override_with(bad).unwrap_err();
            assert!(e.starts_with(bad.split('=').next().unwrap()), "{bad}: {e}");
        }
    }

    #[test]
    fn stream_true_is_found_without_parsing() {
        for yes in [
            &br#"{"stream":true}"#[..],
            br#"{"model":"m", "stream" :	true, "x":1}"#,
            b"{\"stream\"\n:\ntrue}",
            br#"{"prompt":"\"stream\"","stream": true}"#,
        ] {
            assert!(asks_to_stream(yes), "{}", String::from_utf8_lossy(yes));
        }
        for no in [
            &br#"{"stream":false}"#[..],
            br#"{"stream": "true"}"#,
            br#"{"streams": true}"#,
            br#"{"stream""#,
            b"",
        ] {
            assert!(!asks_to_stream(no), "{}", String::from_utf8_lossy(no));
        }
    }

    #[test]
    fn answers_are_json_with_the_model_name() {
        let answers = Answers::new(EchoConfig {
            model: "m\"1".into(),
            ..EchoConfig::default()
        });
        let whole: serde_json::Value = serde_json::from_slice(&answers.completion).unwrap();
        assert_eq!(whole["model"], "m\"1");
        assert_eq!(whole["choices"][0]["text"], " echo");
        let chunk = std::str::from_utf8(&answers.chunk).unwrap();
        let event = chunk
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        let event: serde_json::Value = serde_json::from_str(event).unwrap();
        assert_eq!(event["model"], "m\"1");
    }
}
