// The wire formats' conversions (include/embtrain/comm_precision.hpp)
// against their definition, checked from the outside: every 16-bit value
// survives a round trip, and a float goes to a nearest representable value,
// ties to the even one, found here by comparing it with its neighbours in
// double precision. Plus the edges: saturation, inf, NaN, subnormals, and
// the CPU kernels' loops against the scalar functions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "embtrain/comm_precision.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "test_util.hpp"

namespace {

using embtrain::CommPrecision;
using embtrain::from_wire;
using embtrain::to_wire;
using embtrain_test::seed_trace;
using embtrain_test::test_seed;

constexpr CommPrecision kHalves[] = {CommPrecision::kBf16, CommPrecision::kFp16};

bool is_nan16(uint16_t h, CommPrecision p) { return std::isnan(from_wire(h, p)); }

// The largest finite value and whether p saturates there (fp16) or rounds
// past it to inf (bf16, whose range is float's).
uint16_t max_finite(CommPrecision p) { return p == CommPrecision::kFp16 ? 0x7bff : 0x7f7f; }

TEST(CommPrecision, EveryValueSurvivesARoundTrip) {
  for (CommPrecision p : kHalves)
    for (uint32_t h = 0; h <= 0xffff; ++h) {
      const auto v = static_cast<uint16_t>(h);
      if (is_nan16(v, p)) {
        EXPECT_TRUE(is_nan16(to_wire(from_wire(v, p), p), p)) << std::hex << h;
        continue;
      }
      ASSERT_EQ(to_wire(from_wire(v, p), p), v)
          << embtrain::comm_precision_name(p) << " 0x" << std::hex << h;
    }
}

// x's conversion r is a nearest representable value: no neighbour of r (in
// bit order, the same sign) is closer, and on a tie r is even.
void check_nearest(float x, CommPrecision p) {
  const uint16_t r = to_wire(x, p);
  const double got = from_wire(r, p), want = x;
  const double err = std::fabs(got - want);
  const uint16_t magnitude = r & 0x7fff;
  for (int step : {-1, 1}) {
    const int neighbour = magnitude + step;
    if (neighbour < 0 || neighbour > max_finite(p)) continue;
    const uint16_t n = static_cast<uint16_t>((r & 0x8000) | neighbour);
    const double other = std::fabs(static_cast<double>(from_wire(n, p)) - want);
    ASSERT_LE(err, other) << embtrain::comm_precision_name(p) << " x " << x << " -> 0x"
                          << std::hex << r << " but 0x" << n << " is closer";
    if (err == other) {
      ASSERT_EQ(r & 1, 0) << "tie not to even: x " << x;
    }
  }
}

TEST(CommPrecision, RoundsToNearestTiesToEven) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<uint32_t> bits;
  for (CommPrecision p : kHalves)
    for (int k = 0; k < 300000; ++k) {
      // Any finite float of either format's range, subnormals included.
      float x;
      const uint32_t u = bits(rng);
      std::memcpy(&x, &u, sizeof(x));
      if (!std::isfinite(x)) continue;
      if (p == CommPrecision::kFp16) {  // the same mantissa at an exponent of fp16's range
        int exponent = 0;
        x = std::ldexp(std::frexp(x, &exponent), static_cast<int>(u % 44) - 26);
      }
      if (std::fabs(x) > 65504.f && p == CommPrecision::kFp16) continue;
      if (std::fabs(x) > 3.3895313e38f && p == CommPrecision::kBf16) continue;
      ASSERT_NO_FATAL_FAILURE(check_nearest(x, p));
    }
  // Exact ties: halfway between two neighbours, both parities.
  for (CommPrecision p : kHalves)
    for (uint16_t h : {0x0001, 0x0002, 0x03fe, 0x0400, 0x3c00, 0x3c01, 0x4000, 0x7bfe}) {
      const double a = from_wire(h, p), b = from_wire(static_cast<uint16_t>(h + 1), p);
      ASSERT_NO_FATAL_FAILURE(check_nearest(static_cast<float>((a + b) / 2), p));
    }
}

