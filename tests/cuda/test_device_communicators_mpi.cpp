// The device data communicators under mpiexec (registered with 2 ranks):
// NCCL, when every rank has a GPU of its own, and the staged communicator
// with the CUDA copier, which ranks may run on one shared GPU; each
// operation on device buffers against the plain MPI communicator on host
// memory. The ranks agree on a skip: no GPU skips, unless
// EMBTRAIN_REQUIRE_GPU=1 makes it a failure; fewer GPUs than ranks on a
// node skips the NCCL test only.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "../mpi/device_comm_checks.hpp"
#include "cuda_comm_test_util.hpp"
#include "../mpi/mpi_test_util.hpp"
#include "embtrain/communicator.hpp"
#include "comm/device_selection.hpp"
#include "embtrain/errors.hpp"
#include "kernels/cuda/cuda_kernels.hpp"
#include "comm/nccl_communicator.hpp"
#include "comm/staged_communicator.hpp"

namespace {

using embtrain_comm_check::CudaMemory;
using embtrain_comm_check::Stream;

using embtrain_mpi_test::all_ranks;
using embtrain_mpi_test::MpiTest;
using embtrain_mpi_test::seed_trace;
using embtrain_mpi_test::test_seed;
using embtrain_mpi_test::world;

bool gpu_required() {
  const char* req = std::getenv("EMBTRAIN_REQUIRE_GPU");
  return req && std::string(req) == "1";
}

// Agreed over ranks: fails when a rank has no GPU and one is required,
// else skips unless `cond` holds on every rank.
#define SKIP_UNLESS_EVERY_RANK(cond, why)                                           \
  do {                                                                              \
    const bool every_rank_has_gpu_ = all_ranks(embtrain::cuda::device_count() > 0); \
    if (!every_rank_has_gpu_ && gpu_required())                                     \
      FAIL() << "EMBTRAIN_REQUIRE_GPU=1 but a rank has no CUDA device";             \
    if (!all_ranks(cond)) GTEST_SKIP() << why;                                      \
  } while (0)

class DeviceCommunicatorMpiTest : public MpiTest {};

TEST_F(DeviceCommunicatorMpiTest, NcclMatchesMpi) {
  const embtrain::LocalRankInfo local = embtrain::local_rank_info(world());
  const int devices = embtrain::cuda::device_count();
  // A GPU per rank by UUID, as the engine decides (also when each rank was
  // given one GPU through CUDA_VISIBLE_DEVICES).
  const int device = devices > 0 ? embtrain::pick_device(local.local_rank, devices) : -1;
  const int sharing =
      embtrain::ranks_on_same_gpu(world(), device >= 0 ? embtrain::cuda::device_uuid(device) : "");
  SKIP_UNLESS_EVERY_RANK(devices > 0 && sharing == 1,
                         "NCCL needs a GPU per rank; this rank's GPU has "
                             << sharing << " rank(s) of its node (" << devices
                             << " GPU(s) visible)");
  const uint64_t seed = test_seed(201);
  SCOPED_TRACE(seed_trace(seed));
  ASSERT_EQ(cudaSetDevice(device), cudaSuccess);
  Stream stream;
  CudaMemory memory;
  auto nccl = embtrain::make_nccl_communicator(world(), stream.stream);
  EXPECT_EQ(nccl->size(), world().size());
  EXPECT_EQ(nccl->rank(), world().rank());
  embtrain_comm_check::check_every_operation(*nccl, world(), memory, seed, 3000);
  nccl->barrier();
}

TEST_F(DeviceCommunicatorMpiTest, NcclRefusesRanksOnOneGpu) {
  const embtrain::LocalRankInfo local = embtrain::local_rank_info(world());
  SKIP_UNLESS_EVERY_RANK(embtrain::cuda::device_count() > 0 && local.local_size >= 2,
                         "needs a GPU and two ranks on a node");
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  Stream stream;
  try {
    auto nccl = embtrain::make_nccl_communicator(world(), stream.stream);
    ADD_FAILURE() << "two ranks on GPU 0 were accepted";
  } catch (const embtrain::SystemError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("two ranks on one GPU"), std::string::npos) << message;
    EXPECT_NE(message.find("MPI-staged"), std::string::npos) << message;
  }
}

TEST_F(DeviceCommunicatorMpiTest, StagedCudaCopierMatchesMpi) {
  const embtrain::LocalRankInfo local = embtrain::local_rank_info(world());
  const int devices = embtrain::cuda::device_count();
  SKIP_UNLESS_EVERY_RANK(devices > 0, "no CUDA device on a rank");
  const uint64_t seed = test_seed(202);
  SCOPED_TRACE(seed_trace(seed));
  ASSERT_EQ(cudaSetDevice(embtrain::pick_device(local.local_rank, devices)), cudaSuccess);
  Stream stream;
  CudaMemory memory;
  auto staged = embtrain::make_staged_communicator(embtrain::make_mpi_communicator(),
                                                   embtrain::make_cuda_copier(stream.stream));
  embtrain_comm_check::check_every_operation(*staged, world(), memory, seed, 3000);
}

}  // namespace
