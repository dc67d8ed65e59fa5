#!/usr/bin/env bash
# What `vespa worker` costs over talking to the backend directly, side by side with nginx
# (when installed) in the same run. Prints one markdown table of medians; docs/PERFORMANCE.md
# explains every column and holds the latest one.
#
#   scripts/overhead.sh                      # every scenario, 3 reps of 5 s (about 9 min; 13 with --baseline)
#   scripts/overhead.sh --quick --only c64   # a smoke run: 1 rep of 2 s
#   scripts/overhead.sh --baseline /tmp/vespa-before   # before/after in one run
#
# Options:
#   --reps N            runs of each scenario per target, in rotating order (default 3)
#   --duration SECS     length of each run (default 5)
#   --only LIST         comma-separated scenarios or groups (default: all):
#                         c1 c16 c64     0 ms backend, 1/16/64 connections (group: fast)
#                         slow64 slow256 50 ms backend, 64/256 connections (group: slow)
#                         body16k        16 KiB request bodies, 16 connections
#                         sse1 sse16 sse64   streamed answers, 20 events (group: sse)
#                         signed16 signed64  signed worker, url and legacy form (group: signed)
#                         idle           RSS with --streams streams open at once
#   --quick             1 rep of 2 s
#   --baseline PATH     a second vespa binary, run side by side as "vespa (baseline)"
#   --streams N         streams held open by the idle scenario (default 1000)
#   --keep DIR          keep logs and raw results in DIR (default: a temp dir, removed)
#
# VESPA=PATH picks the binary under test (default target/release/vespa, built if missing);
# it also runs the echo backend (`vespa sim --echo`) and `vespa load`. Needs wrk
# (apt-get install wrk) and python3; nginx is used when installed (apt-get install nginx).
# Everything listens on 127.0.0.1 on free ports; every process started here is stopped on
# exit, Ctrl-C included. No root needed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY="$ROOT/scripts/overhead.py"
REPS=3
DURATION=5
ONLY=all
BASELINE=
STREAMS=1000
KEEP=

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
fail() { echo "overhead: $*" >&2; exit 1; }
bad() { echo "overhead: $*" >&2; exit 64; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --reps) REPS=${2:?--reps needs a number}; shift 2 ;;
    --duration) DURATION=${2:?--duration needs seconds}; shift 2 ;;
    --only) ONLY=${2:?--only needs a list}; shift 2 ;;
    --quick) REPS=1; DURATION=2; shift ;;
    --baseline) BASELINE=${2:?--baseline needs a path}; shift 2 ;;
    --streams) STREAMS=${2:?--streams needs a number}; shift 2 ;;
    --keep) KEEP=${2:?--keep needs a directory}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; bad "unknown option $1" ;;
  esac
done
[[ $REPS =~ ^[1-9][0-9]*$ ]] || bad "--reps: expected a whole number >= 1 (got $REPS)"
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || bad "--duration: expected whole seconds >= 1 (got $DURATION)"
[[ $STREAMS =~ ^[1-9][0-9]*$ ]] || bad "--streams: expected a whole number >= 1 (got $STREAMS)"

ALL="c1 c16 c64 slow64 slow256 body16k sse1 sse16 sse64 signed16 signed64 idle"
SCENARIOS=
for s in ${ONLY//,/ }; do
  case $s in
    all) SCENARIOS+=" $ALL" ;;
    fast) SCENARIOS+=" c1 c16 c64" ;;
    slow) SCENARIOS+=" slow64 slow256" ;;
    sse) SCENARIOS+=" sse1 sse16 sse64" ;;
    signed) SCENARIOS+=" signed16 signed64" ;;
    *) [[ " $ALL " == *" $s "* ]] || bad "--only: unknown scenario $s (one of: $ALL, or fast, slow, sse, signed)"
       SCENARIOS+=" $s" ;;
  esac
done
wants() { [[ " $SCENARIOS " == *" $1"* ]]; }

# ---------------------------------------------------------------- tools

command -v python3 >/dev/null || fail "python3 is not installed"
command -v wrk >/dev/null || fail "wrk is not installed (apt-get install wrk)"
NGINX=$(command -v nginx || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true)
[[ -n $NGINX ]] || echo "overhead: nginx is not installed (apt-get install nginx): measuring without it" >&2
if [[ -z ${VESPA:-} ]]; then
  VESPA=$ROOT/target/release/vespa
  [[ -x $VESPA ]] || (cd "$ROOT" && cargo build --release --locked)
fi
[[ -x $VESPA ]] || fail "VESPA=$VESPA is not an executable"
"$VESPA" sim --help | grep -q -- '--echo' \
  || fail "$VESPA has no 'vespa sim --echo' (build this repository: cargo build --release --locked)"
