// ShardPlan against its contract (include/embtrain/shard_plan.hpp): contiguous
// row blocks covering [0, rows) exactly, sizes differing by at most one with
// the lower ranks taking the extra rows, and owner/local_row/global_row
// consistent both ways. The expected sizes are computed here from the
// contract, not read back from the plan.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "embtrain/errors.hpp"
#include "embtrain/shard_plan.hpp"
#include "test_util.hpp"

namespace {

using embtrain::ShardPlan;
using embtrain_test::seed_trace;
using embtrain_test::test_seed;

// The block structure, every rank's size from the contract, and (when
// `every_row`) owner/local_row/global_row for every row; otherwise for the
// rows at and around each block boundary plus random ones.
void check_plan(int64_t rows, int ranks, bool every_row, std::mt19937_64& rng) {
  SCOPED_TRACE("rows " + std::to_string(rows) + ", ranks " + std::to_string(ranks));
  const ShardPlan plan(rows, ranks);
  ASSERT_EQ(plan.num_rows(), rows);
  ASSERT_EQ(plan.num_ranks(), ranks);

  const int64_t base = rows / ranks, extra = rows % ranks;
  int64_t next = 0, min_size = std::numeric_limits<int64_t>::max(), max_size = -1;
  for (int r = 0; r < ranks; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    ASSERT_EQ(plan.row_begin(r), next) << "blocks must be contiguous, in rank order";
    ASSERT_LE(plan.row_begin(r), plan.row_end(r));
    ASSERT_EQ(plan.shard_rows(r), plan.row_end(r) - plan.row_begin(r));
    // Lower ranks take the extra rows: ranks [0, rows % ranks) hold one more.
    ASSERT_EQ(plan.shard_rows(r), base + (r < extra ? 1 : 0));
    if (r > 0) {
      ASSERT_LE(plan.shard_rows(r), plan.shard_rows(r - 1));
    }
    min_size = std::min(min_size, plan.shard_rows(r));
    max_size = std::max(max_size, plan.shard_rows(r));
    next = plan.row_end(r);
  }
  ASSERT_EQ(next, rows) << "blocks must cover [0, rows) exactly";
  ASSERT_LE(max_size - min_size, 1);
  if (rows < ranks) {
    // Fewer rows than ranks: the first `rows` ranks hold one row each.
    for (int r = 0; r < ranks; ++r) ASSERT_EQ(plan.shard_rows(r), r < rows ? 1 : 0);
  }

  auto check_row = [&](int64_t row) {
    const int owner = plan.owner(row);
    ASSERT_GE(owner, 0);
    ASSERT_LT(owner, ranks);
    ASSERT_GE(row, plan.row_begin(owner)) << "row " << row << " owner " << owner;
    ASSERT_LT(row, plan.row_end(owner)) << "row " << row << " owner " << owner;
    const int64_t local = plan.local_row(row);
    ASSERT_EQ(local, row - plan.row_begin(owner)) << "row " << row;
    ASSERT_EQ(plan.global_row(owner, local), row) << "row " << row;
  };
  if (every_row) {
    for (int64_t row = 0; row < rows; ++row) ASSERT_NO_FATAL_FAILURE(check_row(row));
    // And the other way: every (rank, local row) maps to a row that maps back.
    for (int r = 0; r < ranks; ++r)
      for (int64_t local = 0; local < plan.shard_rows(r); ++local) {
        const int64_t row = plan.global_row(r, local);
        ASSERT_EQ(plan.owner(row), r) << "rank " << r << " local " << local;
        ASSERT_EQ(plan.local_row(row), local) << "rank " << r << " local " << local;
      }
    return;
  }
  for (int r = 0; r < ranks; ++r) {
    if (plan.shard_rows(r) == 0) continue;
    for (int64_t row :
         {plan.row_begin(r), plan.row_begin(r) + 1, plan.row_end(r) - 2, plan.row_end(r) - 1}) {
      if (row < plan.row_begin(r) || row >= plan.row_end(r)) continue;
      ASSERT_NO_FATAL_FAILURE(check_row(row));
      ASSERT_EQ(plan.owner(row), r) << "row " << row;
    }
  }
  if (rows > 0) {
    std::uniform_int_distribution<int64_t> pick(0, rows - 1);
    for (int k = 0; k < 2000; ++k) ASSERT_NO_FATAL_FAILURE(check_row(pick(rng)));
  }
}

TEST(ShardPlan, SmallTablesEveryRow) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const std::vector<int64_t> rows_list = {0,  1,  2,  3,  4,  5,  6,  7,   8,   9,    10,   11,
                                          15, 16, 17, 31, 63, 64, 65, 100, 127, 1000, 1001, 4099};
  const std::vector<int> ranks_list = {1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 64, 100, 1000};
  for (int64_t rows : rows_list)
    for (int ranks : ranks_list) ASSERT_NO_FATAL_FAILURE(check_plan(rows, ranks, true, rng));
}

