// Random bag batches for the pooling kernels' tests (tests/unit on the CPU,
// tests/cuda on a GPU): bags of 0 to 40 positions (empty ones included),
// heavy repeats of a few ids (so max has ties between equal rows), padding
// in about a fifth of the positions and whole-padding bags, and positions
// past the last bag.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "embtrain/bags.hpp"

namespace embtrain_test {

struct BagBatch {
  int64_t dim = 0, n = 0, pad = -1;
  std::vector<int64_t> ids, offsets;  // offsets: bags + 1
  std::vector<float> rows, weights;   // n x dim; per position (empty: none)
  std::vector<float> table;           // 1000 x dim: the rows of the ids
  int64_t bags() const { return static_cast<int64_t>(offsets.size()) - 1; }
};

inline BagBatch random_bags(int64_t dim, bool weights, std::mt19937_64& rng) {
  BagBatch b;
  b.dim = dim;
  b.pad = rng() % 2 ? 3 : -1;
  const int64_t bags = static_cast<int64_t>(rng() % 60);
  b.offsets.push_back(0);
  for (int64_t i = 0; i < bags; ++i) b.offsets.push_back(b.offsets.back() + rng() % 41);
  b.n = b.offsets.back() + static_cast<int64_t>(rng() % 4);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> uniform(-2.f, 2.f);
  for (int64_t p = 0; p < b.n; ++p) {
    const bool padding = b.pad >= 0 && rng() % 5 == 0;
    b.ids.push_back(padding ? b.pad : static_cast<int64_t>(rng() % 8 == 0 ? 5 : rng() % 1000));
  }
  if (b.pad >= 0 && bags > 0) {  // one bag of padding only
    const int64_t k = static_cast<int64_t>(rng() % bags);
    for (int64_t p = b.offsets[k]; p < b.offsets[k + 1]; ++p) b.ids[p] = b.pad;
  }
  // Rows are per id (a repeated id repeats its row), as a lookup gives them.
  b.table.resize(1000 * static_cast<size_t>(dim));
  for (float& x : b.table) x = normal(rng);
  for (int64_t p = 0; p < b.n; ++p)
    b.rows.insert(b.rows.end(), b.table.begin() + b.ids[p] * dim,
                  b.table.begin() + (b.ids[p] + 1) * dim);
  if (weights)
    for (int64_t p = 0; p < b.n; ++p) b.weights.push_back(uniform(rng));
  return b;
}

// A batch's distinct ids in ascending order and each position's slot among
// them (what unique_ids gives a step), for kernels that find rows through
// the distinct ids.
struct DistinctIds {
  std::vector<int64_t> unique;
  std::vector<int32_t> slot;
};

inline DistinctIds distinct_ids(const std::vector<int64_t>& ids) {
  DistinctIds d;
  d.unique = ids;
  std::sort(d.unique.begin(), d.unique.end());
  d.unique.erase(std::unique(d.unique.begin(), d.unique.end()), d.unique.end());
  for (int64_t id : ids)
    d.slot.push_back(static_cast<int32_t>(
        std::lower_bound(d.unique.begin(), d.unique.end(), id) - d.unique.begin()));
  return d;
}

}  // namespace embtrain_test
