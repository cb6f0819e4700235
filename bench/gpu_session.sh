#!/bin/bash
# Everything the GPU issues ask of a GPU machine, in one command, so a short
# lease is spent on running rather than typing:
#   1. build for Hopper (sm_90) in build-gpu (skipped with --packed);
#   2. the CUDA tests with EMBTRAIN_REQUIRE_GPU=1 (a missing GPU fails);
#   3. compute-sanitizer memcheck, racecheck, initcheck and synccheck over
#      the kernel tests, their large cases shrunk (EMBTRAIN_TEST_SMALL=1),
#      each stage timed (the issue's budget: 3 minutes together);
#   4. the GPU step against the single-process CPU reference under mpirun,
#      1 rank (NCCL) and 2 ranks sharing the GPU (MPI staging);
#   5. PyTorch parity of replay and bags on the GPU; the trainer on the GPU
#      (checkpoints equal to the CPU run's, the device memory check);
#   6. bench-G (10M x 128, 1,048,576 lookups, Zipf 1.05, 10% padding,
#      SparseAdam) against PyTorch on the same GPU, and SGD likewise;
#   7. a 100M x 128 SGD table on the GPU (bench-G's batch): drawn on the
#      device with no host copy, so rank 0's peak host RSS once bench's data
#      is drawn (its Zipf sampler over 100M rows alone takes ~3 GB) must
#      stay within 4 GB, and the table's setup (CUDA context, NCCL and the
#      draw) within 2 s; about 30 s.
#   8. ncu over one bench-G Adam step: each kernel's time and device-memory
#      bytes against the copy bandwidth the same run measured
#      (bench/ncu_summary.py), as issue 10's item 4 asks;
#   9. the batched row copy (EMBTRAIN_CUDA_GATHER=batched, gather.cu): its
#      kernel tests, then bench-G Adam without it and with it;
#  10. the GPU step's overlapped exchanges (issue 11): 2 ranks sharing the
#      GPU (MPI staged), bench-G's table and a quarter of its batch per
#      rank, rows and gradients whole (K = 1) and in 8 slices, alternated
#      twice: step time, each exchange's exposed time against its raw
#      collective, the owner stages (the work hidden behind the transfers
#      is not timed on a GPU: its kernels run after the host moved on);
#  11. bench-A's weak scaling on the CPU (bench/scaling.sh, P = 1, 2, 4,
#      one round): issue 11's exchanges against their raw all-to-alls with
#      a core per rank, which the 2-core development VM cannot give P = 4.
# Each stage's log goes to LOG_DIR (default bench/results/gpu-logs). On the
# lent machine ($OUT set), where at most 8 files come back, the logs go to a
# folder of their own and are packed into $OUT/gpu-logs.tar.gz after every
# stage (so a run stopped at its time limit still returns what it did),
# with summary.txt beside the archive. The script goes on after a failing
# stage and exits non-zero if any failed.
#
# On a machine with the toolchain (what scripts/install_deps.sh installs
# plus the CUDA Toolkit with NCCL, and a python3 with a CUDA PyTorch):
#   bench/gpu_session.sh [--quick]
# On the lent GPU machine, which has neither Open MPI nor Boost: build and
# pack here, carry .gpu, and there run
#   scripts/build.sh build-gpu -DCMAKE_CUDA_ARCHITECTURES=90 && ../shared/gpu/pack.sh build-gpu
#   source .gpu/env.sh && bench/gpu_session.sh --packed [--quick]
# (--quick: fewer random cases and steps; --from STAGE skips the stages
# before STAGE, to go on where a call stopped at its time limit, and
# --only STAGE,... runs just those; the names are those summary.txt shows).
set -u
cd "$(dirname "$0")/.."
ARCHIVE=
if [ -z "${LOG_DIR:-}" ] && [ -n "${OUT:-}" ]; then
  LOG_DIR=$(mktemp -d)/gpu-logs
  ARCHIVE=$OUT/gpu-logs.tar.gz
fi
LOG_DIR=${LOG_DIR:-bench/results/gpu-logs}
mkdir -p "$LOG_DIR"
pack_logs() {  # the logs so far into $OUT (see above)
  [ -n "$ARCHIVE" ] || return 0
  tar czf "$ARCHIVE" -C "$(dirname "$LOG_DIR")" "$(basename "$LOG_DIR")"
  cp "$LOG_DIR/summary.txt" "$OUT/summary.txt" 2>/dev/null || true
}
STEPS=30 PACKED=0 FROM= ONLY=
while [ $# -gt 0 ]; do
  case $1 in
    --quick) STEPS=10 ;;
    --packed) PACKED=1 ;;
    --from|--only)
      [ $# -ge 2 ] || { echo "gpu_session.sh: $1 needs a stage name" >&2; exit 1; }
      if [ "$1" = --from ]; then FROM=$2; else ONLY=,$2,; fi
      shift ;;
    *) echo "gpu_session.sh: unknown argument $1 (valid: --quick, --packed, --from STAGE," \
         "--only STAGE[,STAGE...])" >&2; exit 1 ;;
  esac
  shift
