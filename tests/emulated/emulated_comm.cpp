// The device data communicators of the emulated CUDA device (see
// emulated_kernels.cpp): "device" pointers are host pointers, so NCCL's
// contract is met by the staged communicator with memcpy copies.
#include <memory>
#include <utility>

#include "comm/nccl_communicator.hpp"
#include "comm/staged_communicator.hpp"
#include "embtrain/communicator.hpp"
#include "embtrain/errors.hpp"

namespace embtrain {

// "Device" pointers are host pointers, so the staged path with memcpy is
// exactly the CUDA copier's semantics.
std::unique_ptr<DeviceCopier> make_cuda_copier(void*) { return make_memcpy_copier(); }

// NCCL's contract (collectives on device buffers over the ranks of
// `control`) met by the staged communicator on a fresh MPI communicator of
// its own. Its calls block, which an enqueue-only NCCL call may too.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& control, void*) {
  std::unique_ptr<Communicator> host = make_world_communicator();
  EMBTRAIN_REQUIRE(host->size() == control.size() && host->rank() == control.rank(),
                   "emulated NCCL: the control communicator must span MPI_COMM_WORLD");
  return make_staged_communicator(std::move(host), make_memcpy_copier());
}

}  // namespace embtrain
