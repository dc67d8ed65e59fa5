#!/usr/bin/env bash
# Runs every property test (the `proptests` modules beside the parsers and
# tests/it/properties.rs) with many generated cases: at least 10^5 in all (issue 10).
# CI runs the same tests with proptest's default of 256 cases each.
#
# Usage: scripts/fuzz.sh [CASES_PER_PROPERTY]
#   CASES_PER_PROPERTY  default: $PROPTEST_CASES, else 20000
#   FUZZ_PROFILE=release  build optimised (a second full build of every dependency);
#                         default: the dev profile CI already builds, fast enough here
#
# A failure is saved as a seed under proptest-regressions/ (tests/proptest-regressions/ for
# the integration file): commit it with the fix, and every later run replays it first.
set -euo pipefail
cd "$(dirname "$0")/.."

cases="${1:-${PROPTEST_CASES:-20000}}"
build=()
if [ "${FUZZ_PROFILE:-dev}" = release ]; then build=(--release); fi
targets=(--locked --lib --test it)
filters=(proptests:: properties::)

cargo test "${build[@]}" "${targets[@]}" --no-run
properties=$(cargo test "${build[@]}" "${targets[@]}" -q -- --list "${filters[@]}" 2>/dev/null |
  grep -c ': test$')

start=$(date +%s.%N)
PROPTEST_CASES="$cases" cargo test "${build[@]}" "${targets[@]}" -q -- "${filters[@]}"
end=$(date +%s.%N)

awk -v p="$properties" -v c="$cases" -v s="$start" -v e="$end" 'BEGIN {
  printf "fuzz: %d properties x %d cases = %d generated cases in %.1f s\n", p, c, p * c, e - s
}'
