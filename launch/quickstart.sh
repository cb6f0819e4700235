#!/usr/bin/env bash
# The default job: builds embtrain, then trains the recsys click model on
# synthetic data with 2 ranks (configs/quickstart.ini, about a minute on 2
# cores). Extra arguments override config keys, e.g. --train.steps=200.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/build.sh" "$root/build" >&2
cd "$root"
# Each quickstart replaces the last one's results (log.overwrite).
exec "$root/launch/mpirun.sh" -n 2 -- train --config configs/quickstart.ini --log.overwrite=true "$@"
