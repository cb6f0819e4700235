// Size arithmetic on numbers that come from outside (a file's header, a
// config key, a flag): products that say when they overflow instead of
// wrapping around to a small, plausible value that then passes a check.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

namespace embtrain {

constexpr int64_t kMaxSize = std::numeric_limits<int64_t>::max();

// a * b for a, b >= 0, or nullopt when it exceeds `limit`.
inline std::optional<int64_t> checked_mul(int64_t a, int64_t b, int64_t limit = kMaxSize) {
  int64_t p = 0;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &p) || p > limit) return std::nullopt;
  return p;
}

// The product of `factors` (each >= 0) times `scale`, or nullopt when it,
// or the product of the nonzero factors alone, exceeds `limit`: a shape
// such as (2^62, 2^62, 0) is refused although it holds no element, so that
// no later product of some of its dimensions can overflow either.
inline std::optional<int64_t> checked_product(const std::vector<int64_t>& factors,
                                              int64_t scale = 1, int64_t limit = kMaxSize) {
  int64_t nonzero = scale;
  bool empty = false;
  for (int64_t f : factors) {
    if (f < 0) return std::nullopt;
    if (f == 0) {
      empty = true;
      continue;
    }
    const std::optional<int64_t> p = checked_mul(nonzero, f, limit);
    if (!p) return std::nullopt;
    nonzero = *p;
  }
  return empty ? 0 : nonzero;
}

}  // namespace embtrain
