// The CUDA kernels of a sharded step's local stages against their CPU
// references (src/kernels/cpu) on fresh random inputs: Zipf ids (so some ids
// own hundreds or thousands of positions and the chunked reduce is
// exercised), ids whose counts straddle the chunk size, padding present and
// absent, dims 1, 3, 4, 128 and 130, empty inputs, all four optimizers,
// weights and scale_by_count on and off, gradients that cancel. Everything
// must match exactly: ids and indexes, and floats bit for bit, since both
// backends add in one order (embtrain/sum_order.hpp). Built for a GPU
// (cuda_tests; without one every test skips) and for the emulated device of
// the CPU-only tree (emulated_kernel_tests), whose float kernels transcribe
// the CUDA ones. The seed is printed; EMBTRAIN_TEST_SEED replays it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../unit/test_util.hpp"
#include "cuda_test_util.hpp"
#include "kernels/cuda/device_memory.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cuda/cuda_kernels.hpp"
#include "embtrain/optimizer.hpp"
#include "embtrain/zipf.hpp"

namespace embtrain {
namespace {

using embtrain_test::all_close;
using embtrain_test::DeviceArray;
using embtrain_test::download;
using embtrain_test::emulated_device;
using embtrain_test::large_case;
using embtrain_test::same_bits;
using embtrain_test::seed_trace;
using embtrain_test::test_seed;

const int64_t kDims[] = {1, 3, 4, 128, 130};
const OptimizerKind kOptimizers[] = {OptimizerKind::kSgd, OptimizerKind::kAdagrad,
                                     OptimizerKind::kAdam, OptimizerKind::kRowwiseAdagrad};

// n ids in [0, rows): Zipf (alpha 1.1, so the head id owns about a fifth of
// the positions), with the padding id 0 at a fraction pad_frac of them.
// One row has only the padding id.
std::vector<int64_t> zipf_ids(int64_t n, int64_t rows, double pad_frac, std::mt19937_64& rng) {
  if (rows < 2) return std::vector<int64_t>(static_cast<size_t>(n), 0);
  const ZipfSampler zipf(rows, 1.1);
  return sample_ids(zipf, n, pad_frac, rng(), rng());
}

// Ids whose counts straddle the chunk size: 1, K - 1, K, K + 1, 2K - 1, 2K,
// 2K + 1, 3K + 2 and some long ones (many chunks), shuffled.
std::vector<int64_t> boundary_ids(std::mt19937_64& rng) {
  const int64_t k = cuda::kChunkPositions;
  const int64_t counts[] = {1,         k - 1,     k, k + 1, 2 * k - 1, 2 * k,
                            2 * k + 1, 3 * k + 2, 1000, 5000, 3};
  std::vector<int64_t> ids;
  int64_t id = 5;
  for (int64_t c : counts) {
    ids.insert(ids.end(), static_cast<size_t>(c), id);
    id += 7;
  }
  std::shuffle(ids.begin(), ids.end(), rng);
  return ids;
}

std::vector<float> normal_floats(size_t n, float sigma, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

void expect_same_index(const UniqueIndex& got, const cpu::UniqueWorkspace& want) {
  ASSERT_EQ(got.num_unique, want.num_unique());
  ASSERT_EQ(got.n, static_cast<int64_t>(want.inverse.size()));
  EXPECT_EQ(download(got.unique, got.num_unique), want.unique);
  EXPECT_EQ(download(got.inverse, got.n), want.inverse);
  EXPECT_EQ(download(got.offsets, got.num_unique + 1), want.offsets);
  EXPECT_EQ(download(got.positions, got.n), want.positions);
}

TEST(CudaStepKernels, WidenIds) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int64_t n : {0, 1, 1000, 70001}) {
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (int32_t& id : ids) id = static_cast<int32_t>(rng());  // negative ones too
    DeviceArray<int32_t> d_in(ids);
    DeviceArray<int64_t> d_out(ids.size());
    cuda::widen_ids(d_in.get(), n, d_out.get(), nullptr);
    EXPECT_EQ(d_out.host(), std::vector<int64_t>(ids.begin(), ids.end())) << "n " << n;
  }
}

TEST(CudaStepKernels, FindBadIdReportsTheFirst) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const int64_t bound = 1000;
  DeviceArray<int64_t> d_result(2);
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{100}, large_case(100000)}) {
    std::vector<int64_t> ids(static_cast<size_t>(n));
    for (int64_t& id : ids) id = static_cast<int64_t>(rng() % bound);
    auto check = [&](int64_t want_pos) {
      const int64_t want_value = want_pos < 0 ? 0 : ids[want_pos];
      DeviceArray<int64_t> d_ids(ids);
      cuda::find_bad_id(d_ids.get(), n, bound, d_result.get(), nullptr);
      EXPECT_EQ(d_result.host(), (std::vector<int64_t>{want_pos, want_value})) << "n " << n;
      std::vector<int32_t> ids32(ids.begin(), ids.end());
      DeviceArray<int32_t> d_ids32(ids32);
      cuda::find_bad_id(d_ids32.get(), n, bound, d_result.get(), nullptr);
      EXPECT_EQ(d_result.host(), (std::vector<int64_t>{want_pos, want_value})) << "n " << n;
    };
    check(-1);
    if (n == 0) continue;
    // Bad ids at random places, below and above the range: the first counts.
    int64_t first = n;
    for (int k = 0; k < 5; ++k) {
      const int64_t p = static_cast<int64_t>(rng() % n);
      ids[p] = k % 2 ? bound + static_cast<int64_t>(rng() % 5) : -1 - static_cast<int64_t>(k);
      first = std::min(first, p);
    }
    check(first);
  }
}

