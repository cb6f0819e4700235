// The step of a ShardedEmbedding run on a GPU (ShardedEmbedding::use_cuda):
// the shard's rows and optimizer state live in device memory, every local
// stage runs in CUDA kernels (kernels_cuda.hpp), and the exchanges of ids,
// rows and gradients move device buffers over a data communicator (NCCL,
// or MPI staged through pinned memory), while counts and error agreement
// stay on the host communicator. The protocol is the CPU one
// (sharded_embedding.cpp), so results match it up to float summation order.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "embtrain/communicator.hpp"
#include "embtrain/embedding_table.hpp"
#include "embtrain/shard_plan.hpp"
#include "embtrain/step_stats.hpp"

namespace embtrain {

// Int64 ids in device memory.
struct DeviceIds {
  const int64_t* data = nullptr;
  int64_t n = 0;
};

// How the GPU step picks its device and data communicator.
struct CudaOptions {
  // "auto" (NCCL when every GPU of a node has one rank, else MPI staged),
  // "nccl" (an error when NCCL cannot be used) or "mpi-staged".
  std::string data_comm = "auto";
};

class DeviceStep {
 public:
  virtual ~DeviceStep() = default;

  // The step on host buffers, as ShardedEmbedding's (copies in and out).
  virtual void forward(const std::vector<IdsView>& ids, const std::vector<float*>& out) = 0;
  virtual void backward(const std::vector<const float*>& grad_out) = 0;
  // The same on device buffers: ids[t], out[t] and grad_out[t] are device
  // pointers; nothing crosses to the host but counts. The step works on its
  // own stream, which is ordered after the legacy default stream: data
  // written on any other stream must be synchronized first, and out[t] is
  // complete when forward_device returns.
  virtual void forward_device(const std::vector<DeviceIds>& ids,
                              const std::vector<float*>& out) = 0;
  virtual void backward_device(const std::vector<const float*>& grad_out) = 0;
  // Optimizer step on the device rows; advances each shard's step counter.
  virtual void step(std::vector<EmbeddingTable>& shards) = 0;
  // Waits for the work enqueued so far.
  virtual void synchronize() = 0;

  // Device rows and state of table t to the host shard, and back.
  virtual void download(int t, EmbeddingTable* shard) = 0;
  virtual void upload(int t, const EmbeddingTable& shard) = 0;

  // Phase times and bytes sent, summed over steps (the caller may reset).
  virtual ShardedStepStats& stats() = 0;
  virtual const ShardedStepStats& stats() const = 0;

  // "cuda:0 NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB), data over nccl (...)"
  virtual std::string description() const = 0;
};

// The GPU step for these shards (their rows are uploaded). A collective
// over `control`, which must outlive the result. Throws Error in a build
// without CUDA and when no device is present.
std::unique_ptr<DeviceStep> make_cuda_step(const std::vector<EmbeddingTable>& shards,
                                           const std::vector<ShardPlan>& plans,
                                           Communicator* control, const CudaOptions& options);

}  // namespace embtrain
