#!/usr/bin/env bash
# Weak and strong scaling of one bench workload (default bench-A) over
# emulated hosts (launch/emulate_hosts.sh: network namespaces on one bridge,
# TCP over tc-shaped veth links), one rank per host, at several link rates.
#
#   bench/cluster_scaling.sh [BUILD_DIR] [--hosts 1,2,4,8] [--rates 1,10,25]
#       [--steps 20] [--warmup 3] [--batch 4096] [--modes weak,strong]
#       [--rounds 1] [--out DIR] [--timeout 1200] [-- extra bench options]
#
#   --hosts   host counts (1 rank each); 1 is the local engine, one process,
#             no exchange: T(1), the baseline of E (always run: before each
#             rate and at the end, the median taken)
#   --rates   link rates in Gbit/s, each direction of each host's link
#   --batch   samples per step: per rank for weak scaling, over all ranks
#             for strong scaling (--global-batch)
#   --rounds  times every configuration runs, in turn (round 1 runs them
#             all, then round 2...), so that all see the same machine; the
#             report takes each one's run of median step time
#   --out     where everything goes (default runs/cluster-scaling)
#   --timeout seconds one run may take before it is ended as hung (an
#             error: the hosts are removed and the script stops)
#
# Needs root (the namespaces). Writes OUT/raw.jsonl (bench's JSON object of
# each run, with its mode, hosts, rate and the bytes each host's link
# carried), OUT/scaling.jsonl (one line per run: step time, lookups/s, E,
# per-phase time, algbw/busbw of each exchange, network share of the step),
# OUT/step_breakdown.png and OUT/efficiency.png, and prints a table
# (bench/cluster_report.py; definitions there). Threads per rank are
# cores / hosts (at least 1): all emulated hosts share this machine's cores,
# so hosts beyond the cores are oversubscribed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
me="cluster_scaling.sh"
die() { echo "$me: $*" >&2; exit 1; }

build="" hosts_list=1,2,4,8 rates=1,10,25 steps=20 warmup=3 batch=4096 modes=weak,strong
out="$root/runs/cluster-scaling" extra=() limit=1200 rounds=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --hosts) hosts_list=${2:?--hosts needs a value}; shift 2 ;;
    --rates) rates=${2:?--rates needs a value}; shift 2 ;;
    --steps) steps=${2:?--steps needs a value}; shift 2 ;;
    --warmup) warmup=${2:?--warmup needs a value}; shift 2 ;;
    --batch) batch=${2:?--batch needs a value}; shift 2 ;;
    --modes) modes=${2:?--modes needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    --timeout) limit=${2:?--timeout needs a value}; shift 2 ;;
    --rounds) rounds=${2:?--rounds needs a value}; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) sed -n '2,29p' "$0"; exit 0 ;;
    -*) die "unknown option $1 (see -h)" ;;
    *) [[ -z "$build" ]] || die "one build folder only (got $build and $1)"; build=$1; shift ;;
  esac
