// The CUDA pooling kernels (pool.cu) against the CPU ones on random bags
// (tests/unit/bag_cases.hpp), compared with ==: both build each column in
// bag_pooling.hpp's order, so a GPU pools to the CPU's bits. Without a GPU
// every test skips; EMBTRAIN_TEST_SEED replays the printed seed.
#include <gtest/gtest.h>

#include <vector>

#include "../unit/bag_cases.hpp"
#include "../unit/test_util.hpp"
#include "cuda_test_util.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cuda/cuda_kernels.hpp"

namespace embtrain {
namespace {

using embtrain_test::BagBatch;
using embtrain_test::DeviceArray;
using embtrain_test::random_bags;
using embtrain_test::seed_trace;
using embtrain_test::test_seed;

TEST(CudaPool, PoolAndUnpoolEqualTheCpu) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (PoolMode mode : {PoolMode::kSum, PoolMode::kMean, PoolMode::kMax}) {
    for (int64_t dim : {1, 3, 4, 128}) {
      const bool weighted = mode == PoolMode::kSum && dim % 2 == 0;
      const BagBatch b = random_bags(dim, weighted, rng);
      const int64_t bags = b.bags();
      std::vector<int32_t> counts(bags), argmax(bags * dim);
      std::vector<float> out(bags * dim), grad(bags * dim), grad_rows(b.n * dim);
      for (float& g : grad) g = static_cast<float>(rng() % 1000) / 37.f - 13.f;
      const bool max = mode == PoolMode::kMax;
      BagPooling cpu_bags{mode, b.offsets.data(), bags, weighted ? b.weights.data() : nullptr,
                          dim, counts.data(), max ? argmax.data() : nullptr};
      cpu::pool_bags(cpu_bags, PositionRows{b.rows.data()}, b.ids.data(), b.pad, out.data());
      cpu::unpool_bags(cpu_bags, grad.data(), b.n, grad_rows.data());

      DeviceArray<int64_t> d_offsets(b.offsets), d_ids(b.ids);
      DeviceArray<float> d_weights(weighted ? b.weights : std::vector<float>(1));
      DeviceArray<float> d_rows(b.rows), d_out(out.size() + 1), d_grad(grad);
      DeviceArray<float> d_grad_rows(grad_rows.size() + 1, -7.f);
      DeviceArray<int32_t> d_counts(counts.size() + 1), d_argmax(argmax.size() + 1);
      BagPooling gpu_bags{mode, d_offsets.get(), bags, weighted ? d_weights.get() : nullptr, dim,
                          d_counts.get(), max ? d_argmax.get() : nullptr};
      cuda::pool_bags(gpu_bags, PositionRows{d_rows.get()}, d_ids.get(), b.pad, d_out.get(),
                      nullptr);
      cuda::unpool_bags(gpu_bags, d_grad.get(), b.n, b.offsets.back(), d_grad_rows.get(), nullptr);
      auto head = [](std::vector<float> v, size_t n) { v.resize(n); return v; };
      SCOPED_TRACE(testing::Message() << pool_mode_name(mode) << " dim " << dim);
      EXPECT_EQ(head(d_out.host(), out.size()), out);
      EXPECT_EQ(head(d_grad_rows.host(), grad_rows.size()), grad_rows);
      std::vector<int32_t> got_counts = d_counts.host();
      got_counts.resize(counts.size());
      EXPECT_EQ(got_counts, counts);
      if (max) {
        std::vector<int32_t> got = d_argmax.host();
        got.resize(argmax.size());
        EXPECT_EQ(got, argmax);
      }
    }
  }
}

// Pooling through the distinct ids (rows found as the steps find them:
// table row unique[slot[p]]) and the shared bag gradients (one row per bag,
// a float offset per position) against the CPU's, with ==.
TEST(CudaPool, PoolingThroughDistinctIdsAndSharedGradsEqualTheCpu) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (PoolMode mode : {PoolMode::kSum, PoolMode::kMean, PoolMode::kMax}) {
    for (int64_t dim : {1, 3, 4, 128}) {
      const BagBatch b = random_bags(dim, /*weights=*/false, rng);
      const int64_t bags = b.bags();
      const auto [unique, slot] = embtrain_test::distinct_ids(b.ids);
      const bool max = mode == PoolMode::kMax;
      std::vector<int32_t> counts(bags), argmax(bags * dim);
      std::vector<float> out(bags * dim), grad(bags * dim), shared((bags + 1) * dim);
      std::vector<int64_t> src_offsets(b.n);
      for (float& g : grad) g = static_cast<float>(rng() % 1000) / 37.f - 13.f;
      BagPooling cpu_bags{mode, b.offsets.data(), bags, nullptr, dim, counts.data(),
                          max ? argmax.data() : nullptr};
      cpu::pool_bags(cpu_bags, PositionRows{b.table.data(), slot.data(), unique.data(), dim},
                     b.ids.data(), b.pad, out.data());
      if (!max) cpu::share_bag_grads(cpu_bags, grad.data(), b.n, shared.data(), src_offsets.data());

      DeviceArray<int64_t> d_offsets(b.offsets), d_ids(b.ids), d_unique(unique);
      DeviceArray<int32_t> d_slot(slot);
      DeviceArray<float> d_table(b.table), d_out(out.size() + 1), d_grad(grad);
      DeviceArray<float> d_shared(shared.size() + 1, -7.f);
      DeviceArray<int64_t> d_src_offsets(src_offsets.size() + 1, -1);
      DeviceArray<int32_t> d_counts(counts.size() + 1), d_argmax(argmax.size() + 1);
      BagPooling gpu_bags{mode, d_offsets.get(), bags, nullptr, dim, d_counts.get(),
                          max ? d_argmax.get() : nullptr};
      cuda::pool_bags(gpu_bags, PositionRows{d_table.get(), d_slot.get(), d_unique.get(), dim},
                      d_ids.get(), b.pad, d_out.get(), nullptr);
      if (!max)
        cuda::share_bag_grads(gpu_bags, d_grad.get(), b.n, b.offsets.back(), d_shared.get(),
                              d_src_offsets.get(), nullptr);
      auto head = [](auto v, size_t n) { v.resize(n); return v; };
      SCOPED_TRACE(testing::Message() << pool_mode_name(mode) << " dim " << dim);
      EXPECT_EQ(head(d_out.host(), out.size()), out);
      EXPECT_EQ(head(d_counts.host(), counts.size()), counts);
      if (max) {
        EXPECT_EQ(head(d_argmax.host(), argmax.size()), argmax);
      } else {
        EXPECT_EQ(head(d_shared.host(), shared.size()), shared);
        EXPECT_EQ(head(d_src_offsets.host(), src_offsets.size()), src_offsets);
      }
    }
  }
}

}  // namespace
}  // namespace embtrain
