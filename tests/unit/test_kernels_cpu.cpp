// CPU kernels against plain references: unique_ids against std::map,
// gather/renorm/segment-sum against loops in double, update_rows against
// update_row applied row by row.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "embtrain/random.hpp"
#include "embtrain/sum_order.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "test_util.hpp"

namespace {

using embtrain::OptimizerKind;
using embtrain::StepScalars;
// The arrays of a CPU index, as vectors (UniqueIndex is its view).
using UniqueIndex = embtrain::cpu::UniqueWorkspace;
using embtrain_test::all_close;
using embtrain_test::seed_trace;
using embtrain_test::test_seed;

std::vector<float> normal_floats(int64_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

// `count` distinct values of [0, bound), shuffled.
std::vector<int64_t> distinct_rows(int64_t bound, int64_t count, std::mt19937_64& rng) {
  std::vector<int64_t> all(static_cast<size_t>(bound));
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(static_cast<size_t>(count));
  return all;
}

// ----------------------------------------------------------------- unique

// Uniform ids in [0, bound), or, with `heavy_duplicates`, draws from a pool
// of at most 5 values that always holds the extremes 0 and bound - 1.
std::vector<int64_t> random_ids(int64_t n, int64_t bound, bool heavy_duplicates,
                                std::mt19937_64& rng) {
  std::uniform_int_distribution<int64_t> any(0, bound - 1);
  std::vector<int64_t> pool = {0, bound - 1};
  while (heavy_duplicates && static_cast<int64_t>(pool.size()) < std::min<int64_t>(bound, 5))
    pool.push_back(any(rng));
  std::uniform_int_distribution<size_t> pick(0, pool.size() - 1);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = heavy_duplicates ? pool[pick(rng)] : any(rng);
  return ids;
}

// The index built the obvious way: a std::map from id to its positions.
UniqueIndex reference_index(const std::vector<int64_t>& ids) {
  std::map<int64_t, std::vector<int32_t>> groups;
  for (size_t p = 0; p < ids.size(); ++p) groups[ids[p]].push_back(static_cast<int32_t>(p));
  UniqueIndex index;
  index.inverse.resize(ids.size());
  index.offsets.push_back(0);
  for (const auto& [id, positions] : groups) {
    for (int32_t p : positions) index.inverse[p] = static_cast<int32_t>(index.unique.size());
    index.unique.push_back(id);
    index.positions.insert(index.positions.end(), positions.begin(), positions.end());
    index.offsets.push_back(static_cast<int32_t>(index.positions.size()));
  }
  return index;
}

// Checks the documented properties of `index` for `ids` directly, then that
// it holds the same distinct ids as the std::map reference.
void expect_valid_index(const std::vector<int64_t>& ids, const UniqueIndex& index) {
  const int64_t n = static_cast<int64_t>(ids.size());
  const int64_t u_count = index.num_unique();
  for (int64_t u = 1; u < u_count; ++u)
    ASSERT_LT(index.unique[u - 1], index.unique[u]) << "unique not ascending/distinct at " << u;

  ASSERT_EQ(static_cast<int64_t>(index.inverse.size()), n);
  for (int64_t p = 0; p < n; ++p) {
    ASSERT_GE(index.inverse[p], 0);
    ASSERT_LT(index.inverse[p], u_count);
    ASSERT_EQ(index.unique[index.inverse[p]], ids[p]) << "inverse wrong at position " << p;
  }

  ASSERT_EQ(static_cast<int64_t>(index.offsets.size()), u_count + 1);
  ASSERT_EQ(index.offsets.front(), 0);
  ASSERT_EQ(index.offsets.back(), n);
  ASSERT_EQ(static_cast<int64_t>(index.positions.size()), n);
  std::vector<bool> seen(static_cast<size_t>(n), false);
  for (int64_t u = 0; u < u_count; ++u) {
    ASSERT_GE(index.count(u), 1) << "empty group " << u;
    for (int32_t k = index.offsets[u]; k < index.offsets[u + 1]; ++k) {
      const int32_t p = index.positions[k];
      ASSERT_TRUE(p >= 0 && p < n) << "position " << p << " out of range";
      ASSERT_FALSE(seen[p]) << "position " << p << " appears twice";
      seen[p] = true;
      ASSERT_EQ(ids[p], index.unique[u]) << "position " << p << " in the wrong group";
      if (k > index.offsets[u]) {
        ASSERT_LT(index.positions[k - 1], p) << "positions not ascending in group " << u;
      }
    }
  }

  const UniqueIndex ref = reference_index(ids);
  EXPECT_EQ(index.unique, ref.unique);
}

TEST(UniqueIds, MatchesMapReference) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const int64_t bounds[] = {
      1, 2, int64_t{1} << 11, (int64_t{1} << 11) + 1, int64_t{1} << 22, int64_t{1} << 40};
  const int64_t sizes[] = {0, 1, 2, 17, 1000, 100000};
  UniqueIndex index;  // reused across cases, as Embedding reuses its index
  for (int64_t bound : bounds)
    for (int64_t n : sizes)
      for (bool heavy : {false, true}) {
        SCOPED_TRACE("id_bound " + std::to_string(bound) + ", n " + std::to_string(n) +
                     (heavy ? ", heavy duplicates" : ", uniform"));
        const std::vector<int64_t> ids = random_ids(n, bound, heavy, rng);
        embtrain::cpu::unique_ids(ids.data(), n, bound, &index);
        expect_valid_index(ids, index);
        if (HasFatalFailure()) return;
      }
}

// The sort splits the batch over threads (each a contiguous part, placed
// after the parts before it): the index must be the one-thread index, array
// for array, and valid, whatever the thread count.
TEST(UniqueIds, SameIndexForAnyThreadCount) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const int saved = omp_get_max_threads();
  for (int64_t n : {int64_t{40000}, int64_t{300001}})
    for (bool heavy : {false, true}) {
      SCOPED_TRACE("n " + std::to_string(n) + (heavy ? ", heavy duplicates" : ", uniform"));
      const int64_t bound = int64_t{1} << 22;
      const std::vector<int64_t> ids = random_ids(n, bound, heavy, rng);
      UniqueIndex one, many;
      omp_set_num_threads(1);
      embtrain::cpu::unique_ids(ids.data(), n, bound, &one);
      for (int threads : {2, 3, 7}) {
        omp_set_num_threads(threads);
        embtrain::cpu::unique_ids(ids.data(), n, bound, &many);
        expect_valid_index(ids, many);
        EXPECT_EQ(many.unique, one.unique) << threads << " threads";
        EXPECT_EQ(many.inverse, one.inverse) << threads << " threads";
        EXPECT_EQ(many.offsets, one.offsets) << threads << " threads";
        EXPECT_EQ(many.positions, one.positions) << threads << " threads";
      }
      omp_set_num_threads(saved);
      if (HasFatalFailure()) return;
    }
}

