// TableSpec, validate_ids, EmbeddingTable and Embedding against
// shared/TORCH_SEMANTICS.md, ending with a naive reference of whole
// forward/backward/step rounds for every optimizer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "embtrain/embedding.hpp"
#include "embtrain/embedding_table.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/random.hpp"
#include "test_util.hpp"

namespace {

using embtrain::DType;
using embtrain::Embedding;
using embtrain::EmbeddingTable;
using embtrain::ShardPlan;
using embtrain::shard_layout_name;
using embtrain::IdsView;
using embtrain::OptimizerKind;
using embtrain::TableSpec;
using embtrain_test::all_close;
using embtrain_test::seed_trace;
using embtrain_test::test_seed;

TableSpec make_spec(int64_t num_embeddings, int64_t dim,
                    std::optional<int64_t> padding_idx = std::nullopt) {
  TableSpec spec;
  spec.name = "test_table";
  spec.num_embeddings = num_embeddings;
  spec.dim = dim;
  spec.padding_idx = padding_idx;
  return spec;
}

std::vector<float> normal_floats(int64_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

// The table's weights as a plain vector (whatever container the table uses).
std::vector<float> weights_of(const EmbeddingTable& table) {
  const auto& w = table.weights();
  return std::vector<float>(w.data(), w.data() + w.size());
}

std::vector<float> state_of(const EmbeddingTable& table) {
  const auto& s = table.state();
  return std::vector<float>(s.data(), s.data() + s.size());
}

// The message of the embtrain::Error that `f` throws, or "" after recording
// a failure.
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const embtrain::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected embtrain::Error, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "no exception thrown";
  return "";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// ------------------------------------------------------------- TableSpec

TEST(TableSpec, RejectsEmptyTables) {
  EXPECT_TRUE(contains(error_of([] { make_spec(0, 4).validate(); }), "test_table"));
  EXPECT_TRUE(contains(error_of([] { make_spec(10, 0).validate(); }), "test_table"));
  EXPECT_TRUE(contains(error_of([] { make_spec(-3, 4).validate(); }), "test_table"));
}

// rows x dim whose bytes would overflow a 64-bit size (issue 14): refused
// with the limit, before anything is allocated; the limit itself passes.
TEST(TableSpec, RejectsTablesTooLargeToAddress) {
  const int64_t max = std::numeric_limits<int64_t>::max();
  for (const auto& [rows, dim] : {std::pair<int64_t, int64_t>{max, 32},
                                  {int64_t{1} << 40, int64_t{1} << 20},
                                  {(int64_t{1} << 59) + 1, 1}}) {
    const std::string msg = error_of([&] { make_spec(rows, dim).validate(); });
    EXPECT_TRUE(contains(msg, "test_table") && contains(msg, "2^59")) << rows << " x " << dim
                                                                      << ": " << msg;
  }
  EXPECT_NO_THROW(make_spec(int64_t{1} << 39, int64_t{1} << 20).validate());
}

TEST(TableSpec, PaddingIdxRange) {
  const int64_t n = 10;
  for (int64_t bad : {n, n + 5, -n - 1, -n - 7}) {
    const std::string msg = error_of([&] { make_spec(n, 4, bad).validate(); });
    EXPECT_TRUE(contains(msg, "padding_idx")) << "padding_idx " << bad << ": " << msg;
  }
  for (int64_t ok : {-n, int64_t{-1}, int64_t{0}, n - 1})
    EXPECT_NO_THROW(make_spec(n, 4, ok).validate()) << "padding_idx " << ok;
}

TEST(TableSpec, PaddingRowResolvesNegativeValues) {
  EXPECT_EQ(make_spec(10, 4).padding_row(), -1);
  EXPECT_EQ(make_spec(10, 4, 0).padding_row(), 0);
  EXPECT_EQ(make_spec(10, 4, 7).padding_row(), 7);
  EXPECT_EQ(make_spec(10, 4, -1).padding_row(), 9);
  EXPECT_EQ(make_spec(10, 4, -3).padding_row(), 7);
  EXPECT_EQ(make_spec(10, 4, -10).padding_row(), 0);
}

TEST(TableSpec, TableConstructorsValidate) {
  EXPECT_THROW(EmbeddingTable(make_spec(10, 4, 10), ShardPlan(10, 1), 0, 1), embtrain::Error);
  EXPECT_THROW(Embedding(make_spec(0, 4), 1), embtrain::Error);
}

// ---------------------------------------------------------- validate_ids

template <typename T>
IdsView view(const std::vector<T>& ids, std::vector<int64_t> shape) {
  return IdsView{ids.data(), sizeof(T) == 4 ? DType::kInt32 : DType::kInt64, std::move(shape)};
}

// The error for one bad id at (1, 2) of a 3 x 4 batch names its value, its
// position and the valid range.
template <typename T>
void check_bad_id(T bad) {
  const TableSpec spec = make_spec(10, 4);
  std::vector<T> ids = {1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2};
  ids[1 * 4 + 2] = bad;
  const std::string msg = error_of([&] { embtrain::validate_ids(view(ids, {3, 4}), spec); });
  SCOPED_TRACE("bad id " + std::to_string(bad) + ": " + msg);
  EXPECT_TRUE(contains(msg, "(1, 2)"));
  EXPECT_TRUE(contains(msg, "[0, 10)"));
  std::string without_range = msg;
  without_range.erase(without_range.find("[0, 10)"), 7);
  EXPECT_TRUE(contains(without_range, std::to_string(bad)));
  EXPECT_TRUE(contains(msg, "test_table"));
  EXPECT_EQ(embtrain::check_ids(view(ids, {3, 4}), spec), msg);
}

TEST(ValidateIds, OutOfRangeInt64) {
  for (int64_t bad : {int64_t{10}, int64_t{-1}, int64_t{1} << 62,
                      std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min()})
    check_bad_id<int64_t>(bad);
}

TEST(ValidateIds, OutOfRangeInt32) {
  for (int32_t bad :
       {10, -5, std::numeric_limits<int32_t>::max(), std::numeric_limits<int32_t>::min()})
    check_bad_id<int32_t>(bad);
}

TEST(ValidateIds, ReportsFirstBadPositionInCOrder) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const int64_t n = 1000;
  const TableSpec spec = make_spec(n, 4);
  const std::vector<int64_t> shape = {40, 50, 60};
  const int64_t numel = 40 * 50 * 60;
  std::uniform_int_distribution<int64_t> valid(0, n - 1), where(0, numel - 1);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<int64_t> ids(numel);
    for (auto& id : ids) id = valid(rng);
    // Several bad ids at random places; the one at the lowest flat index is
    // the one to report.
    int64_t first = numel;
    for (int k = 0; k < 5; ++k) {
      const int64_t at = where(rng);
      ids[at] = n + 100 + k;
      first = std::min(first, at);
    }
    const std::string position = "(" + std::to_string(first / 3000) + ", " +
                                 std::to_string(first / 60 % 50) + ", " +
                                 std::to_string(first % 60) + ")";
    const std::string msg = error_of([&] { embtrain::validate_ids(view(ids, shape), spec); });
    EXPECT_TRUE(contains(msg, position)) << "want position " << position << ": " << msg;
    EXPECT_TRUE(contains(msg, std::to_string(ids[first]))) << msg;

    // The same for int32 ids.
    const std::vector<int32_t> ids32(ids.begin(), ids.end());
    const std::string msg32 = error_of([&] { embtrain::validate_ids(view(ids32, shape), spec); });
    EXPECT_TRUE(contains(msg32, position)) << "want position " << position << ": " << msg32;
  }
}

