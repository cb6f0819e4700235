// row_math.hpp and step_scalars() against the formulas of
// shared/TORCH_SEMANTICS.md, recomputed here in double precision.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "embtrain/optimizer.hpp"
#include "embtrain/row_math.hpp"
#include "test_util.hpp"

namespace {

using embtrain::OptimizerConfig;
using embtrain::OptimizerKind;
using embtrain::StepScalars;
using embtrain_test::all_close;
using embtrain_test::seed_trace;
using embtrain_test::test_seed;

constexpr double kRtol = 1e-5;
constexpr int kSteps = 6;
const int64_t kDims[] = {1, 3, 16, 33, 128};
constexpr OptimizerKind kAllKinds[] = {OptimizerKind::kSgd, OptimizerKind::kAdagrad,
                                       OptimizerKind::kAdam, OptimizerKind::kRowwiseAdagrad};

std::vector<float> normal_floats(int64_t n, float stddev, std::mt19937_64& rng) {
  std::normal_distribution<float> dist(0.f, stddev);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<float> uniform_floats(int64_t n, float lo, float hi, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

// A gradient of varying scale with an occasional exact zero.
std::vector<float> random_grad(int64_t dim, std::mt19937_64& rng) {
  const float scale = std::uniform_real_distribution<float>(0.1f, 3.f)(rng);
  std::vector<float> g = normal_floats(dim, scale, rng);
  for (auto& x : g)
    if (std::uniform_int_distribution<int>(0, 9)(rng) == 0) x = 0.f;
  return g;
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// The settings of one randomized run: a large eps makes its placement
// (inside or outside the square root, added or not) visible.
struct Settings {
  float lr;
  float eps;
};

std::vector<Settings> random_settings(std::mt19937_64& rng) {
  const float lr = std::uniform_real_distribution<float>(0.05f, 0.5f)(rng);
  return {{lr, 1e-8f}, {lr, 0.5f}};
}

std::string describe(int64_t dim, const Settings& s) {
  return "dim " + std::to_string(dim) + ", lr " + std::to_string(s.lr) + ", eps " +
         std::to_string(s.eps);
}

// ------------------------------------------------------- optimizer rows

TEST(RowMath, SgdRowMatchesFormula) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int64_t dim : kDims)
    for (const Settings& set : random_settings(rng)) {
      SCOPED_TRACE(describe(dim, set));
      std::vector<float> w = normal_floats(dim, 1.f, rng);
      std::vector<double> w_ref = to_double(w);
      StepScalars s;
      s.lr = set.lr;
      s.eps = set.eps;
      for (int t = 1; t <= kSteps; ++t) {
        const std::vector<float> g = random_grad(dim, rng);
        embtrain::sgd_row(w.data(), g.data(), dim, s);
        for (int64_t j = 0; j < dim; ++j) w_ref[j] -= double(set.lr) * g[j];
        ASSERT_TRUE(all_close(w.data(), w_ref.data(), dim, kRtol)) << "step " << t;
      }
    }
}

TEST(RowMath, AdagradRowMatchesFormula) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const double lr_decay = 0.3;
  for (int64_t dim : kDims)
    for (const Settings& set : random_settings(rng))
      for (float initial_sum : {0.f, 0.7f}) {
        SCOPED_TRACE(describe(dim, set) + ", initial sum " + std::to_string(initial_sum));
        std::vector<float> w = normal_floats(dim, 1.f, rng);
        std::vector<float> sum(static_cast<size_t>(dim), initial_sum);
        std::vector<double> w_ref = to_double(w), sum_ref = to_double(sum);
        for (int t = 1; t <= kSteps; ++t) {
          // clr as the Adagrad step t would have it.
          const double clr = set.lr / (1.0 + (t - 1) * lr_decay);
          StepScalars s;
          s.lr = static_cast<float>(clr);
          s.eps = set.eps;
          const std::vector<float> g = random_grad(dim, rng);
          embtrain::adagrad_row(w.data(), sum.data(), g.data(), dim, s);
          for (int64_t j = 0; j < dim; ++j) {
            sum_ref[j] += double(g[j]) * g[j];
            w_ref[j] -= clr * g[j] / (std::sqrt(sum_ref[j]) + set.eps);
          }
          ASSERT_TRUE(all_close(sum.data(), sum_ref.data(), dim, kRtol)) << "sum, step " << t;
          ASSERT_TRUE(all_close(w.data(), w_ref.data(), dim, kRtol)) << "w, step " << t;
        }
      }
}

// Bias-corrected step size of SparseAdam's step t.
double adam_step_size(double lr, double beta1, double beta2, int t) {
  return lr * std::sqrt(1.0 - std::pow(beta2, t)) / (1.0 - std::pow(beta1, t));
}

TEST(RowMath, AdamRowMatchesFormula) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const double beta1 = 0.8, beta2 = 0.95;
  for (int64_t dim : kDims)
    for (const Settings& set : random_settings(rng))
      for (bool fresh : {true, false}) {
        SCOPED_TRACE(describe(dim, set) + (fresh ? ", m = v = 0" : ", random m, v"));
        std::vector<float> w = normal_floats(dim, 1.f, rng);
        std::vector<float> m = fresh ? std::vector<float>(dim, 0.f) : normal_floats(dim, 0.5f, rng);
        std::vector<float> v =
            fresh ? std::vector<float>(dim, 0.f) : uniform_floats(dim, 0.f, 2.f, rng);
        std::vector<double> w_ref = to_double(w), m_ref = to_double(m), v_ref = to_double(v);
        for (int t = 1; t <= kSteps; ++t) {
          const double step_size = adam_step_size(set.lr, beta1, beta2, t);
          StepScalars s;
          s.lr = static_cast<float>(step_size);
          s.eps = set.eps;
          s.one_minus_beta1 = static_cast<float>(1.0 - beta1);
          s.one_minus_beta2 = static_cast<float>(1.0 - beta2);
          const std::vector<float> g = random_grad(dim, rng);
          embtrain::adam_row(w.data(), m.data(), v.data(), g.data(), dim, s);
          for (int64_t j = 0; j < dim; ++j) {
            m_ref[j] += (g[j] - m_ref[j]) * (1.0 - beta1);
            v_ref[j] += (double(g[j]) * g[j] - v_ref[j]) * (1.0 - beta2);
            w_ref[j] -= step_size * m_ref[j] / (std::sqrt(v_ref[j]) + set.eps);
          }
          ASSERT_TRUE(all_close(m.data(), m_ref.data(), dim, kRtol)) << "m, step " << t;
          ASSERT_TRUE(all_close(v.data(), v_ref.data(), dim, kRtol)) << "v, step " << t;
          ASSERT_TRUE(all_close(w.data(), w_ref.data(), dim, kRtol)) << "w, step " << t;
        }
      }
}