TEST(UniqueIds, SmallExample) {
  const std::vector<int64_t> ids = {5, 2, 5, 9, 2, 5};
  UniqueIndex index;
  embtrain::cpu::unique_ids(ids.data(), 6, 10, &index);
  EXPECT_EQ(index.unique, (std::vector<int64_t>{2, 5, 9}));
  EXPECT_EQ(index.inverse, (std::vector<int32_t>{1, 0, 1, 2, 0, 1}));
  EXPECT_EQ(index.offsets, (std::vector<int32_t>{0, 2, 5, 6}));
  EXPECT_EQ(index.positions, (std::vector<int32_t>{1, 4, 0, 2, 5, 3}));
}

// -------------------------------------------------------------- bucketize

// begin[d] counts the distinct ids below bounds[d]: the reference counts
// them one by one instead of searching.
TEST(Bucketize, CountsTheIdsBelowEachBound) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int n = 0; n < 200; ++n) {
    const int64_t rows = std::uniform_int_distribution<int64_t>(1, 5000)(rng);
    std::vector<int64_t> ids = random_ids(std::uniform_int_distribution<int64_t>(0, 300)(rng),
                                          rows, n % 2 == 1, rng);
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    std::vector<int64_t> bounds;
    const int ranks = std::uniform_int_distribution<int>(1, 9)(rng);
    for (int r = 0; r <= ranks; ++r) bounds.push_back(rows * r / ranks);
    bounds.push_back(std::uniform_int_distribution<int64_t>(0, rows + 3)(rng));
    std::vector<int64_t> begin(bounds.size(), -7);
    embtrain::cpu::bucketize(ids.data(), static_cast<int64_t>(ids.size()), bounds.data(),
                             static_cast<int64_t>(bounds.size()), begin.data());
    for (size_t d = 0; d < bounds.size(); ++d) {
      int64_t below = 0;
      for (int64_t id : ids) below += id < bounds[d];
      ASSERT_EQ(begin[d], below) << "bound " << d << " = " << bounds[d] << ", case " << n;
    }
  }
}

