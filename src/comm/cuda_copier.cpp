// The CUDA DeviceCopier of the staged communicator: copies on the caller's
// stream, so they follow the kernels already enqueued there, and waits for
// them, so the staging buffers can be reused at once; pinned staging memory
// from cudaMallocHost, for full-speed copies.
#include <cuda_runtime.h>

#include "common/checks.hpp"
#include "comm/staged_communicator.hpp"

namespace embtrain {

namespace {

class CudaCopier final : public DeviceCopier {
 public:
  explicit CudaCopier(void* stream) : stream_(static_cast<cudaStream_t>(stream)) {}

  void to_host(void* h_dst, const void* d_src, size_t bytes) override {
    EMBTRAIN_CUDA_CHECK(cudaMemcpyAsync(h_dst, d_src, bytes, cudaMemcpyDeviceToHost, stream_));
    EMBTRAIN_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void to_device(void* d_dst, const void* h_src, size_t bytes) override {
    EMBTRAIN_CUDA_CHECK(cudaMemcpyAsync(d_dst, h_src, bytes, cudaMemcpyHostToDevice, stream_));
    EMBTRAIN_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void* alloc_pinned(size_t bytes) override {
    void* h_ptr = nullptr;
    EMBTRAIN_CUDA_CHECK(cudaMallocHost(&h_ptr, bytes));
    return h_ptr;
  }
  void free_pinned(void* h_ptr) noexcept override {
    if (h_ptr) cudaFreeHost(h_ptr);  // an error here has no one to go to
  }

 private:
  cudaStream_t stream_;
};

}  // namespace

std::unique_ptr<DeviceCopier> make_cuda_copier(void* stream) {
  return std::make_unique<CudaCopier>(stream);
}

}  // namespace embtrain
