#!/usr/bin/env bash
# Builds embtrain and runs every test: unit tests, the PyTorch parity suite
# and, where a GPU is present, the CUDA tests (they skip without one unless
# EMBTRAIN_REQUIRE_GPU=1). Also builds the CPU-only configuration
# (-DEMBTRAIN_CUDA=OFF) and runs its unit tests, so both stay green.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

echo "== CPU-only configuration (-DEMBTRAIN_CUDA=OFF)"
scripts/build.sh "$root/build-cpu" -DEMBTRAIN_CUDA=OFF
ctest --test-dir "$root/build-cpu" --output-on-failure -j "$(nproc)" -E '^parity\.' >"$root/build-cpu/ctest.log" 2>&1 || {
  cat "$root/build-cpu/ctest.log"
  exit 1
}
tail -n 3 "$root/build-cpu/ctest.log"

echo "== Default configuration (CUDA backend when nvcc is found)"
scripts/build.sh "$root/build"
ctest --test-dir "$root/build" --output-on-failure -j "$(nproc)"