// Items of consecutive blocks, empty blocks among them: item k's row is its
// block's base plus its place in the block times dim.
TEST(BlockOffsets, EachItemAtItsBlocksBasePlusItsPlace) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int n = 0; n < 200; ++n) {
    const int64_t blocks = std::uniform_int_distribution<int64_t>(1, 8)(rng);
    const int64_t dim = std::uniform_int_distribution<int64_t>(1, 9)(rng);
    std::vector<int64_t> starts{0}, base, block_of;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t size = std::uniform_int_distribution<int64_t>(0, 5)(rng) * (n % 3 != 0);
      base.push_back(std::uniform_int_distribution<int64_t>(0, 1000)(rng));
      for (int64_t k = 0; k < size; ++k) block_of.push_back(b);
      starts.push_back(starts.back() + size);
    }
    const int64_t items = starts.back();
    std::vector<int64_t> out(static_cast<size_t>(items), -1);
    embtrain::cpu::block_offsets(starts.data(), base.data(), blocks, dim, items, out.data());
    for (int64_t k = 0; k < items; ++k) {
      const int64_t b = block_of[k];
      ASSERT_EQ(out[k], base[b] + (k - starts[b]) * dim) << "item " << k << ", case " << n;
    }
  }
}

// ----------------------------------------------------------------- gather

template <typename Index>
void check_gather(std::mt19937_64& rng) {
  const int64_t row_offset = 1000, num_rows = 50;
  for (int64_t dim : {1, 5, 64})
    for (int64_t n : {0, 1, 257}) {
      SCOPED_TRACE("dim " + std::to_string(dim) + ", n " + std::to_string(n));
      const std::vector<float> table = normal_floats(num_rows * dim, rng);
      std::uniform_int_distribution<int64_t> row(row_offset, row_offset + num_rows - 1);
      std::vector<Index> index(static_cast<size_t>(n));
      for (auto& i : index) i = static_cast<Index>(row(rng));
      // One spare row at the end must stay untouched.
      std::vector<float> out((n + 1) * dim, -777.f);
      embtrain::cpu::gather_rows(table.data(), dim, index.data(), n, row_offset, out.data());
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < dim; ++j)
          ASSERT_EQ(out[i * dim + j], table[(index[i] - row_offset) * dim + j])
              << "row " << i << " element " << j;
      for (int64_t j = 0; j < dim; ++j) ASSERT_EQ(out[n * dim + j], -777.f) << "wrote past n";
    }
}

TEST(GatherRows, Int64Indices) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  check_gather<int64_t>(rng);
}

TEST(GatherRows, Int32Indices) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  check_gather<int32_t>(rng);
}

// ----------------------------------------------------------------- renorm

TEST(RenormRows, RenormsListedRowsOnly) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const int64_t num_rows = 400, dim = 7, row_offset = 300;
  const float max_norm = 1.25f;
  for (float p : {1.f, 2.f, 3.f, std::numeric_limits<float>::infinity()}) {
    SCOPED_TRACE("norm_type " + std::to_string(p));
    std::vector<float> table = normal_floats(num_rows * dim, rng);
    // Rows of very different norms, so that some are inside max_norm.
    std::uniform_real_distribution<float> stretch(0.05f, 3.f);
    for (int64_t r = 0; r < num_rows; ++r) {
      const float s = stretch(rng);
      for (int64_t j = 0; j < dim; ++j) table[r * dim + j] *= s;
    }
    std::vector<int64_t> rows = distinct_rows(num_rows, 250, rng);
    for (auto& r : rows) r += row_offset;

    std::vector<double> want(table.begin(), table.end());
    for (int64_t row : rows) {
      double* w = want.data() + (row - row_offset) * dim;
      double norm = 0;
      for (int64_t j = 0; j < dim; ++j)
        norm =
            std::isinf(p) ? std::fmax(norm, std::fabs(w[j])) : norm + std::pow(std::fabs(w[j]), p);
      if (!std::isinf(p)) norm = std::pow(norm, 1.0 / p);
      if (norm > max_norm)
        for (int64_t j = 0; j < dim; ++j) w[j] *= max_norm / (norm + 1e-7);
    }
    const std::vector<float> before = table;
    embtrain::cpu::renorm_rows(table.data(), dim, rows.data(), static_cast<int64_t>(rows.size()),
                               row_offset, max_norm, p);
    EXPECT_TRUE(all_close(table.data(), want.data(), num_rows * dim, 1e-6));
    std::vector<bool> listed(num_rows, false);
    for (int64_t row : rows) listed[row - row_offset] = true;
    for (int64_t r = 0; r < num_rows; ++r) {
      if (listed[r]) continue;
      ASSERT_EQ(0, std::memcmp(&table[r * dim], &before[r * dim], dim * sizeof(float)))
          << "unlisted row " << r + row_offset << " changed";
    }
  }
}