TEST(CudaStepKernels, UniqueMatchesCpu) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  cuda::UniqueWorkspace ws;
  struct Case {
    int64_t n, rows, id_bound;
    double pad_frac;
  };
  const Case cases[] = {{0, 10, 10, 0.0},
                        {1, 1, 1, 0.0},
                        {1000, 7, 7, 0.2},
                        {3000, 500, 500, 0.0},
                        {20000, 1000, 1000, 0.1},
                        {large_case(50000), 1 << 20, 1 << 20, 0.05},
                        {5000, 3000, int64_t{1} << 40, 0.0}};
  for (const Case& c : cases) {
    std::vector<int64_t> ids = zipf_ids(c.n, c.rows, c.pad_frac, rng);
    if (c.id_bound > c.rows)  // spread the ids over a bound far above 2^32
      for (int64_t& id : ids) id = id * (c.id_bound / c.rows);
    cpu::UniqueWorkspace want;
    cpu::unique_ids(ids.data(), c.n, c.id_bound, &want);
    DeviceArray<int64_t> d_ids(ids);
    const UniqueIndex got =
        cuda::unique_ids(d_ids.get(), c.n, c.id_bound, &ws, nullptr);
    SCOPED_TRACE("n " + std::to_string(c.n) + " id_bound " + std::to_string(c.id_bound));
    expect_same_index(got, want);
  }
  std::vector<int64_t> ids = boundary_ids(rng);
  cpu::UniqueWorkspace want;
  cpu::unique_ids(ids.data(), static_cast<int64_t>(ids.size()), 100, &want);
  DeviceArray<int64_t> d_ids(ids);
  expect_same_index(
      cuda::unique_ids(d_ids.get(), static_cast<int64_t>(ids.size()), 100, &ws, nullptr), want);

  // Steady state: the same sizes again allocate nothing.
  const int64_t before = cuda::allocation_count();
  cuda::unique_ids(d_ids.get(), static_cast<int64_t>(ids.size()), 100, &ws, nullptr);
  EXPECT_EQ(cuda::allocation_count(), before);
}

