#include "embtrain/shard_plan.hpp"

#include "embtrain/errors.hpp"

namespace embtrain {

ShardPlan::ShardPlan(int64_t num_rows, int num_ranks) : num_rows_(num_rows) {
  EMBTRAIN_REQUIRE(num_rows >= 0, "shard plan: num_rows = ", num_rows, " (valid: >= 0)");
  EMBTRAIN_REQUIRE(num_ranks >= 1, "shard plan: num_ranks = ", num_ranks, " (valid: >= 1)");
  base_ = num_rows / num_ranks;
  extra_ = num_rows % num_ranks;
  begin_.resize(static_cast<size_t>(num_ranks) + 1);
  for (int r = 0; r <= num_ranks; ++r) begin_[r] = r * base_ + (r < extra_ ? r : extra_);
}

int ShardPlan::owner(int64_t row) const {
  EMBTRAIN_ASSERT(row >= 0 && row < num_rows_);
  // The first extra_ shards hold base_ + 1 rows, the rest base_.
  const int64_t big = extra_ * (base_ + 1);
  if (row < big) return static_cast<int>(row / (base_ + 1));
  return static_cast<int>(extra_ + (row - big) / base_);
}

}  // namespace embtrain
