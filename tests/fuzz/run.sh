#!/usr/bin/env bash
# tests/fuzz/run.sh - builds the libFuzzer harnesses (into build-fuzz, with
# clang, ASan and UBSan) when needed and runs each over its seed corpus,
# tests/fuzz/corpus/NAME, for SECONDS seconds (default 8). Fails on any
# crash, leak, timeout or failed check, naming the harness and the saved
# input; prints each harness's executions and coverage.
#   bash tests/fuzz/run.sh [SECONDS_PER_HARNESS [HARNESS...]]
#   bash tests/fuzz/run.sh --ci [HARNESS...]
# --ci (what .ci/run does): a fixed seed and a fixed number of inputs per
# harness (about 8 s each here) instead of a time limit, so CI's result is
# the same on every run of the same code: a crash it meets is
# reproducible, never luck.
# Environment: FUZZ_BUILD (default build-fuzz), FUZZ_WORK (where new corpus
# entries and crashing inputs go; default a fresh temporary folder).
set -euo pipefail
cd "$(dirname "$0")/../.."

CI_MODE=0
if [ "${1:-}" = "--ci" ]; then CI_MODE=1; shift; SECONDS_PER=ci; else
  SECONDS_PER=${1:-8}
  shift || true
fi
# --ci: inputs per harness, about 8 s each on a 2-core AMD EPYC
declare -A CI_RUNS=([config]=20000 [csv]=5000 [amat]=400 [idx]=400 [checkpoint]=20000
                    [sweep]=10000 [json]=50000 [metrics]=20000 [train]=300)
HARNESSES=("$@")
[ ${#HARNESSES[@]} -eq 0 ] && HARNESSES=(config csv amat idx checkpoint sweep json metrics train)
BUILD=${FUZZ_BUILD:-build-fuzz}

if [ ! -f "$BUILD/build.ninja" ]; then
  CC=clang meson setup "$BUILD" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
    -Dbuildtype=debugoptimized >/dev/null
fi
ninja -C "$BUILD" fuzz >/dev/null

WORK=${FUZZ_WORK:-$(mktemp -d)}
mkdir -p "$WORK"
export UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1
export OMP_NUM_THREADS=1
printf '%-11s %9s %7s %7s %s\n' harness execs cov ft result
failed=()
for h in "${HARNESSES[@]}"; do
  exe="$BUILD/tests/fuzz/fuzz_$h"
  [ -x "$exe" ] || { echo "run.sh: no harness $exe" >&2; exit 2; }
  mkdir -p "$WORK/$h/corpus"
  log="$WORK/$h/log"
  # new inputs go to the work corpus; the seed corpus is only read
  rc=0
  if [ "$CI_MODE" -eq 1 ]; then limit=(-seed=1 -runs="${CI_RUNS[$h]:-1000}")
  else limit=(-max_total_time="$SECONDS_PER"); fi
  "$exe" "${limit[@]}" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$WORK/$h/" "$WORK/$h/corpus" "tests/fuzz/corpus/$h" >"$log" 2>&1 || rc=$?
  execs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log")
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2 || true)
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | cut -d' ' -f2 || true)
  result=ok
  if [ "$rc" -ne 0 ]; then
    result="FAILED (exit $rc): $(ls "$WORK/$h"/crash-* "$WORK/$h"/leak-* "$WORK/$h"/timeout-* \
      "$WORK/$h"/oom-* 2>/dev/null | head -1 || true)"
    failed+=("$h")
  fi
  printf '%-11s %9s %7s %7s %s\n' "$h" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$result"
done
if [ ${#failed[@]} -gt 0 ]; then
  for h in "${failed[@]}"; do
    echo "== $h: the end of $WORK/$h/log" >&2
    grep -vE '^#[0-9]+' "$WORK/$h/log" | tail -40 >&2
  done
  echo "run.sh: ${#failed[@]} harness(es) failed: ${failed[*]}" >&2
  exit 1
fi
if [ "$CI_MODE" -eq 1 ]; then
  echo "run.sh: ${#HARNESSES[@]} harnesses, fixed seed and input counts: no crash, leak or timeout"
else
  echo "run.sh: ${#HARNESSES[@]} harnesses, ${SECONDS_PER} s each: no crash, leak or timeout"
fi
