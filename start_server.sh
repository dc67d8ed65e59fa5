#!/usr/bin/env bash
# Starts Vespa's worker on a Vast.ai instance, as PyWorker's start_server.sh does for PyWorker:
# workspace, TLS certificate signed by the console, the `vespa` binary, then `vespa worker`.
# Any failure (a missing variable, the certificate, the binary, the worker exiting non-zero)
# is posted to every REPORT_ADDR as a worker_status report with error_msg set, so the
# autoscaler marks the instance Error instead of waiting for it; then the script exits
# non-zero. The README's "Running on Vast.ai" lists the variables.
#
# Sourcing this file defines the functions without running anything (tests use that).

set -Eeuo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
stage="starting"
reported=0

log() { printf 'start_server.sh: %s\n' "$*" >&2; }

# ---------------------------------------------------------------- error reports

# A JSON string literal for $1: with python3, else jq, else escaped in bash.
# VESPA_JSON_TOOL=python3|jq|sh picks one (tests compare them).
json_str() {
  local tool=${VESPA_JSON_TOOL:-}
  if [[ -z $tool ]]; then
    tool="sh"
    command -v jq >/dev/null 2>&1 && tool=jq
    command -v python3 >/dev/null 2>&1 && tool=python3
  fi
  case $tool in
  python3) python3 -c 'import json, sys; sys.stdout.write(json.dumps(sys.argv[1]))' "$1" ;;
  jq) jq -jn --arg s "$1" '$s | tojson' ;;
  *) json_str_sh "$1" ;;
  esac
}