TEST(ValidateIds, CopiesValidIdsToInt64) {
  const TableSpec spec = make_spec(100, 4);
  const std::vector<int32_t> ids = {99, 0, 42, 7, 7, 63};
  const std::vector<int64_t> got = embtrain::validate_ids(view(ids, {2, 3}), spec);
  EXPECT_EQ(got, std::vector<int64_t>(ids.begin(), ids.end()));
  EXPECT_EQ(embtrain::check_ids(view(ids, {2, 3}), spec), "");
}

// ------------------------------------------------------------ fresh tables

TEST(EmbeddingTable, FreshRowsAreStandardNormalWithZeroPaddingRow) {
  const int64_t rows = 4000, dim = 32, pad = 17;
  const EmbeddingTable table(make_spec(rows, dim, pad), ShardPlan(rows, 1), 0, /*seed=*/20240611);
  const std::vector<float> w = weights_of(table);
  ASSERT_EQ(static_cast<int64_t>(w.size()), rows * dim);
  for (int64_t j = 0; j < dim; ++j) ASSERT_EQ(w[pad * dim + j], 0.f) << "padding row element " << j;

  // Moments over every other row; bounds are several standard errors wide.
  double sum = 0, sum2 = 0, sum4 = 0, within_one = 0, next_row = 0, next_col = 0;
  int64_t count = 0, pairs = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (r == pad) continue;
    for (int64_t j = 0; j < dim; ++j) {
      const double x = w[r * dim + j];
      ASSERT_TRUE(std::isfinite(x));
      sum += x;
      sum2 += x * x;
      sum4 += x * x * x * x;
      within_one += std::fabs(x) < 1;
      ++count;
      if (r + 1 < rows && r + 1 != pad && j + 1 < dim) {
        next_row += x * w[(r + 1) * dim + j];
        next_col += x * w[r * dim + j + 1];
        ++pairs;
      }
    }
  }
  const double mean = sum / count;
  const double var = sum2 / count - mean * mean;
  EXPECT_NEAR(mean, 0.0, 0.02);
  EXPECT_NEAR(std::sqrt(var), 1.0, 0.02);
  EXPECT_NEAR(sum4 / count, 3.0, 0.15) << "fourth moment of a standard normal";
  EXPECT_NEAR(within_one / count, 0.6827, 0.01) << "P(|x| < 1) of a standard normal";
  EXPECT_NEAR(next_row / pairs, 0.0, 0.02) << "neighbouring rows correlated";
  EXPECT_NEAR(next_col / pairs, 0.0, 0.02) << "neighbouring columns correlated";
}

