#!/usr/bin/env python3
"""End-to-end check: the OpenAI Python SDK, unchanged, talks to a serverless endpoint through
`vespa proxy` (-> `vespa autoscaler` /route/ -> signed `vespa worker` -> backend).

Env: VESPA_PROXY_URL (e.g. http://127.0.0.1:8010, no /v1). Expects an OpenAI chat backend
that answers "Hello from vespa", and streams it as several chunks.
Run: venv/bin/python test_openai_proxy.py"""
import os
import sys

import openai


def say(msg):
    print(f"[openai-proxy] {msg}", flush=True)


def main():
    base_url = os.environ["VESPA_PROXY_URL"].rstrip("/") + "/v1"
    client = openai.OpenAI(base_url=base_url, api_key="unused")
    messages = [{"role": "user", "content": "Say hello"}]
    say(f"base_url={base_url} openai=={openai.__version__}")

    reply = client.chat.completions.create(model="m", messages=messages, max_tokens=16)
    text = reply.choices[0].message.content
    say(f"non-streaming: {text!r}")
    assert text == "Hello from vespa", reply

    stream = client.chat.completions.create(
        model="m", messages=messages, max_tokens=16, stream=True
    )
    chunks = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    say(f"streaming: {len(chunks)} chunks {chunks!r}")
    assert len(chunks) >= 3, chunks
    assert "".join(chunks) == "Hello from vespa", chunks
    print("ALL PASSED", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a clear line for the Rust test's failure message
        print(f"FAILED: {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
