// What the pooling kernels of bags (torch.nn.EmbeddingBag) take, on either
// backend (cpu::pool_bags, cuda::pool_bags), and the per-column math they
// share, so that the CPU and the GPU pool in one order and round alike.
//
// Order: a bag's output column j is built from its positions in ascending
// order, padding positions skipped: sum adds row[j] (times the position's
// weight) to an accumulator starting at 0; mean divides that sum by the
// number of positions pooled (an empty or all-padding bag gives 0); max
// keeps the first position whose value is greater than every earlier one
// (strictly, as PyTorch's CPU kernel: the first of equal values wins).
#pragma once

#include <cstdint>

#include "embtrain/bags.hpp"
#include "embtrain/host_device.hpp"

namespace embtrain {

// One table's bags in the backend's memory (device pointers on a GPU).
struct BagPooling {
  PoolMode mode = PoolMode::kMean;
  const int64_t* offsets = nullptr;  // num_bags + 1 (BagsView)
  int64_t num_bags = 0;
  const float* weights = nullptr;    // per position, or null
  int64_t dim = 0;
  // Written by pool_bags, read by unpool_bags (so they outlive a forward):
  int32_t* counts = nullptr;  // per bag: positions pooled (padding left out)
  int32_t* argmax = nullptr;  // max only, per bag and column: the winning position or -1
};

// Where a pooling kernel reads position p's row: rows + p * dim (one row
// per position), or without that copy, the row of p's slot: rows +
// at[slot[p]] * stride (slot: the inverse of the batch's distinct ids; at:
// each distinct id's row number, stride dim, or its float offset, stride 1).
struct PositionRows {
  const float* rows = nullptr;
  const int32_t* slot = nullptr;
  const int64_t* at = nullptr;
  int64_t stride = 1;

  EMBTRAIN_HD const float* row(int64_t p, int64_t dim) const {
    return slot ? rows + at[slot[p]] * stride : rows + p * dim;
  }
};

// Whether every position of a bag takes the same gradient row, the bag's
// (mean: over its count; sum without weights: as it is), so that a segment
// sum can read it from one row per bag (share_bag_grads) instead of one per
// position (unpool_bags). Weighted sums and max differ per position.
EMBTRAIN_HD bool bag_grads_shared(const BagPooling& bags) {
  return bags.mode == PoolMode::kMean || (bags.mode == PoolMode::kSum && !bags.weights);
}

// Bags pooled at the owners (pool_at = owner; the protocol is in
// engine/sharded_step.hpp). A requester's entries of one table: one per
// pooled position (the padding id left out), owner-major, each owner's in
// position order, and each owner's partial rows (one per bag it touches,
// in bag order). Arrays of the backend's memory, with room for n entries
// and n partial rows (n: the batch's positions).
struct BagEntries {
  int32_t* idx = nullptr;          // the id's place among the distinct ids sent to its owner
  int32_t* slot = nullptr;         // its partial row among its owner's
  int32_t* pos = nullptr;          // its position in the batch
  float* weight = nullptr;         // its weight (1 where the bags have none)
  int64_t* partial_bag = nullptr;  // per partial row: its bag
};

// One requester's block of one table at an owner: its entries (as they
// arrived), the rows of the ids they index (kept), its partial rows.
struct OwnerBlock {
  PoolMode mode = PoolMode::kSum;  // mean pools as sum here: the requester divides
  int64_t dim = 0;
  const int32_t* idx = nullptr;
  const int32_t* slot = nullptr;
  const float* weight = nullptr;  // or null: 1
  int64_t entries = 0;
  int64_t rows = 0;        // partial rows (the slots run 0 .. rows - 1)
  int64_t num_ids = 0;     // kept rows
  float* kept = nullptr;   // num_ids rows: the ids' rows; backward: their gradients
  float* partial = nullptr;  // the partial rows; backward: their gradients
  int32_t* arg = nullptr;  // max: per partial row and column, the winning entry
};

// A requester's partial rows of one table, as they arrived from each owner.
struct RequesterPartials {
  PoolMode mode = PoolMode::kSum;
  int64_t dim = 0;
  int64_t num_bags = 0;
  const int32_t* counts = nullptr;          // per bag: positions pooled
  int num_owners = 0;
  const int64_t* partial_begin = nullptr;   // host, owners + 1: each owner's first partial row
  const int64_t* entry_begin = nullptr;     // host, owners + 1: each owner's first entry
  const int64_t* partial_bag = nullptr;     // BagEntries
  const int32_t* pos = nullptr;             // BagEntries
  float* const* rows = nullptr;             // host, per owner: its partial rows (and gradients)
  const int32_t* const* args = nullptr;     // host, per owner, max: its winning entries
  int32_t* winner = nullptr;                // max: per bag and column, the owner that won (-1)
};

// Column j of a bag: the running value and, for max, its position.
EMBTRAIN_HD void pool_column(PoolMode mode, float x, float weight, int32_t position, bool first,
                             float* acc, int32_t* arg) {
  if (mode == PoolMode::kMax) {
    if (first || x > *acc) {
      *acc = x;
      *arg = position;
    }
  } else {
    *acc += x * weight;  // weight 1 when there are none: x * 1 is x exactly
  }
}

EMBTRAIN_HD float finish_column(PoolMode mode, float acc, int32_t count) {
  if (count == 0) return 0.f;
  return mode == PoolMode::kMean ? acc / static_cast<float>(count) : acc;
}

// The gradient of a pooled position's column from its bag's: sum times the
// weight, mean over the count, max only at the winning position.
EMBTRAIN_HD float unpool_column(PoolMode mode, float g, float weight, int32_t count,
                                int32_t position, int32_t arg) {
  switch (mode) {
    case PoolMode::kSum: return g * weight;
    case PoolMode::kMean: return count > 0 ? g / static_cast<float>(count) : 0.f;
    case PoolMode::kMax: return position == arg ? g : 0.f;
  }
  return 0.f;
}

}  // namespace embtrain