[[ -z $BASELINE || -x $BASELINE ]] || fail "--baseline $BASELINE is not an executable"

# Each process below holds up to two sockets per stream of the idle scenario.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if wants idle && (( $(ulimit -n) < 2 * STREAMS + 256 )); then
  fail "the open-file limit ($(ulimit -n)) is too low for --streams $STREAMS; raise it or pass a smaller --streams"
fi

if [[ -n $KEEP ]]; then
  mkdir -p "$KEEP"; TMP=$(cd "$KEEP" && pwd)
else
  TMP=$(mktemp -d /tmp/vespa-overhead.XXXXXX)
fi
RESULTS=$TMP/results.jsonl
: > "$RESULTS"

# Every process below starts in a session of its own (setsid keeps its PID), so a Ctrl-C
# reaches this script and the load generator only, and they are stopped in order.
PIDS=()
# Stops every process started here, the last started first (a worker before its
# autoscaler and backend, so its drain and last report find them), each within 10 s.
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local i pid _
  for (( i = ${#PIDS[@]} - 1; i >= 0; i-- )); do
    pid=${PIDS[i]}
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 200); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  [[ -n $KEEP ]] || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits for "listening on http://..." in file $1 (from process $2) and prints the URL.
listening() {
  local _
  for _ in $(seq 300); do
    if grep -q '^listening on ' "$1" 2>/dev/null; then
      grep -m1 '^listening on ' "$1" | sed 's/^listening on //'
      return
    fi
    kill -0 "$2" 2>/dev/null || break
    sleep 0.05
  done
  fail "no 'listening on' line from process $2 (see $1 and its log)"
}

# CPU time (utime + stime, clock ticks) of process $1 so far.
cpu_ticks() {
  local stat
  stat=$(<"/proc/$1/stat")
  stat=${stat##*) }
  # shellcheck disable=SC2086  # split on purpose: the fields of /proc/PID/stat
  set -- $stat
  echo $(( ${12} + ${13} ))
}

# ---------------------------------------------------------------- processes

echo "overhead: logs and results in $TMP" >&2
setsid "$VESPA" sim --echo --listen 127.0.0.1:0 > "$TMP/echo.out" 2> "$TMP/echo.log" &
ECHO_PID=$!; PIDS+=("$ECHO_PID")
ECHO_URL=$(listening "$TMP/echo.out" "$ECHO_PID")

# A worker as deployed: default ACCESS_LOG (on), its log on stderr into a file. The
# environment is emptied first so a REPORT_ADDR or UNSECURED of this shell cannot leak in.
# start_worker NAME BINARY LISTEN [VAR=VALUE...]: sets ${NAME}_PID and ${NAME}_URL.
start_worker() {
  local name=$1 bin=$2 listen=$3 pid url
  shift 3
  setsid env -i PATH="$PATH" HOME="${HOME:-/tmp}" BENCHMARK=none MAX_PERF=1e12 MAX_WAIT_TIME=1e9 \
    BACKEND_URL="$ECHO_URL" WORKER_HTTP_PORT=off "$@" \
    "$bin" worker --listen "$listen" > "$TMP/$name.out" 2>> "$TMP/$name.log" &
  pid=$!
  PIDS+=("$pid")
  url=$(listening "$TMP/$name.out" "$pid")
  printf -v "${name}_PID" %s "$pid"
  printf -v "${name}_URL" %s "$url"
}

start_worker VESPA "$VESPA" 127.0.0.1:0 UNSECURED=true
[[ -z $BASELINE ]] || start_worker BASE "$BASELINE" 127.0.0.1:0 UNSECURED=true

NGINX_PID=
if [[ -n $NGINX ]]; then
  mkdir -p "$TMP/nginx"
  NGINX_PORT=$(python3 "$PY" port)
  cat > "$TMP/nginx/nginx.conf" <<CONF
# The same work as the worker's: one process, HTTP/1.1 keep-alive to the backend, nothing
# buffered, the access log on.
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections $(( 2 * STREAMS + 1024 )); }
http {
  access_log $TMP/nginx/access.log;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  client_body_buffer_size 64k;
  client_max_body_size 64m;
  keepalive_requests 1000000;
  upstream backend {
    server ${ECHO_URL#http://};
    keepalive 1024;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
CONF
  setsid "$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" &
  NGINX_MASTER=$!; PIDS+=("$NGINX_MASTER")
  NGINX_URL=http://127.0.0.1:$NGINX_PORT
  python3 "$PY" wait "$NGINX_URL/health" || fail "nginx did not start (see $TMP/nginx/error.log)"
  NGINX_PID=$(python3 "$PY" child "$NGINX_MASTER")
fi

python3 "$PY" wait "$VESPA_URL/_vespa/ready"
[[ -z $BASELINE ]] || python3 "$PY" wait "$BASE_URL/_vespa/ready"

# Signed workers: each with its own `vespa autoscaler` (a url-form signature names one
# worker), on a port chosen here since the worker reports its URL.
MASTER_TOKEN=bench-$RANDOM$RANDOM
KEY=bench-key-$RANDOM$RANDOM
# start_signed NAME BINARY FORM: sets ${NAME}_PID, ${NAME}_URL and ${NAME}_AUTH (a directory
# with the signed request's query and envelope).
start_signed() {
  local name=$1 bin=$2 form=$3 port as_pid as_url
  setsid "$VESPA" autoscaler --listen 127.0.0.1:0 --endpoint "bench=$KEY" \
    --master-token "$MASTER_TOKEN" --signature-form "$form" \
    > "$TMP/$name-autoscaler.out" 2> "$TMP/$name-autoscaler.log" &
  as_pid=$!; PIDS+=("$as_pid")
  as_url=$(listening "$TMP/$name-autoscaler.out" "$as_pid")
  port=$(python3 "$PY" port)
  start_worker "$name" "$bin" "127.0.0.1:$port" REPORT_ADDR="$as_url" \
    MASTER_TOKEN="$MASTER_TOKEN" CONTAINER_ID=1 PUBLIC_IPADDR=127.0.0.1 SIGNATURE_FORM="$form"
  mkdir -p "$TMP/$name-auth"
  python3 "$PY" sign "$as_url" "$KEY" "http://127.0.0.1:$port" "$TMP/$name-auth"
  printf -v "${name}_AUTH" %s "$TMP/$name-auth"
}
if wants signed; then
  start_signed VESPA_URLFORM "$VESPA" url
  start_signed VESPA_LEGACY "$VESPA" legacy
  if [[ -n $BASELINE ]]; then
    start_signed BASE_URLFORM "$BASELINE" url
    start_signed BASE_LEGACY "$BASELINE" legacy
  fi
fi

PROXIES="vespa"
[[ -z $BASELINE ]] || PROXIES+=" base"
[[ -z $NGINX_PID ]] || PROXIES+=" nginx"
# The variables holding a target's process id and URL: ${PREFIX}_PID and ${PREFIX}_URL.
prefix_of() {
  case $1 in
    direct) echo ECHO ;;
    vespa) echo VESPA ;;
    base) echo BASE ;;
    nginx) echo NGINX ;;
    vespa-url) echo VESPA_URLFORM ;;
    vespa-legacy) echo VESPA_LEGACY ;;
    base-url) echo BASE_URLFORM ;;
    base-legacy) echo BASE_LEGACY ;;
  esac
}
pid_of() { local v; v="$(prefix_of "$1")_PID"; echo "${!v-}"; }
url_of() { local v; v="$(prefix_of "$1")_URL"; echo "${!v-}"; }
for t in $PROXIES; do python3 "$PY" record-rss "$RESULTS" rss-start "$t" "$(pid_of "$t")"; done

