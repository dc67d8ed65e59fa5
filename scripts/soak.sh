#!/usr/bin/env bash
# Soak test: one signed worker in front of a faulty `vespa sim`, driven at ~10x its capacity
# for DURATION seconds by good, slow, stalled, disconnecting, doomed and forged clients.
# Prints the worker's RSS and books every second, the status codes per client class, and
# PASS/FAIL for each invariant; exits 1 if any check failed. See docs/RELIABILITY.md.
#
#   scripts/soak.sh            # 60 s
#   scripts/soak.sh 20         # a quick run (too short for the health flap to trip the worker)
#   VESPA=target/debug/vespa scripts/soak.sh 20
#
# Everything listens on 127.0.0.1 with ports picked by the kernel; every process started here
# is killed on exit. Logs and the JSON summary stay in $SOAK_DIR (default: a fresh temp dir).
set -euo pipefail

DURATION=${1:-${DURATION:-60}}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${VESPA:-}" ]]; then
  VESPA=$ROOT/target/release/vespa
  [[ -x $VESPA ]] || VESPA=$ROOT/target/debug/vespa
fi
[[ -x $VESPA ]] || { echo "soak: no vespa binary; run cargo build --release --locked" >&2; exit 64; }
SOAK_DIR=${SOAK_DIR:-$(mktemp -d /tmp/vespa-soak.XXXXXX)}
mkdir -p "$SOAK_DIR"

# The system under test. Capacity = DECODE_TPS x MAX_BATCH tokens/s, and MAX_PERF says so.
DECODE_TPS=${DECODE_TPS:-100}
MAX_BATCH=${MAX_BATCH:-8}
CAPACITY=$((DECODE_TPS * MAX_BATCH))
ERROR_RATE=${ERROR_RATE:-0.02}     # sim answers 500
HANG_RATE=${HANG_RATE:-0.01}       # sim never answers
DIE_AFTER=${DIE_AFTER:-300}        # sim breaks every stream after this many chunks
SEED=${SEED:-1}
SEND_TIMEOUT=${SEND_TIMEOUT:-5}
MAX_CONNECTIONS=${MAX_CONNECTIONS:-512}
TOKEN=soak-master-$RANDOM$RANDOM
KEY=soak-key-$RANDOM$RANDOM

PIDS=()
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits for "listening on http://..." in $1 and prints the URL.
listening() {
  local _
  for _ in $(seq 100); do
    if grep -q '^listening on ' "$1" 2>/dev/null; then
      grep -m1 '^listening on ' "$1" | sed 's/^listening on //'
      return
    fi
    sleep 0.1
  done
  echo "soak: nothing listening after 10 s; see $1" >&2
  return 1
}

"$VESPA" sim --listen 127.0.0.1:0 --decode-tps "$DECODE_TPS" --max-batch "$MAX_BATCH" \
  --error-rate "$ERROR_RATE" --hang-rate "$HANG_RATE" --die-after-chunks "$DIE_AFTER" \
  --seed "$SEED" --log-level warning >"$SOAK_DIR/sim.out" 2>"$SOAK_DIR/sim.log" &
PIDS+=($!)
SIM=$(listening "$SOAK_DIR/sim.out")

"$VESPA" autoscaler --listen 127.0.0.1:0 --master-token "$TOKEN" --endpoint "soak=$KEY" \
  --log-level warning >"$SOAK_DIR/autoscaler.out" 2>"$SOAK_DIR/autoscaler.log" &
PIDS+=($!)
AUTOSCALER=$(listening "$SOAK_DIR/autoscaler.out")

