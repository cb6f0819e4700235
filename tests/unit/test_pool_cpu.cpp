// cpu::pool_bags and cpu::unpool_bags against a reference written from
// shared/TORCH_SEMANTICS.md in double precision, one bag and column at a
// time, on random bags (bag_cases.hpp). The seed is printed;
// EMBTRAIN_TEST_SEED replays it.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "bag_cases.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "test_util.hpp"

namespace embtrain {
namespace {

using embtrain_test::BagBatch;
using embtrain_test::random_bags;
using embtrain_test::seed_trace;
using embtrain_test::test_seed;

struct Reference {
  std::vector<double> out;       // bags x dim
  std::vector<int64_t> winner;   // max: bags x dim, the position whose value is out, or -1
  std::vector<int64_t> count;    // non-padding positions per bag
};

Reference reference(const BagBatch& b, PoolMode mode) {
  Reference r;
  const int64_t dim = b.dim;
  for (int64_t k = 0; k < b.bags(); ++k) {
    int64_t count = 0;
    for (int64_t p = b.offsets[k]; p < b.offsets[k + 1]; ++p) count += b.ids[p] != b.pad;
    r.count.push_back(count);
    for (int64_t j = 0; j < dim; ++j) {
      double value = 0;
      int64_t winner = -1;
      for (int64_t p = b.offsets[k]; p < b.offsets[k + 1]; ++p) {
        if (b.ids[p] == b.pad) continue;
        const double x = b.rows[p * dim + j];
        if (mode == PoolMode::kMax) {
          if (winner < 0 || x > value) value = x, winner = p;  // the first of equals
        } else {
          value += x * (b.weights.empty() ? 1.0 : b.weights[p]);
        }
      }
      if (mode == PoolMode::kMean && count > 0) value /= static_cast<double>(count);
      r.out.push_back(value);
      r.winner.push_back(winner);
    }
  }
  return r;
}

TEST(PoolKernels, PoolAndUnpoolMatchTheReference) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (PoolMode mode : {PoolMode::kSum, PoolMode::kMean, PoolMode::kMax}) {
    for (int64_t dim : {1, 3, 16, 128}) {
      for (int trial = 0; trial < 4; ++trial) {
        const bool weighted = mode == PoolMode::kSum && trial % 2 == 1;
        const BagBatch b = random_bags(dim, weighted, rng);
        SCOPED_TRACE(testing::Message() << pool_mode_name(mode) << " dim " << dim << " bags "
                                        << b.bags() << " n " << b.n << " weighted " << weighted);
        std::vector<int32_t> counts(b.bags()), argmax(b.bags() * dim);
        BagPooling bags{mode, b.offsets.data(), b.bags(), weighted ? b.weights.data() : nullptr,
                        dim, counts.data(), mode == PoolMode::kMax ? argmax.data() : nullptr};
        std::vector<float> out(b.bags() * dim, -7.f);
        cpu::pool_bags(bags, b.rows.data(), b.ids.data(), b.pad, out.data());
        const Reference want = reference(b, mode);
        for (int64_t k = 0; k < b.bags(); ++k) ASSERT_EQ(counts[k], want.count[k]) << "bag " << k;
        for (size_t i = 0; i < out.size(); ++i) {
          if (mode == PoolMode::kMax) {
            ASSERT_EQ(argmax[i], want.winner[i]) << "element " << i;
            ASSERT_EQ(out[i], want.winner[i] < 0 ? 0.f : static_cast<float>(want.out[i]));
          } else {
            ASSERT_NEAR(out[i], want.out[i], 1e-5 * (1 + std::fabs(want.out[i]) * 40))
                << "element " << i;
          }
        }
        // Backward: each position's gradient from its bag's.
        std::vector<float> grad(b.bags() * dim), grad_rows(b.n * dim, -7.f);
        std::normal_distribution<float> normal;
        for (float& g : grad) g = normal(rng);
        cpu::unpool_bags(bags, grad.data(), b.n, grad_rows.data());
        for (int64_t k = 0; k < b.bags(); ++k)
          for (int64_t p = b.offsets[k]; p < b.offsets[k + 1]; ++p) {
            if (b.ids[p] == b.pad) continue;  // the step drops padding positions
            for (int64_t j = 0; j < dim; ++j) {
              const float g = grad[k * dim + j];
              float w = g;
              if (mode == PoolMode::kSum && weighted) w = g * b.weights[p];
              if (mode == PoolMode::kMean) w = g / static_cast<float>(want.count[k]);
              if (mode == PoolMode::kMax) w = want.winner[k * dim + j] == p ? g : 0.f;
              ASSERT_EQ(grad_rows[p * dim + j], w) << "bag " << k << " position " << p;
            }
          }
        for (int64_t i = b.offsets.back() * dim; i < b.n * dim; ++i)
          ASSERT_EQ(grad_rows[i], 0.f) << "a position past the last bag got a gradient";
      }
    }
  }
}

}  // namespace
}  // namespace embtrain
