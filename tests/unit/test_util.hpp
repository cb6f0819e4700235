// Helpers shared by the unit tests: the seed of the randomized tests and a
// tolerance comparison of float results with a double-precision reference.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

namespace embtrain_test {

// EMBTRAIN_TEST_SEED when set (to replay a failure), else the clock; printed
// once per process. Tests put it in their failure messages with
// SCOPED_TRACE(seed_trace(seed)).
inline uint64_t test_seed() {
  static const uint64_t seed = [] {
    const char* env = std::getenv("EMBTRAIN_TEST_SEED");
    const uint64_t s =
        env && *env
            ? std::strtoull(env, nullptr, 0)
            : static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
    std::fprintf(stderr, "[   seed   ] EMBTRAIN_TEST_SEED=%llu\n",
                 static_cast<unsigned long long>(s));
    return s;
  }();
  return seed;
}

inline std::string seed_trace(uint64_t seed) {
  return "random inputs from EMBTRAIN_TEST_SEED=" + std::to_string(seed);
}

// |got[i] - want[i]| <= rtol * max(1, |want[i]|) for i in [0, n): relative
// for large values, absolute near zero. Reports the first few misses.
template <typename Got, typename Want>
::testing::AssertionResult all_close(const Got* got, const Want* want, int64_t n, double rtol) {
  int64_t misses = 0;
  std::ostringstream detail;
  detail.precision(9);
  for (int64_t i = 0; i < n; ++i) {
    const double g = static_cast<double>(got[i]);
    const double w = static_cast<double>(want[i]);
    // Written so that a NaN on either side is a miss.
    if (std::fabs(g - w) <= rtol * std::fmax(1.0, std::fabs(w))) continue;
    if (++misses <= 5) detail << "\n  [" << i << "] got " << g << ", want " << w;
  }
  if (misses == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << misses << " of " << n << " values differ by more than rtol " << rtol << detail.str();
}

}  // namespace embtrain_test
