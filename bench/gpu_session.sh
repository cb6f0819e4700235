#!/bin/bash
# Everything issue 5 asks of a GPU machine, in one command, so a short lease
# is spent on running rather than typing:
#   1. build for Hopper (sm_90) in build-gpu;
#   2. the CUDA tests with EMBTRAIN_REQUIRE_GPU=1 (a missing GPU fails);
#   3. compute-sanitizer memcheck and racecheck over the kernel tests;
#   4. the GPU step against the single-process CPU reference under mpirun,
#      1 rank (NCCL) and 2 ranks sharing the GPU (MPI staging);
#   5. bench-G (10M x 128, 1,048,576 lookups, Zipf 1.05, 10% padding,
#      SparseAdam) against PyTorch on the same GPU, and SGD likewise.
# Each stage's log goes to LOG_DIR (default $OUT on the lent machine, else
# bench/results/gpu-logs); the script goes on after a failing stage and
# exits non-zero if any failed.
#
# Needs what scripts/install_deps.sh installs (CMake, Open MPI, Boost,
# GoogleTest, nlohmann-json) plus the CUDA Toolkit with NCCL, and a python3
# with PyTorch built for CUDA. Usage:
#   bench/gpu_session.sh [--quick]      (--quick: fewer random cases and steps)
set -u
cd "$(dirname "$0")/.."
LOG_DIR=${LOG_DIR:-${OUT:-bench/results/gpu-logs}}
mkdir -p "$LOG_DIR"
QUICK=${1:-}
STEPS=30
[ "$QUICK" = "--quick" ] && STEPS=10
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
failed=()

stage() {  # stage NAME COMMAND...: runs it, logs it, remembers a failure
  local name=$1
  shift
  echo "=== $name: $*" | tee -a "$LOG_DIR/summary.txt"
  local start=$SECONDS
  if "$@" >"$LOG_DIR/$name.log" 2>&1; then
    echo "    ok ($((SECONDS - start)) s)" | tee -a "$LOG_DIR/summary.txt"
  else
    echo "    FAILED ($((SECONDS - start)) s), last lines:" | tee -a "$LOG_DIR/summary.txt"
    tail -n 20 "$LOG_DIR/$name.log" | tee -a "$LOG_DIR/summary.txt"
    failed+=("$name")
  fi
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$LOG_DIR/gpu.txt" 2>&1
cat "$LOG_DIR/gpu.txt"

stage build bash -c "cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES=90 && cmake --build build-gpu -j \$(nproc)"
export EMBTRAIN_REQUIRE_GPU=1
stage cuda_tests build-gpu/tests/cuda_tests
stage cuda_comm_tests build-gpu/tests/cuda_comm_tests
stage memcheck compute-sanitizer --tool memcheck --error-exitcode 1 build-gpu/tests/cuda_tests
stage racecheck compute-sanitizer --tool racecheck --error-exitcode 1 build-gpu/tests/cuda_tests
stage gpu_step_np1 mpirun --oversubscribe -np 1 build-gpu/tests/mpi_tests \
  --gtest_filter='ShardedEmbeddingTest.Gpu*'
stage gpu_step_np2_staged mpirun --oversubscribe -np 2 build-gpu/tests/mpi_tests \
  --gtest_filter='ShardedEmbeddingTest.Gpu*'
stage device_comm_np2 mpirun --oversubscribe -np 2 build-gpu/tests/mpi_cuda_tests
stage replay_parity_gpu python3 tests/parity/replay_parity.py --embtrain build-gpu/embtrain \
  --device cuda
stage bag_parity_gpu python3 tests/parity/bag_parity.py --embtrain build-gpu/embtrain \
  --device cuda --cases 20
stage bench_G_adam python3 bench/compare_pytorch.py --preset bench-G --optimizer adam \
  --embtrain build-gpu/embtrain --steps "$STEPS"
stage bench_G_sgd python3 bench/compare_pytorch.py --preset bench-G --optimizer sgd \
  --embtrain build-gpu/embtrain --steps "$STEPS"

if [ ${#failed[@]} -gt 0 ]; then
  echo "failed stages: ${failed[*]}" | tee -a "$LOG_DIR/summary.txt"
  exit 1
fi
echo "all stages passed; logs in $LOG_DIR" | tee -a "$LOG_DIR/summary.txt"
