#include "embtrain/shard_plan.hpp"

#include <algorithm>

#include "embtrain/errors.hpp"

namespace embtrain {

ShardPlan::ShardPlan(int64_t num_rows, int num_ranks, Layout layout)
    : num_rows_(num_rows), ranks_(num_ranks), layout_(layout) {
  EMBTRAIN_REQUIRE(num_rows >= 0, "shard plan: num_rows = ", num_rows, " (valid: >= 0)");
  EMBTRAIN_REQUIRE(num_ranks >= 1, "shard plan: num_ranks = ", num_ranks, " (valid: >= 1)");
  base_ = num_rows / num_ranks;
  extra_ = num_rows % num_ranks;
}

int ShardPlan::owner(int64_t row) const {
  EMBTRAIN_ASSERT(row >= 0 && row < num_rows_);
  if (layout_ == Layout::kCyclic) return static_cast<int>(row % ranks_);
  // The first extra_ shards hold base_ + 1 rows, the rest base_.
  const int64_t big = extra_ * (base_ + 1);
  if (row < big) return static_cast<int>(row / (base_ + 1));
  return static_cast<int>(extra_ + (row - big) / base_);
}

int64_t ShardPlan::local_row(int64_t row) const {
  return layout_ == Layout::kCyclic ? row / ranks_ : row - row_begin(owner(row));
}

int64_t ShardPlan::global_row(int rank, int64_t local) const {
  return layout_ == Layout::kCyclic ? local * ranks_ + rank : row_begin(rank) + local;
}

int64_t ShardPlan::row_begin(int rank) const {
  EMBTRAIN_ASSERT(layout_ == Layout::kBlock && rank >= 0 && rank <= ranks_);
  return rank * base_ + std::min<int64_t>(rank, extra_);
}

int64_t ShardPlan::key_begin(int rank) const {
  // Cyclic: every owner gets the key range of the largest shard.
  return layout_ == Layout::kCyclic ? rank * shard_rows(0) : row_begin(rank);
}

void ShardPlan::take_shard(int rank, const float* table, int64_t width, float* shard) const {
  for (int64_t k = 0; k < shard_rows(rank); ++k)
    std::copy_n(table + global_row(rank, k) * width, width, shard + k * width);
}

void ShardPlan::place_shard(int rank, const float* shard, int64_t width, float* table) const {
  for (int64_t k = 0; k < shard_rows(rank); ++k)
    std::copy_n(shard + k * width, width, table + global_row(rank, k) * width);
}

const char* shard_layout_name(ShardPlan::Layout layout) {
  return layout == ShardPlan::Layout::kCyclic ? "cyclic" : "block";
}

ShardPlan::Layout parse_shard_layout(const std::string& name) {
  if (name == "block") return ShardPlan::Layout::kBlock;
  if (name == "cyclic") return ShardPlan::Layout::kCyclic;
  throw make_error("shard layout '", name, "' is not one of block, cyclic");
}

}  // namespace embtrain
