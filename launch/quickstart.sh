#!/usr/bin/env bash
# The default job: builds the embtrain binary (only it: no tests), then
# trains the recsys click model on synthetic data with 2 ranks
# (configs/quickstart.ini, about 30 s on 2 cores) and shows held-out AUC
# rising toward the hidden model's. Extra arguments override config keys,
# e.g. --train.steps=200. Each run replaces the last one's results in
# runs/quickstart (log.overwrite).
#
# Where a GPU is present the binary is build/embtrain with the CUDA backend;
# elsewhere it is the CPU-only build-cpu/embtrain (no CUDA kernels to
# compile for a GPU that is not there).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  build=build flags=() what="with the CUDA backend (a GPU is present)"
else
  build=build-cpu flags=(-DEMBTRAIN_CUDA=OFF) what="CPU-only (no GPU here)"
fi
echo "quickstart: building $build/embtrain, $what; about a minute on 2 cores the first time" >&2
start=$SECONDS
EMBTRAIN_TARGETS=embtrain scripts/build.sh "$root/$build" "${flags[@]}" >"$root/quickstart-build.log" 2>&1 || {
  cat "$root/quickstart-build.log" >&2
  exit 1
}
echo "quickstart: built in $((SECONDS - start)) s (log: quickstart-build.log); training" >&2
exec "$root/launch/mpirun.sh" -n 2 -e "$root/$build/embtrain" -- \
  train --config configs/quickstart.ini --log.overwrite=true "$@"
