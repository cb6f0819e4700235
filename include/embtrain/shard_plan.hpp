// ShardPlan: how a table's rows are split over ranks. Contiguous row blocks
// whose sizes differ by at most one row, lower ranks taking the extra rows;
// with fewer rows than ranks the last ranks hold none.
#pragma once

#include <cstdint>
#include <vector>

namespace embtrain {

class ShardPlan {
 public:
  ShardPlan(int64_t num_rows, int num_ranks);

  int64_t num_rows() const { return num_rows_; }
  int num_ranks() const { return static_cast<int>(begin_.size()) - 1; }
  int64_t row_begin(int rank) const { return begin_[rank]; }
  int64_t row_end(int rank) const { return begin_[rank + 1]; }
  int64_t shard_rows(int rank) const { return begin_[rank + 1] - begin_[rank]; }
  // The rank holding global row `row` in [0, num_rows).
  int owner(int64_t row) const;
  int64_t local_row(int64_t row) const { return row - begin_[owner(row)]; }
  int64_t global_row(int rank, int64_t local) const { return begin_[rank] + local; }

 private:
  int64_t num_rows_;
  int64_t base_;   // rows of every shard: num_rows / ranks
  int64_t extra_;  // shards 0..extra_-1 hold one more
  std::vector<int64_t> begin_;
};

}  // namespace embtrain
