// The device data communicators on a GPU in one process (P = 1): NCCL and
// the staged communicator with the CUDA copier, every operation on device
// buffers against the self communicator on host memory (what P = 1 must
// give). Without a GPU every test skips, unless EMBTRAIN_REQUIRE_GPU=1
// makes a missing GPU a failure. Multi-rank runs: test_device_communicators_mpi.cpp.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "../mpi/device_comm_checks.hpp"
#include "cuda_comm_test_util.hpp"
#include "embtrain/communicator.hpp"
#include "embtrain/errors.hpp"
#include "kernels/cuda/cuda_kernels.hpp"
#include "comm/nccl_communicator.hpp"
#include "comm/staged_communicator.hpp"

namespace {

using embtrain_comm_check::CudaMemory;
using embtrain_comm_check::Stream;

#define SKIP_WITHOUT_GPU()                                                               \
  do {                                                                                   \
    if (embtrain::cuda::device_count() == 0) {                                           \
      const char* req = std::getenv("EMBTRAIN_REQUIRE_GPU");                             \
      if (req && std::string(req) == "1") FAIL() << "EMBTRAIN_REQUIRE_GPU=1 but no GPU"; \
      GTEST_SKIP() << "no CUDA device (set EMBTRAIN_REQUIRE_GPU=1 to fail instead)";     \
    }                                                                                    \
  } while (0)

uint64_t test_seed() {
  const char* env = std::getenv("EMBTRAIN_TEST_SEED");
  const uint64_t seed =
      env && *env
          ? std::strtoull(env, nullptr, 0)
          : static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
  std::printf("[   seed   ] EMBTRAIN_TEST_SEED=%llu\n", static_cast<unsigned long long>(seed));
  return seed;
}

TEST(DeviceCommunicators, NcclOneRankMatchesExpected) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE("EMBTRAIN_TEST_SEED=" + std::to_string(seed));
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  Stream stream;
  auto control = embtrain::make_self_communicator();
  auto reference = embtrain::make_self_communicator();
  CudaMemory memory;
  {
    auto nccl = embtrain::make_nccl_communicator(*control, stream.stream);
    EXPECT_EQ(nccl->memory_space(), embtrain::MemorySpace::kDevice);
    EXPECT_EQ(nccl->rank(), 0);
    EXPECT_EQ(nccl->size(), 1);
    embtrain_comm_check::check_every_operation(*nccl, *reference, memory, seed, 3000);
    nccl->barrier();
    EXPECT_EQ(nccl->traffic().bytes_sent, 0);  // the self part is no traffic
    EXPECT_THROW(nccl->agree_on_error(""), embtrain::SystemError);
  }
}

TEST(DeviceCommunicators, StagedCudaCopierOneRankMatchesExpected) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE("EMBTRAIN_TEST_SEED=" + std::to_string(seed));
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  Stream stream;
  auto reference = embtrain::make_self_communicator();
  CudaMemory memory;
  auto staged = embtrain::make_staged_communicator(embtrain::make_self_communicator(),
                                                   embtrain::make_cuda_copier(stream.stream));
  EXPECT_EQ(staged->memory_space(), embtrain::MemorySpace::kDevice);
  embtrain_comm_check::check_every_operation(*staged, *reference, memory, seed, 3000);
}

}  // namespace
