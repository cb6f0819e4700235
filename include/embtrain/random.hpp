// Counter-based random numbers: a value is a pure function of
// (seed, stream, index), so a table's initial rows do not depend on how the
// table is split over ranks or threads, and the CUDA backend can draw the
// same numbers.
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

// Standard normal by Box-Muller from two uniforms of the same (seed, stream).
EMBTRAIN_HD float random_normal(uint64_t seed, uint64_t stream, uint64_t index) {
  const double u1 = random_uniform(seed, stream, 2 * index);
  const double u2 = random_uniform(seed, stream, 2 * index + 1);
  return static_cast<float>(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

}  // namespace embtrain