TEST(CudaStepKernels, BucketizeIsLowerBound) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int64_t rows : {int64_t{1}, int64_t{10}, int64_t{1000}, large_case(100000)}) {
    for (int ranks : {1, 2, 3, 8}) {
      std::vector<int64_t> ids = zipf_ids(rows * 2, rows, 0.1, rng);
      std::sort(ids.begin(), ids.end());
      ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
      // Contiguous row blocks as the shard plan makes them, then the end.
      std::vector<int64_t> bounds;
      for (int r = 0; r <= ranks; ++r) bounds.push_back(rows * r / ranks);
      bounds.push_back(rows + 5);  // past every id
      std::vector<int64_t> want;
      for (int64_t b : bounds)
        want.push_back(std::lower_bound(ids.begin(), ids.end(), b) - ids.begin());
      DeviceArray<int64_t> d_ids(ids), d_bounds(bounds), d_begin(bounds.size());
      cuda::bucketize(d_ids.get(), static_cast<int64_t>(ids.size()), d_bounds.get(),
                      static_cast<int64_t>(bounds.size()), d_begin.get(), nullptr);
      EXPECT_EQ(d_begin.host(), want) << "rows " << rows << " ranks " << ranks;
    }
  }
  DeviceArray<int64_t> d_none(0), d_bounds(std::vector<int64_t>{0, 4}), d_begin(2);
  cuda::bucketize(d_none.get(), 0, d_bounds.get(), 2, d_begin.get(), nullptr);
  EXPECT_EQ(d_begin.host(), (std::vector<int64_t>{0, 0}));
}

// A few ids picked out of a batch by position (the overlapped exchanges'
// slice bounds), repeats and the ends included: each the id at its place.
TEST(CudaStepKernels, TakeIdsPicksTheIdsAtThePositions) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{5000}}) {
    std::vector<int64_t> ids(static_cast<size_t>(n));
    for (int64_t& id : ids) id = static_cast<int64_t>(rng() >> 2);  // up to 2^62
    std::vector<int64_t> positions{0, n - 1}, want;
    for (int i = 0; i < 300; ++i)
      positions.push_back(std::uniform_int_distribution<int64_t>(0, n - 1)(rng));
    for (int64_t p : positions) want.push_back(ids[static_cast<size_t>(p)]);
    DeviceArray<int64_t> d_ids(ids), d_positions(positions), d_out(positions.size());
    cuda::take_ids(d_ids.get(), d_positions.get(), static_cast<int64_t>(positions.size()),
                   d_out.get(), nullptr);
    EXPECT_EQ(d_out.host(), want) << "batch of " << n;
  }
}

// Items of consecutive blocks, empty blocks among them (as a step's
// (peer, table) blocks are): item k's row is its block's base plus its
// place in the block times dim.
TEST(CudaStepKernels, BlockOffsetsAreBasePlusPlace) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int n = 0; n < 50; ++n) {
    const int64_t blocks = std::uniform_int_distribution<int64_t>(1, 9)(rng);
    const int64_t dim = std::uniform_int_distribution<int64_t>(1, 130)(rng);
    std::vector<int64_t> starts{0}, base, want;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t size = std::uniform_int_distribution<int64_t>(0, 3000)(rng) * (n % 4 != 0);
      base.push_back(std::uniform_int_distribution<int64_t>(0, 1 << 20)(rng));
      for (int64_t k = 0; k < size; ++k) want.push_back(base[b] + k * dim);
      starts.push_back(starts.back() + size);
    }
    const int64_t items = starts.back();
    DeviceArray<int64_t> d_starts(starts), d_base(base), d_out(want.size());
    cuda::block_offsets(d_starts.get(), d_base.get(), blocks, dim, items, d_out.get(), nullptr);
    EXPECT_EQ(d_out.host(), want) << "case " << n << ": " << blocks << " blocks, dim " << dim;
  }
}