// ------------------------------------------------------------------ init

// draw_normal_rows is random_normal, element for element: its loop is
// vectorised (and cloned per width), this test's calls are scalar, so a
// vector path that rounded anywhere differently would show. Odd widths
// leave remainders to the scalar tail; several threads split the rows.
TEST(DrawNormalRows, EqualsRandomNormalElementByElement) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const int saved_threads = omp_get_max_threads();
  for (int64_t dim : {1, 3, 8, 13, 128, 131}) {
    const int64_t n = 1 + static_cast<int64_t>(rng() % 300);
    const int64_t first_row = static_cast<int64_t>(rng() % 1000000);
    const int64_t stride = 1 + static_cast<int64_t>(rng() % 5);
    const uint64_t table_seed = rng();
    const float scale = dim % 2 ? 1.f : 0.37f;
    std::vector<float> want(static_cast<size_t>(n * dim));
    for (int64_t k = 0; k < n; ++k)
      for (int64_t j = 0; j < dim; ++j)
        want[k * dim + j] = embtrain::random_normal(table_seed, first_row + k * stride, j) * scale;
    for (int threads : {1, 2, 3}) {
      SCOPED_TRACE("dim " + std::to_string(dim) + ", n " + std::to_string(n) + ", " +
                   std::to_string(threads) + " threads");
      omp_set_num_threads(threads);
      std::vector<float> got(want.size(), 4242.f);
      embtrain::cpu::draw_normal_rows(table_seed, first_row, stride, n, dim, scale, got.data());
      ASSERT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float)));
    }
  }
  omp_set_num_threads(saved_threads);
}

// ------------------------------------------------------------ segment sum

void check_segment_sum(const std::vector<int64_t>& ids, int64_t dim, bool scale, int64_t skip,
                       std::mt19937_64& rng) {
  const int64_t n = static_cast<int64_t>(ids.size());
  const UniqueIndex index = reference_index(ids);
  const int64_t u_count = index.num_unique();
  SCOPED_TRACE("n " + std::to_string(n) + ", unique " + std::to_string(u_count) + ", skip " +
               std::to_string(skip) + (scale ? ", scale_by_count" : ""));
  const std::vector<float> grad = normal_floats(n * dim, rng);

  // Expected sums in double, and for each the sum of |terms|, which bounds
  // the rounding error of a float accumulation.
  std::vector<double> want, magnitude;
  for (int64_t u = 0; u < u_count; ++u) {
    if (u == skip) continue;
    std::vector<double> sum(static_cast<size_t>(dim), 0.0), abs_sum(sum);
    int64_t count = 0;
    for (int64_t p = 0; p < n; ++p)
      if (ids[p] == index.unique[u]) {
        ++count;
        for (int64_t j = 0; j < dim; ++j) {
          sum[j] += grad[p * dim + j];
          abs_sum[j] += std::fabs(grad[p * dim + j]);
        }
      }
    for (int64_t j = 0; j < dim; ++j) {
      want.push_back(scale ? sum[j] / count : sum[j]);
      magnitude.push_back(scale ? abs_sum[j] / count : abs_sum[j]);
    }
  }
  const int64_t written = static_cast<int64_t>(want.size()) / dim;
  ASSERT_EQ(written, skip >= 0 ? u_count - 1 : u_count);

  // A buffer of u_count rows: with a skip, its last row must stay untouched.
  std::vector<float> sums(static_cast<size_t>(u_count * dim), 4242.f);
  embtrain::cpu::segment_sum(grad.data(), dim, index.view(), scale, skip, sums.data());
  for (int64_t i = 0; i < written * dim; ++i)
    ASSERT_NEAR(sums[i], want[i], 1e-6 * magnitude[i] + 1e-6)
        << "output row " << i / dim << ", element " << i % dim;
  for (int64_t j = written * dim; j < u_count * dim; ++j)
    ASSERT_EQ(sums[j], 4242.f) << "segment_sum wrote past its " << written << " rows";
}

