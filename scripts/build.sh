#!/usr/bin/env bash
# Installs missing dependencies, then configures and builds embtrain.
#   scripts/build.sh [BUILD_DIR] [extra cmake arguments...]
# BUILD_DIR defaults to build/. The CUDA backend is built when nvcc is found
# (pass -DEMBTRAIN_CUDA=OFF for a CPU-only tree).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-"$root/build"}
shift || true

"$root/scripts/install_deps.sh"
mkdir -p "$build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "$@" >"$build/configure.log" 2>&1 || {
  cat "$build/configure.log" >&2
  exit 1
}
grep -E "^-- embtrain:" "$build/configure.log" || true
# EMBTRAIN_TARGETS="embtrain" builds only those targets (the quickstart).
targets=()
for t in ${EMBTRAIN_TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$build" -j "$(nproc)" "${targets[@]}"
