// StepEngine: how a ShardedEmbedding steps, chosen once, when the tables are
// built (make_cpu_engine) or moved to a GPU (make_cuda_engine), and never
// re-decided inside a step: with one rank the single-process step
// (local_step.hpp), else the sharded one (sharded_step.hpp), each on the
// CPU or the GPU backend.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "embtrain/bags.hpp"
#include "embtrain/communicator.hpp"
#include "embtrain/embedding_table.hpp"
#include "embtrain/ids.hpp"
#include "embtrain/shard_plan.hpp"
#include "embtrain/sharded_embedding.hpp"  // CudaOptions
#include "embtrain/step_stats.hpp"

namespace embtrain {

class StepEngine {
 public:
  virtual ~StepEngine() = default;

  // ShardedEmbedding's forward, backward and step (see there).
  virtual void forward(const std::vector<IdsView>& ids, const std::vector<float*>& out) = 0;
  virtual void forward(const std::vector<IdsView>& ids, const std::vector<BagsView>& bags,
                       const std::vector<float*>& out) = 0;
  virtual void backward(const std::vector<const float*>& grad_out) = 0;
  virtual void step() = 0;
  // The same on batches in the memory the step runs in (see
  // ShardedEmbedding::forward_device).
  virtual void forward_device(const std::vector<IdSpan>& ids, const std::vector<float*>& out) = 0;
  // ShardedEmbedding::prefetch and prefetch_device.
  virtual void prefetch(const std::vector<IdsView>& ids) = 0;
  virtual void prefetch_device(const std::vector<IdSpan>& ids) = 0;
  virtual void backward_device(const std::vector<const float*>& grad_out) = 0;
  virtual void synchronize() = 0;

  // This rank's shards: spec, plan and step counter, and the rows on the
  // CPU (none on a GPU). ShardedEmbedding::read_rows and write_rows.
  virtual std::vector<EmbeddingTable>& shards() = 0;
  virtual void read_rows(int t, TablePart part, int64_t first, int64_t count, float* out) = 0;
  virtual void write_rows(int t, TablePart part, int64_t first, int64_t count, const float* in) = 0;

  virtual StepStats& stats() = 0;
  virtual void measure_skew(bool on) = 0;
  virtual void overlap_exchanges(int chunks) = 0;
  virtual std::vector<TransferShape> last_transfers() const = 0;
  virtual Communicator& data_comm() = 0;
  virtual bool on_gpu() const = 0;
  virtual std::string description() const = 0;  // "" on the CPU
};

// The CPU engine over these shards (moved in). A collective over `comm`,
// which must outlive the result.
std::unique_ptr<StepEngine> make_cpu_engine(std::vector<EmbeddingTable> shards,
                                            const std::vector<ShardPlan>& plans,
                                            Communicator* comm);

// The GPU engine: `shards` move to this rank's GPU, and out of the vector,
// only once everything has succeeded (on failure they stay where they
// were): unplaced ones are drawn there, the others uploaded, and then their
// host rows freed. A collective over `control`; throws AgreedError on every rank in a
// build without CUDA and when a rank sees no device.
std::unique_ptr<StepEngine> make_cuda_engine(std::vector<EmbeddingTable>* shards,
                                             const std::vector<ShardPlan>& plans,
                                             Communicator* control, const CudaOptions& options);

}  // namespace embtrain
