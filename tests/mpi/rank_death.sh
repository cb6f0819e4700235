#!/usr/bin/env bash
# A rank that dies must end the whole job, non-zero, without a hang.
#
# usage: rank_death.sh EMBTRAIN MPIEXEC [MPIEXEC FLAGS...]
#
# Starts a long 3-rank `embtrain bench`, waits until all three ranks are
# running, kills one with SIGKILL and requires mpiexec to exit non-zero
# within 30 seconds, with no rank left behind. Only processes this script
# started are signalled, by their process id.
set -u

embtrain=$(readlink -f "$1")
mpiexec=$2
shift 2
flags=("$@")
ranks=3
deadline_s=30

work=$(mktemp -d)
mpi_pid=
rank_pids=()

say() { echo "rank_death: $*"; }

# Fields of /proc/PID/stat after the name (which may hold spaces and
# parentheses): state, parent, ... Sets REPLY; fails when PID is gone.
stat_tail() {
  local line
  { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
  REPLY=${line##*) }
}

# Every descendant of process $1 (ranks may be children of mpiexec or of a
# daemon it forked): one pass over /proc for the parent map, then a walk.
# No subshells per process, so a scan stays fast on a busy machine.
descendants() {
  local -A children=()
  local stat pid ppid rest c
  for stat in /proc/[0-9]*/stat; do
    pid=${stat#/proc/}
    pid=${pid%/stat}
    stat_tail "$pid" || continue
    rest=${REPLY#* }      # drop the state
    ppid=${rest%% *}
    children[$ppid]+="$pid "
  done
  local queue=("$1")
  while [[ ${#queue[@]} -gt 0 ]]; do
    pid=${queue[0]}
    queue=("${queue[@]:1}")
    for c in ${children[$pid]:-}; do
      echo "$c"
      queue+=("$c")
    done
  done
}

# The descendants of mpiexec that run the embtrain binary.
find_ranks() {
  local pid
  for pid in $(descendants "$mpi_pid"); do
    [[ "$(readlink -f /proc/"$pid"/exe 2>/dev/null)" == "$embtrain" ]] && echo "$pid"
  done
}

# Running: exists and is not a zombie waiting to be reaped.
alive() {
  stat_tail "$1" || return 1
  [[ "${REPLY:0:1}" != Z ]]
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

cleanup() {
  local pid left=()
  for pid in "${rank_pids[@]}" $mpi_pid; do
    if alive "$pid"; then
      left+=("$pid")
      kill -9 "$pid" 2>/dev/null
    fi
  done
  [[ ${#left[@]} -gt 0 ]] && say "killed leftover processes: ${left[*]}"
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  say "FAILED: $*"
  echo "---- mpiexec stdout (tail) ----"
  tail -n 20 "$work/out" 2>/dev/null
  echo "---- mpiexec stderr (tail) ----"
  tail -n 20 "$work/err" 2>/dev/null
  exit 1
}

say "starting $ranks ranks of a long bench"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$mpiexec" "${flags[@]}" -np "$ranks" "$embtrain" bench \
  --rows 100000 --dim 16 --steps 100000 --warmup 0 >"$work/out" 2>"$work/err" &
mpi_pid=$!

# Wait (up to 60 s) for all ranks to exist and for rank 0 to have printed
# its header (after MPI_Init, which every rank passes together), then a
# moment more so that they are inside the step loop.
started=$(now_ms)
while true; do
  alive "$mpi_pid" || fail "mpiexec exited before the ranks were up"
  mapfile -t rank_pids < <(find_ranks)
  if [[ ${#rank_pids[@]} -eq $ranks && -s "$work/out" ]]; then
    break
  fi
  (($(now_ms) - started < 60000)) ||
    fail "found ${#rank_pids[@]} of $ranks ranks (or no output) after 60 s"
  sleep 0.1
done
sleep 2
for pid in "${rank_pids[@]}"; do alive "$pid" || fail "rank process $pid ended early"; done
alive "$mpi_pid" || fail "the job ended before a rank was killed"

victim=${rank_pids[1]}
say "ranks ${rank_pids[*]} running; kill -9 $victim"
kill -9 "$victim"
start=$(now_ms)

while alive "$mpi_pid"; do
  if (($(now_ms) - start > deadline_s * 1000)); then
    fail "mpiexec still running ${deadline_s} s after a rank died (a hang)"
  fi
  sleep 0.1
done
wait "$mpi_pid"
status=$?
elapsed_ms=$(($(now_ms) - start))
say "mpiexec exited with status $status $((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000))) s after the kill"
[[ $status -ne 0 ]] || fail "mpiexec exited 0 although a rank was killed"

# The surviving ranks must be gone too (give them a few seconds).
for _ in $(seq 1 50); do
  survivors=()
  for pid in "${rank_pids[@]}"; do alive "$pid" && survivors+=("$pid"); done
  [[ ${#survivors[@]} -eq 0 ]] && break
  sleep 0.1
done
[[ ${#survivors[@]} -eq 0 ]] || fail "ranks ${survivors[*]} still running after mpiexec exited"
say "passed"