// The normal's log and cosine (random.hpp), built from +, -, *, / so that a
// GPU draws the host's bits, against long double libm on random arguments
// (uniforms as random_uniform makes them, and down to 2^-53): within a few
// double ulps. The cosine is checked through its folding: on [0, 1/8] as
// cos, and at 1/4 - t as sin(2 pi t) (exact arguments, so the long double
// reference is accurate where the cosine is near zero).
TEST(Random, PortableLogAndCosineAreWithinAFewUlps) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const long double two_pi = 2 * 3.14159265358979323846264338327950288L;
  auto ulps = [](double got, long double want) {
    const auto w = static_cast<double>(want);
    return std::fabs(got - w) / std::fabs(std::nextafter(w, 2.0 * w + 1.0) - w);
  };
  double worst_log = 0, worst_cos = 0, worst_sin = 0;
  for (int i = 0; i < 1000000; ++i) {
    double u = (static_cast<double>(rng() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    if (i % 3 == 0) u = std::ldexp(u, -static_cast<int>(rng() % 53));
    if (u != 1.0) worst_log = std::max(worst_log, ulps(embtrain::detail::portable_log(u), logl(u)));
    const double t = std::ldexp(u, -3);  // (0, 1/8]
    worst_cos = std::max(worst_cos, ulps(embtrain::detail::portable_cos_2pi(t), cosl(two_pi * t)));
    const double v = 0.25 - t;
    worst_sin = std::max(worst_sin, ulps(embtrain::detail::portable_cos_2pi(v),
                                         sinl(two_pi * (0.25L - static_cast<long double>(v)))));
  }
  EXPECT_LE(worst_log, 4) << "log, ulps";
  EXPECT_LE(worst_cos, 4) << "cos on [0, 1/8], ulps";
  EXPECT_LE(worst_sin, 4) << "cos near 1/4 (a sine), ulps";
  EXPECT_EQ(embtrain::detail::portable_log(1.0), 0.0);
  EXPECT_EQ(embtrain::detail::portable_cos_2pi(0.0), 1.0);
  EXPECT_EQ(embtrain::detail::portable_cos_2pi(1.0), 1.0);
  EXPECT_EQ(embtrain::detail::portable_cos_2pi(0.5), -1.0);
  // Symmetries the folding uses, exact: cos(2 pi u) = cos(2 pi (1 - u)).
  for (int i = 0; i < 1000; ++i) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-54 + 0.5;  // [0.5, 1)
    EXPECT_EQ(embtrain::detail::portable_cos_2pi(u), embtrain::detail::portable_cos_2pi(1 - u));
  }
}

