#!/usr/bin/env bash
# The default job: builds embtrain and times training steps on a small
# table (200,000 x 64, SparseAdam, Zipf ids with padding).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/build.sh" "$root/build" >&2
exec "$root/build/embtrain" bench --rows 200000 --dim 64 --batch 1024 --seq 20 --steps 30 "$@"
