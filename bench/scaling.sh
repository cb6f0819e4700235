#!/usr/bin/env bash
# Runs one bench workload (default bench-A) with P = 1, 2 and 4 ranks and
# prints one line per configuration: step time, lookups/s, the exchange's
# bytes, the weak-scaling efficiency E and the time per stage of the step
# (max over ranks). P = 1 runs twice: the local engine (no exchange at all)
# and the sharded engine with one rank.
#
#   [ROUNDS=3] bench/scaling.sh [BUILD_DIR] [extra bench options...]
#
# Each round runs every configuration once, in turn, so that all of them see
# the same machine; the table gives the median over rounds of each number
# (a 2-core VM's steps vary by 10-20% from one run to the next).
#
# Threads per rank = cores / ranks (at least 1); ranks beyond the cores are
# oversubscribed, which on a small machine shows the exchange's cost, not
# speed-up.
#
# E is the weak-scaling efficiency of a run of P ranks against the local
# run (one process, T(1)), charging the exchange only what a plain
# all-to-all of the same bytes costs (raw, measured by bench in the same
# run):  E(P) = (P * T(1) + raw(P)) / T(P) (bench/scaling_common.py).  1
# means the step pays for nothing but the wire; the exchanges' columns say
# where the rest went (skew: waiting for the slowest rank; transfer,
# against raw).  bench/cluster_scaling.sh does the same over emulated hosts.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-"$root/build"}
shift || true
embtrain="$build/embtrain"
[[ -x "$embtrain" ]] || { echo "scaling.sh: no binary at $embtrain (build first)" >&2; exit 1; }
cores=$(nproc)
rounds=${ROUNDS:-3}
mpirun=(mpirun --oversubscribe --bind-to none)
[[ $(id -u) -eq 0 ]] && mpirun+=(--allow-run-as-root)

extra=("$@")

run() {  # ranks engine
  local np=$1 engine=$2 threads=$((cores / $1))
  ((threads >= 1)) || threads=1
  "${mpirun[@]}" -np "$np" -x OMP_NUM_THREADS="$threads" "$embtrain" bench --json \
    --engine "$engine" --threads "$threads" "${extra[@]}" | tail -n 1
}

lines=$(mktemp)
trap 'rm -f "$lines"' EXIT
echo "# $(date -u +%F) host $(hostname), $cores cores; $embtrain bench ${*:-(bench-A defaults)}; $rounds rounds"
for ((round = 1; round <= rounds; ++round)); do
  for spec in "1 local" "1 sharded" "2 sharded" "4 sharded"; do
    read -r np engine <<<"$spec"
    echo "$np $engine $(run "$np" "$engine")" >>"$lines"
  done
done

# Any Python 3 will do (the standard library only): Debian's where it is.
python=/usr/bin/python3
[[ -x $python ]] || python=python3
"$python" - "$lines" "$root/bench" <<'PY'
import json, statistics, sys
sys.path.insert(0, sys.argv[2])
from scaling_common import EXCHANGES, STAGES, efficiency  # E(P): bench/scaling_common.py
runs = {}
for text in open(sys.argv[1]):
    np_, engine, line = text.split(" ", 2)
    runs.setdefault((int(np_), engine), []).append(json.loads(line))

def med(rs, get):
    return statistics.median(get(r) for r in rs)

t1 = med(runs[(1, "local")], lambda r: r["step_ms"])
print("%-12s %8s %11s %7s %8s %8s %7s %5s  %s" % (
    "run", "step_ms", "lookups/s", "unique%", "MB_sent", "B/lookup", "raw_ms", "E",
    "stages ms (" + " ".join(STAGES) + "); exchanges skew/transfer/raw ms"))
for (np_, engine), rs in sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][1] != "local")):
    step = med(rs, lambda r: r["step_ms"])
    raw = med(rs, lambda r: r.get("raw_alltoall_ms", 0.0))
    eff = "-" if engine == "local" else "%.2f" % efficiency(np_, t1, raw, step)
    phases = " ".join("%.2f" % med(rs, lambda r: r["phase_ms_max_over_ranks"][k]) for k in STAGES)
    ex = ""
    if raw > 0:
        ex = "; " + " ".join(
            "%s %.2f/%.2f/%.2f" % (k.replace("exchange_", ""),
                                   med(rs, lambda r: r["exchanges_ms_max_over_ranks"][k]["skew_ms"]),
                                   med(rs, lambda r: r["exchanges_ms_max_over_ranks"][k]["transfer_ms"]),
                                   med(rs, lambda r: r["exchanges_ms_max_over_ranks"][k]["raw_ms"]))
            for k in EXCHANGES)
    r0 = rs[0]
    print("%-12s %8.2f %11.4g %6.1f%% %8.2f %8.1f %7.2f %5s  %s%s" % (
        "P=%d %s" % (np_, engine), step, r0["lookups_per_step"] / (step * 1e-3),
        100 * r0["unique_ratio"], r0["bytes_sent_per_step"]["total"] / 1e6,
        r0["bytes_sent_per_lookup"], raw, eff, phases, ex))
print("# step_ms of each round: " + "; ".join(
    "P=%d %s %s" % (np_, engine, " ".join("%.1f" % r["step_ms"] for r in rs))
    for (np_, engine), rs in sorted(runs.items())))
PY
