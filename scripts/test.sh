#!/usr/bin/env bash
# Builds embtrain and runs every test once: unit tests, MPI tests with 1 to
# 4 ranks, the PyTorch parity suite, workloads, the command line. One line
# per test as it finishes.
#   - Where a GPU is present (nvidia-smi lists one): the CUDA tree build/,
#     every test there, the CUDA tests on the GPU.
#   - Elsewhere: the CPU-only tree build-cpu/ (-DEMBTRAIN_CUDA=OFF), every
#     test there, the GPU engine's on an emulated device; and, when nvcc is
#     found, the CUDA code compiled in build/ (the libraries that hold it:
#     it cannot run here, and its tests would only skip).
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
# LOG; on a failure, the failing tests' output. Twice as many tests at once
# as cores: most of a test's time is spent launching short MPI jobs, which
# wait more than they compute (at -j 2 the suite kept 2 cores less than a
# third busy).
run_ctest() {  # build_dir log [ctest args...]
  local dir=$1 log=$2
  shift 2
  if ! ctest --test-dir "$dir" --output-on-failure -j "$((2 * $(nproc)))" "$@" 2>&1 | tee "$log" |
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

gpu_present() {
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'
}
nvcc_found() {
  command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]
}

start=$SECONDS
elapsed() { echo "$(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s"; }
if gpu_present; then
  echo "== a GPU is present: the CUDA tree (build/): build, then every test"
  scripts/build.sh "$root/build"
  echo "== built in $(elapsed); running the tests"
  run_ctest "$root/build" "$root/build/ctest.log"
else
  echo "== no GPU: the CPU-only tree (build-cpu/, -DEMBTRAIN_CUDA=OFF): build"
  scripts/build.sh "$root/build-cpu" -DEMBTRAIN_CUDA=OFF
  if nvcc_found; then
    echo "== built in $(elapsed); compiling the CUDA code (build/: kernels, communicators, engine)"
    EMBTRAIN_TARGETS="embtrain_kernels embtrain_comm embtrain_engine" \
      scripts/build.sh "$root/build"
  fi
  echo "== built in $(elapsed); every test, the GPU engine's on an emulated device"
  run_ctest "$root/build-cpu" "$root/build-cpu/ctest.log"
fi
echo "== all tests passed in $(elapsed)"
