#include <omp.h>

#include <algorithm>
#include <vector>

#include "embtrain/kernels_cpu.hpp"

namespace embtrain {
namespace cpu {

void segment_sum(const float* src, int64_t dim, const UniqueIndex& index,
                 const SegmentLayout& layout, bool scale_by_count, float* dst) {
  const int64_t num_unique = index.num_unique();
  const int64_t num_positions = static_cast<int64_t>(index.positions.size());
  const int32_t* offsets = index.offsets.data();
  const int32_t* positions = index.positions.data();
  auto src_row = [&](int32_t p) {
    return src + (layout.src_offsets ? layout.src_offsets[p] : static_cast<int64_t>(p) * dim);
  };
  // Under a Zipf law a few ids own thousands of positions, so chunks hold
  // equal numbers of positions, not of ids: chunk c covers the ids whose
  // first position lies in [c * n / chunks, (c + 1) * n / chunks).
  const int64_t chunks = std::min<int64_t>(num_unique, 8 * omp_get_max_threads());
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t u_begin =
        std::lower_bound(offsets, offsets + num_unique, c * num_positions / chunks) - offsets;
    const int64_t u_end =
        std::lower_bound(offsets, offsets + num_unique, (c + 1) * num_positions / chunks) -
        offsets;
    for (int64_t u = u_begin; u < u_end; ++u) {
      const int64_t dst_offset = layout.dst_offsets ? layout.dst_offsets[u] : u * dim;
      if (dst_offset < 0) continue;
      float* __restrict__ acc = dst + dst_offset;
      const float* first = src_row(positions[offsets[u]]);
      std::copy(first, first + dim, acc);
      for (int32_t k = offsets[u] + 1; k < offsets[u + 1]; ++k) {
        const float* __restrict__ g = src_row(positions[k]);
        for (int64_t j = 0; j < dim; ++j) acc[j] += g[j];
      }
      if (scale_by_count) {
        int64_t count = offsets[u + 1] - offsets[u];
        if (layout.weights) {
          count = 0;
          for (int32_t k = offsets[u]; k < offsets[u + 1]; ++k) count += layout.weights[positions[k]];
        }
        const float inv = 1.f / static_cast<float>(count);
        for (int64_t j = 0; j < dim; ++j) acc[j] *= inv;
      }
    }
  }
}

void segment_sum(const float* grad, int64_t dim, const UniqueIndex& index, bool scale_by_count,
                 int64_t skip, float* sums) {
  SegmentLayout layout;
  std::vector<int64_t> dst;
  if (skip >= 0) {
    dst.resize(static_cast<size_t>(index.num_unique()));
    for (int64_t u = 0; u < index.num_unique(); ++u)
      dst[u] = u == skip ? -1 : (u < skip ? u : u - 1) * dim;
    layout.dst_offsets = dst.data();
  }
  segment_sum(grad, dim, index, layout, scale_by_count, sums);
}

}  // namespace cpu
}  // namespace embtrain
