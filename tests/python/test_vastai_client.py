#!/usr/bin/env python3
"""End-to-end check: the official Vast client (vastai==1.9.1, vastai.serverless) completes
requests through `vespa autoscaler` -> `vespa worker` -> backend, unchanged.

Env: as vastai_env.py (VESPA_AUTOSCALER_URL, VESPA_ENDPOINT, VESPA_API_KEY,
VESPA_ENDPOINT_ID); optional VESPA_ROUTE (default /v1/completions), VESPA_STREAM (default 1;
0 skips the streaming check), VESPA_TIMEOUT (seconds per request, default 120).
Run: venv/bin/python test_vastai_client.py  (or pytest)."""
import asyncio
import os
import sys

from vastai_env import client_and_endpoint

ROUTE = os.environ.get("VESPA_ROUTE", "/v1/completions")
TIMEOUT = float(os.environ.get("VESPA_TIMEOUT", "120"))


def say(msg):
    print(f"[vastai-client] {msg}", flush=True)


async def run():
    client, endpoint, where = client_and_endpoint()
    async with client:
        say(f"{where} route={ROUTE}")

        # (a) non-streaming
        payload = {"model": "m", "prompt": "hello", "max_tokens": 8}
        res = await asyncio.wait_for(
            endpoint.request(ROUTE, payload, cost=8, timeout=TIMEOUT), TIMEOUT + 10)
        say(f"non-stream: ok={res.get('ok')} status={res.get('status')} worker={res.get('url')} "
            f"request_idx={res.get('request_idx')} latency={res.get('latency')}")
        say(f"non-stream: response={str(res.get('response'))[:300]}")
        assert res.get("ok") and 200 <= res["status"] < 300, f"non-2xx: {res}"
        assert isinstance(res.get("response"), dict), \
            f"expected a JSON object, got {type(res.get('response')).__name__}: {res.get('response')!r}"
        assert "auth_data" in res and res["auth_data"].get("url") == res["url"], res.get("auth_data")
        say("PASS non-streaming")

        # (b) streaming
        if os.environ.get("VESPA_STREAM", "1") != "0":
            payload = {"model": "m", "prompt": "hello", "max_tokens": 8, "stream": True}
            res = await asyncio.wait_for(
                endpoint.request(ROUTE, payload, cost=8, stream=True, timeout=TIMEOUT), TIMEOUT + 10)
            say(f"stream: ok={res.get('ok')} status={res.get('status')} worker={res.get('url')}")
            assert res.get("ok") and 200 <= res["status"] < 300, f"non-2xx: {res}"
            chunks = []

            async def consume():
                async for obj in res["response"]:  # parsed JSON objects, one per SSE data line
                    chunks.append(obj)
                    say(f"stream: chunk {len(chunks)}: {str(obj)[:160]}")

            await asyncio.wait_for(consume(), TIMEOUT)
            assert len(chunks) >= 2, f"expected several chunks, got {len(chunks)}: {chunks}"
            say(f"PASS streaming ({len(chunks)} chunks)")


def test_vastai_client():
    asyncio.run(run())


if __name__ == "__main__":
    try:
        test_vastai_client()
    except BaseException as ex:  # noqa: BLE001 - report anything, exit non-zero
        say(f"FAIL {type(ex).__name__}: {ex}")
        sys.exit(1)
    say("ALL PASSED")