TEST(CommPrecision, EdgesSaturateAndKeepSpecials) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // fp16 saturates finite values at +-65504; inf stays inf; NaN stays NaN.
  EXPECT_EQ(to_wire(65504.f, CommPrecision::kFp16), 0x7bff);
  EXPECT_EQ(to_wire(65519.f, CommPrecision::kFp16), 0x7bff);
  EXPECT_EQ(to_wire(1e30f, CommPrecision::kFp16), 0x7bff);
  EXPECT_EQ(to_wire(-1e30f, CommPrecision::kFp16), 0xfbff);
  EXPECT_EQ(to_wire(inf, CommPrecision::kFp16), 0x7c00);
  EXPECT_EQ(to_wire(-inf, CommPrecision::kFp16), 0xfc00);
  EXPECT_TRUE(std::isnan(from_wire(to_wire(nan, CommPrecision::kFp16), CommPrecision::kFp16)));
  // fp16's subnormals: 2^-24 is the least; half of it ties to 0 (even).
  EXPECT_EQ(to_wire(std::ldexp(1.f, -24), CommPrecision::kFp16), 0x0001);
  EXPECT_EQ(to_wire(std::ldexp(1.f, -25), CommPrecision::kFp16), 0x0000);
  EXPECT_EQ(to_wire(std::ldexp(1.5f, -25), CommPrecision::kFp16), 0x0001);
  EXPECT_EQ(to_wire(-0.f, CommPrecision::kFp16), 0x8000);
  // bf16 has float's range: inf and NaN as they are.
  EXPECT_EQ(to_wire(inf, CommPrecision::kBf16), 0x7f80);
  EXPECT_TRUE(std::isnan(from_wire(to_wire(nan, CommPrecision::kBf16), CommPrecision::kBf16)));
  EXPECT_EQ(to_wire(1.f, CommPrecision::kBf16), 0x3f80);
}

// The CPU kernels' vector loops give the scalar functions' bits, scaled.
TEST(CommPrecision, KernelsMatchTheScalarConversions) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  const int64_t n = 1003;
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng) * std::ldexp(1.f, static_cast<int>(rng() % 40) - 30);
  x[0] = std::numeric_limits<float>::infinity();
  x[1] = 70000.f;
  for (CommPrecision p : kHalves) {
    const float scale = p == CommPrecision::kFp16 ? embtrain::kFp16GradScale : 1.f;
    std::vector<uint16_t> wire(n);
    embtrain::cpu::pack_wire(x.data(), n, p, scale, wire.data());
    std::vector<float> back(n), rounded(x);
    embtrain::cpu::unpack_wire(wire.data(), n, p, 1.f / scale, back.data());
    embtrain::cpu::round_wire(rounded.data(), n, p, scale);
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t want = to_wire(x[i] * scale, p);
      ASSERT_EQ(wire[i], want) << "pack, element " << i;
      const float value = from_wire(want, p) * (1.f / scale);
      ASSERT_EQ(std::memcmp(&back[i], &value, 4), 0) << "unpack, element " << i;
      ASSERT_EQ(std::memcmp(&rounded[i], &value, 4), 0) << "round, element " << i;
    }
  }
  // fp32 is a copy.
  std::vector<float> copy(n), same(x);
  embtrain::cpu::pack_wire(x.data(), n, CommPrecision::kFp32, 1.f, copy.data());
  embtrain::cpu::round_wire(same.data(), n, CommPrecision::kFp32, 1.f);
  EXPECT_EQ(std::memcmp(copy.data(), x.data(), n * 4), 0);
  EXPECT_EQ(std::memcmp(same.data(), x.data(), n * 4), 0);
}