TEST(EmbeddingTable, FreshRowsDependOnSeedOnly) {
  const TableSpec spec = make_spec(50, 8);
  const ShardPlan whole(50, 1);
  EXPECT_EQ(weights_of(EmbeddingTable(spec, whole, 0, 7)),
            weights_of(EmbeddingTable(spec, whole, 0, 7)));
  EXPECT_NE(weights_of(EmbeddingTable(spec, whole, 0, 7)),
            weights_of(EmbeddingTable(spec, whole, 0, 8)));
}

// Every shard of every plan holds exactly the whole table's rows that the
// plan gives it: fresh values are drawn by global row.
TEST(EmbeddingTable, FreshRowsDoNotDependOnTheSplit) {
  const int64_t n = 30, dim = 8;
  for (std::optional<int64_t> pad :
       {std::optional<int64_t>{}, std::optional<int64_t>{8}, std::optional<int64_t>{-10}}) {
    const TableSpec spec = make_spec(n, dim, pad);
    const std::vector<float> w = weights_of(EmbeddingTable(spec, ShardPlan(n, 1), 0, 99));
    for (ShardPlan::Layout layout : {ShardPlan::Layout::kBlock, ShardPlan::Layout::kCyclic})
      for (int ranks : {2, 3, 4, 7}) {
        SCOPED_TRACE("padding_idx " + (pad ? std::to_string(*pad) : std::string("none")) + ", " +
                     shard_layout_name(layout) + " over " + std::to_string(ranks));
        const ShardPlan plan(n, ranks, layout);
        for (int r = 0; r < ranks; ++r) {
          const EmbeddingTable shard(spec, plan, r, 99);
          ASSERT_EQ(shard.num_rows(), plan.shard_rows(r));
          std::vector<float> want(static_cast<size_t>(shard.num_rows() * dim));
          plan.take_shard(r, w.data(), dim, want.data());
          EXPECT_EQ(weights_of(shard), want) << "rank " << r;
          for (int64_t k = 0; k < shard.num_rows(); ++k) {
            EXPECT_TRUE(shard.owns(shard.global_row(k)));
            EXPECT_EQ(plan.local_row(shard.global_row(k)), k);
          }
        }
      }
  }
}

TEST(EmbeddingTable, ShardHoldingThePaddingRowZeroesItAtItsLocalIndex) {
  const int64_t n = 30, dim = 4;
  // Row 25: block plan of 3 ranks, rank 2's local row 5; cyclic, rank 1's 8.
  for (const auto& [layout, rank, local] :
       {std::tuple<ShardPlan::Layout, int, int64_t>{ShardPlan::Layout::kBlock, 2, 5},
        std::tuple<ShardPlan::Layout, int, int64_t>{ShardPlan::Layout::kCyclic, 1, 8}}) {
    const EmbeddingTable shard(make_spec(n, dim, 25), ShardPlan(n, 3, layout), rank, 5);
    const std::vector<float> b = weights_of(shard);
    for (int64_t r = 0; r < shard.num_rows(); ++r) {
      bool all_zero = true;
      for (int64_t j = 0; j < dim; ++j) all_zero = all_zero && b[r * dim + j] == 0.f;
      EXPECT_EQ(all_zero, r == local) << shard_layout_name(layout) << " local row " << r;
    }
  }
}

TEST(Embedding, FromPretrainedKeepsThePaddingRow) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const int64_t n = 6, dim = 3;
  std::vector<float> given = normal_floats(n * dim, rng);
  given[2 * dim] = 5.f;  // a padding row that is clearly not zero
  Embedding emb(make_spec(n, dim, 2), given);
  EXPECT_EQ(weights_of(emb.table()), given);

  const std::vector<int64_t> ids = {2, 4, 2};
  std::vector<float> out(3 * dim);
  emb.forward(view(ids, {3}), out.data());
  for (int64_t j = 0; j < dim; ++j) {
    EXPECT_EQ(out[j], given[2 * dim + j]);
    EXPECT_EQ(out[dim + j], given[4 * dim + j]);
    EXPECT_EQ(out[2 * dim + j], given[2 * dim + j]);
  }
  EXPECT_THROW(Embedding(make_spec(n, dim), std::vector<float>(n * dim - 1, 1.f)), embtrain::Error);
}

// ----------------------------------------------------------------- forward

