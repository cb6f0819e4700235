// CUDA kernels against their CPU references on random rows: bit for bit,
// since both backends compute in the same order (embtrain/sum_order.hpp).
// Built twice: for a GPU (cuda_tests), where without a GPU every test skips
// with the reason unless EMBTRAIN_REQUIRE_GPU=1 makes that a failure, and
// for the emulated device of the CPU-only tree (emulated_kernel_tests). The
// seed is printed; EMBTRAIN_TEST_SEED replays it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../unit/test_util.hpp"
#include "cuda_test_util.hpp"
#include "embtrain/comm_precision.hpp"
#include "embtrain/embedding_table.hpp"
#include "embtrain/optimizer.hpp"
#include "embtrain/shard_plan.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cuda/cuda_kernels.hpp"

namespace embtrain {
namespace {

using embtrain_test::DeviceArray;
using embtrain_test::large_case;
using embtrain_test::same_bits;
using embtrain_test::seed_trace;
using embtrain_test::test_seed;

// Row gathers against the CPU's, and the owner's gather straight into the
// wire format against the CPU's gather then pack (and gather then round),
// with the wire buffer both on 8 bytes (the kernel's 4-wide path when
// dim % 4 == 0) and off it.
TEST(CudaKernels, GatherMatchesCpu) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  for (int64_t dim : {1, 3, 4, 33, 128}) {
    // Magnitudes over 2^-20..2^20: 16-bit formats round, fp16 saturates
    // and goes subnormal.
    const int64_t rows = 257, n = 1000, offset = 40;
    std::vector<float> table(rows * dim);
    for (float& x : table) x = normal(rng) * std::ldexp(1.f, static_cast<int>(rng() % 40) - 20);
    std::vector<int64_t> index(n);
    for (int64_t& i : index) i = offset + static_cast<int64_t>(rng() % rows);
    std::vector<float> gathered(n * dim);
    cpu::gather_rows(table.data(), dim, index.data(), n, offset, gathered.data());
    DeviceArray<float> d_table(table), d_gathered(gathered.size());
    DeviceArray<int64_t> d_index(index);
    cuda::gather_rows(d_table.get(), dim, d_index.get(), n, offset, d_gathered.get(), nullptr);
    EXPECT_TRUE(same_bits(d_gathered.host(), gathered)) << "dim " << dim;
    for (CommPrecision p : {CommPrecision::kFp32, CommPrecision::kBf16, CommPrecision::kFp16}) {
      SCOPED_TRACE("dim " + std::to_string(dim) + ", " + comm_precision_name(p));
      const int64_t elems = n * dim, width = comm_bytes(p);
      std::vector<char> want(static_cast<size_t>(elems * width));
      cpu::pack_wire(gathered.data(), elems, p, 1.f, want.data());
      for (int64_t skew : {0, 1}) {  // elements of the wire's own type before the rows
        std::vector<char> poison(static_cast<size_t>((elems + 1) * width), 0x5a);
        DeviceArray<char> d_wire(poison);
        cuda::gather_rows_packed(d_table.get(), dim, d_index.get(), n, offset, p,
                                 d_wire.get() + skew * width, nullptr);
        const std::vector<char> got = d_wire.host();
        EXPECT_EQ(std::memcmp(got.data() + skew * width, want.data(), want.size()), 0)
            << "packed, skew " << skew;
      }
      std::vector<float> rounded(gathered);
      cpu::round_wire(rounded.data(), elems, p, 1.f);
      DeviceArray<float> d_out(static_cast<size_t>(elems));
      cuda::gather_rows_rounded(d_table.get(), dim, d_index.get(), n, offset, p, d_out.get(),
                                nullptr);
      EXPECT_TRUE(same_bits(d_out.host(), rounded)) << "rounded";
    }
  }
}

TEST(CudaKernels, UpdateMatchesCpuForEveryOptimizer) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  for (OptimizerKind kind : {OptimizerKind::kSgd, OptimizerKind::kAdagrad, OptimizerKind::kAdam,
                             OptimizerKind::kRowwiseAdagrad}) {
    // 130 and 300: a last block of lanes only partly filled (sum_order.hpp).
    for (int64_t dim : {1, 7, 64, 128, 130, 300}) {
      const int64_t rows = 500, n = 200;
      const int64_t width = optimizer_state_width(kind, dim);
      std::vector<float> table(rows * dim), state(rows * width), grads(n * dim);
      for (float& x : table) x = normal(rng);
      for (float& x : state) x = std::abs(normal(rng));
      // Gradients over six orders of magnitude, so that the row-wise squared
      // norm's rounding depends on its order.
      for (float& x : grads) x = normal(rng) * std::pow(10.f, static_cast<float>(rng() % 6) - 3.f);
      std::vector<int64_t> all(rows);
      for (int64_t r = 0; r < rows; ++r) all[r] = r;
      std::shuffle(all.begin(), all.end(), rng);
      std::vector<int64_t> picked(all.begin(), all.begin() + n);  // distinct rows
      OptimizerConfig config;
      config.kind = kind;
      config.lr = 0.05;
      config.lr_decay = 0.01;
      const StepScalars s = step_scalars(config, 3);

      DeviceArray<float> d_table(table), d_state(state), d_grads(grads);
      DeviceArray<int64_t> d_rows(picked);
      cuda::update_rows(kind, s, d_table.get(), d_state.get(), dim, d_rows.get(), d_grads.get(), n,
                        0, nullptr);
      cpu::update_rows(kind, s, table.data(), state.data(), dim, picked.data(), grads.data(), n,
                       0);
      SCOPED_TRACE(std::string(optimizer_name(kind)) + " dim " + std::to_string(dim));
      EXPECT_TRUE(same_bits(d_table.host(), table)) << "table";
      EXPECT_TRUE(same_bits(d_state.host(), state)) << "state";
    }
  }
}

