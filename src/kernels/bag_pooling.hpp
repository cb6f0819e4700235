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
