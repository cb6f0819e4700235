#!/usr/bin/env bash
# Runs one bench workload (default bench-A) with P = 1, 2 and 4 ranks and
# prints one line per run: step time, lookups/s, the exchange's bytes, and
# the time per stage of the step (max over ranks). P = 1 runs twice: the local engine
# (no exchange at all) and the sharded engine (the exchange machinery with
# one rank), so the table shows what the exchange itself costs.
#
#   bench/scaling.sh [BUILD_DIR] [extra bench options...]
#
# Threads per rank = cores / ranks (at least 1); ranks beyond the cores are
# oversubscribed, which on a small machine shows the exchange's cost, not
# speed-up.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-"$root/build"}
shift || true
embtrain="$build/embtrain"
[[ -x "$embtrain" ]] || { echo "scaling.sh: no binary at $embtrain (build first)" >&2; exit 1; }
cores=$(nproc)
mpirun=(mpirun --oversubscribe --bind-to none)
[[ $(id -u) -eq 0 ]] && mpirun+=(--allow-run-as-root)

extra=("$@")

run() {  # ranks engine
  local np=$1 engine=$2 threads=$((cores / $1))
  ((threads >= 1)) || threads=1
  "${mpirun[@]}" -np "$np" -x OMP_NUM_THREADS="$threads" "$embtrain" bench --json \
    --engine "$engine" --threads "$threads" "${extra[@]}" | tail -n 1
}

echo "# $(date -u +%F) host $(hostname), $cores cores; $embtrain bench ${*:-(bench-A defaults)}"
printf '%-16s %9s %12s %8s %10s %9s  %s\n' "run" "step_ms" "lookups/s" "unique%" "MB_sent" "B/lookup" \
  "stages ms (bucket_by_owner exchange_ids gather_owned exchange_rows expand reduce_requested exchange_grads combine_at_owner update)"
for spec in "1 local" "1 sharded" "2 sharded" "4 sharded"; do
  read -r np engine <<<"$spec"
  line=$(run "$np" "$engine")
  /usr/bin/python3 - "$np" "$engine" "$line" <<'PY'
import json, sys
np_, engine, line = sys.argv[1], sys.argv[2], sys.argv[3]
r = json.loads(line)
p = r["phase_ms_max_over_ranks"]
stages = ("bucket_by_owner", "exchange_ids", "gather_owned", "exchange_rows", "expand",
          "reduce_requested", "exchange_grads", "combine_at_owner", "update")
phases = " ".join("%.2f" % p[k] for k in stages)
print("%-16s %9.2f %12.4g %7.1f%% %10.2f %9.1f  %s" % (
    "P=%s %s" % (np_, engine), r["step_ms"], r["lookups_per_s"], 100 * r["unique_ratio"],
    r["bytes_sent_per_step"]["total"] / 1e6, r["bytes_sent_per_lookup"], phases))
print("# json " + line)
PY
done