done
[[ "$hosts_list" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--hosts '$hosts_list' must be host counts like 1,2,4"
[[ "$rates" =~ ^[0-9]+(\.[0-9]+)?(,[0-9]+(\.[0-9]+)?)*$ ]] || die "--rates '$rates' must be Gbit/s like 1,10,25"
[[ "$modes" =~ ^(weak|strong)(,(weak|strong))?$ ]] || die "--modes '$modes' must be weak, strong or weak,strong"
for v in steps warmup batch limit rounds; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "--$v '${!v}' must be a non-negative integer"
done
((steps >= 1 && batch >= 1 && rounds >= 1)) || die "--steps, --batch and --rounds must be at least 1"
# The binary: BUILD_DIR/embtrain, else build/embtrain, else build-cpu/embtrain.
if [[ -z "$build" ]]; then
  build="$root/build"
  [[ -x "$build/embtrain" || ! -x "$root/build-cpu/embtrain" ]] || build="$root/build-cpu"
fi
embtrain=$(cd "$build" 2>/dev/null && pwd)/embtrain
[[ -x "$embtrain" ]] || die "no binary at $build/embtrain (run scripts/build.sh)"

IFS=, read -r -a host_counts <<<"$hosts_list"
IFS=, read -r -a rate_list <<<"$rates"
IFS=, read -r -a mode_list <<<"$modes"
max_hosts=0
for h in "${host_counts[@]}"; do ((h <= max_hosts)) || max_hosts=$h; done
cores=$(nproc)
prefix=cs$$
prefix=${prefix:0:6}
hostdir="$out/hosts"
emulate=("$root/launch/emulate_hosts.sh")
trap '"${emulate[@]}" --down --prefix "$prefix" --dir "$hostdir" >/dev/null 2>&1 || true' EXIT
mkdir -p "$out"
raw="$out/raw.jsonl"
: >"$raw"

log() { echo "$me: $*" >&2; }
link_tx() {  # total bytes the hosts' links sent so far
  # %.0f: awk's %d stops at 2^31 in some awks (mawk)
  "${emulate[@]}" --stats --prefix "$prefix" | awk '{ s += $3 } END { printf "%.0f\n", s }'
}
# One bench run; its JSON object, tagged, appended to raw.jsonl.
record() {  # mode hosts rate_gbit threads json tx_bytes
  /usr/bin/python3 -c '
import json, sys
r = json.loads(sys.argv[5])
print(json.dumps({"mode": sys.argv[1], "hosts": int(sys.argv[2]), "rate_gbit": float(sys.argv[3]),
                  "threads": int(sys.argv[4]), "link_tx_bytes": int(sys.argv[6]),
                  "steps": int(sys.argv[7]), "warmup": int(sys.argv[8]), "round": int(sys.argv[9]),
                  "bench": r}))
' "$@" "$steps" "$warmup" "$round" >>"$raw"
}

common=(bench --json --steps "$steps" --warmup "$warmup" "${extra[@]}")
echo "# $(date -u +%F) host $(hostname), $cores cores; $embtrain ${common[*]}; hosts $hosts_list, rates $rates Gbit/s, batch $batch ($modes), $rounds rounds" | tee "$out/command.txt"
start=$SECONDS

# T(1): the local engine, one process with every core, outside any
# namespace (it sends nothing), the baseline of both modes. It runs before
# each rate's runs and once more at the end of each round; the report
# takes the median
# (on a shared machine one run can be slowed by others' work).
baseline() {
  log "round $round: 1 host (local engine, $cores threads)"
  local json
  json=$(OMP_NUM_THREADS=$cores "$embtrain" "${common[@]}" --engine local --threads "$cores" --batch "$batch" | tail -n 1)
  for mode in "${mode_list[@]}"; do record "$mode" 1 0 "$cores" "$json" 0; done
}

for ((round = 1; round <= rounds; ++round)); do
  for rate in "${rate_list[@]}"; do
    baseline
    ((max_hosts >= 2)) || break
    "${emulate[@]}" "$max_hosts" --rate "${rate}gbit" --prefix "$prefix" --dir "$hostdir" >/dev/null
    for h in "${host_counts[@]}"; do
      ((h >= 2)) || continue
      threads=$((cores / h))
      ((threads >= 1)) || threads=1
      for mode in "${mode_list[@]}"; do
        size=(--batch "$batch")
        [[ $mode == strong ]] && size=(--global-batch "$batch")
        log "round $round: $h hosts x 1 rank, ${rate} Gbit/s, $mode, $threads threads per rank ($((SECONDS - start)) s so far)"
        tx0=$(link_tx)
        # The hostfile has one slot per host: ranks 0..h-1 go to hosts 0..h-1.
        json=$(timeout -k 10 "$limit" "$hostdir/mpirun" -np "$h" -x OMP_NUM_THREADS="$threads" \
          "$embtrain" "${common[@]}" --engine sharded --threads "$threads" "${size[@]}") ||
          die "the run of $h hosts at $rate Gbit/s ($mode) failed or took over $limit s (--timeout)"
        json=$(tail -n 1 <<<"$json")
        tx1=$(link_tx)
        record "$mode" "$h" "$rate" "$threads" "$json" $((tx1 - tx0))
      done
    done
    "${emulate[@]}" --down --prefix "$prefix" --dir "$hostdir" >/dev/null
  done
  baseline
done
log "runs done in $((SECONDS - start)) s"
/usr/bin/python3 "$root/bench/cluster_report.py" "$raw" --out "$out"
