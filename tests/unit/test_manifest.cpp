// read_checkpoint_info on manifests that are not what a checkpoint writes:
// each must be an embtrain::Error naming the manifest, never a JSON
// library exception (fuzz_manifest found `"format": 5` escaping as
// json::type_error; tests/fuzz/corpus/manifest/wrong_types.json).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

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

}  // namespace
