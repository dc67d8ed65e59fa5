#!/usr/bin/env python3
"""Client side of scripts/soak.sh (Python standard library only).

soak.sh starts `vespa sim` (with faults), `vespa autoscaler` and one signed `vespa worker`,
then runs this. It drives a mix of clients at about 10x the worker's capacity for
--duration seconds, samples the worker every second, flaps the sim's health, and at the end
checks the worker's books. Exit status: 0 when every check passed, 1 otherwise.

Client classes (all but `good`/`good-stream` are raw asyncio sockets that route themselves
through the autoscaler's /route/ and send the signed envelope straight to the worker):

  good         vespa load --endpoint (routes, signs, retries 429/503), non-streaming
  good-stream  the same with --stream
  slow         streams and reads steadily but slowly (4 KiB every 125 ms)
  stalled      streams a large response and never reads (SO_RCVBUF 4 KiB): SEND_TIMEOUT
               must cut it; after the hold it reads what is left to see the cut
  disconnect   closes before the head, after a few chunks, or after a random time
  doomed       streams more tokens than the sim's --die-after-chunks: the backend breaks
               the stream mid-way, the client must see it cut
  forged       envelopes with a bad signature (random bytes, one byte flipped, empty):
               must be 401 and never enter the books
"""

import argparse
import asyncio
import base64
import collections
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

# --------------------------------------------------------------------------------------
# A minimal asyncio HTTP/1.1 client: enough for JSON calls and chunked SSE streams.


class Cut(Exception):
    """The connection ended before the response did."""


def split_url(url):
    u = urlsplit(url)
    return u.hostname, u.port or 80


async def connect(host, port, rcvbuf=None, limit=65536):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=limit)


def request_bytes(method, host, port, path, headers=None, body=b""):
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_head(reader):
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as e:
        raise Cut(f"no head: {e!r}")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers


async def read_body(reader, headers, pace=None, keep=False):
    """Reads the body to its end. Returns (bytes read, body or b""). Raises Cut when the
    connection ends first. `pace` = (piece, seconds): read piece bytes, sleep, repeat."""
    got = 0
    kept = []
    since_pause = 0

    async def take(n):
        nonlocal got, since_pause
        out = []
        while n > 0:
            step = min(n, pace[0] - since_pause) if pace else n
            try:
                b = await reader.readexactly(step)
            except (asyncio.IncompleteReadError, ConnectionError) as e:
                raise Cut(f"after {got} bytes: {e!r}")
            got += len(b)
            n -= len(b)
            if keep:
                out.append(b)
            if pace:
                since_pause += len(b)
                if since_pause >= pace[0]:
                    since_pause = 0
                    await asyncio.sleep(pace[1])
        return b"".join(out)

    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            try:
                line = await reader.readuntil(b"\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as e:
                raise Cut(f"after {got} bytes: {e!r}")
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                try:
                    await reader.readuntil(b"\r\n")  # end of (empty) trailers
                except (asyncio.IncompleteReadError, ConnectionError) as e:
                    raise Cut(f"no final CRLF: {e!r}")
                break
            kept.append(await take(size))
            await take(2)
    elif "content-length" in headers:
        kept.append(await take(int(headers["content-length"])))
    else:
        while True:
            try:
                b = await reader.read(65536)
            except ConnectionError as e:
                raise Cut(f"after {got} bytes: {e!r}")
            if not b:
                break
            got += len(b)
            if keep:
                kept.append(b)
    return got, b"".join(kept)


async def call(url, method, path, headers=None, body=b"", timeout=10):
    """One complete request; returns (status, body bytes)."""
    host, port = split_url(url)

    async def go():
        reader, writer = await connect(host, port)
        try:
            writer.write(request_bytes(method, host, port, path, headers, body))
            await writer.drain()
            status, h = await read_head(reader)
            _, data = await read_body(reader, h, keep=True)
            return status, data
        finally:
            writer.close()

    return await asyncio.wait_for(go(), timeout)


# --------------------------------------------------------------------------------------


class Soak:
    def __init__(self, a):
        self.a = a
        self.t0 = None
        self.stop_at = None
        self.outcomes = collections.defaultdict(collections.Counter)
        self.sent = collections.Counter()
        self.forged_401 = 0
        self.samples = []
        self.sampling = True
        self.tasks = set()
        self.auth_template = None
        self.load_procs = {}
        self.flap_log = []
        self.states = []

    # ---- helpers -------------------------------------------------------------------

    def now(self):
        return time.monotonic() - self.t0

    def note(self, cls, label):
        self.outcomes[cls][label] += 1

    async def status(self):
        s, body = await call(
            self.a.worker,
            "GET",
            "/_vespa/status",
            {"Authorization": f"Bearer {self.a.master_token}"},
            timeout=5,
        )
        if s != 200:
            raise RuntimeError(f"/_vespa/status answered {s}")
        return json.loads(body)

    async def sim_stats(self):
        s, body = await call(self.a.sim, "GET", "/_sim/stats", timeout=5)
        return json.loads(body)

    async def route(self, cost, deadline):
        """Signed auth_data for a request of `cost`, polling while no worker is ready."""
        idx, delay = 0, 0.5
        while True:
            body = json.dumps(
                {
                    "endpoint": self.a.endpoint,
                    "api_key": self.a.api_key,
                    "cost": cost,
                    "request_idx": idx,
                    "replay_timeout": 60,
                }
            ).encode()
            s, data = await call(
                self.a.autoscaler,
                "POST",
                "/route/",
                {"Authorization": f"Bearer {self.a.api_key}", "Content-Type": "application/json"},
                body,
            )
            if s != 200:
                raise RuntimeError(f"/route/ answered {s}: {data[:200]!r}")
            ans = json.loads(data)
            if "url" in ans:
                return ans
            idx = ans.get("request_idx", idx)
            if time.monotonic() + delay > deadline:
                return None
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 5.0)

    async def open_stream(self, cls, payload, cost, rcvbuf=None, limit=65536, auth=None):
        """Routes (unless auth is given) and sends an envelope; returns (reader, writer) or
        None (outcome already noted)."""
        deadline = time.monotonic() + self.a.route_wait
        if auth is None:
            try:
                auth = await self.route(cost, deadline)
            except Exception as e:  # noqa: BLE001 - classify every failure
                self.note(cls, f"route_error {type(e).__name__}")
                return None
            if auth is None:
                self.note(cls, "no_worker")
                return None
        host, port = split_url(auth["url"])
        body = json.dumps({"auth_data": auth, "payload": payload}).encode()
        try:
            reader, writer = await connect(host, port, rcvbuf=rcvbuf, limit=limit)
            writer.write(
                request_bytes(
                    "POST", host, port, "/v1/completions", {"Content-Type": "application/json"}, body
                )
            )
            await writer.drain()
        except Exception as e:  # noqa: BLE001
            self.note(cls, f"connect_error {type(e).__name__}")
            return None
        self.sent[cls] += 1
        return reader, writer

    async def admitted(self, cls, payload, cost, attempts, rcvbuf=None, limit=65536):
        """Like the client library: a 429 or 503 before the response started did no work,
        so route again and retry (jittered back-off), up to `attempts` in all. Returns
        (status, headers, reader, writer) of the last attempt, or None (outcome noted)."""
        for attempt in range(1, attempts + 1):
            conn = await self.open_stream(cls, payload, cost, rcvbuf=rcvbuf, limit=limit)
            if not conn:
                return None
            reader, writer = conn
            try:
                status, h = await read_head(reader)
            except Cut:
                writer.close()
                self.note(cls, "no_head")
                return None
            if status in (429, 503) and attempt < attempts:
                writer.close()
                await asyncio.sleep(min(0.25 * 2 ** (attempt - 1), 2.0) * random.uniform(0.5, 1.5))
                continue
            return status, h, reader, writer
        return None

    def payload(self, max_tokens, stream, model="model"):
        return {
            "model": model,
            "prompt": " ".join(random.choice(["lorem", "ipsum", "dolor", "sit", "amet"]) for _ in range(20)),
            "max_tokens": max_tokens,
            "stream": stream,
        }

    # ---- client classes ------------------------------------------------------------

    async def slow(self):
        # 2 KiB model name: every SSE chunk is ~2.2 KB, ~280 KB in all, read at 32 KiB/s
        # (~9 s, longer than SEND_TIMEOUT) while the sim makes it in ~1.3 s.
        got = await self.admitted(
            "slow", self.payload(128, True, "m" * 2048), 128, 3, rcvbuf=8192, limit=4096
        )
        if not got:
            return
        status, h, reader, writer = got
        try:
            await read_body(reader, h, pace=(4096, 0.125))
            self.note("slow", f"{status}")
        except Cut:
            self.note("slow", f"{status} cut")
        finally:
            writer.close()

    async def stalled(self):
        # 32 KiB model name x 280 chunks: ~9 MB, more than every buffer on the way holds.
        got = await self.admitted(
            "stalled", self.payload(280, True, "m" * 32768), 280, 8, rcvbuf=4096, limit=4096
        )
        if not got:
            return
        status, h, reader, writer = got
        try:
            if status != 200:
                self.note("stalled", f"{status}")
                return
            # Take nothing more (the reader's buffer holds at most 8 KiB; the socket 4 KiB).
            await asyncio.sleep(self.a.send_timeout + 8)
            try:
                await asyncio.wait_for(read_body(reader, h), 15)
                self.note("stalled", "200 complete")
            except Cut:
                self.note("stalled", "200 cut")
            except asyncio.TimeoutError:
                self.note("stalled", "200 still open")
        finally:
            writer.close()

    async def disconnect(self):
        conn = await self.open_stream("disconnect", self.payload(256, True), 256)
        if not conn:
            return
        reader, writer = conn
        how = random.choice(["before_head", "mid_stream", "after_time"])
        try:
            if how == "before_head":
                await asyncio.sleep(random.uniform(0, 0.3))
                self.note("disconnect", "closed before head")
                return
            if how == "after_time":
                try:
                    status, h = await asyncio.wait_for(read_head(reader), random.uniform(0.2, 2.0))
                except asyncio.TimeoutError:
                    self.note("disconnect", "closed before head")
                    return
                except Cut:
                    self.note("disconnect", "no_head")
                    return
                if status != 200:
                    self.note("disconnect", f"{status}")
                    return
                await asyncio.sleep(random.uniform(0.1, 1.5))
                self.note("disconnect", "200 closed mid-stream")
                return
            try:
                status, h = await read_head(reader)
            except Cut:
                self.note("disconnect", "no_head")
                return
            if status != 200:
                self.note("disconnect", f"{status}")
                return
            for _ in range(random.randint(1, 5)):
                if not await reader.read(200):  # about one SSE event each
                    raise ConnectionError("eof")
            self.note("disconnect", "200 closed mid-stream")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            self.note("disconnect", "cut by server")
        finally:
            writer.transport.abort()  # close at once (RST), as a killed client would

    async def doomed(self):
        n = self.a.die_after + 100
        got = await self.admitted("doomed", self.payload(n, True), n, 3)
        if not got:
            return
        status, h, reader, writer = got
        try:
            await read_body(reader, h)
            self.note("doomed", f"{status}")
        except Cut:
            self.note("doomed", f"{status} cut")
        finally:
            writer.close()

    async def forged(self):
        auth = dict(self.auth_template)
        kind = random.choice(["random", "flipped", "empty"])
        sig = auth["signature"]
        if kind == "random":
            auth["signature"] = base64.b64encode(os.urandom(256)).decode()
        elif kind == "flipped":
            raw = bytearray(base64.b64decode(sig))
            raw[random.randrange(len(raw))] ^= 0x01
            auth["signature"] = base64.b64encode(bytes(raw)).decode()
        else:
            auth["signature"] = ""
        auth["cost"] = 5000  # what a forger would ask for: must never reach the books
        conn = await self.open_stream("forged", self.payload(64, False), 64, auth=auth)
        if not conn:
            return
        reader, writer = conn
        try:
            status, h = await read_head(reader)
            await read_body(reader, h)
            self.note("forged", f"{status}")
            if status == 401:
                self.forged_401 += 1
        except Cut:
            self.note("forged", "no answer")
        finally:
            writer.close()

    # ---- drivers -------------------------------------------------------------------

    async def open_loop(self, name, rate, make):
        """Starts make() `rate` times a second (Poisson arrivals) until the load ends."""
        if rate <= 0:
            return
        while True:
            await asyncio.sleep(random.expovariate(rate))
            if self.now() >= self.a.duration:
                return
            t = asyncio.ensure_future(self.bounded(name, make()))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

    async def bounded(self, name, coro):
        try:
            await asyncio.wait_for(coro, self.a.client_timeout)
        except asyncio.TimeoutError:
            self.note(name, "client_timeout")
        except Exception as e:  # noqa: BLE001
            self.note(name, f"client_error {type(e).__name__}")

    async def flapper(self):
        """Switches the sim's /health: off for flap_off s, on for flap_on s, from t=5."""
        if self.a.flap_off <= 0:
            return
        await asyncio.sleep(5)
        healthy = True
        try:
            while self.now() < self.a.duration:
                healthy = not healthy
                await call(self.a.sim, "POST", "/_sim/health", {"Content-Type": "application/json"},
                           json.dumps({"healthy": healthy}).encode())
                self.flap_log.append((round(self.now(), 1), "healthy" if healthy else "unhealthy"))
                left = self.a.duration - self.now()
                await asyncio.sleep(max(0.0, min(self.a.flap_on if healthy else self.a.flap_off, left)))
        finally:
            if not healthy:
                await call(self.a.sim, "POST", "/_sim/health", {"Content-Type": "application/json"},
                           b'{"healthy": true}')
                self.flap_log.append((round(self.now(), 1), "healthy"))

    def rss_kib(self):
        with open(f"/proc/{self.a.worker_pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def fds(self):
        return len(os.listdir(f"/proc/{self.a.worker_pid}/fd"))

    def conns(self):
        """ESTABLISHED TCP sockets of the worker: (client side, to the backend)."""
        wport = split_url(self.a.worker)[1]
        sport = split_url(self.a.sim)[1]
        out = subprocess.run(
            ["ss", "-Htnp", "state", "established"], capture_output=True, text=True, check=False
        ).stdout
        client = backend = 0
        tag = f"pid={self.a.worker_pid},"
        for line in out.splitlines():
            if tag not in line:
                continue
            cols = line.split()
            local, peer = cols[2], cols[3]
            if local.rsplit(":", 1)[1] == str(wport):
                client += 1
            elif peer.rsplit(":", 1)[1] == str(sport):
                backend += 1
        return client, backend

    async def sampler(self):
        print(
            f"{'t':>4} {'state':<8} {'rss_MiB':>7} {'fds':>5} {'conns':>5} {'be_conn':>7} "
            f"{'inflt':>5} {'queue':>5} {'recv':>6} {'served':>6} {'err':>5} {'cancl':>5} "
            f"{'rej':>6} {'rej/s':>5} {'unauth':>6}",
            flush=True,
        )
        prev_rej = None
        while self.sampling:
            t = self.now()
            try:
                st = await self.status()
                rss = self.rss_kib()
                fds = self.fds()
                client, backend = await asyncio.get_running_loop().run_in_executor(None, self.conns)
            except Exception as e:  # noqa: BLE001
                print(f"{t:4.0f} sample failed: {e!r}", flush=True)
                await asyncio.sleep(1)
                continue
            tot = {k: v["requests"] for k, v in st["totals"].items()}
            rej_s = "" if prev_rej is None else tot["rejected"] - prev_rej
            prev_rej = tot["rejected"]
            row = dict(t=round(t, 1), state=st["state"], rss_kib=rss, fds=fds, conns=client,
                       backend_conns=backend, in_flight=st["in_flight"], queued=st["queued"],
                       unauthorized=st["unauthorized"], **tot)
            self.samples.append(row)
            if not self.states or self.states[-1][1] != st["state"]:
                self.states.append((round(t, 1), st["state"]))
            print(
                f"{t:4.0f} {st['state'][:8]:<8} {rss / 1024:7.1f} {fds:5} {client:5} {backend:7} "
                f"{st['in_flight']:5} {st['queued']:5} {tot['received']:6} {tot['served']:6} "
                f"{tot['errored']:5} {tot['cancelled']:5} {tot['rejected']:6} {rej_s!s:>5} "
                f"{st['unauthorized']:6}",
                flush=True,
            )
            await asyncio.sleep(max(0.0, 1.0 - (self.now() - t)))

    def start_loads(self):
        for name, stream in (("good", False), ("good-stream", True)):
            cmd = [
                self.a.vespa, "load", "--endpoint", self.a.endpoint, "--api-key", self.a.api_key,
                "--autoscaler-url", self.a.autoscaler, "--profile", self.a.profile,
                "-r", str(self.a.good_rate), "-d", str(self.a.duration),
                "--timeout", str(self.a.client_timeout), "--json",
            ]
            if stream:
                cmd.append("--stream")
            out = open(os.path.join(self.a.outdir, f"load-{name}.json"), "w")
            err = open(os.path.join(self.a.outdir, f"load-{name}.log"), "w")
            p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
            self.load_procs[name] = p
            print(f"# started {name}: pid {p.pid}", flush=True)

    def kill_loads(self):
        for p in self.load_procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()

    # ---- probes after the run ------------------------------------------------------

    async def probe_concurrency(self):
        """MAX_CONCURRENCY permits free: 2N long streams at once must fill exactly N."""
        n = self.a.max_concurrency
        conns = []
        try:
            for _ in range(2 * n):
                c = await self.open_stream("probe", self.payload(self.a.die_after - 10, True),
                                           1, auth=self.auth_template)
                if c:
                    conns.append(c)
            best = None
            for _ in range(20):
                await asyncio.sleep(0.25)
                st = await self.status()
                if best is None or st["in_flight"] > best["in_flight"]:
                    best = st
                if st["in_flight"] == n and st["queued"] > 0:
                    break
            return best["in_flight"], best["queued"], len(conns)
        finally:
            for _, w in conns:
                w.transport.abort()

    async def probe_connections(self):
        """MAX_CONNECTIONS permits free: that many connections at once all get /ping."""
        m = self.a.max_connections
        host, port = split_url(self.a.worker)
        conns = []
        try:
            for _ in range(m):
                conns.append(await connect(host, port))
            for r, w in conns:
                w.write(f"GET /ping HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())

            async def pong(r):
                s, h = await read_head(r)
                _, b = await read_body(r, h, keep=True)
                return s == 200 and b.strip() == b"pong"

            res = await asyncio.gather(
                *(asyncio.wait_for(pong(r), 10) for r, _ in conns), return_exceptions=True
            )
            return sum(1 for x in res if x is True), m
        finally:
            for _, w in conns:
                w.transport.abort()

    # ---- main ----------------------------------------------------------------------

    async def run(self):
        a = self.a
        self.t0 = time.monotonic()
        # One genuine auth_data: the template forged envelopes tamper with, and the probes use.
        self.auth_template = await self.route(1, time.monotonic() + 30)
        if not self.auth_template:
            print("FAIL: the autoscaler routed nothing within 30 s", flush=True)
            return 1
        # Before the load: forged envelopes alone must move `unauthorized` and nothing else.
        quiet0 = await self.status()
        for _ in range(20):
            await self.forged()
        quiet1 = await self.status()
        quiet_ok = (quiet1["totals"] == quiet0["totals"]
                    and quiet1["unauthorized"] - quiet0["unauthorized"] == 20)
        quiet_detail = (f"20 forged on an idle worker: unauthorized +"
                        f"{quiet1['unauthorized'] - quiet0['unauthorized']}, totals "
                        f"{'unchanged' if quiet1['totals'] == quiet0['totals'] else 'CHANGED'}")
        self.outcomes.clear()
        self.sent.clear()
        self.forged_401 = 0
        st0 = quiet1
        base = {k: v["requests"] for k, v in st0["totals"].items()}
        base_unauth = st0["unauthorized"]
        self.t0 = time.monotonic()
        sampler = asyncio.ensure_future(self.sampler())
        await asyncio.sleep(1.2)
        rss_start = self.samples[0]["rss_kib"] if self.samples else self.rss_kib()
        self.t0 = time.monotonic()  # t=0: the load starts
        offered = (2 * a.good_rate * 64 + a.slow_rate * 128 + a.stalled_rate * 280
                   + a.disconnect_rate * 256 + a.doomed_rate * (a.die_after + 100))
        print(f"# offered workload {offered:.0f} tokens/s = {offered / a.capacity:.1f}x MAX_PERF "
              f"{a.capacity:.0f} (plus {a.forged_rate:g} forged requests/s)", flush=True)
        self.start_loads()
        drivers = [
            self.open_loop("slow", a.slow_rate, self.slow),
            self.open_loop("stalled", a.stalled_rate, self.stalled),
            self.open_loop("disconnect", a.disconnect_rate, self.disconnect),
            self.open_loop("doomed", a.doomed_rate, self.doomed),
            self.open_loop("forged", a.forged_rate, self.forged),
            self.flapper(),
        ]
        await asyncio.gather(*drivers)
        print(f"# t={self.now():.0f}: load stops; waiting for the clients still running", flush=True)
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=a.client_timeout + 5)
        deadline = time.monotonic() + a.client_timeout + 10
        for p in self.load_procs.values():
            while p.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
        self.kill_loads()
        t_clients_done = self.now()
        print(f"# t={t_clients_done:.0f}: every client has finished; settling", flush=True)

        # Settle: the working set and the connections must come back to 0.
        settled_at = None
        t_end = time.monotonic() + a.settle
        while time.monotonic() < t_end:
            await asyncio.sleep(1)
            s = self.samples[-1]
            if s["in_flight"] + s["queued"] == 0 and s["conns"] == 0:
                settled_at = self.now()
                break
        await asyncio.sleep(1.5)
        self.sampling = False
        await sampler
        final = await self.status()
        client_conns, backend_conns = self.conns()
        sim = await self.sim_stats()
        rss_end = self.rss_kib()
        fds_end = self.fds()
        rss_peak = max(s["rss_kib"] for s in self.samples)
        fds_start = self.samples[0]["fds"]

        # Permit probes (after the books are read, so the probes are not in them).
        inflight, queued, opened = await self.probe_concurrency()
        await asyncio.sleep(2)
        after_probe = await self.status()
        pongs, m = await self.probe_connections()

        # ---- report ----
        loads = {}
        for name in self.load_procs:
            try:
                with open(os.path.join(a.outdir, f"load-{name}.json")) as f:
                    loads[name] = json.load(f)
            except (OSError, ValueError):
                loads[name] = None
        print()
        print("== status codes by client class ==")
        for name in ("good", "good-stream"):
            r = loads.get(name)
            if r is None:
                print(f"  {name:<12} no report (see {a.outdir}/load-{name}.log)")
                continue
            st = dict(sorted(r["status"].items()))
            errs = dict(sorted(r["errors"].items()))
            print(f"  {name:<12} sent {r['requests']:5}  status {st}  errors {errs}  "
                  f"latency p50 {r['latency_ms']['p50']:.0f} ms p99 {r['latency_ms']['p99']:.0f} ms")
        for cls in ("slow", "stalled", "disconnect", "doomed", "forged"):
            c = self.outcomes.get(cls, {})
            total = sum(c.values())
            print(f"  {cls:<12} sent {self.sent[cls]:5}  outcomes {dict(sorted(c.items()))} (of {total})")
        print()
        tot = {k: v["requests"] - base.get(k, 0) for k, v in final["totals"].items()}
        totw = {k: v["workload"] for k, v in final["totals"].items()}
        unauth = final["unauthorized"] - base_unauth
        print("== worker ==")
        print(f"  totals (this run): {tot}")
        print(f"  unauthorized: {unauth}   state transitions: {self.states}")
        print(f"  sim health flips: {self.flap_log}")
        print(f"  sim after: {sim}")
        print(f"  RSS MiB: start {rss_start / 1024:.1f}  peak {rss_peak / 1024:.1f}  "
              f"end {rss_end / 1024:.1f}   fds: start {fds_start} end {fds_end}")
        print()
        checks = []

        def check(name, ok, detail):
            checks.append(ok)
            print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")

        print("== checks ==")
        ft = {k: v["requests"] for k, v in final["totals"].items()}
        rhs = ft["served"] + ft["errored"] + ft["cancelled"] + ft["rejected"]
        check("books balance", ft["received"] == rhs,
              f"received {ft['received']} = served {ft['served']} + errored {ft['errored']} + "
              f"cancelled {ft['cancelled']} + rejected {ft['rejected']} = {rhs}")
        rhsw = totw["served"] + totw["errored"] + totw["cancelled"] + totw["rejected"]
        check("workload balances", abs(totw["received"] - rhsw) <= 1e-6 * max(1.0, totw["received"]),
              f"received {totw['received']:.1f} vs {rhsw:.1f} units")
        check("working set empty", final["queued"] + final["in_flight"] == 0 and final["cur_load"] == 0,
              f"queued {final['queued']} in_flight {final['in_flight']} cur_load {final['cur_load']}"
              + (f" (empty {settled_at - t_clients_done:.1f} s after the last client)"
                 if settled_at is not None else " (not settled)"))
        forged_sent = self.sent["forged"]
        check("forged requests all 401 and counted as unauthorized only",
              self.forged_401 == forged_sent and unauth == forged_sent,
              f"sent {forged_sent}, answered 401 {self.forged_401}, worker unauthorized {unauth}")
        check("forged requests never enter the books", quiet_ok, quiet_detail)
        check("client connections closed", client_conns == 0,
              f"{client_conns} ESTABLISHED on the worker's port")
        check("backend connections closed", backend_conns <= 1,
              f"{backend_conns} ESTABLISHED to the sim (at most 1 allowed: the health probe's "
              f"keep-alive connection, re-made every 10 s)")
        check("backend idle (hung and cancelled work stopped)",
              sim["active"] == 0 and sim["queued"] == 0 and sim["hanging"] == 0,
              f"sim active {sim['active']} queued {sim['queued']} hanging {sim['hanging']}")
        check("no leaked concurrency permit",
              inflight == a.max_concurrency and opened == 2 * a.max_concurrency,
              f"{opened} streams opened, in_flight reached {inflight} of MAX_CONCURRENCY "
              f"{a.max_concurrency} (queued {queued}); working set after: "
              f"{after_probe['queued'] + after_probe['in_flight']}")
        check("no leaked connection permit", pongs == m,
              f"{pongs} of MAX_CONNECTIONS {m} simultaneous connections answered /ping")
        stalled = self.outcomes.get("stalled", {})
        check("stalled readers cut by SEND_TIMEOUT",
              stalled.get("200 cut", 0) >= 1
              and stalled.get("200 complete", 0) + stalled.get("200 still open", 0) == 0,
              f"{dict(stalled)}")
        slow = self.outcomes.get("slow", {})
        check("slow but steady readers served whole",
              slow.get("200", 0) >= 1 and slow.get("200 cut", 0) == 0,
              f"{dict(slow)}")
        doomed = self.outcomes.get("doomed", {})
        check("streams the backend broke reach the client cut, never as complete",
              doomed.get("200 cut", 0) >= 1 and doomed.get("200", 0) == 0,
              f"{dict(doomed)}")
        summary = {
            "duration": a.duration, "rss_kib": {"start": rss_start, "peak": rss_peak, "end": rss_end},
            "fds": {"start": fds_start, "end": fds_end}, "totals": tot, "unauthorized": unauth,
            "outcomes": {k: dict(v) for k, v in self.outcomes.items()}, "sent": dict(self.sent),
            "loads": loads, "states": self.states, "flaps": self.flap_log, "sim": sim,
            "checks_passed": all(checks), "samples": self.samples,
        }
        with open(os.path.join(a.outdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
        return 0 if all(checks) else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vespa", required=True)
    p.add_argument("--worker", required=True, help="worker base URL")
    p.add_argument("--worker-pid", type=int, required=True)
    p.add_argument("--sim", required=True, help="sim base URL")
    p.add_argument("--autoscaler", required=True)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--master-token", required=True)
    p.add_argument("--profile", required=True, help="profile TOML for vespa load")
    p.add_argument("--outdir", required=True)
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--good-rate", type=float, default=40, help="per vespa load process")
    p.add_argument("--slow-rate", type=float, default=4)
    p.add_argument("--stalled-rate", type=float, default=0.5)
    p.add_argument("--disconnect-rate", type=float, default=8)
    p.add_argument("--doomed-rate", type=float, default=1)
    p.add_argument("--forged-rate", type=float, default=20)
    p.add_argument("--die-after", type=int, required=True)
    p.add_argument("--send-timeout", type=float, required=True)
    p.add_argument("--max-concurrency", type=int, required=True)
    p.add_argument("--max-connections", type=int, required=True)
    p.add_argument("--capacity", type=float, required=True, help="the worker's MAX_PERF")
    p.add_argument("--flap-off", type=float, default=32)
    p.add_argument("--flap-on", type=float, default=20)
    p.add_argument("--client-timeout", type=float, default=45)
    p.add_argument("--route-wait", type=float, default=15)
    p.add_argument("--settle", type=float, default=20)
    a = p.parse_args()
    s = Soak(a)

    def on_term(*_):
        s.kill_loads()
        sys.exit(2)

    signal.signal(signal.SIGTERM, on_term)
    try:
        code = asyncio.run(s.run())
    finally:
        s.kill_loads()
    sys.exit(code)


if __name__ == "__main__":
    main()