TEST(Embedding, ForwardOnEmptyBatches) {
  const int64_t dim = 5;
  Embedding emb(make_spec(20, dim, 0), 3);
  const std::vector<float> before = weights_of(emb.table());
  for (const std::vector<int64_t>& shape :
       {std::vector<int64_t>{0}, std::vector<int64_t>{3, 0}, std::vector<int64_t>{0, 4, 2}}) {
    SCOPED_TRACE(embtrain::shape_to_string(shape));
    const std::vector<int64_t> no_ids;
    std::vector<float> out(dim, -9.f);
    emb.forward(view(no_ids, shape), out.data());
    EXPECT_EQ(out, std::vector<float>(dim, -9.f)) << "wrote output for an empty batch";
    emb.backward(out.data());
    EXPECT_TRUE(emb.grad().rows.empty());
    EXPECT_TRUE(emb.grad().values.empty());
    emb.step();
  }
  EXPECT_EQ(emb.table().step(), 3);
  EXPECT_EQ(weights_of(emb.table()), before);
}

TEST(Embedding, ForwardLooksUpAnyRank) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const int64_t n = 40, dim = 6;
  Embedding emb(make_spec(n, dim, 1), seed);
  const std::vector<float> w = weights_of(emb.table());
  std::uniform_int_distribution<int64_t> id(0, n - 1);
  for (const std::vector<int64_t>& shape :
       {std::vector<int64_t>{}, std::vector<int64_t>{4}, std::vector<int64_t>{2, 3},
        std::vector<int64_t>{2, 1, 3, 2}}) {
    SCOPED_TRACE(embtrain::shape_to_string(shape));
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    std::vector<int64_t> ids64(numel);
    for (auto& x : ids64) x = id(rng);
    const std::vector<int32_t> ids32(ids64.begin(), ids64.end());
    for (bool narrow : {false, true}) {
      std::vector<float> out(numel * dim, -1.f);
      emb.forward(narrow ? view(ids32, shape) : view(ids64, shape), out.data());
      for (int64_t i = 0; i < numel; ++i)
        for (int64_t j = 0; j < dim; ++j)
          ASSERT_EQ(out[i * dim + j], w[ids64[i] * dim + j]) << "position " << i;
    }
  }
}

TEST(Embedding, ForwardRejectsBadIdsBeforeTouchingTheTable) {
  TableSpec spec = make_spec(10, 3);
  spec.max_norm = 0.5;  // every row would be renormed
  Embedding emb(spec, 11);
  const std::vector<float> before = weights_of(emb.table());
  const std::vector<int64_t> ids = {1, 2, 3, 10};
  std::vector<float> out(4 * 3);
  const std::string msg = error_of([&] { emb.forward(view(ids, {4}), out.data()); });
  EXPECT_TRUE(contains(msg, "[0, 10)")) << msg;
  EXPECT_EQ(weights_of(emb.table()), before);
}

// ---------------------------------------------------------------- backward

TEST(Embedding, BackwardSumsPerRowAndExcludesPadding) {
  const int64_t dim = 2;
  Embedding emb(make_spec(8, dim, 0), 1);
  const std::vector<int64_t> ids = {4, 1, 4, 0, 4, 0, 6};
  std::vector<float> out(ids.size() * dim);
  emb.forward(view(ids, {7}), out.data());
  const std::vector<float> grad = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
  emb.backward(grad.data());
  EXPECT_EQ(emb.grad().rows, (std::vector<int64_t>{1, 4, 6}));
  EXPECT_EQ(emb.grad().values, (std::vector<float>{3, 4, 15, 18, 13, 14}));
}

TEST(Embedding, BackwardScalesByFrequency) {
  const int64_t dim = 2;
  TableSpec spec = make_spec(8, dim, -1);  // padding row 7
  spec.scale_grad_by_freq = true;
  Embedding emb(spec, 1);
  const std::vector<int64_t> ids = {4, 1, 4, 7, 4, 7, 6, 6};
  std::vector<float> out(ids.size() * dim);
  emb.forward(view(ids, {2, 4}), out.data());
  const std::vector<float> grad = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  emb.backward(grad.data());
  EXPECT_EQ(emb.grad().rows, (std::vector<int64_t>{1, 4, 6}));
  // Row 4 occurs 3 times, row 6 twice.
  EXPECT_EQ(emb.grad().values, (std::vector<float>{3, 4, 5, 6, 14, 15}));
}

// -------------------------------------------------------------------- step

