// Workload: a model whose embedding tables are row-sharded. The trainer
// owns the loop, the tables, logging and checkpoints; a workload owns its
// data, its model math and its metrics.
//
// Batches are pure functions of (seed, rank, ranks, step): a resumed run
// sees exactly the batches the uninterrupted run would have seen, with no
// data cursor to save.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "embtrain/bags.hpp"
#include "embtrain/sharded_embedding.hpp"

namespace embtrain {

// What one rank did in one step.
struct StepOutput {
  double loss_sum = 0;   // summed over this rank's examples
  int64_t examples = 0;  // examples in the loss
  int64_t lookups = 0;   // ids looked up, over all tables
  int64_t words = 0;     // text workloads: corpus words consumed
};

// Where config key `key` got its value ("configs/x.ini:12", "command
// line", "default"), so that an error can name it; unset where no config
// is at hand (a workload built by code).
using KeySource = std::function<std::string(const std::string& key)>;
// " (SOURCE)" for `key`, or "" when `source` is unset.
std::string key_place(const KeySource& source, const std::string& key);

// What the trainer tells a workload when it creates it.
struct WorkloadContext {
  Communicator* comm = nullptr;
  uint64_t seed = 1;
  int64_t batch_size = 0;                     // examples per rank per step
  std::map<std::string, int64_t> table_dims;  // embedding_dim of each table, by name
  // The tables of kind = bag and their pooling mode, by name (bags.hpp).
  std::map<std::string, PoolMode> table_bags;
  std::string out_dir;                        // where the run writes its files
  KeySource key_source;                       // where each config key's value came from
};

class Workload {
 public:
  virtual ~Workload() = default;

  virtual std::string name() const = 0;
  // One line for the start-up log, e.g. "vocabulary 71,290 words".
  virtual std::string describe() const = 0;
  // Table names in the order of the ShardedEmbedding's tables.
  virtual std::vector<std::string> table_names() const = 0;
  // Rows table `name` needs (known once the data is loaded).
  virtual int64_t table_rows(const std::string& name) const = 0;
  // Steps that make one pass over the training data.
  virtual int64_t steps_per_epoch() const = 0;
  // Samples in one pass over the training data (recsys: examples; skipgram:
  // corpus positions), and samples per step over all ranks (train.batch_size
  // x ranks). Step s reads the samples from (s % steps_per_epoch()) x
  // global_batch() on, up to the epoch's end: the trainer counts epochs
  // from them, also across a resume with another number of ranks.
  virtual int64_t epoch_samples() const = 0;
  virtual int64_t global_batch() const = 0;
  // Text files that name what the tables hold (skipgram: "vocab.txt", the
  // word of every row), saved inside every checkpoint so that it can be
  // used alone; a resume refuses a checkpoint whose copy differs from this
  // run's (the data changed). Name -> contents; plain file names.
  virtual std::map<std::string, std::string> checkpoint_files() const { return {}; }
  // What identifies the data this rank read, e.g. "corpus.txt: 513,021
  // words, fingerprint 1f0c...": every rank must read the same. "" for data
  // that is a pure function of the configuration (synthetic).
  virtual std::string data_identity() const { return ""; }

  // Trains on the batch of `step` (0-based): lookups, loss and gradients,
  // backward and the optimizer step, and the allreduce of any dense
  // parameters. A collective: every rank calls it for every step.
  virtual StepOutput train_step(ShardedEmbedding& tables, int64_t step) = 0;

  // The step whose batch train_step() may start distributing ahead
  // (ShardedEmbedding::prefetch) once its own forward is done; -1: none.
  // The trainer sets it, the same on every rank, before each train_step.
  // A workload that ignores it trains the same, only without the overlap.
  void set_prefetch_step(int64_t step) { prefetch_step_ = step; }

  // What decides, once a step's loss is known and before its gradients are
  // applied, whether the step goes on: the trainer's check of a non-finite
  // loss and of a stop signal, agreed over the ranks (a collective). It
  // returns false to skip the step's backward and updates, and may throw
  // AgreedError to end the run.
  using StepGuard = std::function<bool(double loss_sum)>;
  void set_step_guard(StepGuard guard) { guard_ = std::move(guard); }
  // Whether train_step() called the guard since the last reset (a workload
  // that never calls it is checked by the trainer after its step instead).
  bool guard_called() const { return guard_called_; }
  void reset_guard_called() { guard_called_ = false; }

  // Held-out metrics reduced over ranks (same on every rank), e.g.
  // {"loss": 0.41, "auc": 0.83}. A collective.
  virtual std::map<std::string, double> evaluate(ShardedEmbedding& tables) = 0;
  // Metrics of a reference the run can be judged against, e.g. the AUC of
  // the hidden ground-truth model on the same held-out data; may be empty.
  virtual std::map<std::string, double> reference_metrics() { return {}; }

  // Data-parallel parameters, identical on every rank (checkpointed).
  virtual std::vector<float>* dense_parameters() { return nullptr; }

  // When training starts (the run's folder claimed, nothing written there
  // yet): files for the user into `out_dir`. Rank 0 only; may throw.
  virtual void start(const std::string& out_dir) { (void)out_dir; }

  // After training: reports and exports (nearest neighbours, vectors) into
  // `out_dir`. A collective; rank 0 prints.
  virtual void finish(ShardedEmbedding& tables, const std::string& out_dir) {
    (void)tables;
    (void)out_dir;
  }

 protected:
  int64_t prefetch_step() const { return prefetch_step_; }
  // train_step() calls this with its rank's loss after the forward and
  // before backward, on every rank for every step; false: skip the
  // backward, the table updates and the dense parameters' update.
  bool apply_step(double loss_sum) {
    guard_called_ = true;
    return guard_ ? guard_(loss_sum) : true;
  }

 private:
  int64_t prefetch_step_ = -1;
  StepGuard guard_;
  bool guard_called_ = false;
};

}  // namespace embtrain