# ---------------------------------------------------------------- load

# wrk scripts: a small completion request, one of 16 KiB, and the signed envelope.
lua() { # lua FILE BODY
  printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [==[%s]==]\n' "$2" > "$1"
}
SMALL='{"model":"model","prompt":"hello world","max_tokens":16}'
lua "$TMP/small.lua" "$SMALL"
lua "$TMP/big.lua" "$(python3 "$PY" body 16384)"
for name in VESPA_LEGACY BASE_LEGACY; do
  auth=${name}_AUTH
  [[ -z ${!auth:-} ]] || lua "$TMP/${name,,}.lua" "$(<"${!auth}/envelope.json")"
done
# The streamed request for `vespa load` (it adds "stream": true).
cat > "$TMP/sse.toml" <<TOML
name = "echo"
[request]
path = "/v1/completions"
[request.body]
model = "model"
prompt = "hello world"
max_tokens = 16
[workload]
request = "max_tokens"
TOML

# Truncates the access logs between runs (they are opened for appending), so a full run
# does not fill the disk.
truncate_logs() {
  local f
  for f in "$TMP"/*.log "$TMP/nginx/access.log"; do
    if [[ -f $f ]]; then : > "$f"; fi
  done
}

# run_wrk SCENARIO TARGET REP CONNECTIONS LUA URL
run_wrk() {
  local pid t0 t1 threads=2
  pid=$(pid_of "$2")
  (( $4 > 1 )) || threads=1
  t0=$(cpu_ticks "$pid")
  wrk -t"$threads" -c"$4" -d"${DURATION}s" --latency -s "$5" "$6" > "$TMP/wrk.out"
  t1=$(cpu_ticks "$pid")
  python3 "$PY" wrk "$RESULTS" "$1" "$2" "$3" $((t1 - t0)) < "$TMP/wrk.out"
}

# run_sse SCENARIO TARGET REP CONNECTIONS
run_sse() {
  local pid t0 t1
  pid=$(pid_of "$2")
  t0=$(cpu_ticks "$pid")
  "$VESPA" load --url "$(url_of "$2")" --profile "$TMP/sse.toml" --stream --json \
    -c "$4" -d "$DURATION" --timeout 30 > "$TMP/load.out" || true
  t1=$(cpu_ticks "$pid")
  python3 "$PY" load "$RESULTS" "$1" "$2" "$3" $((t1 - t0)) < "$TMP/load.out"
}

# Targets of a scenario, rotated by the rep so each goes first in turn.
rotated() { # rotated REP TARGET...
  local rep=$1; shift
  local all=("$@") n=$# i
  for (( i = 0; i < n; i++ )); do echo "${all[(i + rep) % n]}"; done
}

run_scenario() {
  local s=$1 rep t c url lua targets
  case $s in
    signed*) targets="vespa vespa-url vespa-legacy"
             [[ -z $BASELINE ]] || targets+=" base base-url base-legacy" ;;
    *) targets="direct $PROXIES" ;;
  esac
  for (( rep = 0; rep < REPS; rep++ )); do
    # shellcheck disable=SC2086  # targets is a word list
    for t in $(rotated "$rep" $targets); do
      printf 'overhead: %s, rep %d/%d, %s: ' "$s" $((rep + 1)) "$REPS" "$t" >&2
      url=$(url_of "$t")/v1/completions
      lua=$TMP/small.lua
      case $s in
        c1|c16|c64) c=${s#c} ;;
        slow64|slow256) c=${s#slow}; url+="?echo_delay_ms=50" ;;
        body16k) c=16; lua=$TMP/big.lua ;;
        sse*) run_sse "$s" "$t" "$rep" "${s#sse}"; truncate_logs; continue ;;
        signed*) c=${s#signed}
          case $t in
            vespa-url) url+="?$(<"$VESPA_URLFORM_AUTH/url")" ;;
            base-url) url+="?$(<"$BASE_URLFORM_AUTH/url")" ;;
            vespa-legacy) lua=$TMP/vespa_legacy.lua ;;
            base-legacy) lua=$TMP/base_legacy.lua ;;
          esac ;;
      esac
      run_wrk "$s" "$t" "$rep" "$c" "$lua" "$url"
      truncate_logs
    done
  done
}

run_idle() {
  local t kb
  for t in $PROXIES; do
    printf 'overhead: idle, %s: ' "$t" >&2
    kb=$(python3 "$PY" idle "$(url_of "$t")" "$STREAMS" "$(pid_of "$t")")
    echo "$((kb / 1024)) MiB with $STREAMS streams open" >&2
    echo "{\"scenario\": \"idle\", \"target\": \"$t\", \"rss_kb\": $kb}" >> "$RESULTS"
  done
  truncate_logs
}

STARTED=$(date +%s)
for s in $SCENARIOS; do
  case $s in
    idle) ;;
    *) run_scenario "$s" ;;
  esac
done
# Last, so its streams do not weigh on the other scenarios.
if wants idle; then run_idle; fi
for t in $PROXIES; do python3 "$PY" record-rss "$RESULTS" rss-end "$t" "$(pid_of "$t")"; done

# ---------------------------------------------------------------- table

cat > "$TMP/meta.json" <<JSON
{"baseline": $([[ -n $BASELINE ]] && echo true || echo false),
 "nginx": $([[ -n $NGINX_PID ]] && echo true || echo false),
 "streams": $STREAMS}
JSON
echo
echo "vespa: $VESPA ($("$VESPA" --version))${BASELINE:+; baseline: $BASELINE ($("$BASELINE" --version))}"
echo "nginx: $([[ -n $NGINX ]] && "$NGINX" -v 2>&1 | sed 's/^nginx version: //' || echo 'not installed')" \
  "| wrk: $(wrk -v 2>&1 | head -1 | cut -d' ' -f2)" \
  "| $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "$REPS reps of ${DURATION} s per target, medians; run took $(( $(date +%s) - STARTED )) s; $(date -u +%Y-%m-%d)"
echo
python3 "$PY" table "$RESULTS" "$TMP/meta.json"