TEST(Embedding, AllPaddingStepOnlyCountsTheStep) {
  for (OptimizerKind kind : {OptimizerKind::kSgd, OptimizerKind::kAdagrad, OptimizerKind::kAdam,
                             OptimizerKind::kRowwiseAdagrad}) {
    SCOPED_TRACE(embtrain::optimizer_name(kind));
    TableSpec spec = make_spec(12, 4, 5);
    spec.optimizer.kind = kind;
    spec.optimizer.lr = 0.5;
    Embedding emb(spec, 2);
    const std::vector<float> w = weights_of(emb.table()), s = state_of(emb.table());
    const std::vector<int64_t> ids = {5, 5, 5};
    std::vector<float> out(3 * 4);
    emb.forward(view(ids, {3}), out.data());
    const std::vector<float> grad(3 * 4, 1.f);
    emb.backward(grad.data());
    EXPECT_TRUE(emb.grad().rows.empty());
    emb.step();
    EXPECT_EQ(emb.table().step(), 1);
    EXPECT_EQ(weights_of(emb.table()), w);
    EXPECT_EQ(state_of(emb.table()), s);
  }
}

TEST(Embedding, StepNeedsABackwardSinceTheLastStep) {
  Embedding emb(make_spec(10, 3), 4);
  const std::vector<int64_t> ids = {1, 2, 2};
  std::vector<float> out(9), grad(9, 0.5f);
  emb.forward(view(ids, {3}), out.data());
  emb.backward(grad.data());
  emb.step();
  EXPECT_THROW(emb.step(), embtrain::Error);
  EXPECT_THROW(emb.grad(), embtrain::Error);
  EXPECT_EQ(emb.table().step(), 1);
}

TEST(Embedding, FrozenTableCountsStepsButNeverUpdates) {
  TableSpec spec = make_spec(10, 3);
  spec.freeze = true;
  spec.optimizer.kind = OptimizerKind::kAdam;
  spec.optimizer.lr = 1.0;
  Embedding emb(spec, 4);
  const std::vector<float> before = weights_of(emb.table());
  const std::vector<int64_t> ids = {1, 2, 2, 9};
  std::vector<float> out(4 * 3);
  const std::vector<float> grad(4 * 3, 0.5f);
  for (int i = 0; i < 3; ++i) {
    emb.forward(view(ids, {4}), out.data());
    emb.backward(grad.data());
    emb.step();
  }
  EXPECT_EQ(emb.table().step(), 3);
  EXPECT_EQ(weights_of(emb.table()), before);
}

TEST(Embedding, FrozenTableStillRenormsInForward) {
  const int64_t n = 10, dim = 3;
  TableSpec spec = make_spec(n, dim);
  spec.freeze = true;
  spec.max_norm = 1.0;
  std::vector<float> given(n * dim);
  for (int64_t i = 0; i < n * dim; ++i) given[i] = static_cast<float>(i % 5 + 1);  // norms > 1
  Embedding emb(spec, given);
  const std::vector<int64_t> ids = {3, 7, 3};
  std::vector<float> out(3 * dim);
  emb.forward(view(ids, {3}), out.data());
  const std::vector<float> w = weights_of(emb.table());
  for (int64_t r = 0; r < n; ++r) {
    double norm = 0;
    for (int64_t j = 0; j < dim; ++j) norm += double(w[r * dim + j]) * w[r * dim + j];
    if (r == 3 || r == 7)
      EXPECT_NEAR(std::sqrt(norm), 1.0, 1e-5) << "row " << r << " visited: renormed";
    else
      EXPECT_TRUE(
          std::equal(w.begin() + r * dim, w.begin() + (r + 1) * dim, given.begin() + r * dim))
          << "row " << r << " not visited: unchanged";
  }
  for (int64_t j = 0; j < dim; ++j) EXPECT_EQ(out[j], w[3 * dim + j]) << "output is renormed";
}

// ------------------------------------------- naive reference, whole rounds

// torch.nn.Embedding + its sparse optimizer written out with plain loops in
// double, from shared/TORCH_SEMANTICS.md.
class ReferenceEmbedding {
 public:
  ReferenceEmbedding(const TableSpec& spec, const std::vector<float>& weights)
      : spec_(spec), n_(spec.num_embeddings), d_(spec.dim), w_(weights.begin(), weights.end()) {
    const double init = spec.optimizer.kind == OptimizerKind::kAdam
                            ? 0.0
                            : spec.optimizer.initial_accumulator_value;
    state_.assign(n_ * embtrain::optimizer_state_width(spec.optimizer.kind, d_), init);
  }

