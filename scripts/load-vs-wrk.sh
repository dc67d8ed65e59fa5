#!/usr/bin/env bash
# Is `vespa load` the bottleneck? Runs wrk (the baseline) and `vespa load` against the same
# worker (unsecured, in front of a `vespa sim` that answers in about 1 ms), alternating,
# and prints requests/s and latency of each run, then the medians.
#
#   scripts/load-vs-wrk.sh [CONCURRENCY] [SECONDS] [ROUNDS]     (default: 64 5 3)
# Needs wrk (apt-get install wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
C=${1:-64}; SECS=${2:-5}; ROUNDS=${3:-3}
VESPA=${VESPA:-target/release/vespa}
[ -x "$VESPA" ] || cargo build --release --locked
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
"$VESPA" sim --listen 127.0.0.1:0 --decode-tps 1000000000 --max-batch 100000 > "$tmp/sim" 2>/dev/null &
for _ in $(seq 100); do grep -q capacity "$tmp/sim" && break; sleep 0.1; done
sim=$(grep -o 'http://[0-9.:]*' "$tmp/sim")
UNSECURED=true BENCHMARK=none MAX_PERF=1e12 MAX_WAIT_TIME=1e9 LOG_LEVEL=error BACKEND_URL="$sim" \
  "$VESPA" worker --listen 127.0.0.1:0 > "$tmp/worker" 2>/dev/null &
for _ in $(seq 100); do grep -q listening "$tmp/worker" && break; sleep 0.1; done
worker=$(grep -o 'http://[0-9.:]*' "$tmp/worker")
until curl -sf "$worker/_vespa/ready" >/dev/null; do sleep 0.1; done
body='{"model":"model","prompt":"hello world","max_tokens":16}'
cat > "$tmp/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
LUA
# The same request through vespa load: a one-line profile.
cat > "$tmp/p.toml" <<TOML
name = "tiny"
[request]
path = "/v1/completions"
[request.body]
model = "model"
prompt = "hello world"
max_tokens = 16
[workload]
request = "max_tokens"
TOML
echo "target: worker $worker -> sim $sim; $C connections, $SECS s per run"
for r in $(seq "$ROUNDS"); do
  wrk -t2 -c"$C" -d"${SECS}s" --latency -s "$tmp/post.lua" "$worker/v1/completions" > "$tmp/wrk"
  w_rps=$(awk '/Requests\/sec/{print $2}' "$tmp/wrk")
  w_p50=$(awk '$1=="50%"{print $2}' "$tmp/wrk"); w_p99=$(awk '$1=="99%"{print $2}' "$tmp/wrk")
  "$VESPA" load --url "$worker" --profile "$tmp/p.toml" -c "$C" -d "$SECS" --json > "$tmp/vl"
  read -r v_rps v_p50 v_p99 < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%.0f %.2fms %.2fms" % (r["throughput"], r["latency_ms"]["p50"], r["latency_ms"]["p99"]))' "$tmp/vl")
  echo "round $r: wrk $w_rps req/s (p50 $w_p50, p99 $w_p99) | vespa load $v_rps req/s (p50 $v_p50, p99 $v_p99)"
  echo "$w_rps $v_rps" >> "$tmp/pairs"
done
python3 - "$tmp/pairs" <<'PY'
import statistics, sys
w, v = zip(*[map(float, l.split()) for l in open(sys.argv[1])])
print("median: wrk %.0f req/s, vespa load %.0f req/s (ratio %.2f)" % (statistics.median(w), statistics.median(v), statistics.median(v) / statistics.median(w)))
PY
