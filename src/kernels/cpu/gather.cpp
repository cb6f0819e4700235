// Row gathers: the owner's gather_owned (rows by id) and the requester's
// expand (unique rows to every position of the batch, also straight from
// the wire format the rows arrived in).
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "common/checks.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cpu/prefetch.hpp"

namespace embtrain {
namespace cpu {

namespace {

// Copies one row to `dst` with streaming stores: the output of a gather is
// far larger than the caches and is not read back soon, so bypassing them
// saves the read-for-ownership of every destination line.
inline void copy_row_streaming(float* dst, const float* src, int64_t dim) {
#if defined(__SSE2__)
  for (int64_t j = 0; j < dim; j += 4) _mm_stream_ps(dst + j, _mm_loadu_ps(src + j));
#else
  std::memcpy(dst, src, static_cast<size_t>(dim) * sizeof(float));
#endif
}

// out[i] = row_of(i) for i in [0, n), rows of `dim` floats.
template <typename RowOf>
void gather_impl(RowOf row_of, int64_t dim, int64_t n, float* out) {
  const bool streaming = dim % 4 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const size_t row_bytes = static_cast<size_t>(dim) * sizeof(float);
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      if (i + kPrefetchDistance < n) prefetch_row(row_of(i + kPrefetchDistance), dim, false);
      const float* src = row_of(i);
      if (streaming)
        copy_row_streaming(out + i * dim, src, dim);
      else
        std::memcpy(out + i * dim, src, row_bytes);
    }
#if defined(__SSE2__)
    if (streaming) _mm_sfence();  // order the streaming stores before the caller reads
#endif
  }
}

// One row from its wire format (comm_precision.hpp's conversion, scale 1)
// to `dst`, with streaming stores when `streaming` (dim % 4 == 0, dst on 16
// bytes), as copy_row_streaming stores.
template <float (*kFrom)(uint16_t)>
inline void unpack_row(const uint16_t* src, int64_t dim, bool streaming, float* dst) {
#if defined(__SSE2__)
  if (streaming && kFrom == bf16_to_float) {
    // A bf16 is a float's high half: interleave zeros below each, 4 at a
    // time (bf16_to_float's bits exactly).
    for (int64_t j = 0; j < dim; j += 4) {
      const __m128i halves = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + j));
      _mm_stream_ps(dst + j, _mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), halves)));
    }
    return;
  }
  if (streaming) {
    for (int64_t j = 0; j < dim; j += 4)
      _mm_stream_ps(dst + j, _mm_setr_ps(kFrom(src[j]), kFrom(src[j + 1]), kFrom(src[j + 2]),
                                         kFrom(src[j + 3])));
    return;
  }
#endif
  (void)streaming;
  for (int64_t j = 0; j < dim; ++j) dst[j] = kFrom(src[j]);
}

template <float (*kFrom)(uint16_t)>
void expand_wire_impl(const float* base, const uint16_t* wire, int64_t split,
                      const int64_t* offsets, const int32_t* index, int64_t n, int64_t dim,
                      float* out) {
  const bool streaming = dim % 4 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const size_t row_bytes = static_cast<size_t>(dim) * sizeof(float);
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      if (i + kPrefetchDistance < n) {
        const int64_t ahead = offsets[index[i + kPrefetchDistance]];
        if (ahead < split)
          prefetch_row(base + ahead, dim, false);
        else  // half the bytes: as many floats' worth as dim / 2
          prefetch_row(reinterpret_cast<const float*>(wire + (ahead - split)), (dim + 1) / 2, false);
      }
      const int64_t at = offsets[index[i]];
      float* dst = out + i * dim;
      if (at >= split)
        unpack_row<kFrom>(wire + (at - split), dim, streaming, dst);
      else if (streaming)
        copy_row_streaming(dst, base + at, dim);
      else
        std::memcpy(dst, base + at, row_bytes);
    }
#if defined(__SSE2__)
    if (streaming) _mm_sfence();
#endif
  }
}

}  // namespace

void expand_rows_wire(const float* base, const void* wire, int64_t split, CommPrecision p,
                      const int64_t* offsets, const int32_t* index, int64_t n, int64_t dim,
                      float* out) {
  EMBTRAIN_ASSERT(p != CommPrecision::kFp32);
  const auto* w = static_cast<const uint16_t*>(wire);
  if (p == CommPrecision::kBf16)
    expand_wire_impl<bf16_to_float>(base, w, split, offsets, index, n, dim, out);
  else
    expand_wire_impl<fp16_to_float>(base, w, split, offsets, index, n, dim, out);
}

void gather_rows(const float* table, int64_t dim, const int64_t* index, int64_t n,
                 int64_t row_offset, float* out) {
  gather_impl([=](int64_t i) { return table + (index[i] - row_offset) * dim; }, dim, n, out);
}

void gather_rows(const float* table, int64_t dim, const int32_t* index, int64_t n,
                 int64_t row_offset, float* out) {
  gather_impl([=](int64_t i) { return table + (index[i] - row_offset) * dim; }, dim, n, out);
}

void expand_rows(const float* base, const int64_t* offsets, const int32_t* index, int64_t n,
                    int64_t dim, float* out) {
  gather_impl([=](int64_t i) { return base + offsets[index[i]]; }, dim, n, out);
}

}  // namespace cpu
}  // namespace embtrain