  std::vector<double> forward(const std::vector<int64_t>& ids) {
    if (spec_.max_norm) {
      for (int64_t row : std::set<int64_t>(ids.begin(), ids.end())) {
        double* w = &w_[row * d_];
        const double p = spec_.norm_type;
        double norm = 0;
        for (int64_t j = 0; j < d_; ++j)
          norm =
              std::isinf(p) ? std::max(norm, std::fabs(w[j])) : norm + std::pow(std::fabs(w[j]), p);
        if (!std::isinf(p)) norm = std::pow(norm, 1.0 / p);
        if (norm > *spec_.max_norm)
          for (int64_t j = 0; j < d_; ++j) w[j] *= *spec_.max_norm / (norm + 1e-7);
      }
    }
    ids_ = ids;
    std::vector<double> out;
    for (int64_t id : ids) out.insert(out.end(), &w_[id * d_], &w_[id * d_] + d_);
    return out;
  }

  // Fills grad_: row -> summed (frequency-scaled) gradient, padding excluded.
  void backward(const std::vector<float>& grad_out) {
    std::map<int64_t, int64_t> count;
    for (int64_t id : ids_) ++count[id];
    grad_.clear();
    for (size_t p = 0; p < ids_.size(); ++p) {
      const int64_t id = ids_[p];
      if (id == spec_.padding_row()) continue;
      std::vector<double>& g = grad_[id];
      g.resize(d_, 0.0);
      const double scale = spec_.scale_grad_by_freq ? 1.0 / count[id] : 1.0;
      for (int64_t j = 0; j < d_; ++j) g[j] += grad_out[p * d_ + j] * scale;
    }
  }

  void step() {
    ++t_;
    if (spec_.freeze) return;
    const auto& o = spec_.optimizer;
    const double eps = o.resolved_eps();
    for (const auto& [row, g] : grad_) {
      double* w = &w_[row * d_];
      switch (o.kind) {
        case OptimizerKind::kSgd:
          for (int64_t j = 0; j < d_; ++j) w[j] -= o.lr * g[j];
          break;
        case OptimizerKind::kAdagrad: {
          const double clr = o.lr / (1 + (t_ - 1) * o.lr_decay);
          double* sum = &state_[row * d_];
          for (int64_t j = 0; j < d_; ++j) {
            sum[j] += g[j] * g[j];
            w[j] -= clr * g[j] / (std::sqrt(sum[j]) + eps);
          }
          break;
        }
        case OptimizerKind::kAdam: {
          double* m = &state_[row * 2 * d_];
          double* v = m + d_;
          const double step_size =
              o.lr * std::sqrt(1 - std::pow(o.beta2, t_)) / (1 - std::pow(o.beta1, t_));
          for (int64_t j = 0; j < d_; ++j) {
            m[j] += (g[j] - m[j]) * (1 - o.beta1);
            v[j] += (g[j] * g[j] - v[j]) * (1 - o.beta2);
            w[j] -= step_size * m[j] / (std::sqrt(v[j]) + eps);
          }
          break;
        }
        case OptimizerKind::kRowwiseAdagrad: {
          double mean_sq = 0;
          for (int64_t j = 0; j < d_; ++j) mean_sq += g[j] * g[j] / d_;
          state_[row] += mean_sq;
          for (int64_t j = 0; j < d_; ++j) w[j] -= o.lr * g[j] / (std::sqrt(state_[row]) + eps);
          break;
        }
      }
    }
  }

  const std::map<int64_t, std::vector<double>>& grad() const { return grad_; }
  const std::vector<double>& weights() const { return w_; }
  const std::vector<double>& state() const { return state_; }

 private:
  TableSpec spec_;
  int64_t n_, d_;
  int64_t t_ = 0;
  std::vector<double> w_, state_;
  std::vector<int64_t> ids_;
  std::map<int64_t, std::vector<double>> grad_;
};

struct Variant {
  const char* name;
  std::optional<int64_t> padding_idx;
  std::optional<double> max_norm;
  double norm_type;
  bool scale_grad_by_freq;
  bool int32_ids;
};

