// Which GPU a rank uses, and which data communicator moves device buffers:
// NCCL when every GPU of a node has at most one rank (NCCL refuses two
// ranks on one GPU), else MPI staged through host memory. The decisions are
// pure functions, tested on CPU; only the node queries (local ranks, ranks
// on one GPU) and the agreement over ranks are collectives.
#pragma once

#include <string>

#include "embtrain/communicator.hpp"

namespace embtrain {

// This rank's place on its node (the ranks that share its memory).
struct LocalRankInfo {
  int local_rank = 0;  // 0 .. local_size - 1, in order of global rank
  int local_size = 1;  // ranks on this node
};

// A collective over `comm`, which spans MPI_COMM_WORLD (as the MPI
// communicator does): MPI_Comm_split_type(MPI_COMM_TYPE_SHARED). A
// communicator of one rank gives {0, 1} without calling MPI.
LocalRankInfo local_rank_info(const Communicator& comm);

// The device of the rank with this local rank: local_rank % device_count.
// Throws Error naming both when device_count is 0 (or local_rank < 0).
int pick_device(int local_rank, int device_count);

// How many of this node's ranks use this rank's GPU, itself included: the
// node's ranks compare the UUIDs of their GPUs (`gpu_id`), so ranks that a
// launcher gave one GPU each through CUDA_VISIBLE_DEVICES (all of them then
// see theirs as device 0) count as 1 each, and ranks sent to one GPU as
// many. A collective over `comm`, which spans MPI_COMM_WORLD; 1 for a
// communicator of one rank.
int ranks_on_same_gpu(const Communicator& comm, const std::string& gpu_id);

enum class DataCommKind { kNccl, kMpiStaged };

struct DataCommChoice {
  DataCommKind kind = DataCommKind::kMpiStaged;
  std::string reason;  // one line for the log, the same on every rank
};

// A collective over `control` (a host communicator): NCCL only when every
// rank sees a GPU, has it to itself (ranks_on_gpu, from ranks_on_same_gpu,
// is 1) and allows NCCL, so the ranks agree (NCCL needs all of them).
// `nccl_allowed` is false when the user asks for the staged path or the
// build has no NCCL. The reason names the lowest rank that ruled NCCL out,
// and why.
DataCommChoice choose_data_communicator(Communicator& control, int ranks_on_gpu, int device_count,
                                        bool nccl_allowed = true);

const char* data_comm_name(DataCommKind kind);  // "nccl" / "mpi-staged"

}  // namespace embtrain
