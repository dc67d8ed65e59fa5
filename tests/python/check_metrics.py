"""Parses a Vespa metrics exposition with Prometheus' own Python parsers and prints its
samples as JSON, so Rust tests can assert on exact values without a parser of their own.

    check_metrics.py URL [--bearer TOKEN] [--prefix vespa_sim_]
    check_metrics.py - [--prefix vespa_]            # the text on standard input
    check_metrics.py FILE --format prometheus       # Prometheus text 0.0.4 in a file

From a URL the answer must be 200 with an OpenMetrics Content-Type. OpenMetrics text (the
default --format) must parse with the strict OpenMetrics parser
(prometheus_client.openmetrics.parser: `# EOF`, counter suffixes, label syntax) and with the
classic text parser (prometheus_client.parser.text_string_to_metric_families), and both must
read the same samples; `--format prometheus` text is read by the classic parser alone. No
sample may appear twice. With --prefix, every family name must start with it.

Prints one JSON object: {"families": {NAME: {"type", "help"}}, "samples": [{"name",
"labels", "value"}]}. Exits 1 with the reason on standard error when a check fails.
"""

import argparse
import json
import sys
import urllib.error
import urllib.request

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as text_families

OPENMETRICS = "application/openmetrics-text"


def fail(msg):
    print(f"check_metrics: {msg}", file=sys.stderr)
    sys.exit(1)


def fetch(url, bearer, openmetrics):
    req = urllib.request.Request(url)
    # What Prometheus sends: OpenMetrics preferred (the worker negotiates; the others always
    # answer it).
    req.add_header(
        "Accept",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    )
    if bearer:
        req.add_header("Authorization", f"Bearer {bearer}")
    # Loopback only: no proxy from the environment may stand in between.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        resp = opener.open(req, timeout=30)
    except urllib.error.HTTPError as e:
        fail(f"{url} answered {e.code}: {e.read().decode('utf-8', 'replace')}")
    with resp:
        content_type = resp.headers.get("Content-Type", "")
        if resp.status != 200:
            fail(f"{url} answered {resp.status}")
        if openmetrics and not content_type.startswith(OPENMETRICS):
            fail(f"{url}: Content-Type {content_type!r} is not {OPENMETRICS}")
        return resp.read().decode("utf-8")


def sample_set(families):
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in families
        for s in f.samples
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("source", help="a URL, a file, or - for standard input")
    ap.add_argument("--bearer", help="sent as Authorization: Bearer")
    ap.add_argument("--prefix", help="every family name must start with this")
    ap.add_argument("--format", choices=["openmetrics", "prometheus"], default="openmetrics")
    args = ap.parse_args()
    openmetrics = args.format == "openmetrics"

    if args.source == "-":
        text = sys.stdin.read()
    elif args.source.startswith(("http://", "https://")):
        text = fetch(args.source, args.bearer, openmetrics)
    else:
        with open(args.source, encoding="utf-8") as f:
            text = f.read()
    try:
        classic = list(text_families(text))
    except Exception as e:
        fail(f"the classic text parser refuses it: {e}")
    if not openmetrics:
        strict = classic
    else:
        try:
            strict = list(openmetrics_families(text))
        except Exception as e:  # the parser raises ValueError and others
            fail(f"not valid OpenMetrics: {e}")
    if sample_set(strict) != sample_set(classic):
        fail(
            "the two parsers read different samples:\n"
            f"openmetrics {sample_set(strict)}\nclassic {sample_set(classic)}"
        )
    seen = set()
    for name, labels, _ in sample_set(strict):
        if (name, labels) in seen:
            fail(f"sample {name}{dict(labels)} appears twice")
        seen.add((name, labels))
    if args.prefix:
        stray = [f.name for f in strict if not f.name.startswith(args.prefix)]
        if stray:
            fail(f"families without the prefix {args.prefix!r}: {stray}")

    out = {
        "families": {f.name: {"type": f.type, "help": f.documentation} for f in strict},
        "samples": [
            {"name": s.name, "labels": s.labels, "value": s.value}
            for f in strict
            for s in f.samples
        ],
    }
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