# Backslash, quote and every control character escaped; other bytes pass as they are.
json_str_sh() {
  local s=$1 out="" c i
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  if [[ $s == *[$'\x01'-$'\x1f'$'\x7f']* ]]; then
    local LC_ALL=C
    for ((i = 0; i < ${#s}; i++)); do
      c=${s:i:1}
      if [[ $c == [$'\x01'-$'\x1f'$'\x7f'] ]]; then
        printf -v c '\\u%04x' "'$c"
      fi
      out+=$c
    done
    s=$out
  fi
  printf '"%s"' "$s"
}

# USE_SSL read as the worker reads it (Python's strtobool).
use_ssl() {
  case ${USE_SSL:-true} in
  [Tt][Rr][Uu][Ee] | [Tt] | [Yy][Ee][Ss] | [Yy] | [Oo][Nn] | 1) return 0 ;;
  *) return 1 ;;
  esac
}

# The URL the worker reports: http(s)://PUBLIC_IPADDR:VAST_TCP_PORT_<WORKER_PORT>.
worker_url() {
  local port_var="VAST_TCP_PORT_${WORKER_PORT:-3000}" scheme=http
  use_ssl && scheme=https
  if [[ -n ${PUBLIC_IPADDR:-} ]]; then
    printf '%s://%s:%s' "$scheme" "$PUBLIC_IPADDR" "${!port_var:-${WORKER_PORT:-3000}}"
  fi
}

# The version of the code being started: the binary's when known, else Cargo.toml's.
vespa_version() {
  local v=""
  if [[ -n ${vespa_bin:-} ]]; then
    v=$("$vespa_bin" --version 2>/dev/null | awk '{print $2}') || v=""
  fi
  if [[ -z $v && -f $REPO_DIR/Cargo.toml ]]; then
    v=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO_DIR/Cargo.toml" | head -n 1)
  fi
  printf '%s' "${v:-0}"
}

# The worker_status body of PROTOCOL.md §5.1 with every counter zero and error_msg=$1.
error_report() {
  local id=${CONTAINER_ID:-0}
  [[ $id =~ ^[0-9]+$ ]] || id=0
  printf '{"id": %s, "mtoken": %s, "version": %s, "loadtime": 0, "new_load": 0, "cur_load": 0, ' \
    "$id" "$(json_str "${MASTER_TOKEN:-}")" "$(json_str "$(vespa_version)")"
  printf '"rej_load": 0, "max_perf": 0, "cur_perf": 0, "error_msg": %s, "num_requests_working": 0, ' \
    "$(json_str "$1")"
  printf '"num_requests_recieved": 0, "additional_disk_usage": 0, "disk_usage": 0, '
  printf '"working_request_idxs": [], "cur_capacity": 0, "max_capacity": 0, "url": %s}' \
    "$(json_str "$(worker_url)")"
}

# Posts the error report to every REPORT_ADDR; a failed post is logged and ignored.
report_error() {
  local body addr addrs
  body=$(error_report "$1") || body=""
  IFS=, read -r -a addrs <<<"${REPORT_ADDR:-https://run.vast.ai}"
  for addr in "${addrs[@]}"; do
    addr=${addr//[[:space:]]/}
    [[ -n $addr ]] || continue
    curl -sS -o /dev/null --max-time 10 -X POST -H 'Content-Type: application/json' \
      --data-binary "$body" "${addr%/}/worker_status/" ||
      log "could not report the error to $addr"
  done
}

# Logs and reports $1, then exits ${2:-1}.
fail() {
  set +e
  trap - ERR
  log "error: $1"
  if ((!reported)); then
    reported=1
    report_error "$1"
  fi
  exit "${2:-1}"
}

on_err() {
  local status=$1 line=$2 cmd=$3
  # In a subshell, only leave it: the shell that started it sees the failure.
  [[ $BASHPID == "$$" ]] || exit "$status"
  fail "start_server.sh failed while $stage (line $line: $cmd, exit $status)" "$status"
}

on_exit() {
  local status=$?
  if ((status != 0 && !reported)); then
    fail "start_server.sh failed while $stage (exit $status)" "$status"
  fi
}

# ---------------------------------------------------------------- steps

workspace() {
  stage="preparing the workspace"
  mkdir -p "$WORKSPACE_DIR" || fail "cannot create WORKSPACE_DIR=$WORKSPACE_DIR"
  cd "$WORKSPACE_DIR"
  # One file per boot sequence, kept under VESPA_LOG_MAX_BYTES by moving it to .old at start.
  if [[ -f $VESPA_LOG ]] && (($(wc -c <"$VESPA_LOG") > VESPA_LOG_MAX_BYTES)); then
    mv -f "$VESPA_LOG" "$VESPA_LOG.old"
  fi
  # tee ignores INT/TERM so the drain's last lines are still written after a Ctrl-C.
  exec > >(
    trap '' INT TERM
    exec tee -a "$VESPA_LOG"
  ) 2>&1
  log "workspace $WORKSPACE_DIR, log $VESPA_LOG"
}

check_env() {
  stage="checking the environment"
  [[ -n ${BACKEND_URL:-} ]] || fail "BACKEND_URL is not set"
  [[ $WORKER_PORT =~ ^[0-9]+$ ]] || fail "WORKER_PORT=$WORKER_PORT is not a port number"
  if use_ssl && [[ -z ${SIGN_CERT_URL:-} && -z ${CONTAINER_ID:-} ]]; then
    fail "CONTAINER_ID is not set (needed to sign the TLS certificate; or set SIGN_CERT_URL)"
  fi
}

# Key and CSR as PyWorker makes them (pyworker-behaviour.md §10), the certificate from the
# console; both files are replaced only once the certificate checks out.
certificate() {
  stage="making the TLS certificate"
  local url=${SIGN_CERT_URL:-https://console.vast.ai/api/v0/sign_cert/?instance_id=${CONTAINER_ID:-}}
  local dir="$WORKSPACE_DIR/tls" code out
  mkdir -p "$dir" "$(dirname "$TLS_CERT")" "$(dirname "$TLS_KEY")"
  cat >"$dir/openssl-san.cnf" <<'EOF'
[req]
default_bits = 2048
distinguished_name = req_distinguished_name
req_extensions = v3_req

[req_distinguished_name]
C = US
ST = CA
O = Vast.ai Inc.
CN = vast.ai

[v3_req]
basicConstraints = CA:FALSE
keyUsage = nonRepudiation, digitalSignature, keyEncipherment
subjectAltName = @alt_names

[alt_names]
IP.1 = 0.0.0.0
EOF
  if ! out=$(umask 077 && openssl req -newkey rsa:2048 -nodes -sha256 -subj "/C=US/ST=CA/CN=pyworker.vast.ai/" \
    -keyout "$dir/instance.key" -out "$dir/instance.csr" -config "$dir/openssl-san.cnf" 2>&1); then
    fail "openssl could not make the key and CSR: $(tail -n 1 <<<"$out")"
  fi
  log "signing the certificate at $url"
  if ! code=$(curl -sS --max-time 60 --retry 2 --retry-delay 1 -o "$dir/instance.crt" -w '%{http_code}' -X POST \
    -H 'Content-Type: application/octet-stream' --data-binary "@$dir/instance.csr" "$url" 2>&1); then
    fail "signing the TLS certificate at $url failed: $code"
  fi
  if [[ $code != 2?? ]]; then
    fail "signing the TLS certificate at $url failed: HTTP $code: $(head -c 200 "$dir/instance.crt" | tr -s '[:space:]' ' ')"
  fi
  if ! openssl x509 -in "$dir/instance.crt" -noout 2>/dev/null; then
    fail "signing the TLS certificate at $url failed: the answer is not a PEM certificate: $(head -c 200 "$dir/instance.crt" | tr -s '[:space:]' ' ')"
  fi
  if [[ $(openssl x509 -in "$dir/instance.crt" -noout -pubkey) != "$(openssl pkey -in "$dir/instance.key" -pubout)" ]]; then
    fail "signing the TLS certificate at $url failed: the certificate does not match the key"
  fi
  (umask 077 && cp "$dir/instance.key" "$TLS_KEY.tmp") && mv -f "$TLS_KEY.tmp" "$TLS_KEY"
  cp "$dir/instance.crt" "$TLS_CERT.tmp" && mv -f "$TLS_CERT.tmp" "$TLS_CERT"
  log "certificate $TLS_CERT, key $TLS_KEY"
}

# Sets vespa_bin: VESPA_BIN, else a download of VESPA_BIN_URL, else a build of this repository.
binary() {
  if [[ -n ${VESPA_BIN:-} ]]; then
    stage="checking VESPA_BIN"
    [[ -f $VESPA_BIN && -x $VESPA_BIN ]] || fail "VESPA_BIN=$VESPA_BIN is not an executable file"
    vespa_bin=$VESPA_BIN
  elif [[ -n ${VESPA_BIN_URL:-} ]]; then
    download
  else
    build
  fi
  stage="checking the vespa binary"
  local out
  out=$("$vespa_bin" worker --help 2>&1 >/dev/null) ||
    fail "$vespa_bin does not run: $(tail -n 1 <<<"$out")"
}

download() {
  stage="downloading VESPA_BIN_URL"
  local name want got
  want=${VESPA_BIN_SHA256:-}
  want=${want,,}
  # Cached per checksum, or per URL without one.
  name=${want:-$(printf '%s' "$VESPA_BIN_URL" | sha256sum | cut -c1-16)}
  vespa_bin="$WORKSPACE_DIR/bin/vespa-$name"
  if [[ -x $vespa_bin ]]; then
    log "using $vespa_bin (downloaded before from $VESPA_BIN_URL)"
    return
  fi
  mkdir -p "$WORKSPACE_DIR/bin"
  log "downloading $VESPA_BIN_URL"
  local out
  out=$(curl -fsSL --retry 3 --connect-timeout 20 --max-time 900 -o "$vespa_bin.part" "$VESPA_BIN_URL" 2>&1) ||
    fail "downloading VESPA_BIN_URL=$VESPA_BIN_URL failed: $out"
  if [[ -n $want ]]; then
    got=$(sha256sum "$vespa_bin.part" | cut -d' ' -f1)
    if [[ $got != "$want" ]]; then
      rm -f "$vespa_bin.part"
      fail "VESPA_BIN_URL=$VESPA_BIN_URL has sha256 $got, not VESPA_BIN_SHA256=$want"
    fi
  fi
  chmod +x "$vespa_bin.part"
  mv -f "$vespa_bin.part" "$vespa_bin"
}

build() {
  stage="building vespa"
  if ! command -v cargo >/dev/null 2>&1 && [[ -f $HOME/.cargo/env ]]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    stage="installing rustup"
    log "no cargo: installing Rust with rustup"
    curl --proto '=https' --tlsv1.2 -sSf --max-time 300 https://sh.rustup.rs |
      sh -s -- -y --profile minimal || fail "installing Rust with rustup failed"
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
  fi
  stage="building vespa"
  log "building vespa from $REPO_DIR (slow; set VESPA_BIN_URL to a published binary instead)"
  CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$WORKSPACE_DIR/target} \
    cargo install --locked --path "$REPO_DIR" --root "$WORKSPACE_DIR" ||
    fail "building vespa (cargo install --locked --path $REPO_DIR) failed"
  vespa_bin="$WORKSPACE_DIR/bin/vespa"
}

# Runs the worker in the background so TERM/INT reach it (it drains) and its exit code is
# seen here. Its output goes through a FIFO to a reader that passes each line on at once
# and keeps the last one for the error report.
run_worker() {
  stage="running the worker"
  export REPORT_ADDR USE_SSL WORKER_PORT TLS_CERT TLS_KEY
  local fifo="$WORKSPACE_DIR/.worker-output" last="$WORKSPACE_DIR/.worker-last-line"
  rm -f "$fifo" "$last"
  mkfifo "$fifo"
  (
    trap '' INT TERM
    line="" prev=""
    while IFS= read -r line || [[ -n $line ]]; do
      printf '%s\n' "$line"
      prev=$line
    done
    printf '%s' "$prev" >"$last"
  ) <"$fifo" &
  local reader_pid=$!
  log "starting $vespa_bin worker on port $WORKER_PORT"
  "$vespa_bin" worker >"$fifo" 2>&1 &
  local worker_pid=$! status signalled
  trap 'signalled=1; kill -TERM "$worker_pid" 2>/dev/null || true' TERM
  trap 'signalled=1; kill -INT "$worker_pid" 2>/dev/null || true' INT
  while :; do
    signalled=0
    wait "$worker_pid" && status=0 || status=$?
    # A trapped signal interrupts `wait`; wait again for the worker's own exit status.
    ((signalled)) || break
  done
  trap - TERM INT
  wait "$reader_pid" || true
  rm -f "$fifo"
  if ((status != 0)); then
    fail "vespa worker exited with code $status: $(cut -c1-300 "$last" 2>/dev/null)" "$status"
  fi
  log "vespa worker exited"
}

main() {
  WORKSPACE_DIR=${WORKSPACE_DIR:-/workspace}
  REPORT_ADDR=${REPORT_ADDR:-https://run.vast.ai}
  USE_SSL=${USE_SSL:-true}
  WORKER_PORT=${WORKER_PORT:-3000}
  TLS_CERT=${TLS_CERT:-/etc/instance.crt}
  TLS_KEY=${TLS_KEY:-/etc/instance.key}
  VESPA_LOG=${VESPA_LOG:-$WORKSPACE_DIR/vespa.log}
  VESPA_LOG_MAX_BYTES=${VESPA_LOG_MAX_BYTES:-52428800}
  trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR
  trap on_exit EXIT

  workspace
  check_env
  if use_ssl; then
    certificate
  fi
  binary
  run_worker
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
