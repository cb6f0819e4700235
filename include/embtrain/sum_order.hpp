// The one order in which both backends add up many floats, so that a step
// on the GPU and on the CPU gives the same bits (issue 10): float addition
// is not associative, and a sum of cancelling gradients shows it in the
// fourth digit. The order is the CUDA kernels' (one warp per row, its 32
// lanes over the columns, long segments cut into chunks: src/kernels/cuda),
// written down here once; the CPU kernels (src/kernels/cpu) follow it, and
// the emulated device of the tests transcribes the CUDA kernels to check
// that they do. With no FMA contraction on either side (CMakeLists.txt) and
// IEEE division and square root, every rounding is then the same.
//
// 1. Segment sums (segment_sum, segment_sum_update; unpool_partials of bags
//    pooled at the owners, an id's entries as its positions), column by
//    column: the rows of an id's positions p_0 < p_1 < ... < p_{n-1}, in
//    ascending position order.
//     - n <= kChunkPositions: s = row(p_0), then s += row(p_k) for k = 1..n-1.
//     - n > kChunkPositions: the positions are cut into chunks of
//       kChunkPositions consecutive ones (the last shorter); each chunk is
//       summed as above into a partial P_c, and s = P_0, then s += P_c for
//       c = 1, 2, ... in order.
//    With scale_by_count, then s *= 1.f / count (count: the sum of the
//    positions' integer weights, or n; exact in any order).
// 2. Row reductions over the `dim` columns of one row (row_norm's sum of
//    |x|, x * x or |x|^p, and its max of |x|; row-wise Adagrad's sum of
//    squared gradients):
//     - column j belongs to lane (j / kLaneColumns) % kSumLanes: groups of 4
//       columns, what a lane reads in one float4 load;
//     - each lane starts from 0 and adds its columns' terms one at a time,
//       in ascending column order;
//     - the 32 lane values are combined by a butterfly: for w = 16, 8, 4, 2,
//       1, v[l] = v[l] + v[l + w] for l < w; the result is v[0]. (On the GPU
//       __shfl_xor_sync(offset w) gives every lane v[l] + v[l ^ w], the same
//       values, as l ^ w = l + w for l < w.)
#pragma once

#include <cmath>
#include <cstdint>

#include "embtrain/host_device.hpp"

namespace embtrain {

// Positions one GPU warp adds up in one go; longer segments (a Zipf head id
// can own tens of thousands of positions) are cut into chunks of this many.
// A constant, independent of the grid and the GPU, so the chunk boundaries,
// and so every rounding, are the same on every launch and on the CPU.
constexpr int64_t kChunkPositions = 64;

// Chunks a segment of `count` positions is cut into; 0 when it is short
// enough (count <= kChunkPositions) to be summed in one run.
EMBTRAIN_HD constexpr int64_t chunks_for_count(int64_t count) {
  return count > kChunkPositions ? (count + kChunkPositions - 1) / kChunkPositions : 0;
}

// Lanes of a row reduction (a warp) and the columns a lane takes at a time.
constexpr int kSumLanes = 32;
constexpr int kLaneColumns = 4;

// The lane values of a row reduction combined by the butterfly of item 2;
// `v` (kSumLanes values) is overwritten. combine(a, b) is + or max.
template <typename Combine>
EMBTRAIN_HD float combine_lanes(float* v, Combine combine) {
  for (int w = kSumLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) v[l] = combine(v[l], v[l + w]);
  return v[0];
}

// The reduction of term(j) over the columns j in [0, dim) in item 2's order,
// as the CPU computes it (a warp computes it with warp_rows.cuh's
// ordered_warp_sum). The lanes are the inner loop, so the adds vectorise
// (lane l's term i of a block reads column 4 l + i: a stride-4 load).
template <typename Term, typename Combine>
EMBTRAIN_HD float ordered_row_reduce(int64_t dim, Term term, Combine combine) {
  constexpr int64_t kBlock = kSumLanes * kLaneColumns;
  float v[kSumLanes] = {};
  int64_t base = 0;
  for (; base + kBlock <= dim; base += kBlock)
    for (int i = 0; i < kLaneColumns; ++i)
      for (int l = 0; l < kSumLanes; ++l) v[l] = combine(v[l], term(base + l * kLaneColumns + i));
  if (base < dim)  // the last, partial block
    for (int i = 0; i < kLaneColumns; ++i)
      for (int l = 0; l < kSumLanes; ++l) {
        const int64_t j = base + l * kLaneColumns + i;
        if (j < dim) v[l] = combine(v[l], term(j));
      }
  return combine_lanes(v, combine);
}

struct AddFloats {
  EMBTRAIN_HD float operator()(float a, float b) const { return a + b; }
};
struct MaxFloats {
  EMBTRAIN_HD float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <typename Term>
EMBTRAIN_HD float ordered_row_sum(int64_t dim, Term term) {
  return ordered_row_reduce(dim, term, AddFloats{});
}

template <typename Term>
EMBTRAIN_HD float ordered_row_max(int64_t dim, Term term) {
  return ordered_row_reduce(dim, term, MaxFloats{});
}

}  // namespace embtrain