TEST(RowMath, RowwiseAdagradRowMatchesFormula) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int64_t dim : kDims)
    for (const Settings& set : random_settings(rng))
      for (float initial_acc : {0.f, 0.4f}) {
        SCOPED_TRACE(describe(dim, set) + ", initial G " + std::to_string(initial_acc));
        std::vector<float> w = normal_floats(dim, 1.f, rng);
        float acc = initial_acc;
        std::vector<double> w_ref = to_double(w);
        double acc_ref = initial_acc;
        StepScalars s;
        s.lr = set.lr;
        s.eps = set.eps;
        for (int t = 1; t <= kSteps; ++t) {
          const std::vector<float> g = random_grad(dim, rng);
          embtrain::rowwise_adagrad_row(w.data(), &acc, g.data(), dim, s);
          double mean_sq = 0;
          for (int64_t j = 0; j < dim; ++j) mean_sq += double(g[j]) * g[j];
          acc_ref += mean_sq / dim;
          for (int64_t j = 0; j < dim; ++j)
            w_ref[j] -= double(set.lr) * g[j] / (std::sqrt(acc_ref) + set.eps);
          ASSERT_TRUE(all_close(&acc, &acc_ref, 1, kRtol)) << "G, step " << t;
          ASSERT_TRUE(all_close(w.data(), w_ref.data(), dim, kRtol)) << "w, step " << t;
        }
      }
}

