#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan, in build-fuzz/) and runs
# each on its seed corpus for a bounded time, one after the other:
#   tests/fuzz/run.sh [SECONDS_PER_TARGET]   (default 60)
# FUZZ_TARGETS="npy ini" runs only those; FUZZ_BUILD=DIR builds elsewhere;
# FUZZ_JOBS=N builds with N jobs (default: nproc). Inputs the fuzzer finds
# go to BUILD/corpus/<target>/ (the seeds in tests/fuzz/corpus/<target>/
# are only read); a crash is written to BUILD/artifacts/<target>/ and ends
# the script with status 1 after the remaining targets ran. Prints, per
# target, the command, executions, coverage and time.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
seconds=${1:-60}
build=${FUZZ_BUILD:-"$root/build-fuzz"}
targets=${FUZZ_TARGETS:-"npy ini manifest tsv corpus"}

"$root/scripts/install_deps.sh" --fuzz
echo "== building fuzz targets in $build (clang, -fsanitize=fuzzer,address,undefined)"
mkdir -p "$build"
CXX=${FUZZ_CXX:-clang++} cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DEMBTRAIN_CUDA=OFF -DEMBTRAIN_TESTS=OFF -DEMBTRAIN_FUZZ=ON >"$build/configure.log" 2>&1 || {
  cat "$build/configure.log" >&2
  exit 1
}
cmake --build "$build" -j "${FUZZ_JOBS:-$(nproc)}" --target $(for t in $targets; do echo "fuzz_$t"; done)

# Every report fatal; libFuzzer checks leaks itself at the end of each run.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
for t in $targets; do
  work="$build/corpus/$t" artifacts="$build/artifacts/$t/" log="$build/fuzz_$t.log"
  mkdir -p "$work" "$artifacts"
  cmd=("$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096
       -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts" "$work"
       "$root/tests/fuzz/corpus/$t")
  echo "== fuzz_$t for ${seconds}s: ${cmd[*]}"
  start=$(date +%s)
  rc=0
  "${cmd[@]}" >"$log" 2>&1 || rc=$?
  elapsed=$(($(date +%s) - start))
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' || true)
  cov=$(grep -oE '^#[0-9]+.*cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1 |
        sed -E 's/.*(cov: [0-9]+ ft: [0-9]+).*/\1/' || true)
  echo "fuzz_$t: rc $rc, ${elapsed}s, ${execs:-?} execs, ${cov:-no coverage line}," \
       "corpus $(ls "$work" | wc -l) files, log $log"
  if ((rc != 0)); then
    failed+=("$t")
    grep -E 'ERROR|SUMMARY|runtime error|uncaught|Test unit written' "$log" | head -n 20 || true
  fi
done
if ((${#failed[@]} > 0)); then
  echo "fuzz: crashes in ${failed[*]} (inputs under $build/artifacts/)" >&2
  exit 1
fi
echo "fuzz: no crash in $targets"
