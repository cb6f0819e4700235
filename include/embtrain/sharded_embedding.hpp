// ShardedEmbedding: tables row-sharded over the ranks of a Communicator,
// stepped together so that every all-to-all carries all tables at once.
// A step gives the result of one process training on the global batch (the
// ranks' batches concatenated in rank order), up to float summation order.
// The step runs on the CPU, or on each rank's GPU after use_cuda(); with one
// rank it is the single-process step, with nothing to exchange.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "embtrain/bags.hpp"
#include "embtrain/communicator.hpp"
#include "embtrain/embedding_table.hpp"
#include "embtrain/ids.hpp"
#include "embtrain/shard_plan.hpp"
#include "embtrain/step_stats.hpp"

namespace embtrain {

class StepEngine;

// The most bytes that move between a GPU and the host at once when rows
// are read or written (read_rows, write_rows; checkpoints and
// from_pretrained stream through a buffer of this size): 64 MiB unless
// set here or by the environment variable EMBTRAIN_TRANSFER_CHUNK_BYTES
// (tests make it small, so that a table spans many chunks). At least one
// float.
size_t transfer_chunk_bytes();
void set_transfer_chunk_bytes(size_t bytes);
// Rows of `width` floats in one chunk (at least 1).
int64_t transfer_chunk_rows(int64_t width);

// How the GPU step picks its data communicator.
struct CudaOptions {
  // "auto" (NCCL when every GPU of a node has one rank, else MPI staged),
  // "nccl" (an error when NCCL cannot be used) or "mpi-staged".
  std::string data_comm = "auto";
  // Called once the engine has chosen this rank's GPU and before it
  // allocates there, with the GPU, the ranks of this host that share it and
  // its free and total bytes: "" when the run fits, else the error that
  // every rank then reports (train passes its memory plan's device lines,
  // memory_plan.hpp). Unset: not checked.
  std::function<std::string(int device, int ranks_on_device, double free_bytes,
                            double total_bytes)>
      device_memory_check;
};

class ShardedEmbedding {
 public:
  // Tables are sharded cyclically over the ranks (row r on rank r % P; see
  // shard_plan.hpp). Fresh tables: rows drawn from N(0, 1) by (seed, table
  // index, row), so the values do not depend on the number of ranks.
  ShardedEmbedding(const std::vector<TableSpec>& specs, Communicator* comm, uint64_t seed);
  // Given rows: local_rows[t] holds this rank's shard of table t
  // (plan(t).shard_rows(rank) x dim floats in local order; plan(t).take_shard
  // cuts it from a whole table).
  ShardedEmbedding(const std::vector<TableSpec>& specs, Communicator* comm,
                   const std::vector<std::vector<float>>& local_rows);

  // How a table of `num_embeddings` rows is sharded over `ranks` ranks.
  static ShardPlan table_plan(int64_t num_embeddings, int ranks);

  ~ShardedEmbedding();
  ShardedEmbedding(ShardedEmbedding&&) noexcept;
  ShardedEmbedding& operator=(ShardedEmbedding&&) noexcept;

  int num_tables() const { return static_cast<int>(plans_.size()); }
  const ShardPlan& plan(int t) const { return plans_[t]; }
  const TableSpec& spec(int t) const { return specs_[t]; }
  // This rank's shard of table t: its spec, plan and step counter, and on
  // the CPU its rows. On a GPU the rows live in device memory only (no
  // host copy: weights() and state() are empty); read_rows and write_rows
  // reach them on either. Fresh tables are drawn where they are placed:
  // on the host at the first call that needs their rows on the CPU (this
  // one included), on the GPU by use_cuda().
  const EmbeddingTable& shard(int t) const;
  EmbeddingTable& shard(int t);
  Communicator& comm() { return *comm_; }

  // Floats per row of a part of table t (dim, or its state width).
  int64_t width(int t, TablePart part) const;
  // Local rows [first, first + count) of this rank's shard of table t
  // (rows x width floats, local order) copied out to `out` or in from
  // `in`, on the CPU from and to its host rows, on a GPU through a pinned
  // buffer of at most transfer_chunk_bytes(). Written rows count from the
  // next step.
  void read_rows(int t, TablePart part, int64_t first, int64_t count, float* out) const;
  void write_rows(int t, TablePart part, int64_t first, int64_t count, const float* in);
  // Before the tables are placed: how fresh table t starts (FreshRows'
  // scale, or zeros), then drawn where it is placed.
  void set_fresh_rows(int t, float scale, bool zeros);

