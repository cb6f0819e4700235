// The CUDA DeviceCopier of the staged communicator: copies enqueued on the
// caller's stream, so they follow the kernels already enqueued there, one
// stream synchronize for all of them, pinned staging memory for full-speed
// copies. Over the device layer of the kernels (device_memory.hpp), so the
// emulated device of the tests runs this very code.
#include "comm/staged_communicator.hpp"
#include "kernels/cuda/device_memory.hpp"

namespace embtrain {

namespace {

class CudaCopier final : public DeviceCopier {
 public:
  explicit CudaCopier(void* stream) : stream_(stream) {}

  void to_host(void* h_dst, const void* d_src, size_t bytes) override {
    cuda::copy_to_host(h_dst, d_src, bytes, stream_);
  }
  void to_device(void* d_dst, const void* h_src, size_t bytes) override {
    cuda::copy_to_device(d_dst, h_src, bytes, stream_);
  }
  void wait() override { cuda::synchronize(stream_); }
  void* alloc_pinned(size_t bytes) override {
    return cuda::allocate_memory(cuda::MemoryKind::kPinned, bytes);
  }
  void free_pinned(void* h_ptr) noexcept override {
    cuda::free_memory(cuda::MemoryKind::kPinned, h_ptr);
  }

 private:
  void* stream_;  // a cudaStream_t
};

}  // namespace

std::unique_ptr<DeviceCopier> make_cuda_copier(void* stream) {
  return std::make_unique<CudaCopier>(stream);
}

}  // namespace embtrain
