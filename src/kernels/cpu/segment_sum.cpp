// Segment sums: the requester's reduce_requested (output gradient rows per
// distinct id) and the owner's combine_at_owner (the senders' sums per row).
#include <omp.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/clones.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cpu/prefetch.hpp"

namespace embtrain {
namespace cpu {

namespace {

// The sums of unique slots [u_begin, u_end), by one thread: walking all
// positions in order (`position_walk`) or the slots' position lists (see
// segment_sum). Cloned per vector width (clones.hpp): the adds are
// element-wise, so every clone gives the same bits.
EMBTRAIN_CPU_CLONES
void sum_range(const float* src, int64_t dim, const UniqueIndex& index,
               const SegmentLayout& layout, bool scale_by_count, float* dst, int64_t u_begin,
               int64_t u_end, bool position_walk) {
  const int64_t num_positions = index.n;
  const int32_t* offsets = index.offsets;
  const int32_t* positions = index.positions;
  const int32_t* inverse = index.inverse;
  auto src_row = [&](int64_t p) {
    return src + (layout.src_offsets ? layout.src_offsets[p] : p * dim);
  };
  auto dst_row = [&](int64_t u) -> float* {
    const int64_t at = layout.dst_offsets ? layout.dst_offsets[u] : u * dim;
    return at < 0 ? nullptr : dst + at;
  };
  auto add = [&](float* __restrict__ acc, int64_t p, bool first) {
    const float* __restrict__ g = src_row(p);
    if (first)
      std::copy(g, g + dim, acc);
    else
      for (int64_t j = 0; j < dim; ++j) acc[j] += g[j];
  };
  if (position_walk) {
    for (int64_t p = 0; p < num_positions; ++p) {
      if (p + kPrefetchDistance < num_positions)
        prefetch_row(src_row(p + kPrefetchDistance), dim, /*for_write=*/false);
      const int64_t u = inverse[p];
      float* acc = u >= u_begin && u < u_end ? dst_row(u) : nullptr;
      if (acc) add(acc, p, positions[offsets[u]] == p);
    }
  } else {
    const int32_t k_end = offsets[u_end];
    for (int64_t u = u_begin; u < u_end; ++u) {
      float* acc = dst_row(u);
      if (!acc) continue;
      for (int32_t k = offsets[u]; k < offsets[u + 1]; ++k) {
        if (k + kPrefetchDistance < k_end)
          prefetch_row(src_row(positions[k + kPrefetchDistance]), dim, /*for_write=*/false);
        add(acc, positions[k], k == offsets[u]);
      }
    }
  }
  if (!scale_by_count) return;
  for (int64_t u = u_begin; u < u_end; ++u) {
    float* __restrict__ acc = dst_row(u);
    if (!acc) continue;
    int64_t count = offsets[u + 1] - offsets[u];
    if (layout.weights) {
      count = 0;
      for (int32_t k = offsets[u]; k < offsets[u + 1]; ++k) count += layout.weights[positions[k]];
    }
    const float inv = 1.f / static_cast<float>(count);
    for (int64_t j = 0; j < dim; ++j) acc[j] *= inv;
  }
}

}  // namespace

void segment_sum(const float* src, int64_t dim, const UniqueIndex& index,
                 const SegmentLayout& layout, bool scale_by_count, float* dst) {
  const int64_t num_unique = index.num_unique;
  const int32_t* offsets = index.offsets;
  auto summed = [&](int64_t u) { return !layout.dst_offsets || layout.dst_offsets[u] >= 0; };
  // Each thread owns a range of ids holding about equal numbers of the
  // positions to add (under a Zipf law a few ids own thousands; skipped ids
  // such as padding count for nothing). Either walk gives every sum its
  // positions in ascending order, the first copied, so the bits do not
  // depend on the walk or the number of threads.
  //  - One thread walks the positions in order: the source rows come in
  //    address order, the fastest way to read them alone.
  //  - Several threads each walk their ids' position lists (CSR order),
  //    prefetching rows ahead: threads that each took every other row of a
  //    position walk would get no more bandwidth than one thread
  //    (bench/micro/segment_sum_patterns.cpp); reading disjoint rows they do
  //    (3.3 -> 2.7 ms on bench-A's reduce with 2 threads).
  const int parts = omp_get_max_threads();
  std::vector<int64_t> bounds(static_cast<size_t>(parts) + 1, num_unique);
  {
    int64_t work = 0;
    for (int64_t u = 0; u < num_unique; ++u)
      if (summed(u)) work += offsets[u + 1] - offsets[u];
    int64_t seen = 0;
    int part = 0;
    bounds[0] = 0;
    for (int64_t u = 0; u < num_unique && part + 1 < parts; ++u) {
      if (summed(u)) seen += offsets[u + 1] - offsets[u];
      while (part + 1 < parts && seen * parts >= work * (part + 1)) bounds[++part] = u + 1;
    }
  }
#pragma omp parallel num_threads(parts)
  {
    const int me = omp_get_thread_num();
    if (bounds[me] < bounds[me + 1])
      sum_range(src, dim, index, layout, scale_by_count, dst, bounds[me], bounds[me + 1],
                /*position_walk=*/parts == 1);
  }
}

void segment_sum(const float* grad, int64_t dim, const UniqueIndex& index, bool scale_by_count,
                 int64_t skip, float* sums) {
  SegmentLayout layout;
  std::vector<int64_t> dst;
  if (skip >= 0) {
    dst.resize(static_cast<size_t>(index.num_unique));
    for (int64_t u = 0; u < index.num_unique; ++u)
      dst[u] = u == skip ? -1 : (u < skip ? u : u - 1) * dim;
    layout.dst_offsets = dst.data();
  }
  segment_sum(grad, dim, index, layout, scale_by_count, sums);
}

}  // namespace cpu
}  // namespace embtrain
