#!/usr/bin/env python3
"""Direct capacity of an OpenAI-compatible server, for comparison with `vespa bench`.

Sends the built-in `openai` profile's request shape straight to the server (the same system
prompt followed by 250 random words, `max_tokens` 500, temperature 0.7), not streamed, with
`--concurrency` requests in flight (closed loop) for `--duration` seconds, and prints the
completion tokens per second. Each of the `--concurrency` loops sends its next request as soon
as the last one is answered, so with at most as many loops as the server has slots, each loop
keeps one slot busy: the capacity is the sum over loops of the loop's tokens over the time it
spent waiting for answers (prompt prefill included, the idle tail after its last answer not).
Standard library only; shares no code with Vespa.

    scripts/direct-capacity.py --url http://127.0.0.1:8000 --concurrency 2 --duration 90
"""
import argparse
import json
import random
import sys
import threading
import time
import urllib.request

# The `{{system_prompt}}` and `{{words N}}` generators' text (src/profile/template.rs).
SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer the user's request thoroughly and accurately. "
    "Zebras are African equines with distinctive black-and-white striped coats; each "
    "animal's stripes are unique, and scientists still debate whether they deter flies, "
    "help with heat, or confuse predators."
)
WORDS = (
    "river mountain lantern quiet orbit copper meadow signal harbor violet engine "
    "thunder pocket garden silver ladder island mirror planet forest candle window "
    "bridge ember falcon glacier horizon ivory jungle kettle lemon marble needle ocean "
    "pepper quartz rocket saddle tunnel umbrella valley walnut yellow zephyr anchor "
    "basket cactus dragon eclipse feather granite helmet insect jacket kitten library "
    "magnet nectar oyster puzzle rabbit shadow timber utensil velvet whistle yogurt "
    "zipper arrow bubble circus desert engineer fossil guitar hammock igloo jigsaw koala "
    "lagoon meteor nugget octave parrot quiver ribbon sphinx trumpet unicorn voyage "
    "wizard xylophone yacht zenith blossom compass dolphin echo firefly galaxy"
).split()


def body(model, max_tokens, words):
    prompt = SYSTEM_PROMPT + "\n\n" + " ".join(random.choice(WORDS) for _ in range(words))
    return {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.7}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--duration", type=float, default=90.0, help="seconds to keep sending")
    ap.add_argument("--model", default="model")
    ap.add_argument("--max-tokens", type=int, default=500)
    ap.add_argument("--words", type=int, default=250)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    url = args.url.rstrip("/") + "/v1/completions"
    start = time.monotonic()
    stop_at = start + args.duration
    lock = threading.Lock()
    done = []  # (seconds since start, completion tokens, prompt tokens, loop, seconds taken)
    errors = []

    def loop(index):
        while time.monotonic() < stop_at:
            sent = time.monotonic()
            data = json.dumps(body(args.model, args.max_tokens, args.words)).encode()
            req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=600) as resp:
                    answer = json.load(resp)
                usage = answer["usage"]
                with lock:
                    now = time.monotonic()
                    done.append(
                        (
                            now - start,
                            usage["completion_tokens"],
                            usage.get("prompt_tokens", 0),
                            index,
                            now - sent,
                        )
                    )
            except Exception as e:  # reported below; the loop goes on
                with lock:
                    errors.append(repr(e))
                time.sleep(0.1)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not done:
        print(f"no answer completed; errors: {errors[:3]}", file=sys.stderr)
        return 1
    span = max(d[0] for d in done)
    tokens = sum(d[1] for d in done)
    per_loop = 0.0
    for i in range(args.concurrency):
        mine = [d for d in done if d[3] == i]
        busy = sum(d[4] for d in mine)
        if busy > 0:
            per_loop += sum(d[1] for d in mine) / busy
    result = {
        "tokens_per_sec": per_loop,
        "tokens_per_sec_over_run": tokens / span,
        "answers": len(done),
        "completion_tokens": tokens,
        "mean_prompt_tokens": sum(d[2] for d in done) / len(done),
        "secs": span,
        "errors": len(errors),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            "%.1f completion tokens/s (%.1f over the whole run; %d answers, %d tokens, mean prompt %.0f tokens, %.1f s, %d errors)"
            % (
                result["tokens_per_sec"],
                result["tokens_per_sec_over_run"],
                result["answers"],
                tokens,
                result["mean_prompt_tokens"],
                span,
                len(errors),
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
