#!/usr/bin/env python3
"""Helpers of scripts/overhead.sh, where bash is clumsy (standard library only).

    overhead.py port                               a free port on 127.0.0.1
    overhead.py wait URL                           until GET URL answers 200 (30 s at most)
    overhead.py child PID                          the first child process of PID
    overhead.py body BYTES                         a JSON completion request of BYTES bytes
    overhead.py sign AUTOSCALER KEY WORKER DIR     a signed request for WORKER: DIR/url (the
                                                   url form's query) and DIR/envelope.json
    overhead.py wrk RESULTS SCENARIO TARGET REP CPU_TICKS < wrk output
    overhead.py load RESULTS SCENARIO TARGET REP CPU_TICKS < vespa load --json output
    overhead.py idle URL N PID                     RSS (kB) of PID with N streams open at URL
    overhead.py table RESULTS META                 the table of medians (markdown)
"""

import asyncio
import json
import os
import re
import socket
import statistics
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


def die(msg):
    print(f"overhead: {msg}", file=sys.stderr)
    sys.exit(1)


def port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def wait(url):
    deadline = time.monotonic() + 30
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
                last = f"status {r.status}"
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(0.05)
    die(f"{url} not ready after 30 s ({last})")


def child(pid):
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == pid:
            print(entry)
            return
    die(f"process {pid} has no child")


def body(size):
    head, tail = '{"model":"model","prompt":"', '","max_tokens":16}'
    print(head + "x" * (int(size) - len(head) - len(tail)) + tail, end="")


def sign(autoscaler, key, worker, out):
    """Asks the autoscaler for a route until it names the worker, like the client library."""
    request = json.dumps({"endpoint": "bench", "cost": 1, "request_idx": 0}).encode()
    deadline = time.monotonic() + 30
    auth = {}
    while time.monotonic() < deadline:
        req = urllib.request.Request(
            f"{autoscaler}/route/",
            data=request,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            auth = json.load(r)
        if "signature" in auth:
            break
        time.sleep(0.1)
    else:
        die(f"{autoscaler} routed no request to {worker} in 30 s: {auth}")
    if auth.get("url") != worker:
        die(f"routed to {auth.get('url')}, expected {worker}")
    keys = ["cost", "endpoint", "reqnum", "request_idx", "signature", "url"]
    query = {
        f"serverless_{k}": auth[k] if isinstance(auth[k], str) else json.dumps(auth[k])
        for k in keys
    }
    with open(os.path.join(out, "url"), "w") as f:
        f.write(urllib.parse.urlencode(query))
    payload = {"model": "model", "prompt": "hello world", "max_tokens": 16}
    with open(os.path.join(out, "envelope.json"), "w") as f:
        json.dump({"auth_data": auth, "payload": payload}, f, separators=(",", ":"))


def ms(text):
    """wrk's latency text (`180.00us`, `1.23ms`, `2.00s`, `1.00m`) in milliseconds."""
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not m:
        die(f"unexpected wrk latency {text!r}")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}[m.group(2)]
    return float(m.group(1)) * scale


def record(results, row):
    with open(results, "a") as f:
        f.write(json.dumps(row) + "\n")


def cpu_us(ticks, requests):
    return int(ticks) * 1e6 / CLK_TCK / requests if requests else None


