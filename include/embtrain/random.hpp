// Counter-based random numbers: a value is a pure function of
// (seed, stream, index), so a table's initial rows do not depend on how the
// table is split over ranks or threads, and the CUDA backend draws the same
// numbers, bit for bit: the normal's log and cosine are computed here from
// +, -, *, / and sqrt alone, which IEEE rounds alike on the host and the
// GPU (both built without FMA contraction: -ffp-contract=off and
// --fmad=false), where libm's and CUDA's log and cos differ in the last
// bit now and then.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "embtrain/host_device.hpp"

namespace embtrain {

// SplitMix64's finaliser: a bijective mix of 64 bits.
EMBTRAIN_HD uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// What the numbers of one (seed, stream) share: random_bits(seed, stream,
// index) is mix64(random_key(seed, stream) ^ index), so a row's draws need
// it once.
EMBTRAIN_HD uint64_t random_key(uint64_t seed, uint64_t stream) {
  return mix64(mix64(seed) ^ stream);
}

EMBTRAIN_HD uint64_t random_bits(uint64_t seed, uint64_t stream, uint64_t index) {
  return mix64(random_key(seed, stream) ^ index);
}

namespace detail {

// The double whose bits are b, and the other way.
EMBTRAIN_HD double bits_double(uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(b));
#else
  double d;
  std::memcpy(&d, &b, sizeof d);
  return d;
#endif
}
EMBTRAIN_HD uint64_t double_bits(double d) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(d));
#else
  uint64_t b;
  std::memcpy(&b, &d, sizeof b);
  return b;
#endif
}

// x < 2^53 as a double, exactly (as static_cast<double>(x)), from bit
// operations: CPUs before AVX-512 have no vector int64 -> double
// conversion, so the draws below vectorise only this way.
EMBTRAIN_HD double exact_double(uint64_t x) {
  const double low = bits_double(0x4330000000000000ull | (x & 0xfffffffffffffull)) - 0x1.0p52;
  return low + ((x >> 52) != 0 ? 0x1.0p52 : 0.0);
}

}  // namespace detail

// Uniform in (0, 1] from random_key's key: never 0, so log() below is finite.
EMBTRAIN_HD double random_uniform_keyed(uint64_t key, uint64_t index) {
  return (detail::exact_double(mix64(key ^ index) >> 11) + 1.0) * 0x1.0p-53;
}

EMBTRAIN_HD double random_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  return random_uniform_keyed(random_key(seed, stream), index);
}

namespace detail {

// log(x) for x in [2^-53, 1], within a few ulp: x = m 2^e with m in
// [sqrt(1/2), sqrt(2)), log(m) = 2 atanh(s) with s = (m - 1) / (m + 1),
// |s| < 0.172, summed to s^25 (the next term is below 2^-64 of the sum);
// e log(2) in two parts, the first exact for |e| < 2^11.
EMBTRAIN_HD double portable_log(double x) {
  // frexp by its bits (x is normal): m in [0.5, 1), and the exponent e
  // (x = m 2^e) as the double k, both exact.
  const uint64_t bits = double_bits(x);
  double m = bits_double((bits & 0xfffffffffffffull) | (uint64_t{1022} << 52));
  double k = bits_double(0x4330000000000000ull | (bits >> 52)) - (0x1.0p52 + 1022);
  // Selects, not branches, here and in portable_cos_2pi: the same values,
  // with no mispredicted branch per number, and loops of draws vectorise.
  const bool low = m < 0.70710678118654752440;
  m = low ? m * 2 : m;
  k = low ? k - 1 : k;
  const double s = (m - 1) / (m + 1), s2 = s * s;
  double p = 1.0 / 25;
  p = p * s2 + 1.0 / 23;
  p = p * s2 + 1.0 / 21;
  p = p * s2 + 1.0 / 19;
  p = p * s2 + 1.0 / 17;
  p = p * s2 + 1.0 / 15;
  p = p * s2 + 1.0 / 13;
  p = p * s2 + 1.0 / 11;
  p = p * s2 + 1.0 / 9;
  p = p * s2 + 1.0 / 7;
  p = p * s2 + 1.0 / 5;
  p = p * s2 + 1.0 / 3;
  p = p * s2 + 1.0;
  const double ln2_hi = 0x1.62e42fefa3800p-1, ln2_lo = 0x1.ef35793c76730p-45;
  return k * ln2_hi + (k * ln2_lo + 2 * s * p);
}

// cos(2 pi u) for u in [0, 1], within a few ulp: folded exactly (Sterbenz)
// to cos or sin of 2 pi t with t in [0, 1/8], then Taylor to x^18 / x^19
// (|x| <= pi / 4: the next term is below 2^-60).
EMBTRAIN_HD double portable_cos_2pi(double u) {
  double v = u > 0.5 ? 1 - u : u;  // cos(2 pi u) = cos(2 pi (1 - u))
  const bool flip = v > 0.25;      // cos(2 pi v) = -cos(2 pi (1/2 - v))
  v = flip ? 0.5 - v : v;
  const double sign = flip ? -1.0 : 1.0;
  const bool use_sin = v > 0.125;  // cos(2 pi v) = sin(2 pi (1/4 - v))
  const double t = use_sin ? 0.25 - v : v;
  const double x = t * 6.283185307179586476925, x2 = x * x;
  // Both series, then the one that applies.
  double r = -1.0 / 121645100408832000;  // sin: -1/19!
  r = r * x2 + 1.0 / 355687428096000;
  r = r * x2 - 1.0 / 1307674368000;
  r = r * x2 + 1.0 / 6227020800;
  r = r * x2 - 1.0 / 39916800;
  r = r * x2 + 1.0 / 362880;
  r = r * x2 - 1.0 / 5040;
  r = r * x2 + 1.0 / 120;
  r = r * x2 - 1.0 / 6;
  r = r * x2 + 1.0;
  r = r * x;
  double c = 1.0 / 6402373705728000;  // cos: 1/18!
  c = c * x2 - 1.0 / 20922789888000;
  c = c * x2 + 1.0 / 87178291200;
  c = c * x2 - 1.0 / 479001600;
  c = c * x2 + 1.0 / 3628800;
  c = c * x2 - 1.0 / 40320;
  c = c * x2 + 1.0 / 720;
  c = c * x2 - 1.0 / 24;
  c = c * x2 + 1.0 / 2;
  c = c * x2 - 1.0;  // c = -(cos x); the sign below
  c = -c;
  return sign * (use_sin ? r : c);
}

}  // namespace detail

// Standard normal by Box-Muller from two uniforms of the same (seed,
// stream), the same bits on the host and a GPU.
EMBTRAIN_HD float random_normal_keyed(uint64_t key, uint64_t index) {
  const double u1 = random_uniform_keyed(key, 2 * index);
  const double u2 = random_uniform_keyed(key, 2 * index + 1);
  return static_cast<float>(sqrt(-2.0 * detail::portable_log(u1)) * detail::portable_cos_2pi(u2));
}

EMBTRAIN_HD float random_normal(uint64_t seed, uint64_t stream, uint64_t index) {
  return random_normal_keyed(random_key(seed, stream), index);
}

}  // namespace embtrain