TEST(SegmentSum, SumsEachIdsGradients) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int64_t n : {1, 9, 600, 5000}) {
    const std::vector<int64_t> ids = random_ids(n, 60, n > 100, rng);
    const int64_t u_count = reference_index(ids).num_unique();
    for (bool scale : {false, true})
      for (int64_t skip : {int64_t{-1}, int64_t{0}, u_count / 2, u_count - 1}) {
        check_segment_sum(ids, 11, scale, skip, rng);
        if (HasFatalFailure()) return;
      }
  }
}

// sum_order.hpp's order for segment sums, written out from its text: the
// positions in order, an id with more than kChunkPositions of them in
// chunks whose partial sums are then added in order. The kernel must give
// exactly these bits, with one thread (the position walk) and with several
// (each walking its ids' position lists), so that the CPU equals the GPU.
std::vector<float> chunked_sums(const std::vector<float>& grad, int64_t dim,
                                const UniqueIndex& index) {
  std::vector<float> out;
  for (int64_t u = 0; u < index.num_unique(); ++u) {
    const int64_t begin = index.offsets[u], count = index.count(u);
    const int64_t chunk = count > embtrain::kChunkPositions ? embtrain::kChunkPositions : count;
    std::vector<float> total;
    for (int64_t c = 0; c * chunk < count; ++c) {
      std::vector<float> partial;
      for (int64_t k = c * chunk; k < std::min(count, (c + 1) * chunk); ++k) {
        const float* row = &grad[index.positions[begin + k] * dim];
        if (partial.empty())
          partial.assign(row, row + dim);
        else
          for (int64_t j = 0; j < dim; ++j) partial[j] += row[j];
      }
      if (total.empty())
        total = partial;
      else
        for (int64_t j = 0; j < dim; ++j) total[j] += partial[j];
    }
    out.insert(out.end(), total.begin(), total.end());
  }
  return out;
}

TEST(SegmentSum, AddsInTheChunkOrderOfSumOrderAtAnyThreadCount) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const int64_t k = embtrain::kChunkPositions;
  // Counts around the chunk size and long ones, shuffled.
  std::vector<int64_t> ids;
  int64_t id = 0;
  for (int64_t count : {int64_t{1}, k - 1, k, k + 1, 2 * k - 1, 2 * k, 2 * k + 1, 3 * k + 5,
                        int64_t{1000}, int64_t{4099}, int64_t{2}})
    ids.insert(ids.end(), static_cast<size_t>(count), id += 3);
  std::shuffle(ids.begin(), ids.end(), rng);
  const UniqueIndex index = reference_index(ids);
  const int saved_threads = omp_get_max_threads();
  for (int64_t dim : {1, 5, 16}) {
    // Values that cancel: +-1000 among small ones, so any other order of
    // the adds changes the low digits of the sums.
    std::vector<float> grad = normal_floats(static_cast<int64_t>(ids.size()) * dim, rng);
    for (float& x : grad)
      if (rng() % 4 == 0) x += rng() % 2 ? 1000.f : -1000.f;
    const std::vector<float> want = chunked_sums(grad, dim, index);
    for (int threads : {1, 2, 3}) {
      SCOPED_TRACE("dim " + std::to_string(dim) + ", " + std::to_string(threads) + " threads");
      omp_set_num_threads(threads);
      std::vector<float> got(want.size(), 4242.f);
      embtrain::cpu::segment_sum(grad.data(), dim, index.view(), /*scale_by_count=*/false,
                                 /*skip=*/-1, got.data());
      ASSERT_EQ(got.size(), want.size());
      EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
          << "the sums differ from sum_order.hpp's chunked order";
    }
  }
  omp_set_num_threads(saved_threads);
}

