// What the cases of the sharded engine share: the table, row-sharded over
// the job's ranks and moved to the GPU when the device option says so, and
// the statistics it keeps. A case adds how it feeds the steps.
#pragma once

#include <string>

#include "embtrain/sharded_embedding.hpp"
#include "harness.hpp"

namespace embtrain {
namespace app {
namespace bench {

class ShardedEngineCase : public BenchCase {
 public:
  explicit ShardedEngineCase(const CaseSetup& setup)
      : table_({setup.spec}, setup.comm, setup.seed) {
    // In a build without CUDA this throws, on every rank, the error that
    // says so: the harness then has no "cuda" case and asks the CPU one.
    if (setup.device.device == "cuda")
      table_.use_cuda(setup.device.cuda);
    else
      (void)table_.shard(0);  // drawn on the host now, not in the first step
  }

  void reset_stats() override { table_.reset_stats(); }
  CaseStats stats() const override { return stats_of(table_.stats()); }
  std::string gpu_description() const override { return table_.device_description(); }
  void measure_skew(bool on) override { table_.measure_skew(on); }
  void overlap_exchanges(int chunks) override { table_.overlap_exchanges(chunks); }
  std::vector<TransferShape> last_transfers() const override { return table_.last_transfers(); }
  double native_alltoallv_ms(const TransferShape& t, Communicator::Caches caches) override {
    return table_.data_comm().native_alltoallv_ms(t.send_bytes, t.recv_bytes, caches);
  }

 protected:
  ShardedEmbedding table_;
};

}  // namespace bench
}  // namespace app
}  // namespace embtrain
