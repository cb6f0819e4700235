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

#include "embtrain/host_device.hpp"

namespace embtrain {

// SplitMix64's finaliser: a bijective mix of 64 bits.
EMBTRAIN_HD uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

EMBTRAIN_HD uint64_t random_bits(uint64_t seed, uint64_t stream, uint64_t index) {
  return mix64(mix64(mix64(seed) ^ stream) ^ index);
}

// Uniform in (0, 1]: never 0, so log() below is finite.
EMBTRAIN_HD double random_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  return (static_cast<double>(random_bits(seed, stream, index) >> 11) + 1.0) * 0x1.0p-53;
}

namespace detail {

// log(x) for x in [2^-53, 1], within a few ulp: x = m 2^e with m in
// [sqrt(1/2), sqrt(2)), log(m) = 2 atanh(s) with s = (m - 1) / (m + 1),
// |s| < 0.172, summed to s^25 (the next term is below 2^-64 of the sum);
// e log(2) in two parts, the first exact for |e| < 2^11.
EMBTRAIN_HD double portable_log(double x) {
  int e = 0;
  double m = frexp(x, &e);  // exact: m in [0.5, 1)
  if (m < 0.70710678118654752440) {
    m = m * 2;
    e = e - 1;
  }
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
  const double k = static_cast<double>(e);
  return k * ln2_hi + (k * ln2_lo + 2 * s * p);
}

// cos(2 pi u) for u in [0, 1], within a few ulp: folded exactly (Sterbenz)
// to cos or sin of 2 pi t with t in [0, 1/8], then Taylor to x^18 / x^19
// (|x| <= pi / 4: the next term is below 2^-60).
EMBTRAIN_HD double portable_cos_2pi(double u) {
  double v = u > 0.5 ? 1 - u : u;  // cos(2 pi u) = cos(2 pi (1 - u))
  double sign = 1;
  if (v > 0.25) {  // cos(2 pi v) = -cos(2 pi (1/2 - v))
    v = 0.5 - v;
    sign = -1;
  }
  const bool use_sin = v > 0.125;  // cos(2 pi v) = sin(2 pi (1/4 - v))
  const double t = use_sin ? 0.25 - v : v;
  const double x = t * 6.283185307179586476925, x2 = x * x;
  double r;
  if (use_sin) {
    r = -1.0 / 121645100408832000;  // -1/19!
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
  } else {
    r = 1.0 / 6402373705728000;  // 1/18!
    r = r * x2 - 1.0 / 20922789888000;
    r = r * x2 + 1.0 / 87178291200;
    r = r * x2 - 1.0 / 479001600;
    r = r * x2 + 1.0 / 3628800;
    r = r * x2 - 1.0 / 40320;
    r = r * x2 + 1.0 / 720;
    r = r * x2 - 1.0 / 24;
    r = r * x2 + 1.0 / 2;
    r = r * x2 - 1.0;  // r = -(cos x); the sign below
    r = -r;
  }
  return sign * r;
}

}  // namespace detail

// Standard normal by Box-Muller from two uniforms of the same (seed,
// stream), the same bits on the host and a GPU.
EMBTRAIN_HD float random_normal(uint64_t seed, uint64_t stream, uint64_t index) {
  const double u1 = random_uniform(seed, stream, 2 * index);
  const double u2 = random_uniform(seed, stream, 2 * index + 1);
  return static_cast<float>(sqrt(-2.0 * detail::portable_log(u1)) * detail::portable_cos_2pi(u2));
}

}  // namespace embtrain