// update_row picks the row function by kind and finds each optimizer's state
// in the documented layout: Adagrad sum[dim]; Adam m[dim] then v[dim];
// row-wise Adagrad one accumulator; SGD none.
TEST(RowMath, UpdateRowDispatchesWithDocumentedStateLayout) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const int64_t dim = 19;
  StepScalars s;
  s.lr = 0.2f;
  s.eps = 0.1f;
  s.one_minus_beta1 = 0.25f;
  s.one_minus_beta2 = 0.125f;
  for (OptimizerKind kind : kAllKinds) {
    SCOPED_TRACE(embtrain::optimizer_name(kind));
    std::vector<float> w = normal_floats(dim, 1.f, rng);
    std::vector<float> state =
        uniform_floats(embtrain::optimizer_state_width(kind, dim), 0.1f, 1.f, rng);
    std::vector<double> w_ref = to_double(w), state_ref = to_double(state);
    for (int t = 1; t <= kSteps; ++t) {
      const std::vector<float> g = random_grad(dim, rng);
      embtrain::update_row(kind, w.data(), state.empty() ? nullptr : state.data(), g.data(), dim,
                           s);
      double mean_sq = 0;
      for (int64_t j = 0; j < dim; ++j) mean_sq += double(g[j]) * g[j] / dim;
      if (kind == OptimizerKind::kRowwiseAdagrad) state_ref[0] += mean_sq;
      for (int64_t j = 0; j < dim; ++j) {
        switch (kind) {
          case OptimizerKind::kSgd:
            w_ref[j] -= s.lr * double(g[j]);
            break;
          case OptimizerKind::kAdagrad:
            state_ref[j] += double(g[j]) * g[j];
            w_ref[j] -= s.lr * g[j] / (std::sqrt(state_ref[j]) + s.eps);
            break;
          case OptimizerKind::kAdam: {
            double& m = state_ref[j];
            double& v = state_ref[dim + j];
            m += (g[j] - m) * s.one_minus_beta1;
            v += (double(g[j]) * g[j] - v) * s.one_minus_beta2;
            w_ref[j] -= s.lr * m / (std::sqrt(v) + s.eps);
            break;
          }
          case OptimizerKind::kRowwiseAdagrad:
            w_ref[j] -= s.lr * g[j] / (std::sqrt(state_ref[0]) + s.eps);
            break;
        }
      }
      ASSERT_TRUE(all_close(w.data(), w_ref.data(), dim, kRtol)) << "w, step " << t;
      ASSERT_TRUE(
          all_close(state.data(), state_ref.data(), static_cast<int64_t>(state.size()), kRtol))
          << "state, step " << t;
    }
  }
}

TEST(RowMath, OptimizerStateWidth) {
  for (int64_t dim : {int64_t{1}, int64_t{7}, int64_t{128}}) {
    EXPECT_EQ(embtrain::optimizer_state_width(OptimizerKind::kSgd, dim), 0);
    EXPECT_EQ(embtrain::optimizer_state_width(OptimizerKind::kAdagrad, dim), dim);
    EXPECT_EQ(embtrain::optimizer_state_width(OptimizerKind::kAdam, dim), 2 * dim);
    EXPECT_EQ(embtrain::optimizer_state_width(OptimizerKind::kRowwiseAdagrad, dim), 1);
  }
}

// ---------------------------------------------------------- step scalars

OptimizerConfig config(OptimizerKind kind) {
  OptimizerConfig c;
  c.kind = kind;
  c.lr = 0.3;
  c.lr_decay = 0.25;
  c.beta1 = 0.8;
  c.beta2 = 0.95;
  return c;
}

TEST(StepScalars, SgdAndRowwiseUseLrAsGiven) {
  for (OptimizerKind kind : {OptimizerKind::kSgd, OptimizerKind::kRowwiseAdagrad}) {
    SCOPED_TRACE(embtrain::optimizer_name(kind));
    for (int64_t t : {1, 2, 10, 1000})
      EXPECT_FLOAT_EQ(embtrain::step_scalars(config(kind), t).lr, 0.3f) << "t " << t;
  }
  EXPECT_FLOAT_EQ(embtrain::step_scalars(config(OptimizerKind::kRowwiseAdagrad), 3).eps, 1e-8f);
}

