// The launch shapes and workspace layouts of the CUDA kernels
// (cuda_launch.hpp): pure host arithmetic, so it is checked here on the CPU
// even where no GPU (or no nvcc) is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "kernels/cuda/launch.hpp"
#include "test_util.hpp"

namespace embtrain {
namespace {

using namespace cuda;

TEST(CudaLaunch, BlocksCoverEveryItemOnce) {
  EXPECT_EQ(blocks_for_warps(0), 0);
  EXPECT_EQ(blocks_for_warps(1), 1);
  EXPECT_EQ(blocks_for_warps(kWarpsPerBlock), 1);
  EXPECT_EQ(blocks_for_warps(kWarpsPerBlock + 1), 2);
  EXPECT_EQ(blocks_for_threads(0), 0);
  EXPECT_EQ(blocks_for_threads(kThreadsPerBlock), 1);
  EXPECT_EQ(blocks_for_threads(kThreadsPerBlock + 1), 2);
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{1} << 31}) {
    EXPECT_GE(blocks_for_warps(n) * kWarpsPerBlock, n);
    EXPECT_LT((blocks_for_warps(n) - 1) * kWarpsPerBlock, n);
  }
}

TEST(CudaLaunch, ShortSegmentsAreNotCut) {
  EXPECT_EQ(chunks_for_count(1), 0);
  EXPECT_EQ(chunks_for_count(kChunkPositions), 0);
  EXPECT_EQ(chunks_for_count(kChunkPositions + 1), 2);
  EXPECT_EQ(chunks_for_count(2 * kChunkPositions), 2);
  EXPECT_EQ(chunks_for_count(2 * kChunkPositions + 1), 3);
}

// max_chunks(n) must hold the chunks of any split of n positions: check the
// worst splits (every segment just over the threshold) and random ones.
TEST(CudaLaunch, MaxChunksBoundsEverySplit) {
  for (int64_t n = 0; n <= 5000; ++n) {
    const int64_t just_over = kChunkPositions + 1;
    const int64_t worst = n / just_over * chunks_for_count(just_over);  // the rest is uncut
    EXPECT_GE(max_chunks(n), worst) << "n " << n;
    EXPECT_GE(max_chunks(n), chunks_for_count(n)) << "n " << n;
  }
  const uint64_t seed = embtrain_test::test_seed();
  SCOPED_TRACE(embtrain_test::seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 2000; ++trial) {
    const int64_t n = static_cast<int64_t>(rng() % 20000);
    int64_t left = n, chunks = 0;
    while (left > 0) {
      const int64_t count = std::min<int64_t>(left, 1 + static_cast<int64_t>(rng() % 300));
      chunks += chunks_for_count(count);
      left -= count;
    }
    ASSERT_GE(max_chunks(n), chunks) << "n " << n;
  }
}

TEST(CudaLaunch, RadixBitsCoverTheBound) {
  EXPECT_EQ(radix_bits(0), 1);
  EXPECT_EQ(radix_bits(1), 1);
  EXPECT_EQ(radix_bits(2), 1);
  EXPECT_EQ(radix_bits(3), 2);
  EXPECT_EQ(radix_bits(1024), 10);
  EXPECT_EQ(radix_bits(1025), 11);
  EXPECT_EQ(radix_bits(int64_t{1} << 40), 40);
  for (int64_t bound = 1; bound < 5000; ++bound)
    EXPECT_GE(int64_t{1} << radix_bits(bound), bound);  // bound - 1 fits
}

// Arrays of a plan start aligned, in order, and do not overlap.
void expect_disjoint(const std::vector<std::pair<size_t, size_t>>& arrays, size_t total) {
  for (size_t i = 0; i < arrays.size(); ++i) {
    EXPECT_EQ(arrays[i].first % kWorkspaceAlign, 0u) << "array " << i;
    const size_t end = arrays[i].first + arrays[i].second;
    EXPECT_LE(end, i + 1 < arrays.size() ? arrays[i + 1].first : total) << "array " << i;
  }
}

TEST(CudaLaunch, UniquePlanHoldsEveryArray) {
  for (int64_t n : {0, 1, 5, 1000, 123457}) {
    const size_t count = static_cast<size_t>(n), temp = 777;
    const UniquePlan p = unique_plan(n, temp);
    expect_disjoint({{p.sorted_keys, 8 * count},
                     {p.iota, 4 * count},
                     {p.heads, 4 * count},
                     {p.slots, 4 * count},
                     {p.unique, 8 * count},
                     {p.inverse, 4 * count},
                     {p.offsets, 4 * (count + 1)},
                     {p.positions, 4 * count},
                     {p.cub_temp, temp}},
                    p.total);
    EXPECT_GT(p.total, 0u);  // offsets[0] always has a place
  }
  // Grow-only buffers stop allocating once n stops growing: the size is
  // monotone in n.
  EXPECT_LE(unique_plan(1000, 64).total, unique_plan(1001, 64).total);
}

TEST(CudaLaunch, SegmentPlanHoldsEveryArray) {
  for (int64_t dim : {1, 3, 4, 128})
    for (int64_t n : {0, 1, 64, 65, 100000}) {
      const int64_t num_unique = std::max<int64_t>(1, n / 3);
      const SegmentPlan p = segment_plan(n, num_unique, dim, 512);
      EXPECT_EQ(p.max_chunks, max_chunks(n));
      const size_t u1 = static_cast<size_t>(num_unique + 1);
      expect_disjoint({{p.chunk_counts, 4 * u1},
                       {p.chunk_start, 4 * u1},
                       {p.partials, 4 * static_cast<size_t>(p.max_chunks * dim)},
                       {p.cub_temp, 512}},
                      p.total);
    }
}

}  // namespace
}  // namespace embtrain
