// The training loop: builds the sharded tables a workload asks for (fresh,
// from a .npy, or from a checkpoint), runs the steps with one line of
// progress on rank 0, writes metrics as JSON lines, evaluates, checkpoints,
// and resumes exactly where a checkpoint left off.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "embtrain/communicator.hpp"
#include "embtrain/embedding_table.hpp"
#include "embtrain/workload.hpp"

namespace embtrain {

// How one table starts (before any checkpoint is loaded).
struct TableSetup {
  TableSpec spec;              // rows may be 0: then the workload's count is used
  std::string init = "normal";  // normal (N(0, init_std^2)) | zeros | path of a .npy
  double init_std = 1.0;
};

struct TrainOptions {
  std::string workload;
  int64_t steps = 0;    // total steps; 0 means epochs * steps_per_epoch
  double epochs = 1;
  uint64_t seed = 1;
  int64_t log_interval = 100;  // steps between progress lines
  int64_t eval_every = 0;      // steps between evaluations; 0: at start and end only
  std::string out_dir;         // metrics.jsonl and config.ini go here
  std::string checkpoint_dir;  // "" disables checkpoints
  int64_t checkpoint_every = 0;  // steps; 0: only at the end
  int checkpoint_keep = 3;       // newest checkpoints kept (0: all)
  std::string resume;            // "": fresh run; a checkpoint folder or root
  // Keys a resume may change besides the always-free ones (steps, log.*,
  // ...): see check_resume_config.
  std::vector<std::string> allow_changes;
  std::string config_text;       // effective configuration, saved with checkpoints
  bool quiet = false;            // no progress lines (tests)
  // Each step starts distributing the next step's ids before its backward
  // (ShardedEmbedding::prefetch); the trained bits are the same either way.
  bool pipeline = true;
  std::string device = "cpu";    // cpu | cuda: where the tables live and the step runs
  CudaOptions cuda;              // with device cuda
};

struct TrainSummary {
  int64_t first_step = 0, steps = 0;  // this run trained steps [first_step, steps)
  double seconds = 0;
  double lookups_per_s = 0, words_per_s = 0;
  double final_train_loss = 0;
  int64_t prefetched_steps = 0;  // steps whose ids were distributed a step ahead
  std::map<std::string, double> eval_start, eval_end, reference;
};

// Builds the tables of `workload` on this rank (rows from the workload when
// the setup leaves them 0) and starts them as their setup says.
ShardedEmbedding build_tables(const Workload& workload, std::vector<TableSetup> setups,
                              Communicator& comm, uint64_t seed);

TrainSummary train(Workload& workload, const std::vector<TableSetup>& setups,
                   const TrainOptions& options, Communicator& comm);

}  // namespace embtrain
