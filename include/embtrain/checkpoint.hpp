// Checkpoints of a sharded training run: one .npy per rank per table for
// the weights and one for the optimizer state, a dense.npy for
// data-parallel parameters, and a JSON manifest (tables, shapes, plan,
// step, RNG state, config). Written to a temporary folder and renamed into
// place, then `latest` is swapped atomically: a crash while saving leaves
// the previous checkpoint intact.
//
//   ROOT/step_00001200/manifest.json
//   ROOT/step_00001200/<table>.rank<r>.weights.npy   (rows_r x dim)
//   ROOT/step_00001200/<table>.rank<r>.state.npy     (rows_r x state_width)
//   ROOT/step_00001200/dense.npy
//   ROOT/latest                                      (name of the newest)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "embtrain/sharded_embedding.hpp"

namespace embtrain {

struct CheckpointInfo {
  std::string workload;
  int64_t step = 0;  // steps completed; training resumes at this step
  uint64_t seed = 0;
  std::string config;  // effective configuration (INI text)
};

// Saves under `root` as step_<step>; keeps the newest `keep` checkpoints
// (0 keeps all). A collective; returns the checkpoint's folder.
std::string save_checkpoint(const std::string& root, const CheckpointInfo& info,
                            ShardedEmbedding& tables, const std::vector<float>* dense,
                            int keep);

// The checkpoint folder `path` names: a checkpoint folder itself, or a root
// whose `latest` names one. "" when `path` is a root with no checkpoint yet.
std::string resolve_checkpoint(const std::string& path);

// Reads the manifest of a checkpoint folder.
CheckpointInfo read_checkpoint_info(const std::string& dir);

// Loads a checkpoint into `tables`, re-sharding when it was written by a
// different number of ranks. Tables must match by name, rows, dim and
// optimizer, or it throws embtrain::Error saying what differs. A collective.
CheckpointInfo load_checkpoint(const std::string& dir, ShardedEmbedding& tables,
                               std::vector<float>* dense);

// One whole table of a checkpoint (rows x dim), read in this process.
std::vector<float> read_checkpoint_table(const std::string& dir, const std::string& table,
                                         int64_t* rows, int64_t* dim);

}  // namespace embtrain
