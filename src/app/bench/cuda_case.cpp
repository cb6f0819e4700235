// The sharded engine on the GPU (ShardedEmbedding::use_cuda), with the
// batches, the gradient and the output in device memory, as a model running
// there would keep them: the step times no host copies. Built only with the
// CUDA backend.
#include <vector>

#include "kernels/cuda/cuda_kernels.hpp"
#include "kernels/cuda/device_memory.hpp"
#include "sharded_engine_case.hpp"

namespace embtrain {
namespace app {
namespace bench {

namespace {

void upload(const void* h_src, size_t bytes, cuda::DeviceBuffer* d_dst) {
  d_dst->reserve(bytes);
  cuda::copy_to_device(d_dst->data(), h_src, bytes, nullptr);
}

class CudaCase : public ShardedEngineCase {
 public:
  explicit CudaCase(const CaseSetup& setup)
      : ShardedEngineCase(setup), lookups_(setup.data.lookups()) {
    const BenchData& data = setup.data;
    d_batches_.resize(data.batches.size());
    for (size_t b = 0; b < data.batches.size(); ++b)
      upload(data.batches[b].data(), data.batches[b].size() * sizeof(int64_t), &d_batches_[b]);
    upload(data.grad.data(), data.grad.size() * sizeof(float), &d_grad_);
    d_out_.reserve(static_cast<size_t>(lookups_ * setup.spec.dim) * sizeof(float));
    cuda::synchronize(nullptr);
  }

  void step(int64_t b, int64_t next) override {
    table_.forward_device({ids(b)}, {d_out_.as<float>()});
    if (next >= 0) table_.prefetch_device({ids(next)});
    table_.backward_device({d_grad_.as<float>()});
    table_.step();
  }
  double copy_bandwidth_gbps(int) const override { return cuda::copy_bandwidth_gbps(); }

 private:
  IdSpan ids(int64_t b) const { return IdSpan{d_batches_[b].as<int64_t>(), lookups_}; }

  int64_t lookups_;
  std::vector<cuda::DeviceBuffer> d_batches_;
  cuda::DeviceBuffer d_grad_, d_out_;
};

const CaseRegistration kRegistration("cuda", construct_case<CudaCase>);

}  // namespace

}  // namespace bench
}  // namespace app
}  // namespace embtrain
