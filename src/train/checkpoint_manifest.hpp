// A checkpoint's manifest read without trusting it: every number is range-
// and overflow-checked, every table's shards must cover its rows exactly
// once (one shard per rank 0..P-1, each the rows its plan gives that rank),
// and every file it names must be listed with its size and CRC-32C. Errors
// name the checkpoint, the table, the shard and the valid range.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "durable_file.hpp"
#include "embtrain/checkpoint.hpp"
#include "embtrain/shard_plan.hpp"
#include "nlohmann/json.hpp"

namespace embtrain {

constexpr const char* kCheckpointFormat = "embtrain-checkpoint";
// 2: the "files" map of sizes and checksums. 1 (no checksums) still loads.
// Version 2 manifests may also list "texts" (config.ini, a vocabulary) and
// "progress" (samples consumed); those written before them load without.
constexpr int kCheckpointVersion = 2;

struct ManifestShard {
  int rank = 0;
  int64_t rows = 0;
  std::string weights, state;  // file names in the checkpoint folder
};

struct ManifestTable {
  std::string name, optimizer;
  int64_t rows = 0, dim = 0, state_width = 0, optimizer_step = 0;
  ShardPlan::Layout layout = ShardPlan::Layout::kBlock;
  std::vector<ManifestShard> shards;  // shards[r] is rank r's

  ShardPlan plan() const {
    return ShardPlan(rows, static_cast<int>(shards.size()), layout);
  }
};

struct Manifest {
  std::string dir;
  int version = 0;
  std::string workload, config;
  int64_t step = 0;
  int ranks = 0;
  uint64_t seed = 0;
  std::vector<ManifestTable> tables;
  std::string dense;                     // "" when there is none
  std::vector<std::string> texts;        // text files (config.ini, vocab.txt, ...)
  std::map<std::string, FileSum> files;  // version >= 2: every file's size and checksum
  DataProgress progress;                 // samples = -1 when not recorded

  const ManifestTable& table(const std::string& name) const;
  std::string path(const std::string& file) const;
};

// Reads and checks DIR/manifest.json.
Manifest read_manifest(const std::string& dir);

// Checks one file of the checkpoint against the manifest: its size and
// CRC-32C (version 1: that it exists).
void verify_file(const Manifest& m, const std::string& file);

// Every file the manifest names, in a fixed order.
std::vector<std::string> manifest_files(const Manifest& m);

// Whether `name` may name a text file of a checkpoint: a plain file name of
// letters, digits, '.', '_' and '-', not starting with '.', at most 64
// characters, and none of the names the checkpoint's own files take.
bool is_text_file_name(const std::string& name);

// The file names a checkpoint gives rank r's shard of a table.
std::string shard_file(const std::string& table, int rank, const char* what);

// The manifest as JSON (the inverse of read_manifest).
nlohmann::json manifest_json(const Manifest& m);

}  // namespace embtrain
