// Checkpoints of a sharded training run: one .npy per rank per table for
// the weights and one for the optimizer state, a dense.npy for
// data-parallel parameters, and a JSON manifest (tables, shapes, plan,
// step, RNG state, config, and the size and CRC-32C of every file).
//
//   ROOT/step_00001200/manifest.json
//   ROOT/step_00001200/<table>.rank<r>.weights.npy   (rows_r x dim)
//   ROOT/step_00001200/<table>.rank<r>.state.npy     (rows_r x state_width)
//   ROOT/step_00001200/dense.npy
//   ROOT/step_00001200/config.ini, vocab.txt, ...    (CheckpointInfo::files)
//   ROOT/latest                                      (name of the newest)
//
// A checkpoint folder is usable alone: besides the tables it holds the
// run's configuration and what names the tables' rows (skipgram's
// vocabulary), checksummed like every other file.
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
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "embtrain/sharded_embedding.hpp"

namespace embtrain {

// How much data the run behind a checkpoint has consumed. Batches are
// pure functions of (seed, rank, ranks, step), so with a fixed number of
// ranks the step says it all; a resume with other ranks changes the global
// batch, and only the samples counted so far say how many epochs are done.
struct DataProgress {
  int64_t samples = -1;       // samples consumed by steps [0, step); -1: not recorded
  int64_t global_batch = 0;   // samples per step (all ranks) of the run that saved it
  int64_t epoch_samples = 0;  // samples in one pass over the training data
};

struct CheckpointInfo {
  std::string workload;
  int64_t step = 0;  // steps completed; training resumes at this step
  uint64_t seed = 0;
  std::string config;  // effective configuration (INI text)
  int ranks = 0;       // ranks that wrote it (read back; a save takes the communicator's)
  DataProgress progress;
  // Text files saved inside the checkpoint folder (name -> contents) and
  // listed with their size and checksum: config.ini, a workload's
  // vocabulary. Names are plain file names (letters, digits, '.', '_',
  // '-'). On reading, the names the checkpoint holds (contents not read).
  std::map<std::string, std::string> files;
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

// Where the checkpoints of `path` are: `path` itself when it holds one,
// else a run's folder (log.dir) stands for its checkpoints/ when that holds
// one; "" when neither does.
std::string checkpoints_at(const std::string& path);

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

// The text file `name` saved in checkpoint folder `dir` (CheckpointInfo::
// files), verified against its recorded size and checksum. False when the
// checkpoint holds no such file (one written before it had them); throws
// Error when the file is missing, truncated or corrupt.
bool read_checkpoint_file(const std::string& dir, const std::string& name, std::string* text);

// Loads a checkpoint into `tables`, re-sharding when it was written by a
// different number of ranks. Tables must match by name, rows, dim and
// optimizer, files their checksums, rows be finite, or it throws
// AgreedError saying what differs. A collective.
CheckpointInfo load_checkpoint(const std::string& dir, ShardedEmbedding& tables,
                               std::vector<float>* dense);

// One table of a checkpoint read and verified in this process, a chunk of
// rows at a time (transfer_chunk_bytes()): *rows and *dim are set, then
// visit(first, n, data) sees rows [first, first + n) in order (n x dim
// floats, valid during the call). Every shard file is verified first, and
// a non-finite row throws.
void read_checkpoint_table(const std::string& dir, const std::string& table, int64_t* rows,
                           int64_t* dim,
                           const std::function<void(int64_t, int64_t, const float*)>& visit);

// Whether config key `key` matches `pattern`, where '*' stands for any
// text (checkpoint.allow_changes' entries).
bool key_matches(const std::string& key, const std::string& pattern);

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
// The same for this rank's shard of table t (a local row), read a chunk at
// a time on a GPU.
int64_t first_nonfinite_row(const ShardedEmbedding& tables, int t, TablePart part);

}  // namespace embtrain