BACKEND_URL=$SIM REPORT_ADDR=$AUTOSCALER MASTER_TOKEN=$TOKEN CONTAINER_ID=1 \
  PUBLIC_IPADDR=127.0.0.1 BENCHMARK=none MAX_PERF=$CAPACITY MAX_CONCURRENCY=$MAX_BATCH \
  SEND_TIMEOUT=$SEND_TIMEOUT IDLE_TIMEOUT=5 RESPONSE_START_TIMEOUT=5 \
  MAX_CONNECTIONS=$MAX_CONNECTIONS DRAIN_TIMEOUT=10 BENCHMARK_CACHE=none \
  FORCE_UPDATE_FILE=$SOAK_DIR/force_update LOG_LEVEL=warning \
  "$VESPA" worker --listen 127.0.0.1:0 >"$SOAK_DIR/worker.out" 2>"$SOAK_DIR/worker.log" &
WORKER_PID=$!
PIDS+=("$WORKER_PID")
WORKER=$(listening "$SOAK_DIR/worker.out")
for _ in $(seq 100); do
  curl -sf "$WORKER/_vespa/ready" >/dev/null && break
  sleep 0.2
done
curl -sf "$WORKER/_vespa/ready" >/dev/null || { echo "soak: worker not ready; see $SOAK_DIR/worker.log" >&2; exit 1; }

# Good clients' requests: 64 tokens each (cost = max_tokens).
cat >"$SOAK_DIR/good.toml" <<'EOF'
name = "soak-good"
description = "POST /v1/completions, 64 tokens"
[request]
method = "POST"
path = "/v1/completions"
timeout = 60
[request.body]
model = "{{model}}"
prompt = "{{words 20}}"
max_tokens = 64
[workload]
request = "max_tokens"
EOF

NPROC=$(nproc)
cat <<EOF
# vespa soak: $DURATION s, $("$VESPA" --version 2>/dev/null || echo vespa) at $VESPA, $NPROC CPUs
# sim $SIM: ${DECODE_TPS} tok/s x batch ${MAX_BATCH} = ${CAPACITY} tok/s; faults: error $ERROR_RATE, hang $HANG_RATE, streams die after $DIE_AFTER chunks, seed $SEED
# autoscaler $AUTOSCALER; worker $WORKER (pid $WORKER_PID): MAX_PERF $CAPACITY, MAX_CONCURRENCY $MAX_BATCH, SEND/IDLE/RESPONSE_START_TIMEOUT ${SEND_TIMEOUT}/5/5 s, MAX_CONNECTIONS $MAX_CONNECTIONS
# logs: $SOAK_DIR
EOF

rc=0
python3 "$ROOT/scripts/soak.py" --vespa "$VESPA" --worker "$WORKER" --worker-pid "$WORKER_PID" \
  --sim "$SIM" --autoscaler "$AUTOSCALER" --endpoint soak --api-key "$KEY" \
  --master-token "$TOKEN" --profile "$SOAK_DIR/good.toml" --outdir "$SOAK_DIR" \
  --duration "$DURATION" --die-after "$DIE_AFTER" --send-timeout "$SEND_TIMEOUT" \
  --max-concurrency "$MAX_BATCH" --max-connections "$MAX_CONNECTIONS" --capacity "$CAPACITY" &
SOAK_PID=$!
PIDS+=("$SOAK_PID")
wait "$SOAK_PID" || rc=$?

# Drain: SIGTERM must make the idle worker exit 0, well within DRAIN_TIMEOUT.
t0=$(date +%s.%N)
kill -TERM "$WORKER_PID"
drain_rc=0
wait "$WORKER_PID" || drain_rc=$?
t1=$(date +%s.%N)
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
if [[ $drain_rc -eq 0 ]]; then
  echo "  PASS  drain: SIGTERM -> exit 0 in $secs s"
else
  echo "  FAIL  drain: SIGTERM -> exit $drain_rc in $secs s"
  rc=1
fi
if grep -qiE 'panick|panic' "$SOAK_DIR"/*.log; then
  echo "  FAIL  no panic: see $(grep -liE 'panic' "$SOAK_DIR"/*.log | tr '\n' ' ')"
  rc=1
else
  echo "  PASS  no panic in any log"
fi
echo
[[ $rc -eq 0 ]] && echo "soak: PASS (logs in $SOAK_DIR)" || echo "soak: FAIL (logs in $SOAK_DIR)"
exit "$rc"