// combine_at_owner fused with update (segment_sum_update), against its
// definition written out: each id's gradient summed in sum_order.hpp's
// chunked order (chunked_sums) from rows found through src_offsets (several
// positions sharing a row, as a bag's positions do), divided by its count
// (the sum of its positions' weights), then update_row on its table row;
// the padding id's row untouched. Long ids with cancelling values, so any
// other order of the adds shows; 1, 2 and 3 threads; every optimizer.
TEST(SegmentSumUpdate, SumsInTheChunkOrderThenUpdatesEachRowOnce) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const int64_t k = embtrain::kChunkPositions, dim = 7, num_rows = 500, row_offset = 100;
  std::vector<int64_t> ids;
  int64_t id = row_offset;
  for (int64_t count : {int64_t{1}, int64_t{1}, k, k + 1, 3 * k + 5, int64_t{1}, int64_t{2},
                        int64_t{700}, int64_t{1}, int64_t{3}})
    ids.insert(ids.end(), static_cast<size_t>(count), id += 1 + rng() % 40);
  for (int i = 0; i < 300; ++i) ids.push_back(row_offset + rng() % num_rows);
  std::shuffle(ids.begin(), ids.end(), rng);
  const int64_t n = static_cast<int64_t>(ids.size());
  const UniqueIndex index = reference_index(ids);
  // Position p's gradient: row src_row[p] of `src` (fewer rows than positions).
  const int64_t num_src = n / 3 + 1;
  std::vector<float> src = normal_floats(num_src * dim, rng);
  for (float& x : src)
    if (rng() % 4 == 0) x += rng() % 2 ? 1000.f : -1000.f;
  std::vector<int64_t> src_offsets(static_cast<size_t>(n));
  std::vector<float> by_position(static_cast<size_t>(n * dim));
  for (int64_t p = 0; p < n; ++p) {
    src_offsets[p] = static_cast<int64_t>(rng() % num_src) * dim;
    std::copy_n(&src[src_offsets[p]], dim, &by_position[p * dim]);
  }
  std::vector<int32_t> weights(static_cast<size_t>(n));
  for (auto& w : weights) w = rng() % 3 == 0 ? 2 + static_cast<int32_t>(rng() % 3) : 1;
  const std::vector<float> sums = chunked_sums(by_position, dim, index);
  StepScalars s;
  s.lr = 0.3f;
  s.eps = 0.01f;
  s.one_minus_beta1 = 0.1f;
  s.one_minus_beta2 = 0.01f;
  const int saved_threads = omp_get_max_threads();
  for (OptimizerKind kind : {OptimizerKind::kSgd, OptimizerKind::kAdagrad, OptimizerKind::kAdam,
                             OptimizerKind::kRowwiseAdagrad})
    for (bool scale : {false, true})
      for (bool weighted : {false, true})
        for (int64_t skip : {int64_t{-1}, index.unique[index.num_unique() / 2]}) {
          const int64_t width = embtrain::optimizer_state_width(kind, dim);
          std::vector<float> table = normal_floats((num_rows + 50) * dim, rng);
          std::vector<float> state(static_cast<size_t>((num_rows + 50) * width));
          std::uniform_real_distribution<float> positive(0.f, 2.f);
          for (auto& x : state) x = positive(rng);
          std::vector<float> want_table = table, want_state = state;
          for (int64_t u = 0; u < index.num_unique(); ++u) {
            if (index.unique[u] == skip) continue;
            std::vector<float> g(&sums[u * dim], &sums[u * dim] + dim);
            if (scale) {
              int64_t count = 0;
              for (int32_t q = index.offsets[u]; q < index.offsets[u + 1]; ++q)
                count += weighted ? weights[index.positions[q]] : 1;
              const float inv = 1.f / static_cast<float>(count);
              for (float& x : g) x *= inv;
            }
            const int64_t r = index.unique[u] - row_offset;
            embtrain::update_row(kind, &want_table[r * dim], want_state.data() + r * width,
                                 g.data(), dim, s);
          }
          embtrain::SegmentLayout layout;
          layout.src_offsets = src_offsets.data();
          layout.weights = weighted ? weights.data() : nullptr;
          for (int threads : {1, 2, 3}) {
            SCOPED_TRACE("optimizer " + std::to_string(static_cast<int>(kind)) + ", scale " +
                         std::to_string(scale) + ", weighted " + std::to_string(weighted) +
                         ", skip " + std::to_string(skip) + ", " + std::to_string(threads) +
                         " threads");
            omp_set_num_threads(threads);
            std::vector<float> got_table = table, got_state = state;
            embtrain::cpu::segment_sum_update(kind, s, got_table.data(), got_state.data(), dim,
                                              row_offset, src.data(), index.view(), layout,
                                              scale, skip);
            EXPECT_EQ(got_table, want_table) << "weights";
            EXPECT_EQ(got_state, want_state) << "optimizer state";
          }
        }
  omp_set_num_threads(saved_threads);
}

