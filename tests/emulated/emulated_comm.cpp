// The NCCL communicator of the emulated CUDA device (see
// emulated_kernels.cpp): "device" pointers are host pointers, so NCCL's
// contract is met by the staged communicator, whose CUDA copier
// (src/comm/cuda_copier.cpp) copies on the emulated device.
#include <memory>
#include <utility>

#include "comm/nccl_communicator.hpp"
#include "comm/staged_communicator.hpp"
#include "embtrain/communicator.hpp"
#include "embtrain/errors.hpp"
#include "kernels/cuda/device_memory.hpp"

namespace embtrain {

// NCCL's contract (collectives on device buffers over the ranks of
// `control`) met by the staged communicator on a fresh MPI communicator of
// its own. Its calls block, which an enqueue-only NCCL call may too.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& control, void*) {
  std::unique_ptr<Communicator> host = make_world_communicator();
  EMBTRAIN_REQUIRE(host->size() == control.size() && host->rank() == control.rank(),
                   "emulated NCCL: the control communicator must span MPI_COMM_WORLD");
  return make_staged_communicator(std::move(host), make_cuda_copier(nullptr));
}

}  // namespace embtrain