// fp16 in bulk (the kernels may use the CPU's converter, F16C) against the
// scalar functions: every fp16 value unpacked, scaled or not; every float
// of the exponents where fp16's rounding turns (to 0 and the least
// subnormal, subnormal to normal, the largest finite to saturation), both
// signs, packed and rounded; and one float in 251 of all 2^32 bit patterns
// (NaNs with payloads and infinities among them), times the gradients'
// scale too.
TEST(CommPrecision, Fp16KernelsEqualTheScalarConversionsEverywhere) {
  using embtrain::bits_float;
  const CommPrecision p = CommPrecision::kFp16;
  std::vector<uint16_t> halves(65536);
  for (uint32_t h = 0; h < 65536; ++h) halves[h] = static_cast<uint16_t>(h);
  std::vector<float> got(65536);
  // volatile: the compiler may not fold x * 1 into x, which would leave a
  // signalling NaN unquieted on the expected side only.
  for (volatile float scale : {1.f, 1.f / embtrain::kFp16GradScale}) {
    embtrain::cpu::unpack_wire(halves.data(), 65536, p, scale, got.data());
    for (uint32_t h = 0; h < 65536; ++h) {
      const float want = from_wire(static_cast<uint16_t>(h), p) * scale;
      ASSERT_EQ(std::memcmp(&got[h], &want, 4), 0) << "unpack of 0x" << std::hex << h;
    }
  }
  auto check = [&](const std::vector<uint32_t>& bits, float scale) {
    const int64_t n = static_cast<int64_t>(bits.size());
    std::vector<float> x(bits.size());
    std::memcpy(x.data(), bits.data(), bits.size() * 4);
    std::vector<uint16_t> wire(bits.size());
    std::vector<float> rounded(x);
    embtrain::cpu::pack_wire(x.data(), n, p, scale, wire.data());
    embtrain::cpu::round_wire(rounded.data(), n, p, scale);
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t want = to_wire(x[i] * scale, p);
      ASSERT_EQ(wire[i], want) << "pack of bits 0x" << std::hex << bits[i] << " times " << scale;
      const float value = from_wire(want, p) * (1.f / scale);
      ASSERT_EQ(std::memcmp(&rounded[i], &value, 4), 0)
          << "round of bits 0x" << std::hex << bits[i] << " times " << scale;
    }
  };
  // Float exponents (biased): 101-103 around 2^-25, 112-113 around 2^-14,
  // 142 for [2^15, 2^16).
  for (uint32_t e : {101u, 102u, 103u, 112u, 113u, 142u})
    for (uint32_t sign : {0u, 1u}) {
      std::vector<uint32_t> bits(1u << 23);
      for (uint32_t m = 0; m < (1u << 23); ++m) bits[m] = sign << 31 | e << 23 | m;
      check(bits, 1.f);
      if (::testing::Test::HasFatalFailure()) return;
    }
  std::vector<uint32_t> sparse;
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 251) sparse.push_back(static_cast<uint32_t>(u));
  for (uint32_t special : {0x7f800000u, 0xff800000u, 0x7f800001u, 0x7fc00000u, 0xffbfffffu})
    sparse.push_back(special);
  check(sparse, 1.f);
  check(sparse, embtrain::kFp16GradScale);
}

// The owner's gather straight into the wire: the bytes of gather_rows then
// pack_wire, and of gather_rows then round_wire, at every width of row
// (the kernels' vector loops and their tails) and in every format.
TEST(CommPrecision, GatherStraightToTheWireEqualsGatherThenPack) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (int64_t dim : {1, 3, 4, 33, 128}) {
    const int64_t rows = 301, n = 777, offset = 25;
    std::vector<float> table(rows * dim);
    for (float& v : table) v = normal(rng) * std::ldexp(1.f, static_cast<int>(rng() % 40) - 20);
    table[0] = std::numeric_limits<float>::infinity();
    table[1] = 70000.f;  // past fp16's largest: saturates
    std::vector<int64_t> index(n);
    for (int64_t& i : index) i = offset + static_cast<int64_t>(rng() % rows);
    std::vector<float> gathered(n * dim);
    embtrain::cpu::gather_rows(table.data(), dim, index.data(), n, offset, gathered.data());
    for (CommPrecision p : {CommPrecision::kFp32, CommPrecision::kBf16, CommPrecision::kFp16}) {
      SCOPED_TRACE("dim " + std::to_string(dim) + ", " + embtrain::comm_precision_name(p));
      const size_t bytes = static_cast<size_t>(n * dim * embtrain::comm_bytes(p));
      std::vector<char> want(bytes), got(bytes, 0x5a);  // poisoned: every byte must be written
      embtrain::cpu::pack_wire(gathered.data(), n * dim, p, 1.f, want.data());
      embtrain::cpu::gather_rows_packed(table.data(), dim, index.data(), n, offset, p, got.data());
      EXPECT_EQ(std::memcmp(got.data(), want.data(), bytes), 0) << "packed";
      std::vector<float> rounded(gathered), direct(n * dim, -7.f);
      embtrain::cpu::round_wire(rounded.data(), n * dim, p, 1.f);
      embtrain::cpu::gather_rows_rounded(table.data(), dim, index.data(), n, offset, p,
                                         direct.data());
      EXPECT_EQ(std::memcmp(direct.data(), rounded.data(), rounded.size() * 4), 0) << "rounded";
    }
  }
}

}  // namespace