// segment_sum_update reading the gradients where they came off the wire,
// in their 16-bit format (or fp32 through the wire), against unpack_wire
// into floats then the float segment_sum_update: the same bits, every
// optimizer, weights and scale_by_count, the padding row skipped, rows at
// odd element offsets, fp16 gradients scaled on the wire as the step sends
// them, 1 and 2 threads.
TEST(SegmentSumUpdate, FromTheWireEqualsUnpackingFirst) {
  using embtrain::CommPrecision;
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const int64_t num_rows = 300, row_offset = 7;
  const int saved_threads = omp_get_max_threads();
  for (int64_t dim : {int64_t{5}, int64_t{128}}) {
    std::vector<int64_t> ids;
    for (int i = 0; i < 400; ++i) ids.push_back(row_offset + rng() % num_rows);
    for (int i = 0; i < embtrain::kChunkPositions + 9; ++i) ids.push_back(row_offset + 3);
    std::shuffle(ids.begin(), ids.end(), rng);
    const int64_t n = static_cast<int64_t>(ids.size());
    const UniqueIndex index = reference_index(ids);
    // Position p's row at element src_offsets[p] of the wire: blocks in
    // shuffled order with gaps, so offsets are odd for odd dims.
    std::vector<int64_t> src_offsets(static_cast<size_t>(n));
    int64_t elements = 0;
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), int64_t{0});
    std::shuffle(order.begin(), order.end(), rng);
    for (int64_t p : order) {
      elements += rng() % 3;
      src_offsets[p] = elements;
      elements += dim;
    }
    std::vector<int32_t> weights(static_cast<size_t>(n));
    for (auto& w : weights) w = rng() % 3 == 0 ? 2 + static_cast<int32_t>(rng() % 3) : 1;
    for (CommPrecision format : {CommPrecision::kBf16, CommPrecision::kFp16, CommPrecision::kFp32}) {
      const float wire_scale = format == CommPrecision::kFp16 ? embtrain::kFp16GradScale : 1.f;
      std::vector<float> grads = normal_floats(elements, rng);
      for (float& x : grads) x *= 0.01f;
      std::vector<uint32_t> wire(static_cast<size_t>(elements));  // room for fp32 too
      embtrain::cpu::pack_wire(grads.data(), elements, format, wire_scale, wire.data());
      std::vector<float> unpacked(static_cast<size_t>(elements));
      embtrain::cpu::unpack_wire(wire.data(), elements, format, 1.f / wire_scale, unpacked.data());
      StepScalars s;
      s.lr = 0.3f;
      s.eps = 0.01f;
      s.one_minus_beta1 = 0.1f;
      s.one_minus_beta2 = 0.01f;
      for (OptimizerKind kind : {OptimizerKind::kSgd, OptimizerKind::kAdagrad,
                                 OptimizerKind::kAdam, OptimizerKind::kRowwiseAdagrad})
        for (bool scale : {false, true})
          for (bool weighted : {false, true}) {
            const int64_t skip = weighted ? index.unique[index.num_unique() / 3] : -1;
            const int64_t width = embtrain::optimizer_state_width(kind, dim);
            std::vector<float> table = normal_floats((num_rows + row_offset) * dim, rng);
            std::vector<float> state(static_cast<size_t>((num_rows + row_offset) * width));
            std::uniform_real_distribution<float> positive(0.f, 2.f);
            for (auto& x : state) x = positive(rng);
            embtrain::SegmentLayout layout;
            layout.src_offsets = src_offsets.data();
            layout.weights = weighted ? weights.data() : nullptr;
            std::vector<float> want_table = table, want_state = state;
            embtrain::cpu::segment_sum_update(kind, s, want_table.data(), want_state.data(), dim,
                                              row_offset, unpacked.data(), index.view(), layout,
                                              scale, skip);
            for (int threads : {1, 2}) {
              SCOPED_TRACE("dim " + std::to_string(dim) + ", " +
                           embtrain::comm_precision_name(format) + ", optimizer " +
                           std::to_string(static_cast<int>(kind)) + ", scale " +
                           std::to_string(scale) + ", weighted " + std::to_string(weighted) +
                           ", " + std::to_string(threads) + " threads");
              omp_set_num_threads(threads);
              std::vector<float> got_table = table, got_state = state;
              embtrain::cpu::segment_sum_update(kind, s, got_table.data(), got_state.data(), dim,
                                                row_offset, wire.data(), format, 1.f / wire_scale,
                                                index.view(), layout, scale, skip);
              EXPECT_EQ(std::memcmp(got_table.data(), want_table.data(), table.size() * 4), 0)
                  << "weights";
              EXPECT_EQ(std::memcmp(got_state.data(), want_state.data(), state.size() * 4), 0)
                  << "optimizer state";
            }
          }
    }
  }
  omp_set_num_threads(saved_threads);
}