TableSpec reference_spec(OptimizerKind kind, const Variant& v) {
  TableSpec spec = make_spec(40, 9, v.padding_idx);
  spec.max_norm = v.max_norm;
  spec.norm_type = v.norm_type;
  spec.scale_grad_by_freq = v.scale_grad_by_freq;
  auto& o = spec.optimizer;
  o.kind = kind;
  o.lr = 0.1;
  o.lr_decay = 0.2;  // Adagrad only
  o.initial_accumulator_value = kind == OptimizerKind::kAdagrad ? 0.1 : 0.0;
  o.beta1 = 0.8;  // Adam only
  o.beta2 = 0.9;
  if (kind == OptimizerKind::kRowwiseAdagrad) o.eps = 1e-3;
  return spec;
}

TEST(Embedding, MatchesNaiveReferenceForEveryOptimizer) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const double inf = std::numeric_limits<double>::infinity();
  const Variant variants[] = {
      {"padding 3, max_norm 2 (p=2), scale_grad_by_freq, int64", 3, 2.0, 2.0, true, false},
      {"padding -1, max_norm 3 (p=1), int32", -1, 3.0, 1.0, false, true},
      {"no padding, max_norm 1.2 (p=inf), scale_grad_by_freq, int32", std::nullopt, 1.2, inf, true,
       true},
      {"padding 0, no max_norm, int64", 0, std::nullopt, 2.0, false, false},
  };
  const int64_t batch_rows = 6, batch_cols = 7, numel = batch_rows * batch_cols;
  for (OptimizerKind kind : {OptimizerKind::kSgd, OptimizerKind::kAdagrad, OptimizerKind::kAdam,
                             OptimizerKind::kRowwiseAdagrad})
    for (const Variant& variant : variants) {
      SCOPED_TRACE(std::string(embtrain::optimizer_name(kind)) + ", " + variant.name);
      const TableSpec spec = reference_spec(kind, variant);
      const int64_t n = spec.num_embeddings, dim = spec.dim, pad = spec.padding_row();
      std::vector<float> init = normal_floats(n * dim, rng);
      Embedding emb(spec, init);
      ReferenceEmbedding ref(spec, init);

      std::uniform_int_distribution<int64_t> some_id(0, n - 1), hot_id(0, 4);
      std::bernoulli_distribution hot(0.3), padding(0.15);
      for (int round = 1; round <= 5; ++round) {
        SCOPED_TRACE("round " + std::to_string(round));
        // Round 2 is all padding (or, without padding, a normal round).
        std::vector<int64_t> ids(numel);
        for (auto& id : ids) {
          id = hot(rng) ? hot_id(rng) : some_id(rng);
          if (pad >= 0 && (round == 2 || padding(rng))) id = pad;
        }
        const std::vector<int32_t> ids32(ids.begin(), ids.end());
        const IdsView batch = variant.int32_ids ? view(ids32, {batch_rows, batch_cols})
                                                : view(ids, {batch_rows, batch_cols});

        std::vector<float> out(numel * dim);
        emb.forward(batch, out.data());
        const std::vector<double> want_out = ref.forward(ids);
        ASSERT_TRUE(all_close(out.data(), want_out.data(), numel * dim, 1e-5)) << "forward";

        const std::vector<float> grad_out = normal_floats(numel * dim, rng);
        emb.backward(grad_out.data());
        ref.backward(grad_out);
        // Odd rounds also check the coalesced gradient; even rounds step
        // without asking for it, as training does.
        if (round % 2 == 1) {
          std::vector<int64_t> want_rows;
          std::vector<double> want_values;
          for (const auto& [row, g] : ref.grad()) {
            want_rows.push_back(row);
            want_values.insert(want_values.end(), g.begin(), g.end());
          }
          ASSERT_EQ(emb.grad().rows, want_rows) << "gradient rows";
          ASSERT_EQ(emb.grad().values.size(), want_values.size());
          ASSERT_TRUE(all_close(emb.grad().values.data(), want_values.data(),
                                static_cast<int64_t>(want_values.size()), 1e-5))
              << "gradient values";
        }

        emb.step();
        ref.step();
        EXPECT_EQ(emb.table().step(), round);
        const std::vector<float> w = weights_of(emb.table()), s = state_of(emb.table());
        ASSERT_TRUE(all_close(w.data(), ref.weights().data(), n * dim, 1e-5)) << "weights";
        ASSERT_EQ(s.size(), ref.state().size());
        ASSERT_TRUE(all_close(s.data(), ref.state().data(), static_cast<int64_t>(s.size()), 1e-5))
            << "optimizer state";
      }
    }
}

}  // namespace