TEST(StepScalars, AdagradDecaysLr) {
  const OptimizerConfig c = config(OptimizerKind::kAdagrad);
  for (int64_t t = 1; t <= 20; ++t) {
    const StepScalars s = embtrain::step_scalars(c, t);
    EXPECT_FLOAT_EQ(s.lr, static_cast<float>(0.3 / (1.0 + (t - 1) * 0.25))) << "t " << t;
    EXPECT_FLOAT_EQ(s.eps, 1e-10f) << "Adagrad's default eps";
  }
  OptimizerConfig no_decay = c;
  no_decay.lr_decay = 0;
  EXPECT_FLOAT_EQ(embtrain::step_scalars(no_decay, 50).lr, 0.3f);
}

TEST(StepScalars, AdamBiasCorrectedStepSize) {
  const OptimizerConfig c = config(OptimizerKind::kAdam);
  for (int t : {1, 2, 3, 10, 100, 10000}) {
    const StepScalars s = embtrain::step_scalars(c, t);
    EXPECT_FLOAT_EQ(s.lr, static_cast<float>(adam_step_size(0.3, 0.8, 0.95, t))) << "t " << t;
    EXPECT_FLOAT_EQ(s.one_minus_beta1, 0.2f);
    EXPECT_FLOAT_EQ(s.one_minus_beta2, 0.05f);
    EXPECT_FLOAT_EQ(s.eps, 1e-8f) << "SparseAdam's default eps";
  }
  // Step 1 with PyTorch's defaults: lr * sqrt(0.001) / 0.1.
  OptimizerConfig defaults;
  defaults.kind = OptimizerKind::kAdam;
  defaults.lr = 1e-3;
  EXPECT_FLOAT_EQ(embtrain::step_scalars(defaults, 1).lr,
                  static_cast<float>(1e-3 * std::sqrt(0.001) / 0.1));
}

TEST(StepScalars, ExplicitEpsIsUsed) {
  for (OptimizerKind kind :
       {OptimizerKind::kAdagrad, OptimizerKind::kAdam, OptimizerKind::kRowwiseAdagrad}) {
    OptimizerConfig c = config(kind);
    c.eps = 0.125;
    EXPECT_FLOAT_EQ(embtrain::step_scalars(c, 4).eps, 0.125f) << embtrain::optimizer_name(kind);
  }
}

// ------------------------------------------------------------ max_norm

double reference_norm(const std::vector<float>& row, double p) {
  if (std::isinf(p)) {
    double m = 0;
    for (float x : row) m = std::fmax(m, std::fabs(double(x)));
    return m;
  }
  double acc = 0;
  for (float x : row) acc += std::pow(std::fabs(double(x)), p);
  return std::pow(acc, 1.0 / p);
}

const float kNormTypes[] = {1.f, 2.f, 3.f, std::numeric_limits<float>::infinity()};

TEST(RowNorm, MatchesPNormOfAbsoluteValues) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int64_t dim : kDims)
    for (float p : kNormTypes) {
      SCOPED_TRACE("dim " + std::to_string(dim) + ", p " + std::to_string(p));
      const std::vector<float> row = normal_floats(dim, 2.f, rng);
      std::vector<float> negative(row);
      for (auto& x : negative) x = -std::fabs(x);  // odd p without |x| would go wrong here
      for (const auto& r : {row, negative}) {
        const double want = reference_norm(r, p);
        const float got = embtrain::row_norm(r.data(), dim, p);
        EXPECT_NEAR(got, want, 1e-5 * want);
      }
    }
}

TEST(RowNorm, SmallExactCases) {
  const std::vector<float> row = {3.f, -4.f};
  EXPECT_FLOAT_EQ(embtrain::row_norm(row.data(), 2, 1.f), 7.f);
  EXPECT_FLOAT_EQ(embtrain::row_norm(row.data(), 2, 2.f), 5.f);
  EXPECT_FLOAT_EQ(embtrain::row_norm(row.data(), 2, 3.f), std::cbrt(91.f));
  EXPECT_FLOAT_EQ(embtrain::row_norm(row.data(), 2, std::numeric_limits<float>::infinity()), 4.f);
}

