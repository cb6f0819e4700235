// Device selection under mpiexec: the node-local rank from MPI, and the
// choice between NCCL and MPI staging, which every rank must make alike.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "embtrain/communicator.hpp"
#include "comm/device_selection.hpp"
#include "mpi_test_util.hpp"

namespace {

using embtrain::CommType;
using embtrain::DataCommKind;
using embtrain_mpi_test::MpiTest;
using embtrain_mpi_test::world;

// True on every rank when every rank passes the same text as rank 0.
bool same_on_every_rank(const std::string& text) {
  int64_t length = static_cast<int64_t>(text.size());
  world().broadcast(&length, 1, CommType::kInt64, 0);
  std::string root = world().rank() == 0 ? text : std::string(static_cast<size_t>(length), '\0');
  world().broadcast(root.data(), length, CommType::kByte, 0);
  return embtrain_mpi_test::all_ranks(root == text);
}

class DeviceSelectionTest : public MpiTest {};

TEST_F(DeviceSelectionTest, LocalRanksCoverEachNode) {
  const embtrain::LocalRankInfo local = embtrain::local_rank_info(world());
  const int P = world().size();
  EXPECT_GE(local.local_rank, 0);
  EXPECT_LT(local.local_rank, local.local_size);
  EXPECT_LE(local.local_size, P);
  // Each node's local rank 0 speaks for its node: the node sizes add to P.
  int64_t sizes = local.local_rank == 0 ? local.local_size : 0;
  world().allreduce_sum(&sizes, 1, CommType::kInt64);
  EXPECT_EQ(sizes, P);

  // When every rank runs on this host (mpiexec here), one node holds all,
  // in the order of the global ranks.
  char host[64] = {};
  gethostname(host, sizeof(host) - 1);
  std::vector<char> send(static_cast<size_t>(64 * P)), all(static_cast<size_t>(64 * P));
  for (int r = 0; r < P; ++r) std::memcpy(send.data() + 64 * r, host, 64);
  world().alltoall(send.data(), all.data(), 64, CommType::kByte);
  bool one_host = true;
  for (int r = 0; r < P; ++r) one_host &= std::memcmp(all.data() + 64 * r, host, 64) == 0;
  if (embtrain_mpi_test::all_ranks(one_host)) {
    EXPECT_EQ(local.local_size, P);
    EXPECT_EQ(local.local_rank, world().rank());
  }
}

TEST_F(DeviceSelectionTest, SelfCommunicatorIsItsOwnNode) {
  auto self = embtrain::make_self_communicator();
  const embtrain::LocalRankInfo local = embtrain::local_rank_info(*self);
  EXPECT_EQ(local.local_rank, 0);
  EXPECT_EQ(local.local_size, 1);
}

// Ranks compare their GPUs by UUID: here ranks 2k and 2k + 1 name one GPU
// (as two ranks sent to one GPU would), the last rank of an odd count one
// of its own; every rank runs on this host, so all of them are one node.
TEST_F(DeviceSelectionTest, RanksOnOneGpuAreCountedByItsId) {
  const int P = world().size(), me = world().rank();
  const int pair = me / 2;
  const int want = 2 * pair + 1 < P ? 2 : 1;
  EXPECT_EQ(embtrain::ranks_on_same_gpu(world(), "gpu-" + std::to_string(pair)), want);
  // Every rank its own GPU, all seen as device 0 (one GPU made visible to
  // each): no sharing, whatever their device numbers say.
  EXPECT_EQ(embtrain::ranks_on_same_gpu(world(), "gpu-of-rank-" + std::to_string(me)), 1);
  // One GPU for all.
  EXPECT_EQ(embtrain::ranks_on_same_gpu(world(), "the-gpu"), P);
}

TEST_F(DeviceSelectionTest, NcclWhenEveryRankHasItsOwnGpu) {
  const embtrain::LocalRankInfo local = embtrain::local_rank_info(world());
  const auto choice = embtrain::choose_data_communicator(world(), 1, local.local_size);
  EXPECT_EQ(choice.kind, DataCommKind::kNccl) << choice.reason;
  EXPECT_NE(choice.reason.find("nccl"), std::string::npos) << choice.reason;
  EXPECT_TRUE(same_on_every_rank(choice.reason));
}

TEST_F(DeviceSelectionTest, StagedWhenRanksShareAGpu) {
  EMBTRAIN_REQUIRE_RANKS(2);
  // Every rank on one GPU.
  const auto choice = embtrain::choose_data_communicator(world(), world().size(), 1);
  EXPECT_EQ(choice.kind, DataCommKind::kMpiStaged);
  const std::string want =
      "rank 0's GPU is used by " + std::to_string(world().size()) + " rank(s) of its node";
  EXPECT_NE(choice.reason.find(want), std::string::npos) << choice.reason;
  EXPECT_TRUE(same_on_every_rank(choice.reason));
}

TEST_F(DeviceSelectionTest, OneRankRulesOutNcclForAll) {
  // Enough GPUs everywhere but on the last rank (none there), then NCCL
  // disallowed on the last rank only: every rank gets staging, and the
  // reason names the last rank.
  const int last = world().size() - 1;
  const bool is_last = world().rank() == last;
  auto choice = embtrain::choose_data_communicator(world(), 1, is_last ? 0 : 64);
  EXPECT_EQ(choice.kind, DataCommKind::kMpiStaged);
  EXPECT_NE(choice.reason.find("rank " + std::to_string(last) + " sees no GPU"), std::string::npos)
      << choice.reason;
  EXPECT_TRUE(same_on_every_rank(choice.reason));

  choice = embtrain::choose_data_communicator(world(), 1, 64, /*nccl_allowed=*/!is_last);
  EXPECT_EQ(choice.kind, DataCommKind::kMpiStaged);
  EXPECT_NE(choice.reason.find("NCCL not allowed on rank " + std::to_string(last)),
            std::string::npos)
      << choice.reason;
  EXPECT_TRUE(same_on_every_rank(choice.reason));
}

}  // namespace
