#!/usr/bin/env python3
"""End-to-end check: the OpenAI Python SDK, unchanged, talks to a serverless endpoint through
`vespa proxy` (-> `vespa autoscaler` /route/ -> signed `vespa worker` -> backend).

A temperature-0 chat, first whole, then streamed: the stream must arrive in several chunks
and spell the same text as the whole answer.

Env: VESPA_PROXY_URL (e.g. http://127.0.0.1:8010, no /v1); optional VESPA_MODEL (default
"m"), VESPA_PROMPT (default "Say hello"), VESPA_MAX_TOKENS (default 16), and
VESPA_EXPECTED_TEXT, the answer the backend must give (a scripted backend's).
Run: venv/bin/python test_openai_proxy.py"""
import os
import sys

import openai


def say(msg):
    print(f"[openai-proxy] {msg}", flush=True)


def main():
    base_url = os.environ["VESPA_PROXY_URL"].rstrip("/") + "/v1"
    model = os.environ.get("VESPA_MODEL", "m")
    max_tokens = int(os.environ.get("VESPA_MAX_TOKENS", "16"))
    expected = os.environ.get("VESPA_EXPECTED_TEXT")
    client = openai.OpenAI(base_url=base_url, api_key="unused")
    messages = [{"role": "user", "content": os.environ.get("VESPA_PROMPT", "Say hello")}]
    ask = dict(model=model, messages=messages, max_tokens=max_tokens, temperature=0)
    say(f"base_url={base_url} openai=={openai.__version__}")

    reply = client.chat.completions.create(**ask)
    text = reply.choices[0].message.content
    say(f"non-streaming: {text!r}")
    assert text, reply
    if expected is not None:
        assert text == expected, reply

    stream = client.chat.completions.create(**ask, stream=True)
    chunks = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    say(f"streaming: {len(chunks)} chunks {chunks!r}")
    assert len(chunks) >= 3, chunks
    assert "".join(chunks) == text, chunks
    print("ALL PASSED", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a clear line for the Rust test's failure message
        print(f"FAILED: {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
