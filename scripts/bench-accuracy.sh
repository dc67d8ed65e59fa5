#!/usr/bin/env bash
# Benchmark accuracy: runs `vespa bench` against `vespa sim` configured with a known capacity:
# the default windowed ramp (streamed tokens counted as they arrive), the same ramp counting
# whole answers (the profile without its [benchmark.stream] table), and PyWorker's algorithm
# (8 rounds x 10 concurrent) as the baseline; prints a Markdown table row per batch size.
#
#   scripts/bench-accuracy.sh [BATCH...]        (default: 4 16 64)
#   TPS=500 PROFILE=openai VESPA=target/release/vespa scripts/bench-accuracy.sh 4 16 64
set -euo pipefail
cd "$(dirname "$0")/.."
VESPA=${VESPA:-target/release/vespa}
TPS=${TPS:-500}
PROFILE=${PROFILE:-openai}
[ -x "$VESPA" ] || cargo build --release --locked
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
[ $# -gt 0 ] || set -- 4 16 64
# The same profile counting whole answers.
case "$PROFILE" in
  *.toml) src="$PROFILE" ;;
  *) src="profiles/$PROFILE.toml" ;;
esac
sed '/^\[benchmark.stream\]/,/^\[/{/^\[benchmark.stream\]/d;/^[a-z]/d;/^#/d}' "$src" > "$tmp/whole.toml"
echo "| batch | true capacity (tok/s) | ramp, streamed (default) | time | ramp, whole answers | time | PyWorker 8x10 | time |"
echo "|---|---|---|---|---|---|---|---|"
for batch in "$@"; do
  "$VESPA" sim --listen 127.0.0.1:0 --decode-tps "$TPS" --max-batch "$batch" > "$tmp/sim" 2>/dev/null &
  pid=$!
  for _ in $(seq 100); do grep -q capacity "$tmp/sim" && break; sleep 0.1; done
  url=$(grep -o 'http://[0-9.:]*' "$tmp/sim")
  awk '/capacity/{print $2}' "$tmp/sim" > "$tmp/cap"
  "$VESPA" bench --backend "$url" --profile "$PROFILE" --json > "$tmp/ramp"
  "$VESPA" bench --backend "$url" --profile "$tmp/whole.toml" --json > "$tmp/whole"
  "$VESPA" bench --backend "$url" --profile "$PROFILE" --mode rounds --concurrency 10 --runs 8 \
    --max-seconds 600 --json > "$tmp/rounds"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$batch" "$tmp" <<'PY'
import json, sys
batch, tmp = sys.argv[1], sys.argv[2]
cap = float(open(f"{tmp}/cap").read())
runs = [json.load(open(f"{tmp}/{n}")) for n in ("ramp", "whole", "rounds")]
def cell(r):
    bounded = ", bounded" if r.get("bounded") else ""
    return "%.0f (%+.1f %%%s) | %.1f s" % (r["max_perf"], 100 * (r["max_perf"] / cap - 1), bounded, r["secs"])
print("| %s | %.0f | %s |" % (batch, cap, " | ".join(cell(r) for r in runs)))
PY
done
