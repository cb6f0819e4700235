// The device data communicators of the emulated CUDA device (see
// emulated_kernels.cpp): "device" pointers are host pointers, so NCCL's
// contract is met by the staged communicator with memcpy copies.
#include <memory>
#include <utility>

#include "comm/nccl_communicator.hpp"
#include "comm/staged_communicator.hpp"
#include "embtrain/communicator.hpp"
#include "embtrain/errors.hpp"
#include "kernels/cuda/device_memory.hpp"

namespace embtrain {

namespace {

// The CUDA copier's semantics on the emulated device: each copy waits for
// the work enqueued before it (emulated_kernels.cpp runs it), then copies
// ("device" pointers are host pointers) and is done when it returns.
class EmulatedCopier final : public DeviceCopier {
 public:
  void to_host(void* h_dst, const void* d_src, size_t bytes) override {
    cuda::synchronize(nullptr);
    inner_->to_host(h_dst, d_src, bytes);
  }
  void to_device(void* d_dst, const void* h_src, size_t bytes) override {
    cuda::synchronize(nullptr);
    inner_->to_device(d_dst, h_src, bytes);
  }
  void* alloc_pinned(size_t bytes) override { return inner_->alloc_pinned(bytes); }
  void free_pinned(void* h_ptr) noexcept override { inner_->free_pinned(h_ptr); }

 private:
  std::unique_ptr<DeviceCopier> inner_ = make_memcpy_copier();
};

}  // namespace

std::unique_ptr<DeviceCopier> make_cuda_copier(void*) { return std::make_unique<EmulatedCopier>(); }

// NCCL's contract (collectives on device buffers over the ranks of
// `control`) met by the staged communicator on a fresh MPI communicator of
// its own, with the copier above. Its calls block, which an enqueue-only
// NCCL call may too.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& control, void*) {
  std::unique_ptr<Communicator> host = make_world_communicator();
  EMBTRAIN_REQUIRE(host->size() == control.size() && host->rank() == control.rank(),
                   "emulated NCCL: the control communicator must span MPI_COMM_WORLD");
  return make_staged_communicator(std::move(host), make_cuda_copier(nullptr));
}

}  // namespace embtrain
