"""Follows one ComfyUI job over a WebSocket through Vespa, with the Python standard library
only (no WebSocket package): a third implementation of RFC 6455 beside the worker's and
the Rust tests' client.

Settings come from the environment:

    VESPA_AUTOSCALER_URL, VESPA_ENDPOINT, VESPA_API_KEY   route through an autoscaler
    VESPA_WORKER_URL                                      or talk to an UNSECURED worker
    VESPA_STEPS (default 20)                              sampler steps of the job
    VESPA_JOB_COST (default 5242.88)                      workload the socket is routed with

The script routes (POST /route/) and opens ws://WORKER/ws?clientId=ID&serverless_*=...,
checks the 101 and its Sec-WebSocket-Accept, submits the prompt (POST /prompt in a signed
envelope), prints every message with the time since submission, checks ComfyUI's
sequence (execution_start ... one progress per step ... executing with node null), reads
the result from /history, closes the socket with a close frame and waits for the
worker's answer. Prints ALL PASSED at the end; exits 1 with the reason otherwise.
"""

import base64
import hashlib
import json
import os
import socket
import struct
import sys
import time
import urllib.parse
import urllib.request

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fail(msg):
    print(f"comfyui_ws_job: {msg}", file=sys.stderr)
    sys.exit(1)


def post_json(url, body, bearer=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if bearer:
        req.add_header("Authorization", f"Bearer {bearer}")
    with OPENER.open(req, timeout=30) as resp:
        return json.loads(resp.read())


def get_json(url):
    with OPENER.open(url, timeout=30) as resp:
        return json.loads(resp.read())


def route(cost):
    """auth_data for one request of workload `cost` (a synthetic one for an unsecured
    worker)."""
    worker = os.environ.get("VESPA_WORKER_URL")
    if worker:
        n = int(time.time() * 1000) % 1_000_000_000
        return {"cost": cost, "endpoint": "local", "reqnum": n, "request_idx": n,
                "signature": "", "url": worker}
    autoscaler = os.environ["VESPA_AUTOSCALER_URL"].rstrip("/")
    key = os.environ["VESPA_API_KEY"]
    body = {"endpoint": os.environ["VESPA_ENDPOINT"], "api_key": key, "cost": cost,
            "request_idx": 0, "replay_timeout": 60}
    deadline = time.time() + 30
    while time.time() < deadline:
        answer = post_json(f"{autoscaler}/route/", body, bearer=key)
        if "url" in answer:
            return answer
        body["request_idx"] = answer.get("request_idx", 0)
        time.sleep(0.05)
    fail("no worker was assigned within 30 s")


def query_auth(auth):
    keys = ["cost", "endpoint", "reqnum", "request_idx", "signature", "url"]
    return urllib.parse.urlencode(
        {f"serverless_{k}": auth[k] if isinstance(auth[k], str) else json.dumps(auth[k])
         for k in keys})


class Socket:
    """The client end of a WebSocket: masked frames out, unmasked frames in."""

    def __init__(self, url):
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        target = parts.path + ("?" + parts.query if parts.query else "")
        self.sock.sendall(
            (f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                fail("connection closed during the handshake")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status_line = lines[0]
        self.headers = {k.lower(): v.strip() for k, v in
                        (line.split(":", 1) for line in lines[1:])}
        if lines[0].split()[1] != "101":
            fail(f"handshake refused: {head.decode()}\n{self.buf.decode('utf-8', 'replace')}")
        want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        if self.headers.get("sec-websocket-accept") != want:
            fail(f"bad Sec-WebSocket-Accept: {self.headers}")

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                fail("connection closed mid-frame")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        """(opcode, payload) of the next frame."""
        b0, b1 = self._read(2)
        if b1 & 0x80:
            fail("a server frame must not be masked")
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read(8))[0]
        return b0 & 0x0F, self._read(n)

    def send(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def message(self):
        opcode, payload = self.recv()
        if opcode != 1:
            fail(f"expected a text message, got opcode {opcode}")
        return json.loads(payload)


def graph(steps):
    return {
        "3": {"class_type": "KSampler", "inputs": {"seed": 7, "steps": steps, "cfg": 7.0,
              "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
              "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512,
              "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "vespa",
              "images": ["8", 0]}},
    }


def main():
    steps = int(os.environ.get("VESPA_STEPS", "20"))
    cost = float(os.environ.get("VESPA_JOB_COST", "5242.88"))
    client_id = base64.b16encode(os.urandom(8)).decode().lower()

    auth = route(cost)
    worker = auth["url"].rstrip("/")
    ws_url = worker.replace("http", "ws", 1) + f"/ws?clientId={client_id}&" + query_auth(auth)
    print(f"socket: {ws_url.split('&serverless_signature')[0]}&serverless_signature=...")
    ws = Socket(ws_url)
    print(f"handshake: {ws.status_line}; x-request-id {ws.headers.get('x-request-id')}")
    hello = ws.message()
    print(f"   connect  {json.dumps(hello)}")
    if hello != {"type": "status",
                 "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id}}:
        fail(f"unexpected first message {hello}")

    envelope = {"auth_data": route(1), "payload": {"prompt": graph(steps), "client_id": client_id}}
    started = time.monotonic()
    answer = post_json(f"{worker}/prompt", envelope)
    prompt_id = answer["prompt_id"]
    print(f"submitted: {json.dumps(answer)}")

    seen = []
    while True:
        m = ws.message()
        seen.append(m)
        print(f"{time.monotonic() - started:8.3f}s  {json.dumps(m)}")
        if m["type"] == "executing" and m["data"]["node"] is None:
            break
    kinds = [m["type"] for m in seen]
    for kind in ["execution_start", "execution_cached", "executed", "execution_success"]:
        if kind not in kinds:
            fail(f"no {kind} message: {kinds}")
    progress = [(m["data"]["value"], m["data"]["max"]) for m in seen if m["type"] == "progress"]
    if progress != [(i, steps) for i in range(1, steps + 1)]:
        fail(f"progress out of order: {progress}")
    if any(m["data"].get("prompt_id") not in (None, prompt_id) for m in seen):
        fail("a message of another prompt")

    history = get_json(f"{worker}/history/{prompt_id}?" + query_auth(route(1)))
    images = history[prompt_id]["outputs"]["9"]["images"]
    print(f"history: {json.dumps(images)}")

    ws.send(8, struct.pack(">H", 1000))
    opcode, payload = ws.recv()
    if opcode != 8 or struct.unpack(">H", payload[:2])[0] != 1000:
        fail(f"expected the close answer, got opcode {opcode} {payload!r}")
    ws.sock.close()
    print("closed: 1000")
    print("ALL PASSED")


if __name__ == "__main__":
    main()