def wrk(results, scenario, target, rep, ticks):
    out = sys.stdin.read()
    requests = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (requests and rps and p50 and p99):
        die(f"cannot read wrk output:\n{out}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    n = int(requests.group(1))
    row = {
        "scenario": scenario,
        "target": target,
        "rep": int(rep),
        "rps": float(rps.group(1)),
        "p50": ms(p50.group(1)),
        "p99": ms(p99.group(1)),
        "cpu_us": cpu_us(ticks, n),
        "errors": errors,
    }
    record(results, row)
    print(f"{row['rps']:,.0f} req/s, p50 {row['p50']:.3f} ms", file=sys.stderr)


def load(results, scenario, target, rep, ticks):
    out = sys.stdin.read()
    try:
        r = json.loads(out)
    except json.JSONDecodeError:
        die(f"cannot read vespa load output:\n{out}")
    errors = r["requests"] - r["ok"]
    row = {
        "scenario": scenario,
        "target": target,
        "rep": int(rep),
        "rps": r["throughput"],
        "p50": r["latency_ms"]["p50"],
        "p99": r["latency_ms"]["p99"],
        "ttfb": r["ttfb_ms"]["p50"],
        "cpu_us": cpu_us(ticks, r["requests"]),
        "errors": errors,
    }
    record(results, row)
    print(f"{row['rps']:,.0f} streams/s, TTFB p50 {row['ttfb']:.3f} ms", file=sys.stderr)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    die(f"no VmRSS for {pid}")


def idle(url, n, pid):
    """Opens n streams that stay open (one event, then an hour's gap), reads the RSS of pid
    once every stream has its first event, then closes them."""
    u = urllib.parse.urlsplit(url)
    body = b'{"model":"model","prompt":"hello world","stream":true}'
    head = (
        f"POST /v1/completions?echo_chunks=1&echo_chunk_ms=3600000 HTTP/1.1\r\n"
        f"Host: {u.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    request = head.encode() + body
    connecting = asyncio.Semaphore(64)

    async def one():
        async with connecting:
            r, w = await asyncio.open_connection(u.hostname, u.port)
        w.write(request)
        await w.drain()
        await r.readuntil(b"data: ")
        return w

    async def run():
        tasks = [asyncio.ensure_future(one()) for _ in range(int(n))]
        try:
            writers = await asyncio.wait_for(asyncio.gather(*tasks), 120)
        except Exception as e:  # noqa: BLE001 - any failure ends the scenario with its reason
            for t in tasks:
                t.cancel()
            die(f"could not hold {n} streams open at {url}: {e!r}")
        kb = rss_kb(pid)
        for w in writers:
            w.close()
        return kb

    print(asyncio.run(run()))


# ---------------------------------------------------------------- the table

SCENARIOS = {
    "c1": "c=1, 0 ms backend",
    "c16": "c=16, 0 ms",
    "c64": "c=64, 0 ms",
    "slow64": "c=64, 50 ms backend",
    "slow256": "c=256, 50 ms backend",
    "body16k": "c=16, 16 KiB request bodies",
    "sse1": "SSE 20 chunks, c=1",
    "sse16": "SSE 20 chunks, c=16",
    "sse64": "SSE 20 chunks, c=64",
    "signed16": "signed traffic, c=16",
    "signed64": "signed traffic, c=64",
}


def fmt_int(x):
    return f"{x:,.0f}"


def fmt_ms(x, sign=False):
    return f"{x:+.2f}" if sign else f"{x:.2f}"


def fmt_cpu(x):
    return "–" if x is None else (f"{x:.1f}" if x < 10 else f"{x:.0f}")


def table(results, meta):
    with open(meta) as f:
        meta = json.load(f)
    rows = [json.loads(line) for line in open(results)] if os.path.exists(results) else []
    baseline, nginx = meta["baseline"], meta["nginx"]
    columns = ["direct", "vespa"] + (["base"] if baseline else []) + ["nginx"]
    header = ["direct", "vespa"] + (["vespa (baseline)"] if baseline else [])
    header.append("nginx" if nginx else "nginx (not installed)")

    runs = {}
    for r in rows:
        runs.setdefault((r["scenario"], r["target"]), []).append(r)

    def med(scenario, target, key):
        vals = [r[key] for r in runs.get((scenario, target), []) if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    def errors(scenario, target):
        return sum(r.get("errors", 0) for r in runs.get((scenario, target), []))

    flagged = []

    def flag(scenario, target, text):
        n = errors(scenario, target)
        if n:
            flagged.append(f"{SCENARIOS.get(scenario, scenario)}, {target}: {n:,} failed")
            return text + " ⚠"
        return text

    out = [
        "| scenario | " + " | ".join(header) + " |",
        "|---|" + "---|" * len(header),
    ]

    def line(label, cells):
        if all(c == "–" for c in cells):
            return
        out.append(f"| {label} | " + " | ".join(cells) + " |")

    for s, label in SCENARIOS.items():
        if s.startswith("signed"):
            continue
        if not any((s, t) in runs for t in columns):
            continue
        sse = s.startswith("sse")
        d_rps = med(s, "direct", "rps")
        cells_rps, cells_lat, cells_cpu = [], [], []
        for t in columns:
            rps = med(s, t, "rps")
            if rps is None:
                cells_rps.append("–")
                cells_lat.append("–")
                cells_cpu.append("–")
                continue
            text = fmt_int(rps)
            if t != "direct" and d_rps:
                text += f" ({rps / d_rps:.2f}×)"
            cells_rps.append(flag(s, t, text))
            if sse:
                ttfb, d_ttfb = med(s, t, "ttfb"), med(s, "direct", "ttfb")
                if t == "direct" or d_ttfb is None:
                    cells_lat.append(fmt_ms(ttfb))
                else:
                    cells_lat.append(fmt_ms(ttfb - d_ttfb, sign=True))
            else:
                p50, p99 = med(s, t, "p50"), med(s, t, "p99")
                d50, d99 = med(s, "direct", "p50"), med(s, "direct", "p99")
                if t == "direct" or d50 is None:
                    cells_lat.append(f"{fmt_ms(p50)} / {fmt_ms(p99)}")
                else:
                    cells_lat.append(
                        f"{fmt_ms(p50 - d50, sign=True)} / {fmt_ms(p99 - d99, sign=True)}"
                    )
            cells_cpu.append(fmt_cpu(med(s, t, "cpu_us")))
        what = "streams/s" if sse else "req/s"
        line(f"{label}: {what} (× direct)", cells_rps)
        if sse:
            line(f"{label}: time to first byte p50, ms (proxies: added)", cells_lat)
        else:
            line(f"{label}: p50 / p99 ms (proxies: added)", cells_lat)
        unit = "stream" if sse else "request"
        line(f"{label}: CPU µs per {unit} (direct: the backend's)", cells_cpu)

    for s in ("signed16", "signed64"):
        for form, suffix in (("unsecured", ""), ("url form", "-url"), ("legacy form", "-legacy")):
            cells = []
            for t in columns:
                if t not in ("vespa", "base") or (s, t + suffix) not in runs:
                    cells.append("–")
                    continue
                rps = med(s, t + suffix, "rps")
                text = fmt_int(rps)
                ref = med(s, t, "rps")
                if suffix and ref:
                    text += f" ({rps / ref:.2f}×)"
                text += f", {fmt_cpu(med(s, t + suffix, 'cpu_us'))} µs"
                cells.append(flag(s, t + suffix, text))
            what = "req/s, CPU µs per request" if not suffix else "req/s (× unsecured), CPU µs"
            line(f"{SCENARIOS[s]}, {form}: {what}", cells)

    for s, label in (
        ("rss-start", "RSS after start, MiB"),
        ("idle", f"RSS with {meta['streams']:,} open streams, MiB"),
        ("rss-end", "RSS after the whole load run, MiB"),
    ):
        cells = []
        for t in columns:
            kb = med(s, t, "rss_kb")
            cells.append("–" if kb is None else f"{kb / 1024:.1f}")
        line(label, cells)

    print("\n".join(out))
    if flagged:
        print("\n⚠ requests that failed (non-2xx or socket errors; their rows are suspect):")
        for f in flagged:
            print(f"- {f}")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    commands = {
        "port": port,
        "wait": wait,
        "child": child,
        "body": body,
        "sign": sign,
        "wrk": wrk,
        "load": load,
        "idle": idle,
        "table": table,
    }
    if cmd == "rss":
        print(rss_kb(args[0]))
        return
    if cmd == "record-rss":
        results, scenario, target, pid = args
        record(results, {"scenario": scenario, "target": target, "rss_kb": rss_kb(pid)})
        return
    if cmd not in commands:
        die(f"unknown command {cmd}")
    commands[cmd](*args)


if __name__ == "__main__":
    main()