TEST(ShardPlan, RowsAroundRankCount) {
  // rows = ranks - 1, ranks, ranks + 1 and multiples: the edges of the
  // "extra rows" rule.
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int ranks = 1; ranks <= 40; ++ranks)
    for (int64_t rows : {int64_t{ranks} - 1, int64_t{ranks}, int64_t{ranks} + 1,
                         2 * int64_t{ranks} - 1, 2 * int64_t{ranks}, 3 * int64_t{ranks} + 2})
      if (rows >= 0) {
        ASSERT_NO_FATAL_FAILURE(check_plan(rows, ranks, true, rng));
      }
}

TEST(ShardPlan, RandomSizes) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> rows_dist(0, 5000);
  std::uniform_int_distribution<int> ranks_dist(1, 300);
  for (int k = 0; k < 200; ++k)
    ASSERT_NO_FATAL_FAILURE(check_plan(rows_dist(rng), ranks_dist(rng), true, rng));
}

TEST(ShardPlan, BigTablesSampled) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const std::vector<int64_t> rows_list = {int64_t{1000000000000},
                                          int64_t{1000000000000} + 1,
                                          int64_t{1000000000000} + 6,
                                          (int64_t{1} << 31) + 3,
                                          (int64_t{1} << 40) - 1,
                                          int64_t{1} << 62,
                                          std::numeric_limits<int64_t>::max() / 2};
  const std::vector<int> ranks_list = {1, 2, 3, 7, 8, 1000, 4093, 65536};
  for (int64_t rows : rows_list)
    for (int ranks : ranks_list) ASSERT_NO_FATAL_FAILURE(check_plan(rows, ranks, false, rng));
  // A random big case on top of the fixed ones.
  std::uniform_int_distribution<int64_t> rows_dist(int64_t{1} << 32, int64_t{1} << 50);
  std::uniform_int_distribution<int> ranks_dist(1, 100000);
  for (int k = 0; k < 20; ++k)
    ASSERT_NO_FATAL_FAILURE(check_plan(rows_dist(rng), ranks_dist(rng), false, rng));
}

TEST(ShardPlan, ExampleByHand) {
  // 10 rows over 4 ranks: 3, 3, 2, 2.
  const ShardPlan plan(10, 4);
  EXPECT_EQ(plan.row_begin(0), 0);
  EXPECT_EQ(plan.row_begin(1), 3);
  EXPECT_EQ(plan.row_begin(2), 6);
  EXPECT_EQ(plan.row_begin(3), 8);
  EXPECT_EQ(plan.row_end(3), 10);
  EXPECT_EQ(plan.owner(5), 1);
  EXPECT_EQ(plan.owner(6), 2);
  EXPECT_EQ(plan.owner(9), 3);
  EXPECT_EQ(plan.local_row(7), 1);
  EXPECT_EQ(plan.global_row(3, 1), 9);
}

