// ShardedEmbedding: tables row-sharded over the ranks of a Communicator,
// stepped together so that every all-to-all carries all tables at once.
// A step gives the result of one process training on the global batch (the
// ranks' batches concatenated in rank order), up to float summation order.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "embtrain/communicator.hpp"
#include "embtrain/device_step.hpp"
#include "embtrain/embedding.hpp"
#include "embtrain/embedding_table.hpp"
#include "embtrain/kernels_cpu.hpp"
#include "embtrain/shard_plan.hpp"

namespace embtrain {

class ShardedEmbedding {
 public:
  // Fresh tables: rows drawn from N(0, 1) by (seed, table index, row), so
  // the values do not depend on the number of ranks.
  ShardedEmbedding(const std::vector<TableSpec>& specs, Communicator* comm, uint64_t seed);
  // Given rows: local_rows[t] holds this rank's block of table t
  // (plan(t).shard_rows(rank) x dim floats).
  ShardedEmbedding(const std::vector<TableSpec>& specs, Communicator* comm,
                   const std::vector<std::vector<float>>& local_rows);

  ~ShardedEmbedding();
  ShardedEmbedding(ShardedEmbedding&&) noexcept;
  ShardedEmbedding& operator=(ShardedEmbedding&&) noexcept;

  int num_tables() const { return static_cast<int>(shards_.size()); }
  const ShardPlan& plan(int t) const { return plans_[t]; }
  const TableSpec& spec(int t) const { return shards_[t].spec(); }
  // This rank's block of table t. On the GPU the host shard is a mirror,
  // brought up to date here; the non-const one is uploaded again before the
  // next step, so anything written into it (loading a checkpoint) counts.
  const EmbeddingTable& shard(int t) const;
  EmbeddingTable& shard(int t);
  Communicator& comm() { return *comm_; }

  // Moves the step to this rank's GPU (local rank % device count): the rows
  // and optimizer state go to device memory and forward/backward/step run
  // in CUDA kernels, exchanging device buffers over NCCL or MPI staging.
  // A collective. Throws Error when there is no GPU or no CUDA in the build.
  void use_cuda(const CudaOptions& options = {});
  // The GPU step, or null on the CPU (benchmarks drive it with device
  // buffers directly).
  DeviceStep* device_step() { return device_.get(); }
  bool on_gpu() const { return device_ != nullptr; }
  // "cuda:0 NVIDIA H200 (...), data over nccl (...)"; "" on the CPU.
  std::string device_description() const { return device_ ? device_->description() : ""; }
  // The step on batches already in device memory (after use_cuda): ids[t],
  // out[t] and grad_out[t] are device pointers; see DeviceStep.
  void forward_device(const std::vector<DeviceIds>& ids, const std::vector<float*>& out);
  void backward_device(const std::vector<const float*>& grad_out);

  // ids[t]: this rank's ids for table t; out[t]: ids[t].numel() x dim_t
  // floats. A bad id on any rank throws the same embtrain::Error on every
  // rank (a collective: all ranks must call it).
  void forward(const std::vector<IdsView>& ids, const std::vector<float*>& out);
  // grad_out[t]: the gradient of out[t]; it must stay valid until step().
  // Reduces it at the rows' owners.
  void backward(const std::vector<const float*>& grad_out);
  // Optimizer step on every table with the last backward's gradient.
  void step();

  // Table t assembled on `root` (num_embeddings x dim); empty elsewhere.
  std::vector<float> gather_table(int t, int root);

  const ShardedStepStats& stats() const { return device_ ? device_->stats() : stats_; }
  void reset_stats() {
    stats_ = ShardedStepStats{};
    if (device_) device_->stats() = ShardedStepStats{};
  }

 private:
  // What one table's forward leaves for its backward.
  struct TableStep {
    std::vector<int64_t> ids;             // this rank's ids, validated
    cpu::UniqueIndex local;               // their distinct ids (requester side)
    std::vector<int64_t> unique_begin;    // P + 1: local.unique split by owner
    std::vector<int64_t> row_offset;      // per local unique id: its row in rows_
    std::vector<int64_t> recv_ids;        // ids other ranks asked this owner for
    std::vector<int64_t> recv_offset;     // per received id: its row in rows_
    cpu::UniqueIndex owned;               // distinct ids of recv_ids (owner side)
    std::vector<int64_t> update_rows;     // rows to update: owned.unique less padding
    std::vector<const float*> grad_rows;  // their gradients: in rows_ as they arrived, or
    std::vector<float> update_grads;      //   combined from several senders or occurrences here
  };

  // Before a GPU step: the host shards' changes to the device.
  void sync_device();

  Communicator* comm_;
  std::vector<ShardPlan> plans_;
  // The rows, or on the GPU their host mirror (see shard()).
  mutable std::vector<EmbeddingTable> shards_;
  std::unique_ptr<DeviceStep> device_;
  mutable bool host_stale_ = false;  // the device has stepped since the last download
  bool device_stale_ = false;        // a host shard was handed out writable
  std::vector<TableStep> steps_;
  // With one rank there is nothing to exchange: each table takes the
  // single-process step (Embedding's) on its whole-table shard.
  std::vector<LocalStep> local_;
  // Per (peer, table) element counts of the id exchange: send_[d * T + t] ids
  // of table t go to rank d; recv_[s * T + t] arrive from rank s.
  std::vector<int64_t> send_ids_count_, recv_ids_count_;
  // Exchange buffers, reused across steps.
  std::vector<int64_t> ids_send_, ids_recv_;
  // rows_ = [rows sent to other ranks | rows received from them | rows this
  // rank asked of itself]; the last never go through the communicator.
  std::vector<float> rows_;
  int64_t recv_region_ = 0, self_region_ = 0;           // float offsets of the regions
  std::vector<int64_t> rows_to_peer_, rows_from_peer_;  // floats per peer, self = 0
  std::vector<int32_t> counts_send_, counts_recv_;
  ShardedStepStats stats_;
};

}  // namespace embtrain
