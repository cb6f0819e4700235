// What `embtrain train` reads from its configuration, and the memory plan
// it makes from it: shared with `embtrain plan`, which prints the same plan
// (and a predicted step time) without starting the run.
#pragma once

#include <string>
#include <vector>

#include "config.hpp"
#include "embtrain/memory_plan.hpp"
#include "embtrain/trainer.hpp"
#include "embtrain/workload.hpp"
#include "workload_registry.hpp"

namespace embtrain {
namespace app {

// What the [train], [log] and [checkpoint] keys fill in: the trainer's
// options and what this command needs besides.
struct RunKeys : TrainOptions {
  int64_t batch_size = 1024;
  int threads = 0;
  bool checkpoints_enabled = true;
  bool overwrite = false;       // log.overwrite
  std::string checkpoint_root;  // checkpoint.dir as given ("" = LOG_DIR/checkpoints)
};

// Everything the configuration says about the run.
struct RunSetup {
  Config config;
  const WorkloadEntry* workload = nullptr;
  RunKeys keys;
  std::vector<TableSetup> tables;
};

// Reads the INI file and the overrides of argv (as `command`, which error
// messages name); throws embtrain::Error naming the first bad key.
void read_setup(int argc, char** argv, RunSetup* setup, const std::string& command = "train");

// The context the workload is built in, for a rank of the run (comm may be
// null where nothing is built: plan).
WorkloadContext run_context(const RunSetup& setup, Communicator* comm);

// The memory plan of one rank of a run of `ranks` ranks (memory_plan.hpp):
// the tables whose rows the keys give or the workload's estimate knows (all
// of them once `workload` is built: its rows), the workload's data, the
// step buffers and this process's own resident memory before the run
// (code, MPI, libraries). `estimate` is the workload's (run_estimate).
MemoryPlan run_memory_plan(const RunSetup& setup, const WorkloadContext& context,
                           const WorkloadEstimate& estimate, int ranks, const Workload* workload);
WorkloadEstimate run_estimate(const RunSetup& setup, const WorkloadContext& context);

// Tables of the setup whose rows neither the keys nor the estimate give
// (known only once the workload reads its data).
std::vector<std::string> tables_of_unknown_rows(const RunSetup& setup,
                                                const WorkloadEstimate& estimate);

// What a run that does not fit is told to change.
extern const char kMemoryAdvice[];

}  // namespace app
}  // namespace embtrain
