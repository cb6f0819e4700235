#!/usr/bin/env bash
# Launches an embtrain job under Open MPI's mpirun with sane defaults.
#
#   launch/mpirun.sh [-n RANKS] [-H HOSTFILE] [-t THREADS] [-b BIND] [-e EMBTRAIN] -- ARGS...
#
#   -n RANKS     number of ranks (default 2)
#   -H HOSTFILE  Open MPI hostfile for a multi-node job (default: this machine)
#   -t THREADS   OpenMP threads per rank (default: cores of this machine / ranks
#                on it, at least 1)
#   -b BIND      rank binding: none | core | socket (default none: one machine
#                with few cores shares better unbound)
#   -e EMBTRAIN  the binary (default: build/embtrain beside this script, else
#                build-cpu/embtrain, the CPU-only tree)
#   ARGS         the embtrain command line, e.g.: train --config configs/quickstart.ini
#
# Adds --allow-run-as-root when run as root and --oversubscribe when there
# are more ranks than cores, so the same line works in containers and on
# laptops. Example:
#   launch/mpirun.sh -n 4 -- train --config configs/recsys.ini --train.steps=2000
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ranks=2 hostfile="" threads="" bind=none embtrain="$root/build/embtrain"
while getopts "n:H:t:b:e:h" opt; do
  case $opt in
    n) ranks=$OPTARG ;;
    H) hostfile=$OPTARG ;;
    t) threads=$OPTARG ;;
    b) bind=$OPTARG ;;
    e) embtrain=$OPTARG ;;
    h) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "launch/mpirun.sh: see -h" >&2; exit 1 ;;
  esac
done
shift $((OPTIND - 1))
[[ "${1:-}" == "--" ]] && shift
[[ $# -gt 0 ]] || { echo "launch/mpirun.sh: no embtrain command given (see -h)" >&2; exit 1; }
[[ "$ranks" =~ ^[1-9][0-9]*$ ]] || { echo "launch/mpirun.sh: -n $ranks is not a positive integer" >&2; exit 1; }
# Without -e: build/embtrain, or the CPU-only build-cpu/embtrain that the
# quickstart and scripts/test.sh build on a machine without a GPU.
if [[ ! -x "$embtrain" && "$embtrain" == "$root/build/embtrain" && -x "$root/build-cpu/embtrain" ]]; then
  embtrain="$root/build-cpu/embtrain"
fi
[[ -x "$embtrain" ]] || { echo "launch/mpirun.sh: no binary at $embtrain (run scripts/build.sh)" >&2; exit 1; }
case $bind in none|core|socket) ;; *) echo "launch/mpirun.sh: -b $bind (valid: none, core, socket)" >&2; exit 1 ;; esac

cores=$(nproc)
if [[ -z "$threads" ]]; then
  local_ranks=$ranks
  [[ -n "$hostfile" ]] && local_ranks=1  # one rank per slot; let the user tune -t
  threads=$((cores / local_ranks))
  ((threads >= 1)) || threads=1
fi

args=(-np "$ranks" --bind-to "$bind" -x OMP_NUM_THREADS="$threads")
[[ -n "$hostfile" ]] && args+=(--hostfile "$hostfile")
[[ $(id -u) -eq 0 ]] && args+=(--allow-run-as-root)
[[ -z "$hostfile" && $ranks -gt $cores ]] && args+=(--oversubscribe)
echo "+ mpirun ${args[*]} $embtrain $*" >&2
exec mpirun "${args[@]}" "$embtrain" "$@"
