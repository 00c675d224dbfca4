#!/usr/bin/env bash
# shellcheck disable=SC2317  # the phase_* functions are called through run_phase
# The README's test command (and CI's, through .ci/run): installs dependencies,
# then runs every phase below in turn. A failed phase does not stop the ones
# after it; the script prints one pass/FAIL line per phase at the end and exits
# non-zero if any failed. Phases, in order (docs/TESTING.md says more):
#
#   build        RelWithDebInfo build of everything into build/
#   unit         ctest -L unit in build/
#   integration  ctest -L integration in build/ (starts and stops a Ceph RGW)
#   demo         scripts/demo.sh on its default 4-layer model; checks that it printed its table
#   release      Release build (-O3) of everything into build-release/, compile only
#   asan         unit tests under ASan+UBSan, build-asan/
#   tsan         the concurrency-heavy unit tests under ThreadSanitizer, build-tsan/
#
# NACRE_SKIP_SANITIZERS=1 leaves out the asan and tsan phases.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export AWS_EC2_METADATA_DISABLED=true  # tests never look for cloud credentials

bash scripts/deps.sh  # without the packages no phase could run: a failure here ends the script

# Each phase is a function whose steps are joined with && (or return early):
# `set -e` is off inside a function called as an `if` condition, so a phase
# must not rely on it to stop at its first failed step.
summary=()
status=0
run_phase() {  # run_phase NAME FUNCTION: runs it, records "pass" or "FAIL" and the time taken
  local name=$1 fn=$2 start=$SECONDS
  echo
  echo "======== phase $name"
  if "$fn"; then
    summary+=("$(printf 'pass  %-12s %4ds' "$name" $((SECONDS - start)))")
  else
    summary+=("$(printf 'FAIL  %-12s %4ds' "$name" $((SECONDS - start)))")
    status=1
    return 1
  fi
}
skip_phase() {  # skip_phase NAME WHY: a phase that could not run counts as failed
  echo
  echo "======== phase $1: not run ($2)"
  summary+=("$(printf 'FAIL  %-12s not run: %s' "$1" "$2")")
  status=1
}

phase_build() {
  bash scripts/build.sh build
}

phase_unit() {
  # scripts/build.sh hides CMake's output, so say here when the optional AWS
  # SigV4 suite is left out (docs/TESTING.md).
  if ! (cd build && ctest -N) | grep 'SigV4\.EveryHeaderSigningCaseOfTheAwsSuite$' >/dev/null; then
    echo "unit: no AWS SigV4 test suite at $(sed -n 's/^NACRE_SIGV4_SUITE_DIR:PATH=//p' build/CMakeCache.txt)" \
      "(NACRE_SIGV4_SUITE_DIR): its cases are left out, the inline SigV4 vectors run"
  fi
  (cd build && ctest --output-on-failure -j2 -L unit)
}

# The integration tests and the demo each start a Ceph RGW: they run one after
# the other (separate phases), never at the same time.
phase_integration() {
  local rc=0
  (cd build && ctest --output-on-failure -j2 -L integration) || rc=$?
  # The rgw_stop fixture runs even when tests fail; this is belt and braces
  # before the demo starts its own server.
  scripts/s3-server stop build/rgw >/dev/null 2>&1 || true
  return "$rc"
}

# The demo end to end, through the same scripts/demo.sh as the README's main
# job, on its small default model: 4 transformer layers, 2164 MiB, about 1.5
# minutes. Not fewer: the model must pass 2^31 bytes, where mawk (Debian's
# awk) starts printing sums as 2.2692e+09 and the report once broke on that;
# one layer (916 MiB) saves only about 30 s. The demo must print its report:
# the header line and the row of the cold load through the mount.
phase_demo() {
  local log=build/demo.log
  NACRE_DEMO_LAYERS=4 bash scripts/demo.sh 2>&1 | tee "$log" || {
    echo "demo: scripts/demo.sh failed (output above and in $log)" >&2
    return 1
  }
  grep -q '^Time to weights for [0-9][0-9]* MiB ' "$log" || {
    echo "demo: the report's header line ('Time to weights for N MiB ...') is missing from $log" >&2
    return 1
  }
  grep -Eq '^cold, through the Nacre mount +[0-9]+\.[0-9]+ +[0-9]+ +[0-9]+\.[0-9]+x$' "$log" || {
    echo "demo: the row 'cold, through the Nacre mount' (seconds, MiB/s, ratio) is missing from $log" >&2
    return 1
  }
}

# -O3 raises warnings (errors, with -Werror) that the default RelWithDebInfo
# (-O2) build does not; compile only, the tests ran above.
phase_release() {
  cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release >/dev/null &&
    cmake --build build-release -j2
}

phase_asan() {
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DNACRE_SANITIZE=ON >/dev/null &&
    cmake --build build-asan -j2 &&
    (cd build-asan && ctest --output-on-failure -j2 -L unit)
}

# ThreadSanitizer on the unit tests whose code runs many threads at once:
# exactly the test executables named in tsan_tests (the nacre_add_test names),
# each built alone (with what it links, not the whole project) and run whole,
# directly rather than through ctest. halt_on_error: the first race fails
# the executable; a listed executable that cannot be built or found fails too.
tsan_tests=(cache_test file_system_test block_fetcher_test)
phase_tsan() {
  cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNACRE_TSAN=ON >/dev/null || return 1
  local t exe rc=0
  cmake --build build-tsan -j2 --target "${tsan_tests[@]}" || return 1
  for t in "${tsan_tests[@]}"; do
    exe=$(find build-tsan/src -name "$t" -type f -perm -u+x -print -quit)
    [ -n "$exe" ] || { echo "tsan: built $t but cannot find its executable" >&2; rc=1; continue; }
    echo "-- $exe under ThreadSanitizer"
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" \
      timeout -k 10 900 "$exe" || { echo "tsan: $t FAILED" >&2; rc=1; }
  done
  return "$rc"
}

# run_phase returns non-zero for a failed phase: every call sits in an if or
# an || list, so that set -e does not end the script there.
if run_phase build phase_build; then
  run_phase unit phase_unit || true
  run_phase integration phase_integration || true
  run_phase demo phase_demo || true
else
  for p in unit integration demo; do skip_phase $p "the build failed"; done
fi
run_phase release phase_release || true
if [ "${NACRE_SKIP_SANITIZERS:-0}" != 1 ]; then
  run_phase asan phase_asan || true
  run_phase tsan phase_tsan || true
else
  echo
  echo "======== NACRE_SKIP_SANITIZERS=1: the asan and tsan phases are left out"
  summary+=("skip  asan         NACRE_SKIP_SANITIZERS=1" "skip  tsan         NACRE_SKIP_SANITIZERS=1")
fi

# Belt and braces: nothing a test started may outlive the run.
scripts/s3-server stop build/rgw >/dev/null 2>&1 || true

echo
echo "======== summary"
printf '%s\n' "${summary[@]}"
if [ $status -eq 0 ]; then echo "all phases passed"; else echo "some phases FAILED"; fi
exit $status