// The cyclic layout against its contract, computed here: row r on rank
// r % P as local row r / P; sizes differ by at most one, lower ranks larger;
// keys sort rows by (owner, local row) inside each owner's key range; the
// shard copies put every row back where it came from.
void check_cyclic(int64_t rows, int ranks) {
  SCOPED_TRACE("cyclic, rows " + std::to_string(rows) + ", ranks " + std::to_string(ranks));
  const ShardPlan plan(rows, ranks, ShardPlan::Layout::kCyclic);
  int64_t total = 0;
  for (int r = 0; r < ranks; ++r) {
    ASSERT_EQ(plan.shard_rows(r), rows / ranks + (r < rows % ranks ? 1 : 0));
    total += plan.shard_rows(r);
  }
  ASSERT_EQ(total, rows);
  for (int64_t row = 0; row < rows; ++row) {
    ASSERT_EQ(plan.owner(row), static_cast<int>(row % ranks)) << "row " << row;
    ASSERT_EQ(plan.local_row(row), row / ranks) << "row " << row;
    ASSERT_EQ(plan.global_row(plan.owner(row), plan.local_row(row)), row);
    const int64_t key = plan.key(row);
    ASSERT_GE(key, plan.key_begin(plan.owner(row)));
    ASSERT_LT(key, plan.key_begin(plan.owner(row) + 1));
    ASSERT_LT(key, plan.key_bound());
    if (row >= ranks) {
      ASSERT_EQ(key, plan.key(row - ranks) + 1) << "row " << row;
    }
  }
  std::vector<float> table(static_cast<size_t>(rows * 2)), back(table.size(), -1.f);
  for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<float>(i);
  for (int r = 0; r < ranks; ++r) {
    std::vector<float> shard(static_cast<size_t>(plan.shard_rows(r) * 2));
    plan.take_shard(r, table.data(), 2, shard.data());
    for (int64_t k = 0; k < plan.shard_rows(r); ++k)
      ASSERT_EQ(shard[k * 2], static_cast<float>(plan.global_row(r, k) * 2));
    plan.place_shard(r, shard.data(), 2, back.data());
  }
  ASSERT_EQ(back, table);
}

TEST(ShardPlan, CyclicLayout) {
  for (int64_t rows : {0, 1, 2, 5, 16, 17, 100, 1001})
    for (int ranks : {1, 2, 3, 4, 7, 16, 200}) ASSERT_NO_FATAL_FAILURE(check_cyclic(rows, ranks));
}

TEST(ShardPlan, CyclicExampleByHand) {
  // 10 rows over 4 ranks: rank 0 holds 0, 4, 8; rank 3 holds 3, 7.
  const ShardPlan plan(10, 4, ShardPlan::Layout::kCyclic);
  EXPECT_EQ(plan.shard_rows(0), 3);
  EXPECT_EQ(plan.shard_rows(3), 2);
  EXPECT_EQ(plan.owner(8), 0);
  EXPECT_EQ(plan.local_row(8), 2);
  EXPECT_EQ(plan.global_row(3, 1), 7);
  EXPECT_EQ(plan.key_begin(1), 3);  // every owner's key range is the largest shard's
  EXPECT_EQ(plan.key(7), 3 * 3 + 1);
  EXPECT_EQ(plan.key_bound(), 12);
}

TEST(ShardPlan, InvalidInputsThrow) {
  EXPECT_THROW(ShardPlan(10, 0), embtrain::Error);
  EXPECT_THROW(ShardPlan(10, -1), embtrain::Error);
  EXPECT_THROW(ShardPlan(-1, 4), embtrain::Error);
  EXPECT_THROW(ShardPlan(std::numeric_limits<int64_t>::min(), 1), embtrain::Error);
  EXPECT_THROW(ShardPlan(-1, 0), embtrain::Error);
  try {
    ShardPlan(-5, 2);
    ADD_FAILURE() << "ShardPlan(-5, 2) did not throw";
  } catch (const embtrain::Error& e) {
    EXPECT_NE(std::string(e.what()).find("-5"), std::string::npos)
        << "the message should name the bad value: " << e.what();
  }
  EXPECT_NO_THROW(ShardPlan(0, 1));
}

}  // namespace
