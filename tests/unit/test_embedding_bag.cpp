// EmbeddingBag against Embedding with the bags pooled by hand in double
// precision: the output of every bag (sum with weights, mean, max), and the
// table and optimizer state after a step whose per-id gradient the test
// computes itself (sum: weight x bag gradient; mean: over the bag's
// non-padding count; max: to the first position holding each column's
// maximum). Random tables, offsets with empty bags, padding; the seed is
// printed and EMBTRAIN_TEST_SEED replays it. PyTorch itself is the oracle of
// tests/parity/bag_parity.py.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "embtrain/embedding.hpp"
#include "embtrain/embedding_bag.hpp"
#include "embtrain/errors.hpp"
#include "test_util.hpp"

namespace embtrain {
namespace {

using embtrain_test::seed_trace;
using embtrain_test::test_seed;

std::vector<float> floats_of(const RowBuffer& b) { return std::vector<float>(b.data(), b.data() + b.size()); }

TEST(EmbeddingBag, EqualsEmbeddingWithBagsPooledByHand) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  for (PoolMode mode : {PoolMode::kSum, PoolMode::kMean, PoolMode::kMax}) {
    for (OptimizerKind kind : {OptimizerKind::kSgd, OptimizerKind::kAdam}) {
      SCOPED_TRACE(testing::Message() << pool_mode_name(mode) << " " << optimizer_name(kind));
      TableSpec spec;
      spec.name = "bags";
      spec.num_embeddings = 50;
      spec.dim = 6;
      spec.padding_idx = -3;  // row 47
      spec.optimizer.kind = kind;
      spec.optimizer.lr = 0.1;
      const int64_t pad = 47, dim = spec.dim;
      std::vector<float> w(50 * dim);
      for (float& x : w) x = normal(rng);
      EmbeddingBag bag(spec, BagOptions{mode, false}, w);
      Embedding plain(spec, w);

      // 1-D ids cut by offsets: bags of 0 to 9 ids, a fifth of them padding.
      std::vector<int64_t> ids, offsets;
      for (int b = 0; b < 12; ++b) {
        offsets.push_back(static_cast<int64_t>(ids.size()));
        for (int k = static_cast<int>(rng() % 10); k > 0; --k)
          ids.push_back(rng() % 5 == 0 ? pad : static_cast<int64_t>(rng() % 12));
      }
      const int64_t n = static_cast<int64_t>(ids.size()), bags = 12;
      std::vector<float> psw(n);
      for (float& x : psw) x = normal(rng);
      const bool weighted = mode == PoolMode::kSum;
      const IdsView view{ids.data(), DType::kInt64, {n}};
      std::vector<float> out(bags * dim);
      bag.forward(view, &offsets, out.data(), weighted ? psw.data() : nullptr);
      ASSERT_EQ(bag.num_bags(), bags);

      std::vector<float> rows(n * dim);
      plain.forward(view, rows.data());
      std::vector<float> grad(bags * dim), per_id(n * dim, 0.f);
      for (float& g : grad) g = normal(rng);
      for (int64_t b = 0; b < bags; ++b) {
        const int64_t begin = offsets[b], end = b + 1 < bags ? offsets[b + 1] : n;
        int64_t count = 0;
        for (int64_t p = begin; p < end; ++p) count += ids[p] != pad;
        for (int64_t j = 0; j < dim; ++j) {
          double want = 0;
          int64_t winner = -1;
          for (int64_t p = begin; p < end; ++p) {
            if (ids[p] == pad) continue;
            const double x = rows[p * dim + j];
            if (mode == PoolMode::kMax) {
              if (winner < 0 || x > want) want = x, winner = p;
            } else {
              want += x * (weighted ? psw[p] : 1.0);
            }
          }
          if (mode == PoolMode::kMean && count) want /= static_cast<double>(count);
          EXPECT_NEAR(out[b * dim + j], want, 1e-5) << "bag " << b << " column " << j;
          for (int64_t p = begin; p < end; ++p) {
            const float g = grad[b * dim + j];
            if (mode == PoolMode::kSum) per_id[p * dim + j] = g * psw[p];
            if (mode == PoolMode::kMean) per_id[p * dim + j] = count ? g / static_cast<float>(count) : 0.f;
            if (mode == PoolMode::kMax) per_id[p * dim + j] = p == winner ? g : 0.f;
          }
        }
      }
      bag.backward(grad.data());
      bag.step();
      plain.backward(per_id.data());
      plain.step();
      EXPECT_EQ(floats_of(bag.table().weights()), floats_of(plain.table().weights()));
      EXPECT_EQ(floats_of(bag.table().state()), floats_of(plain.table().state()));
    }
  }
}

TEST(EmbeddingBag, RefusesWhatPyTorchRefuses) {
  TableSpec spec;
  spec.name = "bags";
  spec.num_embeddings = 10;
  spec.dim = 2;
  EmbeddingBag mean(spec, BagOptions{PoolMode::kMean, false}, 1);
  std::vector<int64_t> ids = {1, 2, 3}, bad_start = {1}, ok = {0, 2};
  std::vector<float> out(8), weights(3, 1.f);
  const IdsView view{ids.data(), DType::kInt64, {3}};
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] { mean.forward(view, nullptr, out.data()); }).find("offsets"),
            std::string::npos);
  EXPECT_NE(message([&] { mean.forward(view, &bad_start, out.data()); }).find("offsets[0] = 1"),
            std::string::npos);
  EXPECT_NE(message([&] { mean.forward(view, &ok, out.data(), weights.data()); }).find("'sum'"),
            std::string::npos);
  spec.scale_grad_by_freq = true;
  EmbeddingBag max(spec, BagOptions{PoolMode::kMax, false}, 1);
  EXPECT_NE(message([&] { max.forward(view, &ok, out.data()); }).find("scale_grad_by_freq"),
            std::string::npos);
}

}  // namespace
}  // namespace embtrain