TEST(CudaStepKernels, ExpandRowsMatchesCpu) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int64_t dim : kDims) {
    for (int64_t n : {0, 1, 5000}) {
      const int64_t num_rows = 300;
      const std::vector<float> base =
          normal_floats(static_cast<size_t>((num_rows + 2) * dim), 1.f, rng);
      std::vector<int64_t> offsets(num_rows);  // rows in a shuffled order
      for (int64_t u = 0; u < num_rows; ++u) offsets[u] = u * dim;
      std::shuffle(offsets.begin(), offsets.end(), rng);
      std::vector<int32_t> index(static_cast<size_t>(n));
      for (int32_t& i : index) i = static_cast<int32_t>(rng() % num_rows);
      std::vector<float> want(static_cast<size_t>(n * dim));
      cpu::expand_rows(base.data(), offsets.data(), index.data(), n, dim, want.data());
      DeviceArray<float> d_base(base), d_out(want.size());
      DeviceArray<int64_t> d_offsets(offsets);
      DeviceArray<int32_t> d_index(index);
      cuda::expand_rows(d_base.get(), d_offsets.get(), d_index.get(), n, dim, d_out.get(),
                           nullptr);
      EXPECT_EQ(d_out.host(), want) << "dim " << dim << " n " << n;  // a copy: exact
    }
  }
}

// max_norm for norm types 1, 2, 3, 3.5 and inf: bit for bit. The norm's
// terms are added in one order on both sides; for p other than 1, 2 and inf
// they are powf(|x|, p), which is not correctly rounded, and CUDA's powf and
// the host's libm may differ in the last bit: exact on the emulated device,
// within 1e-5 on a GPU.
TEST(CudaStepKernels, RenormMatchesCpu) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int64_t dim : {int64_t{1}, int64_t{3}, int64_t{4}, int64_t{128}, int64_t{130},
                      int64_t{300}}) {
    for (float norm_type : {1.f, 2.f, 3.f, 3.5f, INFINITY}) {
      const int64_t num_rows = 400, n = 250, row_offset = 17;
      std::vector<float> table = normal_floats(static_cast<size_t>(num_rows * dim), 1.f, rng);
      // Columns over six orders of magnitude: the norm's rounding depends on its order.
      for (float& x : table) x *= std::pow(10.f, static_cast<float>(rng() % 6) - 3.f);
      std::vector<int64_t> rows(num_rows);
      std::iota(rows.begin(), rows.end(), row_offset);
      std::shuffle(rows.begin(), rows.end(), rng);
      rows.resize(n);  // distinct
      // About half the rows above max_norm: the median norm of the rows.
      std::vector<float> norms;
      for (int64_t r = 0; r < num_rows; ++r)
        norms.push_back(row_norm(&table[r * dim], dim, norm_type));
      std::nth_element(norms.begin(), norms.begin() + num_rows / 2, norms.end());
      const float max_norm = norms[num_rows / 2];
      DeviceArray<float> d_table(table);
      DeviceArray<int64_t> d_rows(rows);
      cuda::renorm_rows(d_table.get(), dim, d_rows.get(), n, row_offset, max_norm, norm_type,
                        nullptr);
      cpu::renorm_rows(table.data(), dim, rows.data(), n, row_offset, max_norm, norm_type);
      const std::vector<float> got = d_table.host();
      SCOPED_TRACE("dim " + std::to_string(dim) + " norm_type " + std::to_string(norm_type));
      const bool pow_terms = norm_type != 1.f && norm_type != 2.f && norm_type != INFINITY;
      if (pow_terms && !emulated_device())
        EXPECT_TRUE(all_close(got.data(), table.data(), static_cast<int64_t>(table.size()), 1e-5));
      else
        EXPECT_TRUE(same_bits(got, table));
    }
  }
}

