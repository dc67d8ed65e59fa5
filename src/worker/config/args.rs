//! `vespa worker` settings, each declared once: flag, value name, default, environment
//! variable (PyWorker's name where it has one) and help.

crate::env::settings! {
    /// Flags of `vespa worker`. Each one can also be set by the environment variable named in
    /// its help; the flag wins.
    #[command(
        next_line_help = true,
        after_help = "Every environment variable is also read with a PYWORKER_ prefix \
            (PYWORKER_BACKEND_URL, as the original flat PyWorker spelled them); the \
            unprefixed name wins."
    )]
    pub struct WorkerArgs {}

    /// Address to listen on; WORKER_PORT gives the port only, on 0.0.0.0.
    listen: "listen" "ADDR", default "0.0.0.0:3000", env "WORKER_PORT";
    /// Base URL of the model server; requests go to this URL plus their own path and query.
    backend_url: "backend-url" "URL", default "http://localhost:8000", env "BACKEND_URL";
    /// Backend profile: a built-in (openai, openai-chat, tgi, comfyui), a TOML file, PyWorker's
    /// benchmarks.NAME:benchmark, or none (fixed capacity from MAX_PERF).
    benchmark: "benchmark" "NAME", unset "none when MAX_PERF is set", env "BENCHMARK";
    /// Fixed capacity in workload units per second: required with BENCHMARK=none; with a
    /// profile it skips the benchmark.
    max_perf: "max-perf" "UNITS_PER_S", unset "measured by the benchmark", env "MAX_PERF";
    /// Backend path polled until it answers 200 before the worker is ready; when unset, the
    /// profile's health path if it has one.
    healthcheck_endpoint: "healthcheck-endpoint" "PATH", default "/health",
        env "HEALTHCHECK_ENDPOINT";
    /// The model server Vast's template runs: vllm, sglang, llama.cpp, comfyui, tgi or
    /// ollama. Sets the model log, its markers, the health path and the profile that engine
    /// needs; explicit settings win.
    engine: "engine" "NAME", unset "none", env "ENGINE";
    /// How the worker decides the model is loaded: healthcheck (the health path answers
    /// 200), logs (a load marker in MODEL_LOG) or both.
    readiness: "readiness" "MODE", unset "both when MODEL_LOG is set, else healthcheck",
        env "READINESS";
    /// Seconds to wait for the model to load at start-up (READY_TIMEOUT is read too).
    ready_timeout: "readiness-timeout" "SECS", default "1800", env "READINESS_TIMEOUT";
    /// Seconds one health probe may take (SGLang's runs a 1-token generation).
    healthcheck_probe_timeout: "healthcheck-probe-timeout" "SECS", default "30",
        env "HEALTHCHECK_PROBE_TIMEOUT";
    /// The model server's log file, followed like `tail -F` for the markers below.
    model_log: "model-log" "PATH", unset "the engine's log, else none", env "MODEL_LOG";
    /// Newline-separated substrings of a MODEL_LOG line that mean the model is loaded.
    model_load_log_msg: "model-load-log-msg" "TEXT", unset "the engine's",
        env "MODEL_LOAD_LOG_MSG";
    /// Newline-separated substrings of a MODEL_LOG line that mean the model failed for good:
    /// the worker goes errored with that line.
    model_error_log_msgs: "model-error-log-msgs" "TEXT", unset "the engine's",
        env "MODEL_ERROR_LOG_MSGS";
    /// Newline-separated substrings of a MODEL_LOG line worth logging.
    model_info_log_msgs: "model-info-log-msgs" "TEXT", unset "the engine's",
        env "MODEL_INFO_LOG_MSGS";
    /// `false`: one backend request at a time, strict FIFO.
    allow_parallel: "allow-parallel" "BOOL", default "true", env "ALLOW_PARALLEL";
    /// Maximum backend requests in flight; more wait in a FIFO queue.
    max_concurrency: "max-concurrency" "N", unset "unlimited", env "MAX_CONCURRENCY";
    /// Reject with 429 when the estimated wait exceeds this many seconds.
    max_wait_time: "max-wait-time" "SECS", default "10", env "MAX_WAIT_TIME";
    /// Workload of a request that carries no usable cost and that no rule of the profile sizes (no rule for its route, or the rule fails on it).
    default_cost: "default-cost" "UNITS", default "1", env "DEFAULT_COST";
    /// The most workload one request may count for; larger costs are clamped to it (the
    /// url signature form does not cover `cost`).
    max_cost: "max-cost" "UNITS", unset "MAX_WAIT_TIME seconds of work at max_perf",
        env "MAX_COST";
    /// Skip signature checks and accept plain (non-envelope) requests. Development only.
    unsecured: "unsecured" "BOOL", default "false", env "UNSECURED";
    /// Sent to the backend as `Authorization: Bearer …` (vLLM `--api-key`).
    backend_api_key: "backend-api-key" "KEY", unset "none", env "BACKEND_API_KEY";
    /// Largest accepted request body (bytes, or with K/M/G/KiB/MiB/GiB).
    max_body_size: "max-body-size" "SIZE", default "64MiB", env "MAX_BODY_SIZE";
    /// Seconds to wait for a TCP connection to the backend.
    connect_timeout: "connect-timeout" "SECS", default "10", env "CONNECT_TIMEOUT";
    /// Seconds to wait for the backend's response headers; 504 after.
    response_start_timeout: "response-start-timeout" "SECS", default "none",
        env "RESPONSE_START_TIMEOUT";
    /// Seconds the backend may send nothing while the worker waits for the next frame of a
    /// response (time the client takes to read does not count); the request errors after.
    idle_timeout: "idle-timeout" "SECS", default "none", env "IDLE_TIMEOUT";
    /// Seconds a relayed WebSocket may carry no byte in either direction; both sides then
    /// get a close frame (1001) and the socket closes. `none` or 0 turns it off.
    websocket_idle_timeout: "websocket-idle-timeout" "SECS", default "300",
        env "WEBSOCKET_IDLE_TIMEOUT";
    /// Seconds an idle backend connection is kept for reuse; keep it below the backend's own
    /// keep-alive (uvicorn: 5 s).
    backend_pool_idle_timeout: "backend-pool-idle-timeout" "SECS", default "4",
        env "BACKEND_POOL_IDLE_TIMEOUT";
    /// Log level: trace, debug, info, warning, error.
    log_level: "log-level" "LEVEL", default "info", env "LOG_LEVEL";
    /// Log format: text or json.
    log_format: "log-format" "FORMAT", default "text", env "LOG_FORMAT";
    /// One log line per finished proxied request, at info whatever LOG_LEVEL says: method,
    /// path, status, outcome, workload, request_idx, queue, time to first byte and total
    /// times, bytes in and out, client address, request id. Health probes and /_vespa/
    /// routes are not logged.
    access_log: "access-log" "BOOL", default "true", env "ACCESS_LOG";
    /// Threads serving requests. One thread proxies tens of thousands of requests a second
    /// and costs the least CPU per request (no hand-offs between threads), leaving the
    /// machine's cores to the model server; more suit a worker that terminates TLS for
    /// thousands of new connections a second.
    worker_threads: "worker-threads" "N", default "1", env "WORKER_THREADS";
    /// W3C trace context: passthrough forwards traceparent, tracestate and baggage to the
    /// backend as they came; generate also gives a request without traceparent a new one
    /// (random trace and parent ids, sampled).
    trace_context: "trace-context" "MODE", default "passthrough", env "TRACE_CONTEXT";
    /// Model name used in benchmark requests; when unset, VLLM_MODEL, SGLANG_MODEL or
    /// LLAMA_MODEL (as Vast's templates name the served model).
    model_name: "model-name" "NAME", default "model", env "MODEL_NAME";
    /// Autoscaler base URL(s), comma-separated, tried in order. Optional outside Vast.
    report_addr: "report-addr" "URLS", unset "none", env "REPORT_ADDR";
    /// Token sent with every report. Optional outside Vast.
    master_token: "master-token" "TOKEN", unset "none", env "MASTER_TOKEN";
    /// This worker's id in reports (an integer). Optional outside Vast.
    container_id: "container-id" "ID", unset "none", env "CONTAINER_ID";
    /// Public IP address reported as part of the worker URL. Optional outside Vast.
    public_ipaddr: "public-ipaddr" "IP", unset "none", env "PUBLIC_IPADDR";
    /// Public port reported as part of the worker URL.
    public_port: "public-port" "PORT", unset "the listen port",
        env "VAST_TCP_PORT_<WORKER_PORT>";
    /// Serve HTTPS with TLS_CERT and TLS_KEY (and report an https URL).
    use_ssl: "use-ssl" "BOOL", default "false", env "USE_SSL";
    /// Certificate chain (PEM) served with USE_SSL=true; re-read when the file changes.
    tls_cert: "tls-cert" "PATH", default crate::tls::server::DEFAULT_CERT, env "TLS_CERT";
    /// Private key (PEM) of TLS_CERT; re-read when the file changes.
    tls_key: "tls-key" "PATH", default crate::tls::server::DEFAULT_KEY, env "TLS_KEY";
    /// Which message signatures cover: url, legacy or any.
    signature_form: "signature-form" "FORM", default "url", env "SIGNATURE_FORM";
    /// Replay protection window in reqnums; 0 turns it off.
    replay_window: "replay-window" "N", default "0", env "REPLAY_WINDOW";
    /// Refuse (401) a url-form signature issued for another worker's URL; turn off behind
    /// address translation, where the signed URL is not the one this worker reports.
    check_signed_url: "check-signed-url" "BOOL", default "true", env "CHECK_SIGNED_URL";
    /// File caching the benchmark result per profile and backend; `none` disables it.
    benchmark_cache: "benchmark-cache" "PATH", default ".has_benchmark", env "BENCHMARK_CACHE";
    /// Seconds to finish in-flight work after SIGTERM/SIGINT before exiting.
    drain_timeout: "drain-timeout" "SECS", default "30", env "DRAIN_TIMEOUT";
    /// File written when Vast's rolling update calls POST /pyworker/update, before the
    /// worker drains and exits for its restart.
    force_update_file: "force-update-file" "PATH", default "/.force_update",
        env "FORCE_UPDATE_FILE";
    /// Seconds a client has to send a whole request head (HTTP/1), and to stay idle between
    /// two requests on a keep-alive connection; the connection is closed after. `none` or 0
    /// turns it off.
    header_read_timeout: "header-read-timeout" "SECS", default "30", env "HEADER_READ_TIMEOUT";
    /// Seconds the worker waits for the next piece of a request body; a client that stops
    /// sending mid-way gets 408 and its connection closed. `none` or 0 turns it off.
    body_read_timeout: "body-read-timeout" "SECS", default "60", env "BODY_READ_TIMEOUT";
    /// Seconds a client may leave response bytes untaken (it stopped reading); its connection
    /// is closed after, which cancels its requests and frees their slots. `none` or 0 turns
    /// it off.
    send_timeout: "send-timeout" "SECS", default "60", env "SEND_TIMEOUT";
    /// Open client connections at most; beyond, new connections wait in the listen backlog
    /// until one closes.
    max_connections: "max-connections" "N", default "10000", env "MAX_CONNECTIONS";
    /// HTTP/2 streams (requests) one connection may have open at once.
    h2_max_concurrent_streams: "h2-max-concurrent-streams" "N", default "256",
        env "H2_MAX_CONCURRENT_STREAMS";
    /// Request bytes all requests together may hold in memory (bodies are read before their
    /// signature is checked); beyond it a request gets 503 `overloaded` at once.
    max_buffered_bytes: "max-buffered-bytes" "SIZE", default "1GiB",
        env "MAX_BUFFERED_BYTES";
    /// Seconds the start-up benchmark may take, warm-up included; one that reaches the
    /// bound reports what it measured (and says so in the log).
    benchmark_max_seconds: "benchmark-max-seconds" "SECS", default "30",
        env "BENCHMARK_MAX_SECONDS";
    /// Sessions open at once at most; beyond, POST /session/create answers 429. 0 is
    /// unlimited.
    max_sessions: "max-sessions" "N", unset "unlimited", env "MAX_SESSIONS";
    /// Longest lifetime a session may have, in seconds: a session closes when this long
    /// passes with no request in it; a longer lifetime asked for is cut to this.
    max_session_lifetime: "max-session-lifetime" "SECS", default "86400",
        env "MAX_SESSION_LIFETIME";
    /// Seconds the POST of a closing session's on_close_payload to its on_close_route on the
    /// backend may take; it is not retried.
    session_on_close_timeout: "session-on-close-timeout" "SECS", default "10",
        env "SESSION_ON_CLOSE_TIMEOUT";
    /// Port of a plain-HTTP listener that serves POST /session/end only, for webhooks and
    /// jobs on the machine (on the listen address); off disables it. A port that cannot be
    /// bound is logged, not fatal.
    worker_http_port: "worker-http-port" "PORT", unset "WORKER_PORT + 1, off when the port is 0",
        env "WORKER_HTTP_PORT";
}
