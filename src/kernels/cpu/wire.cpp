// Rows and gradients to and from the number format they travel in
// (comm_precision.hpp): what exchange_rows and exchange_grads do at their
// edges when a table's comm_precision is not fp32, and the owner's gather
// that writes its rows in that format straight away.
#include <cstring>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define EMBTRAIN_HAVE_F16C_PATH 1
#endif

#include "kernels/cpu/clones.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cpu/prefetch.hpp"

namespace embtrain {
namespace cpu {

namespace {

// One loop per format (no branch in the loop body), cloned per vector
// width like the other element-wise kernels: the conversions are integer
// and IEEE operations, the same bits at every width.
template <uint16_t (*kTo)(float)>
EMBTRAIN_CPU_CLONES void pack(const float* __restrict__ src, int64_t n, float scale,
                              uint16_t* __restrict__ out) {
  for (int64_t i = 0; i < n; ++i) out[i] = kTo(src[i] * scale);
}

template <float (*kFrom)(uint16_t)>
EMBTRAIN_CPU_CLONES void unpack(const uint16_t* __restrict__ in, int64_t n, float scale,
                                float* __restrict__ dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = kFrom(in[i]) * scale;
}

// round_trip with scale 1 from one row to another (gather_rows_rounded's).
template <uint16_t (*kTo)(float), float (*kFrom)(uint16_t)>
EMBTRAIN_CPU_CLONES void round_copy(const float* __restrict__ src, int64_t n,
                                    float* __restrict__ dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = kFrom(kTo(src[i]));
}

template <uint16_t (*kTo)(float), float (*kFrom)(uint16_t)>
EMBTRAIN_CPU_CLONES void round_trip(float* __restrict__ data, int64_t n, float scale,
                                    float inverse) {
  for (int64_t i = 0; i < n; ++i) data[i] = kFrom(kTo(data[i] * scale)) * inverse;
}

#if EMBTRAIN_HAVE_F16C_PATH
// fp16 through the CPU's own converter (F16C, with AVX2 for the fixups):
// 8 values an instruction where the portable float_to_fp16 takes some 15
// integer operations each (packing and rounding 12 MB: 2.5 and 4.2 ms
// portable, at AVX2, on the development VM). The hardware converts as
// IEEE does (nearest, ties to even, subnormals exact); where the wire's
// rules differ the lanes are fixed up to float_to_fp16's bits
// (test_comm_precision.cpp compares the kernels with the portable functions
// over every fp16 value and all floats of the exponents where rounding
// turns).
#define EMBTRAIN_F16C __attribute__((target("avx2,f16c")))

// float_to_fp16 of 8 floats: finite values past fp16's largest saturate
// at +-65504 (the hardware gives inf), NaN becomes the quiet NaN 0x7e00
// with its sign (the hardware keeps the payload's top bits).
EMBTRAIN_F16C inline __m128i to_fp16x8(__m256 x) {
  const __m128i h = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256i u = _mm256_castps_si256(x);
  const __m256i a = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));  // < 2^31: signed compares
  const __m256i inf = _mm256_set1_epi32(0x7f800000);
  const __m256i saturate = _mm256_and_si256(_mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x477fefff)),
                                            _mm256_cmpgt_epi32(inf, a));  // 65520 <= |x| < inf
  const __m256i nan = _mm256_cmpgt_epi32(a, inf);
  const __m256i sign = _mm256_srli_epi32(_mm256_xor_si256(u, a), 16);
  const __m256i fixed = _mm256_blendv_epi8(_mm256_or_si256(sign, _mm256_set1_epi32(0x7bff)),
                                           _mm256_or_si256(sign, _mm256_set1_epi32(0x7e00)), nan);
  const __m256i mask = _mm256_or_si256(saturate, nan);
  // To 16-bit lanes: masks of -1 stay -1 (signed), fixed values (< 2^16) stay.
  const __m128i mask16 =
      _mm_packs_epi32(_mm256_castsi256_si128(mask), _mm256_extracti128_si256(mask, 1));
  const __m128i fixed16 =
      _mm_packus_epi32(_mm256_castsi256_si128(fixed), _mm256_extracti128_si256(fixed, 1));
  return _mm_blendv_epi8(h, fixed16, mask16);
}

// fp16_to_float of 8 values, except that the hardware quiets a signalling
// NaN, which fp16_to_float leaves as it is: every caller below multiplies
// the result, which quiets it alike, so their bits are the same.
EMBTRAIN_F16C inline __m256 from_fp16x8(__m128i h) { return _mm256_cvtph_ps(h); }

// pack, unpack and round_trip for fp16, 8 at a time, the tail by the
// portable functions.
EMBTRAIN_F16C void pack_f16c(const float* src, int64_t n, float scale, uint16_t* out) {
  const __m256 s = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     to_fp16x8(_mm256_mul_ps(_mm256_loadu_ps(src + i), s)));
  for (; i < n; ++i) out[i] = float_to_fp16(src[i] * scale);
}

EMBTRAIN_F16C void unpack_f16c(const uint16_t* in, int64_t n, float scale, float* dst) {
  const __m256 s = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(
        dst + i,
        _mm256_mul_ps(from_fp16x8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))), s));
  for (; i < n; ++i) dst[i] = fp16_to_float(in[i]) * scale;
}

