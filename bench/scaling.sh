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
#
# E is the weak-scaling efficiency of a run of P ranks against the local
# run (one process, T(1)), charging the exchange only what a plain
# all-to-all of the same bytes costs (raw, measured by bench in the same
# run):  E(P) = (P * T(1) + raw(P)) / T(P).  1 means the step pays for
# nothing but the wire; the exchange's columns say where the rest went
# (skew: waiting for the slowest rank; transfer against raw).
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
printf '%-16s %9s %12s %8s %10s %9s %7s %6s  %s\n' "run" "step_ms" "lookups/s" "unique%" \
  "MB_sent" "B/lookup" "raw_ms" "E" \
  "stages ms (bucket_by_owner exchange_ids gather_owned exchange_rows expand reduce_requested exchange_grads combine_at_owner update); exchanges skew/transfer/raw ms"
t1=""
for spec in "1 local" "1 sharded" "2 sharded" "4 sharded"; do
  read -r np engine <<<"$spec"
  line=$(run "$np" "$engine")
  [[ "$engine" == local ]] && t1=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1])["step_ms"])' "$line")
  /usr/bin/python3 - "$np" "$engine" "$line" "$t1" <<'PY'
import json, sys
np_, engine, line, t1 = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
r = json.loads(line)
raw = r.get("raw_alltoall_ms", 0.0)
eff = "-" if engine == "local" else "%.2f" % ((int(np_) * float(t1) + raw) / r["step_ms"])
ex = r.get("exchanges_ms_max_over_ranks", {})
exchanges = " ".join("%s %.2f/%.2f/%.2f" % (k.replace("exchange_", ""), ex[k]["skew_ms"],
                                               ex[k]["transfer_ms"], ex[k]["raw_ms"])
                     for k in ("exchange_ids", "exchange_rows", "exchange_grads")
                     if k in ex) if raw > 0 else ""
p = r["phase_ms_max_over_ranks"]
stages = ("bucket_by_owner", "exchange_ids", "gather_owned", "exchange_rows", "expand",
          "reduce_requested", "exchange_grads", "combine_at_owner", "update")
phases = " ".join("%.2f" % p[k] for k in stages)
print("%-16s %9.2f %12.4g %7.1f%% %10.2f %9.1f %7.2f %6s  %s%s" % (
    "P=%s %s" % (np_, engine), r["step_ms"], r["lookups_per_s"], 100 * r["unique_ratio"],
    r["bytes_sent_per_step"]["total"] / 1e6, r["bytes_sent_per_lookup"], raw, eff, phases,
    "; " + exchanges if exchanges else ""))
print("# json " + line)
PY
done
