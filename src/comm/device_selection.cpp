// Device selection: which GPU a rank takes, and whether the job moves device
// buffers over NCCL or MPI staging. See device_selection.hpp.
#include "comm/device_selection.hpp"

#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "embtrain/errors.hpp"
#include "common/checks.hpp"

namespace embtrain {

namespace {

// The communicator of the ranks that share this rank's memory (its node).
MPI_Comm node_communicator(const Communicator& comm) {
  int initialized = 0;
  EMBTRAIN_MPI_CHECK(MPI_Initialized(&initialized));
  EMBTRAIN_ASSERT(initialized);
  int world_size = 0;
  EMBTRAIN_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world_size));
  EMBTRAIN_ASSERT(world_size == comm.size());
  // The key (the global rank) keeps their global order in the local ranks.
  MPI_Comm node = MPI_COMM_NULL;
  EMBTRAIN_MPI_CHECK(
      MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, comm.rank(), MPI_INFO_NULL, &node));
  return node;
}

}  // namespace

LocalRankInfo local_rank_info(const Communicator& comm) {
  if (comm.size() == 1) return LocalRankInfo{};
  MPI_Comm node = node_communicator(comm);
  LocalRankInfo info;
  const int rank_rc = MPI_Comm_rank(node, &info.local_rank);
  const int size_rc = MPI_Comm_size(node, &info.local_size);
  MPI_Comm_free(&node);
  EMBTRAIN_MPI_CHECK(rank_rc);
  EMBTRAIN_MPI_CHECK(size_rc);
  return info;
}

int ranks_on_same_gpu(const Communicator& comm, const std::string& gpu_id) {
  if (comm.size() == 1) return 1;
  MPI_Comm node = node_communicator(comm);
  int local_size = 0;
  constexpr size_t kIdBytes = 64;  // a UUID's 32 hex digits and more
  std::vector<char> mine(kIdBytes, '\0'), all;
  std::copy_n(gpu_id.begin(), std::min(gpu_id.size(), kIdBytes - 1), mine.begin());
  int rc = MPI_Comm_size(node, &local_size);
  if (rc == MPI_SUCCESS) {
    all.resize(kIdBytes * static_cast<size_t>(local_size));
    rc = MPI_Allgather(mine.data(), static_cast<int>(kIdBytes), MPI_CHAR, all.data(),
                       static_cast<int>(kIdBytes), MPI_CHAR, node);
  }
  MPI_Comm_free(&node);
  EMBTRAIN_MPI_CHECK(rc);
  int same = 0;
  for (int r = 0; r < local_size; ++r)
    same += std::equal(mine.begin(), mine.end(), all.begin() + static_cast<ptrdiff_t>(kIdBytes) * r);
  return same;
}

int pick_device(int local_rank, int device_count) {
  EMBTRAIN_REQUIRE(device_count > 0, "no CUDA device for local rank ", local_rank,
                   " (device count ", device_count,
                   "): the GPU engine needs at least one GPU per node");
  EMBTRAIN_REQUIRE(local_rank >= 0, "local rank ", local_rank, " is negative (device count ",
                   device_count, ")");
  return local_rank % device_count;
}

const char* data_comm_name(DataCommKind kind) {
  return kind == DataCommKind::kNccl ? "nccl" : "mpi-staged";
}

DataCommChoice choose_data_communicator(Communicator& control, int ranks_on_gpu, int device_count,
                                        bool nccl_allowed) {
  EMBTRAIN_ASSERT(control.memory_space() == MemorySpace::kHost);
  // NCCL is all or nothing: the lowest rank that cannot use it (or P when
  // none) decides for everyone, and its numbers explain why on every rank.
  const int P = control.size(), me = control.rank();
  const bool ok = nccl_allowed && device_count > 0 && ranks_on_gpu == 1;
  int32_t decider = ok ? P : me;
  control.allreduce_min(&decider, 1, CommType::kInt32);
  const int from = decider == P ? 0 : decider;
  int64_t facts[3] = {nccl_allowed ? 1 : 0, ranks_on_gpu, device_count};
  control.broadcast(facts, 3, CommType::kInt64, from);

  DataCommChoice choice;
  if (decider == P) {
    choice.kind = DataCommKind::kNccl;
    choice.reason = detail::concat("nccl: every rank has a GPU of its own (rank 0 sees ", facts[2],
                                   " GPU(s))");
  } else if (facts[0] == 0) {
    choice.reason = detail::concat("mpi-staged: NCCL not allowed on rank ", decider,
                                   " (staged path requested, or no NCCL in this build)");
  } else if (facts[2] == 0) {
    choice.reason = detail::concat("mpi-staged: rank ", decider, " sees no GPU");
  } else {
    choice.reason = detail::concat("mpi-staged: rank ", decider, "'s GPU is used by ", facts[1],
                                   " rank(s) of its node; NCCL needs one GPU per rank, so ranks "
                                   "share GPUs through host staging over MPI");
  }
  return choice;
}

}  // namespace embtrain
