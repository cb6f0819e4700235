#!/usr/bin/env bash
# Builds embtrain and runs every test: unit tests, the PyTorch parity suite
# and, where a GPU is present, the CUDA tests (they skip without one unless
# EMBTRAIN_REQUIRE_GPU=1). Also builds the CPU-only configuration
# (-DEMBTRAIN_CUDA=OFF) and runs the GPU engine's tests there on an
# emulated device, so both stay green. One line per test as it finishes.
#
#   scripts/test.sh --sanitize [CTEST_REGEX]
# instead builds the CPU-only tree with AddressSanitizer and
# UndefinedBehaviorSanitizer (build-asan/, -DEMBTRAIN_SANITIZE=ON, every
# report fatal) and runs the CPU suite there, or only the tests matching
# CTEST_REGEX (e.g. '^(unit|mpi)'). Leak reports from Open MPI's own
# libraries are suppressed (scripts/sanitize/lsan.supp says why).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if [[ "${1:-}" == --sanitize ]]; then
  echo "== CPU-only configuration with ASan + UBSan (build-asan)"
  scripts/build.sh "$root/build-asan" -DEMBTRAIN_CUDA=OFF -DEMBTRAIN_SANITIZE=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo
  # fast_unwind_on_malloc=0: Open MPI's libraries lack frame pointers, so
  # the fast unwinder loses their frames and the suppressions could not
  # match them; the slow one finds them.
  export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1:fast_unwind_on_malloc=0:detect_stack_use_after_return=1
  export LSAN_OPTIONS=suppressions=$root/scripts/sanitize/lsan.supp:print_suppressions=0
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  regex=()
  [[ -n "${2:-}" ]] && regex=(-R "$2")
  ctest --test-dir "$root/build-asan" --output-on-failure -j "$(nproc)" "${regex[@]}" \
    >"$root/build-asan/ctest.log" 2>&1 || {
    cat "$root/build-asan/ctest.log"
    exit 1
  }
  # A report that did not fail its test (a child process whose status was
  # not checked) still fails the run.
  if grep -E "ERROR: (Address|Leak)Sanitizer|runtime error:" "$root/build-asan/ctest.log"; then
    echo "sanitizer reports in build-asan/ctest.log" >&2
    exit 1
  fi
  tail -n 3 "$root/build-asan/ctest.log"
  exit 0
fi

# ctest with one progress line per test on the terminal and everything in
# LOG; on a failure, the failing tests' output.
run_ctest() {  # build_dir log [ctest args...]
  local dir=$1 log=$2
  shift 2
  if ! ctest --test-dir "$dir" --output-on-failure -j "$(nproc)" "$@" 2>&1 | tee "$log" |
      grep --line-buffered -E "Test +#[0-9]+: "; then
    :
  fi
  if ! grep -q "100% tests passed" "$log"; then
    sed -n '/The following tests FAILED/,$p' "$log"
    echo "test.sh: failures; the whole output is in $log" >&2
    exit 1
  fi
  tail -n 3 "$log"
}

# Each test runs once: the CPU-only tree runs what only it has (the GPU
# engine on an emulated device), the default tree everything else.
start=$SECONDS
echo "== CPU-only configuration (-DEMBTRAIN_CUDA=OFF): build, then the emulated-GPU tests"
scripts/build.sh "$root/build-cpu" -DEMBTRAIN_CUDA=OFF
run_ctest "$root/build-cpu" "$root/build-cpu/ctest.log" -R 'emulated'

echo "== Default configuration (CUDA backend when nvcc is found): build, then every test"
scripts/build.sh "$root/build"
run_ctest "$root/build" "$root/build/ctest.log"
echo "== all tests passed in $(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s"
