#!/usr/bin/env bash
# THE test command of riskflow (CI runs it through .ci/run):
#   1. tools/deps.sh                        install what is missing (apt, Kafka jars, .venv)
#   2. build/       -DRF_WERROR=ON          the daemon and all tests, warnings are errors
#   3. build-asan/  -DRF_SANITIZE=ON -DRF_WERROR=ON   ASan + UBSan
#   4. tools/services.sh start              real Kafka 3.9.1 (KRaft) + real redis-server +
#                                           a 3-master Redis Cluster; stopped again on exit
#   5. ctest in build/, all labels          unit, component, integration
#   6. ctest in build-asan/, all labels: the daemon itself runs under ASan+UBSan+LSan in the
#      integration tests, which require its exit code 0 (a leak or UB report fails them)
# Exits non-zero if any step or any test failed, or if a ctest run found no tests.
# The last line is the summary: "riskflow: N passed, N failed" when all is well,
# "riskflow: FAILED ..." otherwise.
# Env: RF_CTEST_JOBS (default 1); RF_TEST_BUILD_DIR, RF_TEST_ASAN_BUILD_DIR (default build, build-asan);
# the port variables of tools/services.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

JOBS="${RF_CTEST_JOBS:-1}"
BUILD="${RF_TEST_BUILD_DIR:-build}"
BUILD_ASAN="${RF_TEST_ASAN_BUILD_DIR:-build-asan}"
step="start"
services_started=0
passed=0
failed=0
problems=()
t_all=$SECONDS

log() { printf '\n=== test.sh: %s\n' "$*"; }

on_exit() {
  local rc=$?
  if (( services_started )); then
    bash tools/services.sh stop || true
  fi
  if (( rc != 0 )) && [[ "$step" != "done" ]]; then
    echo "riskflow: FAILED in step '$step' (exit $rc); tests so far: $passed passed, $failed failed"
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

timed() {   # timed NAME CMD...: run a step, print its duration
  local t=$SECONDS
  step="$1"; shift
  log "$step"
  "$@"
  echo "test.sh: $step took $((SECONDS - t)) s"
}

# run_ctest NAME BUILD_DIR [ctest args...]: counts tests, never aborts the script.
run_ctest() {
  local name="$1" dir="$2" out rc line p f t
  shift 2
  step="$name"
  log "$name"
  out="$dir/ctest-output.log"
  local t0=$SECONDS
  set +e
  ctest --test-dir "$dir" --output-on-failure --no-tests=error -j "$JOBS" "$@" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  set -e
  echo "test.sh: $name took $((SECONDS - t0)) s (ctest exit $rc)"
  line="$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$out" | tail -n 1 || true)"
  if [[ -n "$line" ]]; then
    t="$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")"
    f="$(sed -E 's/^[0-9]+% tests passed, ([0-9]+) tests? failed.*/\1/' <<<"$line")"
    p=$((t - f))
    passed=$((passed + p))
    failed=$((failed + f))
  fi
  if (( rc != 0 )); then
    if grep -q 'No tests were found' "$out"; then
      problems+=("$name: no tests were found")
    elif [[ -z "$line" ]]; then
      problems+=("$name: ctest exited $rc without a result line")
      failed=$((failed + 1))
    else
      problems+=("$name: $line")
    fi
  fi
}

timed "deps" bash tools/deps.sh

build_tree() {   # build_tree DIR CMAKE-ARGS...
  local dir="$1"; shift
  cmake -S . -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j2
}
timed "build (warnings are errors)" build_tree "$BUILD" -DRF_WERROR=ON
timed "build-asan (ASan+UBSan, warnings are errors)" build_tree "$BUILD_ASAN" -DRF_SANITIZE=ON -DRF_WERROR=ON

step="services start"
log "$step"
t=$SECONDS
services_started=1   # stop even a half-started set
bash tools/services.sh start   # fails the run (set -e) if Kafka or Redis does not come up
echo "test.sh: services start took $((SECONDS - t)) s"
# shellcheck disable=SC1091
source .run/services.env
export RF_KAFKA_BOOTSTRAP RF_REDIS_HOST RF_REDIS_PORT RF_KAFKA_SASL_BOOTSTRAP RF_KAFKA_SASL_USER RF_KAFKA_SASL_PASSWORD RF_KAFKA_CA

run_ctest "ctest $BUILD (all labels)" "$BUILD"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
run_ctest "ctest $BUILD_ASAN (all labels)" "$BUILD_ASAN"

step="services stop"
bash tools/services.sh stop
services_started=0

step="done"
echo
echo "test.sh: total $((SECONDS - t_all)) s"
if (( ${#problems[@]} > 0 )); then
  for p in "${problems[@]}"; do echo "test.sh: FAILED: $p"; done
  echo "riskflow: FAILED; $passed passed, $failed failed"
  exit 1
fi
echo "riskflow: $passed passed, $failed failed"