// The scale PyTorch's CPU kernel applies: in double, from the float norm.
float expected_scale(float norm, float max_norm) {
  return static_cast<float>(double(max_norm) / (double(norm) + 1e-7));
}

TEST(RenormScale, OneUnlessNormStrictlyAboveMax) {
  EXPECT_EQ(embtrain::renorm_scale(1.f, 2.f), 1.f);
  EXPECT_EQ(embtrain::renorm_scale(0.f, 2.f), 1.f);
  EXPECT_EQ(embtrain::renorm_scale(2.f, 2.f), 1.f) << "the comparison is strict";
  const float just_above = std::nextafter(2.f, 3.f);
  EXPECT_EQ(embtrain::renorm_scale(just_above, 2.f), expected_scale(just_above, 2.f));
  EXPECT_LT(embtrain::renorm_scale(just_above, 2.f), 1.f);
}

TEST(RenormScale, AddsTheGuardToTheNorm) {
  // Without the 1e-7 guard this would be 0.5.
  EXPECT_NEAR(embtrain::renorm_scale(1e-6f, 5e-7f), 5e-7 / (1e-6 + 1e-7), 1e-6);
  EXPECT_EQ(embtrain::renorm_scale(1e-6f, 5e-7f), expected_scale(1e-6f, 5e-7f));
}

TEST(RenormScale, ComputedInDoubleAndRoundedOnce) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(1e-3f, 100.f);
  for (int i = 0; i < 10000; ++i) {
    float norm = dist(rng), max_norm = dist(rng);
    if (norm <= max_norm) std::swap(norm, max_norm);
    if (norm == max_norm) continue;
    ASSERT_EQ(embtrain::renorm_scale(norm, max_norm), expected_scale(norm, max_norm))
        << "norm " << norm << ", max_norm " << max_norm;
  }
}

TEST(RenormRow, ScalesRowsAboveMaxNorm) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const float max_norm = 1.5f;
  for (int64_t dim : kDims)
    for (float p : kNormTypes) {
      SCOPED_TRACE("dim " + std::to_string(dim) + ", p " + std::to_string(p));
      std::vector<float> row = normal_floats(dim, 1.f, rng);
      // Stretch the row to a norm of 4 so that it is clearly above max_norm.
      const double stretch = 4.0 / reference_norm(row, p);
      for (auto& x : row) x = static_cast<float>(x * stretch);
      const std::vector<float> before = row;

      embtrain::renorm_row(row.data(), dim, max_norm, p);
      const float scale = expected_scale(embtrain::row_norm(before.data(), dim, p), max_norm);
      for (int64_t j = 0; j < dim; ++j)
        ASSERT_EQ(row[j], before[j] * scale) << "element " << j << ": multiplied in float32";
      const double after = reference_norm(row, p);
      EXPECT_LE(after, max_norm * (1 + 1e-5));
      EXPECT_GE(after, max_norm * (1 - 1e-5));
    }
}

TEST(RenormRow, LeavesRowsAtOrBelowMaxNormUntouched) {
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    std::vector<float> row;
    float p;
    float max_norm;
  };
  const Case cases[] = {
      {{0.5f, -1.5f}, 1.f, 2.f},        // norm exactly max_norm
      {{-2.f, 1.f, 0.25f}, inf, 2.f},   // norm exactly max_norm
      {{3.f, -4.f}, 2.f, 5.f},          // norm exactly max_norm
      {{0.1f, 0.2f, -0.3f}, 3.f, 1.f},  // well below
  };
  for (const Case& c : cases) {
    std::vector<float> row = c.row;
    embtrain::renorm_row(row.data(), static_cast<int64_t>(row.size()), c.max_norm, c.p);
    EXPECT_EQ(row, c.row) << "p " << c.p << ", max_norm " << c.max_norm;
  }
}

}  // namespace
