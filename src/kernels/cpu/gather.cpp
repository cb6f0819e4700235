// Row gathers: the owner's gather_owned (rows by id) and the requester's
// expand (unique rows to every position of the batch).
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

}  // namespace

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