// One batch as the owner sees it: the ids of the positions, their gradient
// rows (plain or through src_offsets) and weights.
struct Batch {
  std::vector<int64_t> ids;
  std::vector<float> src;
  std::vector<int64_t> src_offsets;  // empty: plain layout
  std::vector<int32_t> weights;      // empty: none
};

Batch make_batch(std::vector<int64_t> ids, int64_t dim, bool offsets, bool weights,
                 std::mt19937_64& rng) {
  Batch b;
  b.ids = std::move(ids);
  const int64_t n = static_cast<int64_t>(b.ids.size());
  // Gradients that cancel: a quarter of them +-1000 (random sign), the rest
  // N(0, 0.1), so that a long segment's sum loses most of its digits and
  // any change in the order of its adds shows in the result.
  b.src = normal_floats(static_cast<size_t>((n + 3) * dim), 0.1f, rng);
  for (float& x : b.src)
    if (rng() % 4 == 0) x += rng() % 2 ? 1000.f : -1000.f;
  if (offsets) {  // the positions' rows in a shuffled order, after 3 spare rows
    for (int64_t p = 0; p < n; ++p) b.src_offsets.push_back((p + 3) * dim);
    std::shuffle(b.src_offsets.begin(), b.src_offsets.end(), rng);
  }
  if (weights)
    for (int64_t p = 0; p < n; ++p) b.weights.push_back(1 + static_cast<int32_t>(rng() % 4));
  return b;
}

template <typename T>
const T* data_or_null(const std::vector<T>& v) {
  return v.empty() ? nullptr : v.data();
}

// The batches a reduce test walks through: Zipf with and without padding
// (id 0), the chunk-boundary counts, and the empty batch.
std::vector<std::vector<int64_t>> reduce_id_sets(std::mt19937_64& rng) {
  return {zipf_ids(3000, 500, 0.1, rng), zipf_ids(3000, 500, 0.0, rng), boundary_ids(rng), {}};
}

TEST(CudaStepKernels, SegmentSumMatchesCpu) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const int64_t id_bound = 500;
  cuda::UniqueWorkspace unique_ws;
  cuda::SegmentWorkspace segment_ws;
  for (const std::vector<int64_t>& ids : reduce_id_sets(rng))
    for (int64_t dim : kDims)
      for (bool offsets : {false, true})
        for (bool weights : {false, true})
          for (bool scale : {false, true}) {
            const Batch b = make_batch(ids, dim, offsets, weights, rng);
            const int64_t n = static_cast<int64_t>(b.ids.size());
            cpu::UniqueWorkspace index;
            cpu::unique_ids(b.ids.data(), n, id_bound, &index);
            const int64_t num_unique = index.num_unique();
            // With offsets, dst rows shuffled and the padding id's skipped.
            std::vector<int64_t> dst_offsets;
            if (offsets) {
              for (int64_t u = 0; u < num_unique; ++u) dst_offsets.push_back(u * dim);
              std::shuffle(dst_offsets.begin(), dst_offsets.end(), rng);
              if (num_unique > 0 && index.unique[0] == 0) dst_offsets[0] = -1;
            }
            SegmentLayout layout;
            layout.src_offsets = data_or_null(b.src_offsets);
            layout.weights = data_or_null(b.weights);
            layout.dst_offsets = data_or_null(dst_offsets);
            std::vector<float> want(static_cast<size_t>(num_unique * dim), 7.f);
            cpu::segment_sum(b.src.data(), dim, index.view(), layout, scale, want.data());

            DeviceArray<int64_t> d_ids(b.ids), d_src_offsets(b.src_offsets), d_dst(dst_offsets);
            DeviceArray<int32_t> d_weights(b.weights);
            DeviceArray<float> d_src(b.src), d_out(want.size(), 7.f);
            const UniqueIndex d_index =
                cuda::unique_ids(d_ids.get(), n, id_bound, &unique_ws, nullptr);
            SegmentLayout d_layout;
            d_layout.src_offsets = offsets ? d_src_offsets.get() : nullptr;
            d_layout.weights = weights ? d_weights.get() : nullptr;
            d_layout.dst_offsets = offsets ? d_dst.get() : nullptr;
            cuda::segment_sum(d_src.get(), dim, d_index, d_layout, scale, d_out.get(), &segment_ws,
                              nullptr);
            EXPECT_TRUE(same_bits(d_out.host(), want))
                << "n " << n << " dim " << dim << " offsets " << offsets << " weights " << weights
                << " scale " << scale;
          }
}

