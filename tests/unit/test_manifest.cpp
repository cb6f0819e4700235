// read_checkpoint_info on manifests that are not what a checkpoint writes:
// each must be an embtrain::Error naming the manifest, never a JSON
// library exception (fuzz_manifest found `"format": 5` escaping as
// json::type_error; tests/fuzz/corpus/manifest/wrong_types.json).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>

#include "embtrain/checkpoint.hpp"
#include "embtrain/errors.hpp"

namespace {

namespace fs = std::filesystem;

TEST(CheckpointManifest, MalformedManifestsAreErrorsNamingThem) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("embtrain_manifest_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const char* manifests[] = {
      R"({"format": 5, "version": "1", "step": -3, "rng": []})",
      R"([1, 2, 3])",
      R"("embtrain-checkpoint")",
      R"({"format": "embtrain-checkpoint", "version": 1, "step": "x", "rng": {"seed": 1}})",
      R"({"format": "embtrain-checkpoint", "version": 1, "step": 3, "rng": 7})",
      R"({"format": "embtrain-checkpoint", "version": 1, "st)",
  };
  for (const char* text : manifests) {
    std::ofstream(dir / "manifest.json", std::ios::trunc) << text;
    try {
      embtrain::read_checkpoint_info(dir.string());
      ADD_FAILURE() << "read without an error: " << text;
    } catch (const embtrain::Error& e) {
      EXPECT_NE(std::string(e.what()).find(dir.string()), std::string::npos) << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not an embtrain::Error for " << text << ": " << e.what();
    }
  }
  fs::remove_all(dir);
}

// The "texts" a manifest names are plain file names, listed once with a
// size and checksum: a manifest cannot make a reader open a path outside
// its folder (nor take the name of the manifest or a shard).
TEST(CheckpointManifest, TextFilesArePlainListedNames) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("embtrain_manifest_texts_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string head =
      R"({"format": "embtrain-checkpoint", "version": 2, "step": 3, "ranks": 1,)"
      R"( "rng": {"seed": 1}, "tables": [],)";
  const std::pair<const char*, const char*> bad[] = {
      {R"( "texts": ["../../etc/passwd"], "files": {}})", "not a plain file name"},
      {R"( "texts": ["/etc/passwd"], "files": {}})", "not a plain file name"},
      {R"( "texts": ["manifest.json"], "files": {}})", "not a plain file name"},
      {R"( "texts": [".hidden"], "files": {}})", "not a plain file name"},
      {R"( "texts": ["x.npy"], "files": {}})", "not a plain file name"},
      {R"( "texts": [7], "files": {}})", "not a plain file name"},
      {R"( "texts": "vocab.txt", "files": {}})", "'texts' is not a list"},
      {R"( "texts": ["vocab.txt", "vocab.txt"], "files": {}})", "twice"},
      {R"( "texts": ["vocab.txt"], "files": {}})", "vocab.txt has no size and checksum"},
      {R"( "progress": {"samples": -1, "global_batch": 1, "epoch_samples": 1}, "files": {}})",
       "'samples' = -1 is out of range"},
  };
  for (const auto& [tail, why] : bad) {
    std::ofstream(dir / "manifest.json", std::ios::trunc) << head << tail;
    try {
      embtrain::read_checkpoint_info(dir.string());
      ADD_FAILURE() << "read without an error: " << tail;
    } catch (const embtrain::Error& e) {
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
  }
  std::ofstream(dir / "manifest.json", std::ios::trunc)
      << head << R"( "texts": ["vocab.txt", "config.ini"], "files": {"vocab.txt": {"bytes": 4,)"
      << R"( "crc32c": "00000000"}, "config.ini": {"bytes": 0, "crc32c": "00000000"}},)"
      << R"( "progress": {"samples": 70, "global_batch": 8, "epoch_samples": 50}})";
  const embtrain::CheckpointInfo info = embtrain::read_checkpoint_info(dir.string());
  EXPECT_EQ(info.files.size(), 2u);
  EXPECT_TRUE(info.files.count("vocab.txt") && info.files.count("config.ini"));
  EXPECT_EQ(info.progress.samples, 70);
  EXPECT_EQ(info.progress.global_batch, 8);
  EXPECT_EQ(info.progress.epoch_samples, 50);
  // The file is missing: reading it is an error naming it, not "absent".
  std::string text;
  try {
    embtrain::read_checkpoint_file(dir.string(), "vocab.txt", &text);
    ADD_FAILURE() << "a missing vocab.txt read without an error";
  } catch (const embtrain::Error& e) {
    EXPECT_NE(std::string(e.what()).find("vocab.txt is missing"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(embtrain::read_checkpoint_file(dir.string(), "other.txt", &text));
  fs::remove_all(dir);
}

}  // namespace
