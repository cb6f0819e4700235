// ZipfSampler and sample_ids: argument checks, range, the law's
// frequencies within loose statistical bounds, determinism per stream and
// the padding fraction.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "embtrain/errors.hpp"
#include "embtrain/zipf.hpp"
#include "test_util.hpp"

namespace {

using embtrain::ZipfSampler;
using embtrain_test::seed_trace;
using embtrain_test::test_seed;

std::vector<int64_t> histogram(const std::vector<int64_t>& ids, int64_t rows) {
  std::vector<int64_t> h(static_cast<size_t>(rows), 0);
  for (int64_t id : ids) ++h[id];
  return h;
}

// Within `sigmas` standard deviations of a binomial(n, p) count.
void expect_binomial_count(int64_t count, int64_t n, double p, double sigmas,
                           const std::string& what) {
  const double mean = n * p, sd = std::sqrt(n * p * (1 - p));
  EXPECT_NEAR(static_cast<double>(count), mean, sigmas * sd + 1)
      << what << ": frequency " << double(count) / n << ", want " << p;
}

TEST(Zipf, RejectsBadArguments) {
  for (int64_t rows : {-3, 0, 1}) EXPECT_THROW(ZipfSampler(rows, 1.0), embtrain::Error) << rows;
  EXPECT_THROW(ZipfSampler(10, -0.5), embtrain::Error);
  EXPECT_THROW(ZipfSampler(10, std::numeric_limits<double>::quiet_NaN()), embtrain::Error);
  EXPECT_THROW(ZipfSampler(10, std::numeric_limits<double>::infinity()), embtrain::Error);
  EXPECT_NO_THROW(ZipfSampler(2, 0.0));
}

TEST(Zipf, IdsStayInOneToRows) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  for (int64_t rows : {2, 3, 17, 1000})
    for (double alpha : {0.0, 0.5, 1.05, 3.0}) {
      SCOPED_TRACE("rows " + std::to_string(rows) + ", alpha " + std::to_string(alpha));
      const ZipfSampler zipf(rows, alpha);
      for (int64_t id : embtrain::sample_ids(zipf, 20000, 0.0, seed, 1)) {
        ASSERT_GE(id, 1);
        ASSERT_LT(id, rows);
      }
      // The extremes of u stay in range too.
      for (double u : {1.0, std::ldexp(1.0, -53), std::nextafter(1.0, 0.0)}) {
        EXPECT_GE(zipf.id_for(u), 1) << u;
        EXPECT_LT(zipf.id_for(u), rows) << u;
      }
    }
}

TEST(Zipf, AlphaZeroIsUniform) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  const int64_t rows = 21, n = 200000, cells = rows - 1;
  const std::vector<int64_t> h =
      histogram(embtrain::sample_ids(ZipfSampler(rows, 0.0), n, 0.0, seed, 3), rows);
  EXPECT_EQ(h[0], 0);
  const double expected = double(n) / cells;
  double chi2 = 0;
  for (int64_t k = 1; k < rows; ++k) chi2 += (h[k] - expected) * (h[k] - expected) / expected;
  // 19 degrees of freedom: mean 19, sd ~6.2; 80 is about ten sd out.
  EXPECT_LT(chi2, 80.0) << "chi-square of the counts against uniform";
}

TEST(Zipf, FrequenciesFollowThePowerLaw) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  const int64_t rows = 1000, n = 400000;
  const double alpha = 1.05;
  double harmonic = 0;  // normaliser over ids 1..rows-1
  for (int64_t k = 1; k < rows; ++k) harmonic += std::pow(double(k), -alpha);
  const std::vector<int64_t> h =
      histogram(embtrain::sample_ids(ZipfSampler(rows, alpha), n, 0.0, seed, 5), rows);
  for (int64_t k : {1, 2, 3, 10})
    expect_binomial_count(h[k], n, std::pow(double(k), -alpha) / harmonic, 6.0,
                          "id " + std::to_string(k));
  // The upper half of the ids together.
  double tail_p = 0;
  int64_t tail = 0;
  for (int64_t k = rows / 2; k < rows; ++k) {
    tail_p += std::pow(double(k), -alpha) / harmonic;
    tail += h[k];
  }
  expect_binomial_count(tail, n, tail_p, 6.0, "ids >= rows / 2");
}

TEST(Zipf, SampleIdsIsDeterministicPerStream) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  const ZipfSampler zipf(5000, 1.05);
  const int64_t n = 10000;
  const std::vector<int64_t> a = embtrain::sample_ids(zipf, n, 0.1, seed, 7);
  EXPECT_EQ(a, embtrain::sample_ids(zipf, n, 0.1, seed, 7));

  // Another stream or seed gives other ids: they may agree by chance at hot
  // ids and padding, but not at most positions.
  for (const auto& other : {embtrain::sample_ids(zipf, n, 0.1, seed, 8),
                            embtrain::sample_ids(zipf, n, 0.1, seed + 1, 7)}) {
    int64_t same = 0;
    for (int64_t i = 0; i < n; ++i) same += a[i] == other[i];
    EXPECT_LT(same, n / 4) << same << " of " << n << " positions agree";
  }
}

TEST(Zipf, PaddingFraction) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  const ZipfSampler zipf(100, 1.05);
  const int64_t n = 200000;
  for (double pad_frac : {0.0, 0.05, 0.3, 1.0}) {
    SCOPED_TRACE("pad_frac " + std::to_string(pad_frac));
    const std::vector<int64_t> ids = embtrain::sample_ids(zipf, n, pad_frac, seed, 11);
    const int64_t zeros = histogram(ids, 100)[0];
    if (pad_frac == 0.0 || pad_frac == 1.0)
      EXPECT_EQ(zeros, static_cast<int64_t>(pad_frac * n));
    else
      expect_binomial_count(zeros, n, pad_frac, 6.0, "padding");
  }
}

}  // namespace