done
BUILD=build-gpu
[ "$PACKED" = 1 ] && BUILD=.gpu/build
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export BUILD LOG_DIR STEPS  # for the stages that are functions (see stage)
failed=() STAGES=() RAN=()

# Each stage is stopped after STAGE_LIMIT seconds (default 300): a stage
# that hangs (a collective one rank never reached, say) must not take the
# rest of a short lease with it.
STAGE_LIMIT=${STAGE_LIMIT:-300}
stage() {  # stage NAME COMMAND...: runs it, logs it, remembers a failure
  local name=$1
  shift
  STAGES+=("$name")
  if [ -n "$FROM" ] && [ "$name" = "$FROM" ]; then FROM=; fi
  if [ -n "$FROM" ] || { [ -n "$ONLY" ] && [[ $ONLY != *",$name,"* ]]; }; then
    return 0  # not asked for this time
  fi
  RAN+=("$name")
  echo "=== $name: $*" | tee -a "$LOG_DIR/summary.txt"
  local start=$SECONDS rc=0
  # A function of this script runs in a bash of its own, under the timeout.
  declare -F "$1" >/dev/null && export -f "$1" && set -- bash -c '"$@"' "$name" "$@"
  timeout --kill-after=10 "$STAGE_LIMIT" "$@" >"$LOG_DIR/$name.log" 2>&1 || rc=$?
  if [ "$rc" = 0 ]; then
    echo "    ok ($((SECONDS - start)) s)" | tee -a "$LOG_DIR/summary.txt"
  else
    [ "$rc" = 124 ] || [ "$rc" = 137 ] && echo "    stopped after $STAGE_LIMIT s" >>"$LOG_DIR/$name.log"
    echo "    FAILED ($((SECONDS - start)) s), last lines:" | tee -a "$LOG_DIR/summary.txt"
    tail -n 20 "$LOG_DIR/$name.log" | tee -a "$LOG_DIR/summary.txt"
    failed+=("$name")
  fi
  pack_logs
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$LOG_DIR/gpu.txt" 2>&1
cat "$LOG_DIR/gpu.txt"

if [ "$PACKED" = 0 ]; then
  stage build bash -c "cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_ARCHITECTURES=90 && cmake --build build-gpu -j \$(nproc)"
fi
export EMBTRAIN_REQUIRE_GPU=1
stage cuda_tests $BUILD/tests/cuda_tests
stage cuda_comm_tests $BUILD/tests/cuda_comm_tests
sanitize_start=$SECONDS
for tool in memcheck racecheck initcheck synccheck; do
  stage "$tool" env EMBTRAIN_TEST_SMALL=1 compute-sanitizer --tool "$tool" --error-exitcode 1 \
    $BUILD/tests/cuda_tests
done
[[ " ${RAN[*]} " == *" memcheck "* ]] &&
  echo "    the sanitizers took $((SECONDS - sanitize_start)) s together (budget 180 s)" |
  tee -a "$LOG_DIR/summary.txt"
stage gpu_step_np1 mpirun --oversubscribe -np 1 $BUILD/tests/mpi_tests \
  --gtest_filter='ShardedEmbeddingTest.Gpu*'
stage gpu_step_np2_staged mpirun --oversubscribe -np 2 $BUILD/tests/mpi_tests \
  --gtest_filter='ShardedEmbeddingTest.Gpu*'
stage device_comm_np2 mpirun --oversubscribe -np 2 $BUILD/tests/mpi_cuda_tests
stage replay_parity_gpu python3 tests/parity/replay_parity.py --embtrain $BUILD/embtrain \
  --device cuda
stage bag_parity_gpu python3 tests/parity/bag_parity.py --embtrain $BUILD/embtrain \
  --device cuda --cases 20
stage train_cli_gpu python3 tests/train/test_train_cli.py --embtrain $BUILD/embtrain \
  --device cuda --only test_device_cuda
stage bench_G_adam python3 bench/compare_pytorch.py --preset bench-G --optimizer adam \
  --embtrain $BUILD/embtrain --steps "$STEPS"
stage bench_G_sgd python3 bench/compare_pytorch.py --preset bench-G --optimizer sgd \
  --embtrain $BUILD/embtrain --steps "$STEPS"

big_table() {  # 7: bench's JSON line, then the two limits checked
  $BUILD/embtrain bench --device cuda --rows 100000000 --dim 128 --optimizer sgd \
    --batch 65536 --seq 16 --steps 10 --warmup 2 --json >"$LOG_DIR/big_table.json" || return 1
  python3 - "$LOG_DIR/big_table.json" <<'EOF'
import json, sys
j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
rss, setup = j["peak_host_rss_after_data_bytes"], j["setup_table_s"]
print("100M x 128 sgd on %s: peak host RSS %.2f GB after the data (limit 4; %.2f GB with it), "
      "table setup %.2f s (limit 2), data %.1f s, step %.3f ms" % (
          j["gpu"], rss / 1e9, j["peak_host_rss_bytes"] / 1e9, setup, j["setup_data_s"],
          j["step_ms"]))
sys.exit(0 if 0 < rss <= 4e9 and setup <= 2.0 else 1)
EOF
}
stage big_table_100M_sgd big_table

gather_variant() {  # 9: the batched row copy (gather.cu), its tests and bench-G Adam
  EMBTRAIN_CUDA_GATHER=batched $BUILD/tests/cuda_tests \
    --gtest_filter='CudaKernels.Gather*:CudaStepKernels.*' || return 1
  for variant in warp batched; do
    EMBTRAIN_CUDA_GATHER=$variant $BUILD/embtrain bench --device cuda --rows 10000000 --dim 128 \
      --batch 65536 --seq 16 --zipf 1.05 --pad-frac 0.1 --optimizer adam --steps "$STEPS" \
      --json | tail -n 1 | python3 -c "import json, sys; j = json.load(sys.stdin); \
print('$variant', 'step %.3f ms, gather_owned %.3f, expand %.3f' % (j['step_ms'], \
j['phase_ms_max_over_ranks']['gather_owned'], j['phase_ms_max_over_ranks']['expand']))" || return 1
  done
}
kernel_profile() {  # 8: one bench-G Adam step under ncu, then the table per kernel
  timeout 150 ncu --clock-control none --csv --page raw \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
    --log-file "$LOG_DIR/ncu_adam.csv" \
    $BUILD/embtrain bench --device cuda --rows 10000000 --dim 128 --batch 65536 --seq 16 \
    --zipf 1.05 --pad-frac 0.1 --optimizer adam --warmup 0 --steps 1 --distinct-batches 1 \
    --json >"$LOG_DIR/ncu_adam.json" || return 1
  python3 bench/ncu_summary.py "$LOG_DIR/ncu_adam.csv" "$LOG_DIR/ncu_adam.json"
}
stage ncu_adam_step kernel_profile
cat "$LOG_DIR/ncu_adam_step.log" 2>/dev/null
stage gather_variant gather_variant
cat "$LOG_DIR/gather_variant.log" 2>/dev/null
overlap_gpu() {  # 10: K = 1 against K = 8 on 2 ranks sharing the GPU, alternated
  for round in 1 2; do
    for chunks in 1 8; do
      mpirun --oversubscribe -np 2 $BUILD/embtrain bench --device cuda --rows 10000000 \
        --dim 128 --batch 16384 --seq 16 --zipf 1.05 --pad-frac 0.1 --optimizer adam \
        --steps "$STEPS" --overlap-chunks $chunks --json | tail -n 1 | python3 -c "
import json, sys
j = json.load(sys.stdin)
p, x = j['phase_ms_max_over_ranks'], j['exchanges_ms_max_over_ranks']
print('round $round K=$chunks: step %.2f ms; exchange_rows %.2f (raw %.2f), exchange_grads '
      '%.2f (raw %.2f), gather_owned %.2f, update %.2f' % (j['step_ms'], p['exchange_rows'],
      x['exchange_rows']['raw_ms'], p['exchange_grads'], x['exchange_grads']['raw_ms'],
      p['gather_owned'], p['update']))" || return 1
    done
  done
}
stage overlap_gpu_np2_staged overlap_gpu
cat "$LOG_DIR/overlap_gpu_np2_staged.log" 2>/dev/null
stage cpu_scaling env ROUNDS=1 bench/scaling.sh $BUILD --steps 20
cat "$LOG_DIR/cpu_scaling.log" 2>/dev/null

if [ ${#RAN[@]} = 0 ]; then
  echo "gpu_session.sh: no stage matched --from/--only; the stages: ${STAGES[*]}" >&2
  exit 1
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed stages: ${failed[*]}" | tee -a "$LOG_DIR/summary.txt"
  pack_logs
  exit 1
fi
echo "all stages passed; logs in ${ARCHIVE:-$LOG_DIR}" | tee -a "$LOG_DIR/summary.txt"
pack_logs
