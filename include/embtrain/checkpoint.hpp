// Checkpoints of a sharded training run: one .npy per rank per table for
// the weights and one for the optimizer state, a dense.npy for
// data-parallel parameters, and a JSON manifest (tables, shapes, plan,
// step, RNG state, config, and the size and CRC-32C of every file).
//
//   ROOT/step_00001200/manifest.json
//   ROOT/step_00001200/<table>.rank<r>.weights.npy   (rows_r x dim)
//   ROOT/step_00001200/<table>.rank<r>.state.npy     (rows_r x state_width)
//   ROOT/step_00001200/dense.npy
//   ROOT/latest                                      (name of the newest)
//
// What is guaranteed (see "Failures and recovery" in the README):
// - A save refuses non-finite weights or state before it writes anything.
// - Every file is written to ROOT/.step_N.tmp and fsynced; the manifest,
//   written last, records each file's size and checksum; the folder is
//   synced and renamed into place, then `latest` is replaced atomically.
//   Re-saving a step swaps the new folder in before the old one is
//   deleted. A crash at any point leaves every complete checkpoint intact.
// - Stale temporaries of dead runs are removed at the start of a save.
// - A load checks the manifest (ranges, overflow, every row in exactly one
//   shard), each file's size and checksum, and that the rows are finite.
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
// (0 keeps all). A collective; returns the checkpoint's folder. Throws
// AgreedError on every rank when any rank fails (disk full, non-finite
// rows), leaving the previous checkpoints as they were.
std::string save_checkpoint(const std::string& root, const CheckpointInfo& info,
                            ShardedEmbedding& tables, const std::vector<float>* dense,
                            int keep);

// Whether `path` is a checkpoint folder or a root holding `latest` or a
// step_* folder (without verifying anything).
bool holds_checkpoint(const std::string& path);

// The checkpoint to load that `path` names, verified: `path` itself when it
// is a checkpoint folder (load_checkpoint verifies it); for a root, the one
// `latest` names if it verifies (manifest and every file's checksum), else
// the newest step_* that does. Appends to `notes` (the same on every rank)
// why it skipped any. "" when the root holds no checkpoint at all; throws
// AgreedError when it holds some but none verifies. A collective.
std::string find_checkpoint(Communicator& comm, const std::string& path,
                            std::vector<std::string>* notes);

// Reads the manifest of a checkpoint folder.
CheckpointInfo read_checkpoint_info(const std::string& dir);

// Loads a checkpoint into `tables`, re-sharding when it was written by a
// different number of ranks. Tables must match by name, rows, dim and
// optimizer, files their checksums, rows be finite, or it throws
// AgreedError saying what differs. A collective.
CheckpointInfo load_checkpoint(const std::string& dir, ShardedEmbedding& tables,
                               std::vector<float>* dense);

// One whole table of a checkpoint (rows x dim), read and verified in this
// process.
std::vector<float> read_checkpoint_table(const std::string& dir, const std::string& table,
                                         int64_t* rows, int64_t* dim);

// Refuses a resume whose configuration changes a key that decides what the
// checkpoint holds (seed, data, tables, ...): throws Error naming each such
// key with its saved and current value. Keys that may change freely (steps,
// epochs, threads, log.*, checkpoint.*, ...) and those `allowed` names
// (keys, where '*' matches any text: "recsys.*", "table.*.lr") pass. `saved` and `current` are
// effective configurations (INI text); keys missing from either pass.
void check_resume_config(const std::string& dir, const std::string& saved,
                         const std::string& current, const std::vector<std::string>& allowed);

// The first of `rows` rows (`width` floats each) holding a NaN or an
// infinity, or -1.
int64_t first_nonfinite_row(const float* data, int64_t rows, int64_t width);

}  // namespace embtrain
