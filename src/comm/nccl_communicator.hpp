// The NCCL data communicator: collectives on device buffers, for the GPU
// engine, while control (counts, error agreement) stays on MPI. Defined
// only where the CUDA backend is built (or emulated, in the tests).
#pragma once

#include <memory>

#include "embtrain/communicator.hpp"

namespace embtrain {

// A collective over the ranks of `control` (which must stay alive as long
// as the result: barrier() uses it). Each rank has already selected its
// GPU (cudaSetDevice(pick_device(...))); no two ranks may share one, which
// NCCL refuses: the constructor detects that and throws SystemError naming
// the ranks, with the advice to use the MPI-staged communicator
// (choose_data_communicator decides this up front).
//
// The bootstrap: rank 0 calls ncclGetUniqueId, control.broadcast sends the
// id to every rank, each calls ncclCommInitRank.
//
// Every buffer argument is a device pointer (memory_space() is kDevice);
// counts are on the host. alltoallv, alltoall, allreduce_*, broadcast and
// gatherv only ENQUEUE their work and return without waiting: kernels
// enqueued on `stream` (a cudaStream_t; nullptr for the default stream)
// afterwards see the result; the host sees it after synchronize(), which
// waits for the stream and reports NCCL's asynchronous errors. The NCCL
// calls themselves run on a side stream of the communicator's, behind the
// work enqueued on `stream` before them and in the order they were issued;
// ialltoallv (either form) leaves `stream` free meanwhile: kernels enqueued on
// it run beside the transfer until the request's wait() makes `stream`
// wait for it (the host does not wait; progress() says whether it is done).
// A request must end before its communicator. barrier() synchronizes, then barriers on `control`.
// Traffic counters count what the all-to-alls move to and from other
// ranks, as the MPI communicator does. agree_on_error is not for this
// communicator; use `control`. The destructor calls ncclCommDestroy (all
// ranks should destroy theirs) and never throws.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& control, void* stream);

}  // namespace embtrain
