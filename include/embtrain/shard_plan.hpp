// ShardPlan: how a table's rows (or a batch's samples) are split over ranks.
//
// Two layouts. kBlock: contiguous blocks whose sizes differ by at most one
// row, lower ranks taking the extra rows (how a batch is split, and how
// checkpoints before 2026-12 stored tables). kCyclic: row r belongs to rank
// r % P as its local row r / P, so lower ranks again hold at most one row
// more. ShardedEmbedding shards tables cyclically: ids are often numbered
// by frequency (a vocabulary sorted by count, items by popularity), and a
// block layout then gives the first rank most of every batch's rows and
// most of the step's work (88% of bench-A's distinct ids at P = 2); the
// cyclic one spreads the head over every rank.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace embtrain {

class ShardPlan {
 public:
  enum class Layout { kBlock, kCyclic };

  ShardPlan(int64_t num_rows, int num_ranks, Layout layout = Layout::kBlock);

  Layout layout() const { return layout_; }
  int64_t num_rows() const { return num_rows_; }
  int num_ranks() const { return ranks_; }
  int64_t shard_rows(int rank) const { return base_ + (rank < extra_ ? 1 : 0); }
  // The rank holding global row `row` in [0, num_rows), its index there,
  // and back.
  int owner(int64_t row) const;
  int64_t local_row(int64_t row) const;
  int64_t global_row(int rank, int64_t local) const;
  // Any rank's local row k is global row global_row(rank, 0) + k * row_stride().
  int64_t row_stride() const { return layout_ == Layout::kCyclic ? ranks_ : 1; }
  // kBlock only: rank's rows are [row_begin(rank), row_end(rank)).
  int64_t row_begin(int rank) const;
  int64_t row_end(int rank) const { return row_begin(rank) + shard_rows(rank); }

  // Rows as sort keys in (owner, local row) order: key(row) = owner's first
  // key + local row, owner p's keys are [key_begin(p), key_begin(p + 1)),
  // all below key_bound(). Sorting a batch's keys groups its rows by owner,
  // which is how the sharded step splits them.
  int64_t key(int64_t row) const { return key_begin(owner(row)) + local_row(row); }
  int64_t key_begin(int rank) const;
  int64_t key_bound() const { return key_begin(ranks_); }

  // Rank's rows of a whole table (num_rows x width floats, C order), in
  // local order, into `shard`; and back into `table`.
  void take_shard(int rank, const float* table, int64_t width, float* shard) const;
  void place_shard(int rank, const float* shard, int64_t width, float* table) const;

 private:
  int64_t num_rows_;
  int ranks_;
  Layout layout_;
  int64_t base_;   // rows of every shard: num_rows / ranks
  int64_t extra_;  // shards 0..extra_-1 hold one more
};

// "block", "cyclic"; parse_shard_layout throws Error on anything else.
const char* shard_layout_name(ShardPlan::Layout layout);
ShardPlan::Layout parse_shard_layout(const std::string& name);

}  // namespace embtrain
