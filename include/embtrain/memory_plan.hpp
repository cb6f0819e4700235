// The memory plan of a training run, per rank, made before anything big is
// allocated: the rank's shard of each table (weights and optimizer state),
// what the workload holds (its data) and the step's buffers. A run that
// will not fit the host's memory is refused with this table at once,
// instead of dying in the allocator after minutes of setup.
//
// Bytes are doubles: a row count from a config may be large enough for
// rows x dim x 4 to pass 2^63.
#pragma once

#include <string>
#include <vector>

#include "embtrain/communicator.hpp"
#include "embtrain/embedding_table.hpp"

namespace embtrain {

// What a workload will hold per rank, estimated from its settings before it
// loads or generates anything.
struct WorkloadEstimate {
  std::vector<std::pair<std::string, double>> rows;  // per table, where known before the data
  double data_bytes = 0;                             // its data (samples, corpus, hidden model)
  double step_bytes = 0;                             // its batch and gradients, and the engine's
  std::string data_what = "workload data";           // e.g. "synthetic clicks: hidden model"
  // Why the data cannot be sized (its file missing, say), or "": a plan
  // refuses it; a run reports it where it reads the data.
  std::string data_problem;
  // Per step per rank, for `embtrain plan`'s step time: ids looked up and
  // how many of them are distinct, per table (distinct 0: not known).
  struct Step {
    std::string table;
    double lookups = 0, distinct = 0;
  };
  std::vector<Step> step;
};

// On the CPU every line is host memory. A GPU run's plan (set_gpu) holds
// the tables' shards in the GPU's memory only (the host keeps no copy of a
// table), the step's buffers in both, the workload's data and the process
// on the host, which also holds the buffers that rows stream through to
// and from checkpoints and .npy files (add_transfer_buffers): its host
// memory is O(batch + chunk), not O(table). Lines marked `device` are what
// a GPU run holds in its GPU's memory.
class MemoryPlan {
 public:
  void set_gpu(bool gpu) { gpu_ = gpu; }
  bool gpu() const { return gpu_; }
  // `device`: also in the GPU's memory on a GPU run (the step's buffers).
  void add(std::string what, double bytes, bool device = false) {
    lines_.push_back({std::move(what), bytes, device, false});
  }
  // This rank's shard of `spec` (rows x dim, the largest shard over `ranks`):
  // on the GPU only in a GPU run.
  void add_table(const TableSpec& spec, double rows, int ranks);
  // A GPU run's host buffers for rows on their way (three transfer chunks,
  // transfer_chunk_bytes(): the pinned buffer, a chunk and a file window);
  // nothing on the CPU, which reads and writes its rows in place.
  void add_transfer_buffers();
  // The process itself (code, MPI, libraries): its resident memory when the
  // first plan is made, before the run allocates anything big.
  void add_process();
  // Host bytes (on a GPU run, less the lines only the GPU holds); device bytes.
  double total() const;
  double device_total() const;
  struct Line {
    std::string what;
    double bytes;
    bool device;       // in the GPU's memory on a GPU run
    bool device_only;  // ... and not in the host's
  };
  const std::vector<Line>& lines() const { return lines_; }
  // Whether the host holds `line` in this plan's run.
  bool on_host(const Line& line) const { return !(gpu_ && line.device_only); }
  // One line per item, e.g. "  table users (shard of 5,000 rows x 32): 1.2 MiB":
  // the host's lines, or with `device` the GPU's.
  std::string text(bool device = false) const;

 private:
  std::vector<Line> lines_;
  bool gpu_ = false;
};

// This process's resident memory now (VmRSS, or VmHWM: its peak), in
// bytes; -1 where /proc/self/status has no such line.
double process_memory_bytes(const char* key = "VmRSS");

// "1.5 GiB", "12.0 MiB", "512 B".
std::string bytes_text(double bytes);

// The memory this rank may use: what the host has available (MemAvailable,
// and the cgroup's limit less its use, whichever is smaller) shared by the
// `ranks_on_host` ranks there; `source` says where the figure came from.
// Negative when unknown (no /proc/meminfo).
double host_bytes_per_rank(int ranks_on_host, std::string* source);

// Refuses (AgreedError on every rank) a plan that does not fit this rank's
// share of its host's memory, with the plan and `advice`. A collective.
void check_memory_plan(Communicator& comm, int ranks_on_host, const MemoryPlan& plan,
                       const std::string& advice);

// "" when the plan's device lines fit this rank's share of GPU `device`
// (its free bytes over the `ranks_on_device` ranks of the host on it),
// else the error that says so, with those lines and `advice`: what
// CudaOptions::device_memory_check answers, which the engine asks once it
// has chosen the rank's GPU and before it allocates there.
std::string device_memory_error(const MemoryPlan& plan, int rank, int device,
                                int ranks_on_device, double free_bytes, double total_bytes,
                                const std::string& advice);

}  // namespace embtrain