// The reference of segment_sum_update: cpu::segment_sum into a gradient
// buffer of the rows that are not skip_row, then cpu::update_rows.
void cpu_sum_update(OptimizerKind kind, const StepScalars& s, std::vector<float>& table,
                    std::vector<float>& state, int64_t dim, int64_t row_offset, const Batch& b,
                    int64_t id_bound, bool scale, int64_t skip_row) {
  cpu::UniqueWorkspace index;
  cpu::unique_ids(b.ids.data(), static_cast<int64_t>(b.ids.size()), id_bound, &index);
  std::vector<int64_t> dst(static_cast<size_t>(index.num_unique()));
  std::vector<int64_t> rows;
  for (int64_t u = 0; u < index.num_unique(); ++u) {
    dst[u] = index.unique[u] == skip_row ? -1 : static_cast<int64_t>(rows.size()) * dim;
    if (dst[u] >= 0) rows.push_back(index.unique[u]);
  }
  SegmentLayout layout;
  layout.src_offsets = data_or_null(b.src_offsets);
  layout.weights = data_or_null(b.weights);
  layout.dst_offsets = dst.data();
  std::vector<float> grads(rows.size() * static_cast<size_t>(dim));
  cpu::segment_sum(b.src.data(), dim, index.view(), layout, scale, grads.data());
  cpu::update_rows(kind, s, table.data(), state.data(), dim, rows.data(), grads.data(),
                   static_cast<int64_t>(rows.size()), row_offset);
}

StepScalars scalars_for(OptimizerKind kind) {
  OptimizerConfig config;
  config.kind = kind;
  config.lr = 0.05;
  return step_scalars(config, 3);
}

TEST(CudaStepKernels, SegmentSumUpdateMatchesCpu) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  // The owner of rows [row_offset, row_offset + rows); ids are global.
  const int64_t rows = 500, row_offset = 1000, id_bound = row_offset + rows;
  cuda::UniqueWorkspace unique_ws;
  cuda::SegmentWorkspace segment_ws;
  for (std::vector<int64_t> ids : reduce_id_sets(rng)) {
    for (int64_t& id : ids) id += row_offset;  // the padding id 0 becomes row_offset
    for (OptimizerKind kind : kOptimizers)
      for (int64_t dim : kDims)
        // Padding row in the batch (or not, for the id sets without it), or no padding.
        for (int64_t skip_row : {row_offset, int64_t{-1}})
          for (bool weights : {false, true})
            for (bool scale : {false, true}) {
              const Batch b = make_batch(ids, dim, /*offsets=*/weights, weights, rng);
              const int64_t n = static_cast<int64_t>(b.ids.size());
              const int64_t width = optimizer_state_width(kind, dim);
              std::vector<float> table = normal_floats(static_cast<size_t>(rows * dim), 1.f, rng);
              std::vector<float> state = normal_floats(static_cast<size_t>(rows * width), 1.f, rng);
              for (float& x : state) x = std::abs(x);
              const StepScalars s = scalars_for(kind);

              DeviceArray<float> d_table(table), d_state(state), d_src(b.src);
              DeviceArray<int64_t> d_ids(b.ids), d_src_offsets(b.src_offsets);
              DeviceArray<int32_t> d_weights(b.weights);
              const UniqueIndex d_index =
                  cuda::unique_ids(d_ids.get(), n, id_bound, &unique_ws, nullptr);
              SegmentLayout d_layout;
              d_layout.src_offsets = b.src_offsets.empty() ? nullptr : d_src_offsets.get();
              d_layout.weights = b.weights.empty() ? nullptr : d_weights.get();
              cuda::segment_sum_update(kind, s, d_table.get(), d_state.get(), dim, row_offset,
                                       d_src.get(), d_index, d_layout, scale, skip_row, &segment_ws,
                                       nullptr);
              cpu_sum_update(kind, s, table, state, dim, row_offset, b, id_bound, scale, skip_row);
              SCOPED_TRACE(std::string(optimizer_name(kind)) + " n " + std::to_string(n) + " dim " +
                           std::to_string(dim) + " skip_row " + std::to_string(skip_row) +
                           " weights " + std::to_string(weights) + " scale " +
                           std::to_string(scale));
              EXPECT_TRUE(same_bits(d_table.host(), table)) << "table";
              EXPECT_TRUE(same_bits(d_state.host(), state)) << "state";
            }
  }
}

