// The training loop: builds the sharded tables a workload asks for (fresh,
// from a .npy, or from a checkpoint), runs the steps with one line of
// progress on rank 0, writes metrics as JSON lines, evaluates, checkpoints,
// and resumes exactly where a checkpoint left off.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "embtrain/bags.hpp"
#include "embtrain/communicator.hpp"
#include "embtrain/embedding_table.hpp"
#include "embtrain/workload.hpp"

namespace embtrain {

// How one table starts (before any checkpoint is loaded).
struct TableSetup {
  TableSpec spec;              // rows may be 0: then the workload's count is used
  std::string init = "normal";  // normal (N(0, init_std^2)) | zeros | path of a .npy
  double init_std = 1.0;
  // kind = bag: the workload looks the table up as torch.nn.EmbeddingBag,
  // pooling by `mode` (bags.hpp), where spec.pool_at says.
  bool bag = false;
  PoolMode mode = PoolMode::kMean;
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
  double checkpoint_minutes = 0;  // also when this long since the last (rank 0's clock); 0: not
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
  // Rows and gradients travel in this many slices, the owners' gathers and
  // updates running while the next slices move
  // (ShardedEmbedding::overlap_exchanges); the same bits.
  int overlap_chunks = 1;
  // Where each config key's value came from, for errors (unset: not known).
  KeySource key_source;
  // A step whose loss is NaN or infinite on any rank: "stop" ends the run
  // with an error before the step's gradients are applied; "skip_step"
  // skips the step (no backward, no updates) and goes on, and stops after
  // kMaxSkippedInARow such steps in a row.
  std::string on_nonfinite = "stop";
  // Seconds a rank may make no progress (waiting in a collective for a rank
  // that stopped, say) before the watchdog ends the job; 0: never.
  double collective_timeout_s = 600;
  std::string device = "cpu";    // cpu | cuda: where the tables live and the step runs
  CudaOptions cuda;              // with device cuda
  // Called on rank 0, in an agreed section, once the run is set up (tables
  // built and initialised, a checkpoint resumed) and before anything is
  // written into out_dir: `embtrain train` removes the run it replaces
  // (log.overwrite) and writes config.ini there then, so a run that fails
  // to start leaves the folder as it found it. Null: nothing.
  std::function<void()> claim_out_dir;
};

// Steps in a row that train.on_nonfinite = skip_step skips before it gives
// up: a run that keeps producing NaN has diverged.
constexpr int64_t kMaxSkippedInARow = 20;

struct TrainSummary {
  int64_t first_step = 0, steps = 0;  // this run trained steps [first_step, steps)
  double seconds = 0;
  double lookups_per_s = 0, words_per_s = 0;
  double final_train_loss = 0;
  int64_t prefetched_steps = 0;  // steps whose ids were distributed a step ahead
  int64_t sliced_steps = 0;      // steps whose rows and gradients moved in slices
  int64_t skipped_steps = 0;     // steps skipped for a non-finite loss (skip_step)
  // Bytes the exchanges of a training step sent to other ranks, all ranks
  // together (ids, rows, gradients; eval forwards left out), on average.
  double exchange_bytes_per_step = 0;
  int stop_signal = 0;           // SIGTERM, SIGINT or SIGUSR1 when one ended the run early
  std::map<std::string, double> eval_start, eval_end, reference;
};

// Builds the tables of `workload` on this rank (rows from the workload when
// the setup leaves them 0) and starts them as their setup says, on the CPU
// or, with device "cuda", on this rank's GPU (use_cuda): fresh rows are
// then drawn there and a .npy streams there, with no host copy of a table.
// `key_source` says where the table keys' values came from, for the errors
// that name them (rows, padding_idx).
ShardedEmbedding build_tables(const Workload& workload, std::vector<TableSetup> setups,
                              Communicator& comm, uint64_t seed, const std::string& device = "cpu",
                              const CudaOptions& cuda = {}, const KeySource& key_source = {});

// Runs the steps. SIGTERM, SIGINT or SIGUSR1 on any rank stops every rank
// after the step in progress, with a checkpoint (summary.stop_signal says
// which signal).
TrainSummary train(Workload& workload, const std::vector<TableSetup>& setups,
                   const TrainOptions& options, Communicator& comm);

// This program as a shell would run it again from the working folder: its
// path relative to that folder when under it ("./embtrain" for one there,
// which a shell would otherwise look up on PATH), else absolute.
std::string program_path();

}  // namespace embtrain