// Fresh rows drawn on the device (init.cu) against the host's draw
// (draw_fresh_rows, embedding_table.hpp) of the same shard: bit for bit,
// for shards of a cyclic and a block plan starting far into a table of
// 2^40 rows (64-bit row numbers), any dim and a random scale; and the
// optimizer state's fill. On a GPU this compares the device's double
// log/cos/sqrt (random.hpp's Box-Muller) with the host's libm, rounded to
// float; the emulated device uses the host's, so there it checks the
// kernel's indexing only.
TEST(CudaKernels, DrawNormalRowsMatchesTheHostDraw) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const int64_t big = int64_t{1} << 40;
  for (const ShardPlan::Layout layout : {ShardPlan::Layout::kCyclic, ShardPlan::Layout::kBlock}) {
    for (int64_t dim : {1, 3, 64, 128, 130}) {
      TableSpec spec;
      spec.num_embeddings = big;
      spec.dim = dim;
      const ShardPlan plan(big, 7, layout);
      const int rank = static_cast<int>(rng() % 7);
      const int64_t n = large_case(20000) / dim + 1;
      const int64_t first =
          static_cast<int64_t>(rng() % static_cast<uint64_t>(plan.shard_rows(rank) - n));
      FreshRows fresh;
      fresh.seed = rng();
      fresh.scale = std::uniform_real_distribution<float>(0.01f, 2.f)(rng);
      std::vector<float> want(static_cast<size_t>(n * dim));
      draw_fresh_rows(fresh, spec, plan, rank, first, n, want.data());
      const int64_t row0 = plan.global_row(rank, first);
      const int64_t stride = plan.global_row(rank, first + 1) - row0;
      DeviceArray<float> d_rows(want.size());
      cuda::draw_normal_rows(fresh.seed, row0, stride, n, dim, fresh.scale, d_rows.get(), nullptr);
      const std::vector<float> got = d_rows.host();
      int64_t differ = 0;
      for (size_t i = 0; i < got.size(); ++i) differ += std::memcmp(&got[i], &want[i], 4) != 0;
      EXPECT_EQ(differ, 0) << "of " << got.size() << " values differ, dim " << dim << ", "
                           << shard_layout_name(layout) << " plan, rank " << rank
                           << ", local rows from " << first;
    }
  }
  const float value = std::uniform_real_distribution<float>(0.f, 1.f)(rng);
  DeviceArray<float> d_state(1001, -1.f);
  cuda::fill_floats(d_state.get(), 1000, value, nullptr);
  std::vector<float> want(1001, value);
  want.back() = -1.f;
  EXPECT_TRUE(same_bits(d_state.host(), want)) << "fill_floats";
}

}  // namespace
}  // namespace embtrain
