// embtrain bench is a harness and one case per engine, as nccl-tests has
// its common.cu and a file per collective. The harness (harness.cpp) reads
// the options, draws the synthetic workload, times the steps, gathers the
// statistics over the ranks and reports them; a case (local_case.cpp,
// sharded_case.cpp, cuda_case.cpp) builds one engine and runs its steps.
// Cases register themselves by name, so the harness needs to know neither
// which engines exist nor which of them this build has.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "app/table_options.hpp"
#include "embtrain/bags.hpp"
#include "embtrain/communicator.hpp"
#include "embtrain/embedding.hpp"
#include "embtrain/embedding_table.hpp"
#include "embtrain/huge_pages.hpp"
#include "embtrain/memory_plan.hpp"
#include "embtrain/step_stats.hpp"

namespace embtrain {
namespace app {
namespace bench {

// The synthetic workload of this rank, drawn before the clock starts: the
// steps cycle through `batches`, and each step's output gradient is `grad`.
// With bags (--pool), each sample's seq ids are one bag, pooled into one
// output row.
struct BenchData {
  std::vector<std::vector<int64_t>> batches;  // each batch x seq ids
  RowBuffer grad;                             // batch x seq x dim, or batch x dim with bags
  int64_t batch = 0, seq = 0;
  bool pooled = false;
  PoolMode mode = PoolMode::kMean;
  std::vector<int64_t> offsets;  // with bags: batch + 1, bag b at b * seq

  int64_t lookups() const { return batch * seq; }
  int64_t outputs() const { return pooled ? batch : lookups(); }  // output rows per step
  IdsView ids(int64_t b) const { return {batches[b].data(), DType::kInt64, {batch, seq}}; }
  BagsView bags() const {
    return pooled ? BagsView{mode, offsets.data(), batch, nullptr} : BagsView{};
  }
};

// What a case builds its engine from.
struct CaseSetup {
  const TableSpec& spec;
  uint64_t seed;
  Communicator* comm;
  const DeviceChoice& device;
  const BenchData& data;
};

// What a case's engine says about the steps since reset_stats(), summed
// over them: milliseconds per phase of phase_names() and bytes sent to
// other ranks per exchange of exchange_names().
struct CaseStats {
  std::vector<double> phase_ms;
  std::vector<double> wait_ms;  // of phase_ms, waiting for the slowest rank
  std::vector<double> hidden_ms;  // owner work run while the exchange's slices travelled
  std::vector<double> bytes_sent;
};
const std::vector<std::string>& phase_names();
const std::vector<std::string>& exchange_names();
// From an engine's own statistics.
CaseStats stats_of(const StepStats& stats);

// One engine under test.
class BenchCase {
 public:
  virtual ~BenchCase() = default;
  // One training step (forward, backward with data.grad, optimizer) on
  // batch data.batches[b]; with next >= 0 it also prefetches batch `next`
  // after the forward (ShardedEmbedding::prefetch), as a pipelined trainer
  // does (an engine without prefetch ignores it).
  virtual void step(int64_t b, int64_t next) = 0;
  virtual void reset_stats() = 0;
  virtual CaseStats stats() const = 0;
  // The GPU it runs on, "" for the CPU.
  virtual std::string gpu_description() const { return ""; }
  // Exchanges (an engine without them keeps these defaults): whether they
  // time the wait for the slowest rank apart, the all-to-alls of the last
  // step, and the time of its transport's own all-to-all of one of them.
  virtual void measure_skew(bool) {}
  virtual void overlap_exchanges(int) {}
  virtual std::vector<TransferShape> last_transfers() const { return {}; }
  virtual double native_alltoallv_ms(const TransferShape&, Communicator::Caches) { return 0; }
  // Copy bandwidth of the memory the step runs in (GB/s, read + written),
  // which its floor is measured against: host memory unless overridden.
  virtual double copy_bandwidth_gbps(int threads) const;
};

using CaseFactory = std::function<std::unique_ptr<BenchCase>(const CaseSetup&)>;

// The factory of a case class built from a CaseSetup.
template <typename Case>
std::unique_ptr<BenchCase> construct_case(const CaseSetup& setup) {
  return std::make_unique<Case>(setup);
}

// A case's file registers it at namespace scope:
//   const CaseRegistration kRegistration("local", construct_case<LocalCase>);
// The harness asks for "local", "sharded", or "cuda" (a build without CUDA
// has none, and the sharded case then reports that the GPU is missing).
struct CaseRegistration {
  CaseRegistration(const std::string& name, CaseFactory make);
};
const CaseFactory* find_case(const std::string& name);

}  // namespace bench

// What `embtrain plan --bench OPTIONS` plans: the bench job those options
// describe, as rank 0 of `ranks` would run it (no data is drawn).
struct BenchJob {
  TableSpec spec;
  int64_t batch = 0, seq = 0, distinct_batches = 0;  // batch: rank 0's
  double zipf = 0, pad_frac = 0;
  bool pooled = false;  // bags (--pool, --bag), pooled at spec.pool_at
  std::string device;
};
BenchJob read_bench_job(int argc, char** argv, int ranks);
// A bench job's memory per rank (its shard of the table with the optimizer
// state, the batches drawn, the step's buffers): what plan --bench prints
// and bench refuses a job with when it does not fit.
MemoryPlan bench_memory_plan(const BenchJob& job, int ranks);

}  // namespace app
}  // namespace embtrain