// sum_order.hpp's order for row reductions, from its text: 32 lanes over
// groups of 4 columns, each adding its terms in column order from 0, then
// the butterfly v[l] += v[l + w] for w = 16 .. 1.
float lane_tree_sum(const std::vector<float>& terms) {
  std::vector<float> lane(32, 0.f);
  for (size_t j = 0; j < terms.size(); ++j) lane[(j / 4) % 32] += terms[j];
  for (int w = 16; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) lane[l] += lane[l + w];
  return lane[0];
}

TEST(SumOrder, RowSumIsTheLaneTree) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int64_t dim : {1, 3, 4, 31, 128, 130, 257, 1000}) {
    std::vector<float> terms = normal_floats(dim, rng);
    for (float& x : terms) x *= std::pow(10.f, static_cast<float>(rng() % 8) - 4.f);
    const float want = lane_tree_sum(terms);
    const float got = embtrain::ordered_row_sum(dim, [&](int64_t j) { return terms[j]; });
    EXPECT_EQ(std::memcmp(&got, &want, sizeof got), 0)
        << "dim " << dim << ": " << got << " vs " << want;
  }
}

TEST(SegmentSum, SmallExampleWithSkip) {
  // ids 3, 1, 3, 7, 3 -> unique 1, 3, 7; skip slot 1 (id 3): rows for 1 and 7.
  const std::vector<int64_t> ids = {3, 1, 3, 7, 3};
  const std::vector<float> grad = {1, 10, 2, 20, 4, 40, 8, 80, 16, 160};
  const UniqueIndex index = reference_index(ids);
  std::vector<float> sums(6, -1.f);
  embtrain::cpu::segment_sum(grad.data(), 2, index.view(), false, 1, sums.data());
  EXPECT_EQ(sums, (std::vector<float>{2, 20, 8, 80, -1, -1}));
  embtrain::cpu::segment_sum(grad.data(), 2, index.view(), true, -1, sums.data());
  EXPECT_EQ(sums, (std::vector<float>{2, 20, 7, 70, 8, 80}));
}

TEST(SegmentSum, EmptyBatchWritesNothing) {
  UniqueIndex index;
  index.offsets = {0};
  float sentinel = 5.f;
  embtrain::cpu::segment_sum(nullptr, 4, index.view(), true, -1, &sentinel);
  EXPECT_EQ(sentinel, 5.f);
}

// ----------------------------------------------------------------- update

TEST(UpdateRows, MatchesUpdateRowRowByRow) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const int64_t num_rows = 3000, dim = 13, row_offset = 70, n = 2000;
  StepScalars s;
  s.lr = 0.3f;
  s.eps = 0.01f;
  s.one_minus_beta1 = 0.1f;
  s.one_minus_beta2 = 0.01f;
  for (OptimizerKind kind : {OptimizerKind::kSgd, OptimizerKind::kAdagrad, OptimizerKind::kAdam,
                             OptimizerKind::kRowwiseAdagrad}) {
    SCOPED_TRACE(std::string("optimizer ") + std::to_string(static_cast<int>(kind)));
    const int64_t width = embtrain::optimizer_state_width(kind, dim);
    std::vector<float> table = normal_floats(num_rows * dim, rng);
    std::vector<float> state(static_cast<size_t>(num_rows * width));
    std::uniform_real_distribution<float> positive(0.f, 2.f);
    for (auto& x : state) x = positive(rng);
    std::vector<int64_t> rows = distinct_rows(num_rows, n, rng);
    for (auto& r : rows) r += row_offset;
    const std::vector<float> grads = normal_floats(n * dim, rng);

    std::vector<float> want_table = table, want_state = state;
    for (int64_t k = 0; k < n; ++k) {
      const int64_t r = rows[k] - row_offset;
      embtrain::update_row(kind, &want_table[r * dim], want_state.data() + r * width,
                           &grads[k * dim], dim, s);
    }
    embtrain::cpu::update_rows(kind, s, table.data(), state.data(), dim, rows.data(), grads.data(),
                               n, row_offset);
    // Rows not in `rows` are bitwise equal in both, so this covers them too.
    EXPECT_TRUE(all_close(table.data(), want_table.data(), num_rows * dim, 1e-6)) << "weights";
    EXPECT_TRUE(all_close(state.data(), want_state.data(), num_rows * width, 1e-6)) << "state";

    const std::vector<float> untouched = table;
    embtrain::cpu::update_rows(kind, s, table.data(), state.data(), dim, rows.data(), grads.data(),
                               0, row_offset);
    EXPECT_EQ(table, untouched) << "n = 0 changed weights";
  }
}

}  // namespace