  // Moves the step to this rank's GPU (local rank % device count): the rows
  // and optimizer state go to device memory and forward/backward/step run
  // in CUDA kernels, exchanging device buffers over NCCL or MPI staging.
  // Fresh tables not placed yet are drawn on the GPU (the values the CPU
  // draws); rows already on the host are uploaded and their host copy
  // freed. A collective. Throws AgreedError on every rank when a rank has
  // no GPU or the build has no CUDA; the tables then stay on the CPU.
  void use_cuda(const CudaOptions& options = {});
  bool on_gpu() const;
  // "cuda:0 NVIDIA H200 (...), data over nccl (...)"; "" on the CPU.
  std::string device_description() const;

  // ids[t]: this rank's ids for table t; out[t]: ids[t].numel() x dim_t
  // floats. A bad id on any rank throws the same embtrain::Error on every
  // rank (a collective: all ranks must call it).
  void forward(const std::vector<IdsView>& ids, const std::vector<float*>& out);
  // The same with bags (torch.nn.EmbeddingBag): a table whose bags[t] is
  // pooled gets out[t] of bags[t].num_bags x dim_t floats, each bag's rows
  // pooled (bags.hpp); the others as above. By default (pool_at =
  // requester) the rows travel as without bags and are pooled on the
  // requester, so the result is that of one process on the global batch;
  // a table with pool_at = owner is pooled at the rows' owners (one partial
  // row per bag and owner travels; one process's result up to float
  // summation order), and must be given its bags in every forward (CPU
  // only so far). Bad bags on any rank throw the same error on every rank.
  void forward(const std::vector<IdsView>& ids, const std::vector<BagsView>& bags,
               const std::vector<float*>& out);
  // grad_out[t]: the gradient of out[t] (bags x dim for a pooled table);
  // it must stay valid until step().
  // Reduces it at the rows' owners.
  void backward(const std::vector<const float*>& grad_out);
  // Optimizer step on every table with the last backward's gradient.
  void step();

  // Starts the next step's input distribution now, a step ahead: checks
  // next_ids, takes their distinct ids, splits them by owner and starts
  // sending them, so that this overlaps the rest of the current step (call
  // it after forward(); ids do not depend on the weights). The next
  // forward() given the same ids (the same bytes) takes it up; a forward()
  // of any other batch (an evaluation) drops it. Results are bitwise those
  // of the same steps without it, as TorchRec's TrainPipelineSparseDist
  // does for its input distribution. A collective; a bad id throws here.
  void prefetch(const std::vector<IdsView>& next_ids);
  // The same for a batch already in the memory the step runs in, taken up
  // by forward_device() of the same buffers.
  void prefetch_device(const std::vector<IdSpan>& next_ids);

  // The step on batches already in the memory it runs in: device memory
  // after use_cuda (host memory on the CPU), int64 ids, nothing copied.
  // Work is ordered after the legacy default stream: data written on any
  // other stream must be synchronized first. out[t] is complete when
  // forward_device returns; grad_out[t] must stay valid until step().
  void forward_device(const std::vector<IdSpan>& ids, const std::vector<float*>& out);
  void backward_device(const std::vector<const float*>& grad_out);
  // Waits for the work the step has enqueued (nothing to wait for on the CPU).
  void synchronize();

  // Table t assembled on `root` (num_embeddings x dim, in host memory);
  // empty elsewhere.
  std::vector<float> gather_table(int t, int root);

  // Time per stage and bytes sent, summed over steps.
  const StepStats& stats() const;
  void reset_stats();
  // With `on`, each exchange first waits at a barrier for every rank and
  // records that wait in stats().wait_ms, so that an exchange's time splits
  // into skew (ranks arriving apart) and transfer. Off by default.
  void measure_skew(bool on);
  // Rows and gradients travel in `chunks` slices, so that the owners'
  // gathers and optimizer updates run while the next slices move (over two
  // or more ranks, on the CPU or the GPU, where they are kernels enqueued
  // between the slices' transfers; a table pooled at the owners moves whole
  // beside the slices; with 1, the default, each exchange moves whole).
  // From the next forward on. The results are bitwise the same. Every rank
  // must set the same.
  void overlap_exchanges(int chunks);
  // The all-to-alls of the last step's exchanges, by their bytes per peer
  // (none with one rank), and the communicator that moved them.
  std::vector<TransferShape> last_transfers() const;
  Communicator& data_comm();

 private:
  // The engine; on the CPU (the shards drawn on the host) when none is yet.
  StepEngine& engine() const;

  Communicator* comm_;
  std::vector<TableSpec> specs_;
  std::vector<ShardPlan> plans_;
  // Until the tables are placed (the first call that needs an engine, or
  // use_cuda), their shards wait here with no rows drawn.
  mutable std::vector<EmbeddingTable> unplaced_;
  mutable std::unique_ptr<StepEngine> engine_;
};

}  // namespace embtrain
