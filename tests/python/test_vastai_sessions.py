#!/usr/bin/env python3
"""End-to-end check: sessions of the official Vast client (vastai==1.9.1, vastai.serverless)
through `vespa autoscaler` -> `vespa worker` -> backend, unchanged client code.

Env: as vastai_env.py; optional VESPA_ROUTE (default /v1/completions), VESPA_TIMEOUT
(seconds, default 60). Prints the session id as `SESSION_ID=<id>` for the caller.

Covers endpoint.session(cost, lifetime, on_close_route, on_close_payload), session.request
(whole answer and streamed), session.is_open(), endpoint.get_session(), session.close(),
and a request on a session the worker has closed (410, which the client turns into
"Cannot make request on closed session.")."""
import asyncio
import os
import sys

from vastai_env import client_and_endpoint

ROUTE = os.environ.get("VESPA_ROUTE", "/v1/completions")
TIMEOUT = float(os.environ.get("VESPA_TIMEOUT", "60"))


def say(msg):
    print(f"[vastai-sessions] {msg}", flush=True)


async def run():
    client, endpoint, where = client_and_endpoint()
    async with client:
        say(where)
        session = await asyncio.wait_for(
            endpoint.session(cost=50, lifetime=30, on_close_route="/session_closed",
                             on_close_payload={"job": "j1"}, timeout=TIMEOUT),
            TIMEOUT + 10)
        say(f"created: id={session.session_id} url={session.url} expiration={session.expiration}")
        print(f"SESSION_ID={session.session_id}", flush=True)
        assert session.open and session.session_id and session.url == session.auth_data["url"]

        payload = {"model": "m", "prompt": "hello", "max_tokens": 8}
        res = await asyncio.wait_for(session.request(ROUTE, payload), TIMEOUT)
        say(f"request: ok={res.get('ok')} status={res.get('status')} response={str(res.get('response'))[:200]}")
        assert res.get("ok") and res["status"] == 200, res
        assert isinstance(res["response"], dict) and res["response"]["choices"], res
        assert res["url"] == session.url, "the request went to the session's worker"
        say("PASS session.request")

        res = await asyncio.wait_for(
            session.request(ROUTE, dict(payload, stream=True), stream=True), TIMEOUT)
        assert res.get("ok") and res["status"] == 200, res
        chunks = []

        async def consume():
            async for obj in res["response"]:
                chunks.append(obj)

        await asyncio.wait_for(consume(), TIMEOUT)
        say(f"stream: {len(chunks)} chunks: {str(chunks)[:200]}")
        assert len(chunks) >= 2, chunks
        say("PASS session.request(stream=True)")

        assert await asyncio.wait_for(session.is_open(), TIMEOUT) is True
        say("PASS session.is_open() while open")

        same = await asyncio.wait_for(
            endpoint.get_session(session.session_id, session.auth_data), TIMEOUT)
        say(f"get_session: id={same.session_id} lifetime={same.lifetime} expiration={same.expiration}")
        assert same.session_id == session.session_id and same.url == session.url
        assert same.lifetime == 30 and same.auth_data == session.auth_data
        say("PASS endpoint.get_session()")

        await asyncio.wait_for(session.close(), TIMEOUT)
        assert session.open is False
        say("PASS session.close()")

        # vastai 1.9.1's is_open() asks /session/get, which answers 400 for a closed session,
        # and the client raises on it instead of returning False.
        try:
            still = await asyncio.wait_for(session.is_open(), TIMEOUT)
        except Exception as ex:  # noqa: BLE001 - the client's own exception type
            assert "session does not exist" in str(ex), ex
            still = False
        assert still is False and session.open is False
        say("PASS is_open() after close is not True")

        # A session object that still believes it is open: the worker answers 410 and the
        # client marks it closed.
        try:
            await asyncio.wait_for(same.request(ROUTE, payload), TIMEOUT)
        except ValueError as ex:
            assert "closed session" in str(ex), ex
        else:
            raise AssertionError("a request on a closed session succeeded")
        assert same.open is False
        say("PASS a request on a session the worker closed: 410")


def test_vastai_sessions():
    asyncio.run(run())


if __name__ == "__main__":
    try:
        test_vastai_sessions()
    except BaseException as ex:  # noqa: BLE001 - report anything, exit non-zero
        say(f"FAIL {type(ex).__name__}: {ex}")
        sys.exit(1)
    say("ALL PASSED")
