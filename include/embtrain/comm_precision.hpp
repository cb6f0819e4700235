// The number formats rows and gradients may travel in between ranks
// (TableSpec::comm_precision), and the conversions to and from them, written
// once for both backends in integer arithmetic so that the CPU and the GPU
// round every value to the same bits.
//
// bf16 keeps float's exponent and 8 bits of mantissa; fp16 has 11 bits of
// mantissa but a range of +-65504, so gradients travel in it scaled by
// kFp16GradScale (small gradients would otherwise lose their digits to fp16's
// subnormals) and saturate at its largest finite value instead of becoming
// inf. Rounding is to nearest, ties to even, as torch's .half() and
// .bfloat16() do; NaN stays NaN.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "embtrain/host_device.hpp"

namespace embtrain {

enum class CommPrecision : int { kFp32 = 0, kBf16 = 1, kFp16 = 2 };

// "fp32", "bf16", "fp16"; parse_comm_precision throws Error on anything else.
const char* comm_precision_name(CommPrecision p);
CommPrecision parse_comm_precision(const std::string& name);

// Bytes an element takes on the wire.
EMBTRAIN_HD int comm_bytes(CommPrecision p) { return p == CommPrecision::kFp32 ? 4 : 2; }

// What fp16 gradients are multiplied by before they travel (and divided by
// after): a power of two, so both are exact.
constexpr float kFp16GradScale = 1024.f;

EMBTRAIN_HD uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
#endif
}

EMBTRAIN_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
#endif
}

// The conversions below are written without branches (selects by masks),
// so that the CPU's loops over them vectorize.

// `yes` where cond, else `no`.
EMBTRAIN_HD uint32_t select(bool cond, uint32_t yes, uint32_t no) {
  const uint32_t mask = 0u - static_cast<uint32_t>(cond);
  return (yes & mask) | (no & ~mask);
}

EMBTRAIN_HD uint16_t float_to_bf16(float x) {
  const uint32_t u = float_bits(x);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;  // nearest, ties to even
  const uint32_t nan = (u >> 16) | 0x40u;                             // stays a quiet NaN
  return static_cast<uint16_t>(select((u & 0x7fffffffu) > 0x7f800000u, nan, rounded));
}

EMBTRAIN_HD float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

EMBTRAIN_HD uint16_t float_to_fp16(float x) {
  const uint32_t u = float_bits(x);
  const uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  // A normal fp16 (a in [2^-14, 65520)): rebias the exponent, round the
  // mantissa to 10 bits, to nearest with ties to even.
  const uint32_t n = a - (112u << 23);
  const uint32_t normal = (n + 0xfffu + ((n >> 13) & 1u)) >> 13;
  // A subnormal one (a < 2^-14): in 0.5 + a the float's last bit weighs
  // 2^-24, fp16's least subnormal, so the addition rounds a to it (ties to
  // even) and the low bits count it.
  const uint32_t subnormal = float_bits(bits_float(a) + 0.5f) - 0x3f000000u;
  uint32_t r = select(a < 0x38800000u, subnormal, normal);
  r = select(a >= 0x477ff000u, 0x7bffu, r);                                // saturate at 65504
  r = select(a >= 0x7f800000u, select(a > 0x7f800000u, 0x7e00u, 0x7c00u), r);  // NaN, inf
  return static_cast<uint16_t>(sign | r);
}

EMBTRAIN_HD float fp16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  const uint32_t normal = ((e + 112u) << 23) | (m << 13);
  const uint32_t special = 0x7f800000u | (m << 13);  // inf, NaN
  // A subnormal (or zero): m units of 2^-24, exact as (0.5 + m 2^-24) - 0.5.
  const uint32_t subnormal = float_bits(bits_float(0x3f000000u | m) - 0.5f);
  return bits_float(sign | select(e == 0, subnormal, select(e == 31, special, normal)));
}

// One value to its wire form and back, for a 16-bit precision.
EMBTRAIN_HD uint16_t to_wire(float x, CommPrecision p) {
  return p == CommPrecision::kBf16 ? float_to_bf16(x) : float_to_fp16(x);
}
EMBTRAIN_HD float from_wire(uint16_t h, CommPrecision p) {
  return p == CommPrecision::kBf16 ? bf16_to_float(h) : fp16_to_float(h);
}

}  // namespace embtrain