// Under a steep Zipf law (the head id owns tens of thousands of positions),
// the fused update run twice from the same start gives the same bits, and
// the second run allocates nothing.
TEST(CudaStepKernels, SegmentSumUpdateIsDeterministic) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const int64_t rows = large_case(20000), n = large_case(200000);
  const ZipfSampler zipf(rows, 1.2);
  const std::vector<int64_t> ids = sample_ids(zipf, n, 0.05, rng(), rng());
  for (OptimizerKind kind : kOptimizers)
    for (int64_t dim : {int64_t{3}, int64_t{128}}) {
      const Batch b = make_batch(ids, dim, /*offsets=*/false, /*weights=*/true, rng);
      const int64_t width = optimizer_state_width(kind, dim);
      const std::vector<float> table = normal_floats(static_cast<size_t>(rows * dim), 1.f, rng);
      std::vector<float> state = normal_floats(static_cast<size_t>(rows * width), 1.f, rng);
      for (float& x : state) x = std::abs(x);
      DeviceArray<float> d_src(b.src);
      DeviceArray<int64_t> d_ids(b.ids);
      DeviceArray<int32_t> d_weights(b.weights);
      cuda::UniqueWorkspace unique_ws;
      cuda::SegmentWorkspace segment_ws;
      std::vector<float> results[2][2];
      int64_t allocations[2] = {0, 0};
      for (int run = 0; run < 2; ++run) {
        DeviceArray<float> d_table(table), d_state(state);
        const int64_t after_inputs = cuda::allocation_count();
        const UniqueIndex d_index =
            cuda::unique_ids(d_ids.get(), n, rows, &unique_ws, nullptr);
        SegmentLayout layout;
        layout.weights = d_weights.get();
        cuda::segment_sum_update(kind, scalars_for(kind), d_table.get(), d_state.get(), dim, 0,
                                 d_src.get(), d_index, layout, /*scale_by_count=*/true,
                                 /*skip_row=*/0, &segment_ws, nullptr);
        allocations[run] = cuda::allocation_count() - after_inputs;
        results[run][0] = d_table.host();
        results[run][1] = d_state.host();
      }
      SCOPED_TRACE(std::string(optimizer_name(kind)) + " dim " + std::to_string(dim));
      EXPECT_EQ(allocations[1], 0);
      for (int k = 0; k < 2; ++k) {
        ASSERT_EQ(results[0][k].size(), results[1][k].size());
        if (results[0][k].empty()) continue;  // SGD has no state (memcmp must not see null)
        EXPECT_EQ(std::memcmp(results[0][k].data(), results[1][k].data(),
                              results[0][k].size() * sizeof(float)),
                  0)
            << (k == 0 ? "table" : "state") << " differs between two identical runs";
      }
    }
}

}  // namespace
}  // namespace embtrain