EMBTRAIN_F16C void round_trip_f16c(const float* src, int64_t n, float scale, float inverse,
                                   float* dst) {
  const __m256 s = _mm256_set1_ps(scale), v = _mm256_set1_ps(inverse);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(
        dst + i,
        _mm256_mul_ps(from_fp16x8(to_fp16x8(_mm256_mul_ps(_mm256_loadu_ps(src + i), s))), v));
  for (; i < n; ++i) dst[i] = fp16_to_float(float_to_fp16(src[i] * scale)) * inverse;
}

bool has_f16c() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  return yes;
}
#endif

// The fp16 conversions the kernels below use: through F16C where the CPU
// has it, else the portable loops (the same bits either way).
void pack_fp16(const float* src, int64_t n, float scale, uint16_t* out) {
#if EMBTRAIN_HAVE_F16C_PATH
  if (has_f16c()) return pack_f16c(src, n, scale, out);
#endif
  pack<float_to_fp16>(src, n, scale, out);
}

void unpack_fp16(const uint16_t* in, int64_t n, float scale, float* dst) {
#if EMBTRAIN_HAVE_F16C_PATH
  if (has_f16c()) return unpack_f16c(in, n, scale, dst);
#endif
  unpack<fp16_to_float>(in, n, scale, dst);
}

void round_copy_fp16(const float* src, int64_t n, float* dst) {
#if EMBTRAIN_HAVE_F16C_PATH
  if (has_f16c()) return round_trip_f16c(src, n, 1.f, 1.f, dst);
#endif
  round_copy<float_to_fp16, fp16_to_float>(src, n, dst);
}

void round_fp16(float* data, int64_t n, float scale) {
#if EMBTRAIN_HAVE_F16C_PATH
  if (has_f16c()) return round_trip_f16c(data, n, scale, 1.f / scale, data);
#endif
  round_trip<float_to_fp16, fp16_to_float>(data, n, scale, 1.f / scale);
}

// Rows by id straight to where they travel from: row i of `dim` floats,
// table[index[i] - row_offset], through `convert(src, dst_row i)`, on all
// threads, the rows ahead prefetched.
template <typename Convert>
void gather_converted(const float* table, int64_t dim, const int64_t* index, int64_t n,
                      int64_t row_offset, Convert convert) {
  auto row_of = [=](int64_t i) { return table + (index[i] - row_offset) * dim; };
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    if (i + kPrefetchDistance < n) prefetch_row(row_of(i + kPrefetchDistance), dim, false);
    convert(row_of(i), i);
  }
}

}  // namespace

void gather_rows_packed(const float* table, int64_t dim, const int64_t* index, int64_t n,
                        int64_t row_offset, CommPrecision p, void* wire) {
  if (n <= 0) return;
  auto* out = static_cast<uint16_t*>(wire);
  switch (p) {
    case CommPrecision::kFp32:
      gather_rows(table, dim, index, n, row_offset, static_cast<float*>(wire));
      break;
    case CommPrecision::kBf16:
      gather_converted(table, dim, index, n, row_offset, [=](const float* row, int64_t i) {
        pack<float_to_bf16>(row, dim, 1.f, out + i * dim);
      });
      break;
    case CommPrecision::kFp16:
      gather_converted(table, dim, index, n, row_offset, [=](const float* row, int64_t i) {
        pack_fp16(row, dim, 1.f, out + i * dim);
      });
      break;
  }
}

void gather_rows_rounded(const float* table, int64_t dim, const int64_t* index, int64_t n,
                         int64_t row_offset, CommPrecision p, float* out) {
  if (n <= 0) return;
  switch (p) {
    case CommPrecision::kFp32:
      gather_rows(table, dim, index, n, row_offset, out);
      break;
    case CommPrecision::kBf16:
      gather_converted(table, dim, index, n, row_offset, [=](const float* row, int64_t i) {
        round_copy<float_to_bf16, bf16_to_float>(row, dim, out + i * dim);
      });
      break;
    case CommPrecision::kFp16:
      gather_converted(table, dim, index, n, row_offset, [=](const float* row, int64_t i) {
        round_copy_fp16(row, dim, out + i * dim);
      });
      break;
  }
}

void pack_wire(const float* src, int64_t n, CommPrecision p, float scale, void* wire) {
  if (n <= 0) return;
  auto* out = static_cast<uint16_t*>(wire);
  switch (p) {
    case CommPrecision::kFp32:
      std::memcpy(wire, src, static_cast<size_t>(n) * sizeof(float));
      break;
    case CommPrecision::kBf16:
      pack<float_to_bf16>(src, n, scale, out);
      break;
    case CommPrecision::kFp16:
      pack_fp16(src, n, scale, out);
      break;
  }
}

void unpack_wire(const void* wire, int64_t n, CommPrecision p, float scale, float* dst) {
  if (n <= 0) return;
  const auto* in = static_cast<const uint16_t*>(wire);
  switch (p) {
    case CommPrecision::kFp32:
      std::memcpy(dst, wire, static_cast<size_t>(n) * sizeof(float));
      break;
    case CommPrecision::kBf16:
      unpack<bf16_to_float>(in, n, scale, dst);
      break;
    case CommPrecision::kFp16:
      unpack_fp16(in, n, scale, dst);
      break;
  }
}

void round_wire(float* data, int64_t n, CommPrecision p, float scale) {
  if (n <= 0) return;
  switch (p) {
    case CommPrecision::kFp32:
      break;
    case CommPrecision::kBf16:
      round_trip<float_to_bf16, bf16_to_float>(data, n, scale, 1.f / scale);
      break;
    case CommPrecision::kFp16:
      round_fp16(data, n, scale);
      break;
  }
}

}  // namespace cpu
}  // namespace embtrain
