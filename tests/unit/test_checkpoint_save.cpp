// save_checkpoint's own check of what it writes: a table holding a NaN or
// an infinity, in its weights or its optimizer state, the padding row too
// (which no step reads), is refused, naming the table, the row and the
// rank, and nothing is left under the root (the partly written folder
// removed). Inputs cannot bring such rows in any more (init files and
// checkpoints are checked as they load), so the library is driven here.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "embtrain/checkpoint.hpp"
#include "embtrain/communicator.hpp"
#include "embtrain/errors.hpp"
#include "test_util.hpp"

namespace {

namespace fs = std::filesystem;

TEST(CheckpointSave, RefusesNonFiniteRowsAndLeavesNothing) {
  const uint64_t seed = embtrain_test::test_seed();
  SCOPED_TRACE(embtrain_test::seed_trace(seed));
  std::mt19937_64 rng(seed);
  const float inf = std::numeric_limits<float>::infinity();
  const fs::path work = fs::temp_directory_path() / ("checkpoint_save_" + std::to_string(seed));
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), inf, -inf})
    for (embtrain::TablePart part : {embtrain::TablePart::kWeights, embtrain::TablePart::kState}) {
      embtrain::TableSpec spec;
      spec.name = "items";
      spec.num_embeddings = 50;
      spec.dim = 4;
      spec.padding_idx = 0;
      spec.optimizer.kind = embtrain::OptimizerKind::kAdagrad;  // a state row per row
      auto comm = embtrain::make_self_communicator();
      embtrain::ShardedEmbedding tables({spec}, comm.get(), seed);
      const int64_t row = rng() % 2 ? 0 : static_cast<int64_t>(rng() % 50);  // padding half the time
      const bool weights = part == embtrain::TablePart::kWeights;
      std::vector<float> values(4);
      tables.read_rows(0, part, row, 1, values.data());
      values[rng() % 4] = bad;
      tables.write_rows(0, part, row, 1, values.data());
      const fs::path root = work / "checkpoints";
      embtrain::CheckpointInfo info;
      info.workload = "test";
      info.step = 4;
      SCOPED_TRACE("value " + std::to_string(bad) + " in row " + std::to_string(row) + "'s " +
                   (weights ? "weights" : "state"));
      try {
        embtrain::save_checkpoint(root.string(), info, tables, nullptr, 3);
        ADD_FAILURE() << "saved";
      } catch (const embtrain::Error& e) {
        const std::string want = "checkpoint at step 4: table 'items' row " + std::to_string(row) +
                                 " (rank 0) holds a non-finite " +
                                 (weights ? "weight" : "optimizer state value");
        EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
      }
      EXPECT_TRUE(!fs::exists(root) || fs::is_empty(root)) << "left under " << root;
      fs::remove_all(work);
    }
}

}  // namespace
