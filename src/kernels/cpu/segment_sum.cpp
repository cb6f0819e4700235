// Segment sums: the requester's reduce_requested (output gradient rows per
// distinct id) and the owner's combine_at_owner (the senders' sums per row).
#include <omp.h>

#include <algorithm>
#include <vector>

#include "embtrain/errors.hpp"
#include "kernels/cpu/clones.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cpu/prefetch.hpp"

namespace embtrain {
namespace cpu {

namespace {

// What a thread keeps between calls, so a step does not fault in fresh
// pages: the partial rows of long ids and the position walk's per-id
// arrays (see there).
struct SumScratch {
  std::vector<float> partials;
  std::vector<int32_t> head, seen;
};

// Where the sums read the positions' gradient rows. Fp32Rows: float rows,
// at `offsets` (null: position p's at p * dim). WireRows: rows in a 16-bit
// wire format (comm_precision.hpp) at `offsets` elements, each value
// converted and times `scale`, as unpack_wire writes it, so the sums are
// the bits of unpacking first. Inlined into the cloned loops.
struct Fp32Rows {
  const float* src;
  const int64_t* offsets;
  int64_t dim;
  const float* row(int64_t p) const { return src + (offsets ? offsets[p] : p * dim); }
  void prefetch(int64_t p) const { prefetch_row(row(p), dim, /*for_write=*/false); }
  EMBTRAIN_ALWAYS_INLINE void copy_to(int64_t p, float* __restrict__ dst) const {
    const float* g = row(p);
    std::copy(g, g + dim, dst);
  }
  EMBTRAIN_ALWAYS_INLINE void add_to(int64_t p, float* __restrict__ dst) const {
    const float* __restrict__ g = row(p);
    for (int64_t j = 0; j < dim; ++j) dst[j] += g[j];
  }
  // Position p's row as floats: where it is (`scratch` unused).
  const float* read(int64_t p, float*) const { return row(p); }
};

template <float (*kFrom)(uint16_t)>
struct WireRows {
  const uint16_t* src;
  const int64_t* offsets;
  int64_t dim;
  float scale;
  const uint16_t* row(int64_t p) const { return src + (offsets ? offsets[p] : p * dim); }
  void prefetch(int64_t p) const {  // 16 floats more: a row may start mid-line
    prefetch_row(reinterpret_cast<const float*>(row(p)), (dim + 1) / 2 + 16, /*for_write=*/false);
  }
  EMBTRAIN_ALWAYS_INLINE void copy_to(int64_t p, float* __restrict__ dst) const {
    const uint16_t* __restrict__ g = row(p);
    for (int64_t j = 0; j < dim; ++j) dst[j] = kFrom(g[j]) * scale;
  }
  EMBTRAIN_ALWAYS_INLINE void add_to(int64_t p, float* __restrict__ dst) const {
    const uint16_t* __restrict__ g = row(p);
    for (int64_t j = 0; j < dim; ++j) dst[j] += kFrom(g[j]) * scale;
  }
  // Position p's row as floats: converted into `scratch`.
  const float* read(int64_t p, float* scratch) const {
    copy_to(p, scratch);
    return scratch;
  }
};

// Slot u's sum into acc, its positions in CSR order (sum_order.hpp): an id
// with more than kChunkPositions positions chunk by chunk, each later chunk
// summed in `partial` (dim floats) and then added. Prefetches the rows of
// the positions ahead, up to position k_end. Inlined into its callers'
// clones, where the adds vectorise.
template <typename Rows>
EMBTRAIN_ALWAYS_INLINE inline void sum_slot(const Rows& rows, const UniqueIndex& index,
                                            int64_t u, int64_t k_end, float* __restrict__ acc,
                                            float* __restrict__ partial) {
  const int32_t* offsets = index.offsets;
  const int32_t* positions = index.positions;
  // In int64: begin + kChunkPositions may pass 2^31 - 1 near the batch limit.
  const int64_t end = offsets[u + 1];
  for (int64_t begin = offsets[u]; begin < end; begin += kChunkPositions) {
    float* __restrict__ sum = begin == offsets[u] ? acc : partial;
    const int64_t chunk_end = std::min(begin + kChunkPositions, end);
    for (int64_t k = begin; k < chunk_end; ++k) {
      if (k + kPrefetchDistance < k_end) rows.prefetch(positions[k + kPrefetchDistance]);
      if (k == begin)
        rows.copy_to(positions[k], sum);
      else
        rows.add_to(positions[k], sum);
    }
    if (sum == partial)
      for (int64_t j = 0; j < rows.dim; ++j) acc[j] += partial[j];
  }
}

// Slot u's count: the sum of its positions' weights, or their number.
inline int64_t slot_count(const UniqueIndex& index, const SegmentLayout& layout, int64_t u) {
  if (!layout.weights) return index.offsets[u + 1] - index.offsets[u];
  int64_t count = 0;
  for (int32_t k = index.offsets[u]; k < index.offsets[u + 1]; ++k)
    count += layout.weights[index.positions[k]];
  return count;
}

// scale_by_count's division of slot u's sum (by multiplying with 1.f / count).
EMBTRAIN_ALWAYS_INLINE inline void scale_slot(const UniqueIndex& index, const SegmentLayout& layout,
                                              int64_t u, int64_t dim, float* __restrict__ acc) {
  const float inv = 1.f / static_cast<float>(slot_count(index, layout, u));
  for (int64_t j = 0; j < dim; ++j) acc[j] *= inv;
}

// The sums of unique slots [u_begin, u_end), by one thread, in
// sum_order.hpp's order: an id's positions ascending, and an id with more
// than kChunkPositions of them summed chunk by chunk, the chunks' partial
// sums then added in order (as the CUDA kernel does, so the bits are the
// GPU's). Walking all positions in order (`position_walk`) or the slots'
// position lists (see segment_sum). Cloned per vector width (clones.hpp):
// the adds are element-wise, so every clone gives the same bits.
EMBTRAIN_CPU_CLONES
void sum_range(const float* src, int64_t dim, const UniqueIndex& index,
               const SegmentLayout& layout, bool scale_by_count, float* dst, int64_t u_begin,
               int64_t u_end, bool position_walk, SumScratch* scratch) {
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
  auto add_row = [&](float* __restrict__ acc, const float* __restrict__ g, bool first) {
    if (first)
      std::copy(g, g + dim, acc);
    else
      for (int64_t j = 0; j < dim; ++j) acc[j] += g[j];
  };
  // Chunk 0 of a long id is summed straight into its dst row, each later
  // chunk into a partial row, added to the dst row once the chunk is
  // complete: when the next chunk starts, or after the id's last position.
  // So the chunks' sums are added in order, and one partial row per id
  // suffices.
  if (position_walk) {
    // Every id's positions are interleaved, so every long id has its own
    // partial row. head[u]: the first position of an id summed in one run
    // (read once per position, one load instead of offsets then
    // positions), or -1 - s for a long id with partial row s and
    // positions seen so far seen[s].
    const int64_t num = u_end - u_begin;
    scratch->head.resize(static_cast<size_t>(num));
    int32_t num_partials = 0;
    for (int64_t u = u_begin; u < u_end; ++u)
      scratch->head[u - u_begin] = dst_row(u) && offsets[u + 1] - offsets[u] > kChunkPositions
                                       ? -1 - num_partials++
                                       : positions[offsets[u]];
    scratch->seen.assign(static_cast<size_t>(num_partials), 0);
    if (scratch->partials.size() < static_cast<size_t>(num_partials * dim))
      scratch->partials.resize(static_cast<size_t>(num_partials * dim));
    const int32_t* head = scratch->head.data();
    for (int64_t p = 0; p < num_positions; ++p) {
      if (p + kPrefetchDistance < num_positions)
        prefetch_row(src_row(p + kPrefetchDistance), dim, /*for_write=*/false);
      const int64_t u = inverse[p];
      if (u < u_begin || u >= u_end) continue;
      float* acc = dst_row(u);
      if (!acc) continue;
      const int32_t h = head[u - u_begin];
      if (h >= 0) {  // most ids: one run
        add_row(acc, src_row(p), h == p);
        continue;
      }
      float* partial = scratch->partials.data() + int64_t{-1 - h} * dim;
      const int32_t k = scratch->seen[-1 - h]++;  // p is position k of id u
      if (k > kChunkPositions && k % kChunkPositions == 0)
        add_row(acc, partial, false);  // the chunk before this one is complete
      add_row(k < kChunkPositions ? acc : partial, src_row(p), k % kChunkPositions == 0);
    }
    for (int64_t u = u_begin; u < u_end; ++u) {
      const int32_t h = head[u - u_begin];
      if (h < 0) add_row(dst_row(u), scratch->partials.data() + int64_t{-1 - h} * dim, false);
    }
  } else {
    // One id at a time: one partial row for all.
    if (scratch->partials.size() < static_cast<size_t>(dim))
      scratch->partials.resize(static_cast<size_t>(dim));
    const int64_t k_end = offsets[u_end];
    for (int64_t u = u_begin; u < u_end; ++u)
      if (float* acc = dst_row(u))
        sum_slot(Fp32Rows{src, layout.src_offsets, dim}, index, u, k_end, acc,
                 scratch->partials.data());
  }
  if (!scale_by_count) return;
  for (int64_t u = u_begin; u < u_end; ++u)
    if (float* acc = dst_row(u)) scale_slot(index, layout, u, dim, acc);
}

// The unique slots cut into `parts` ranges of about equal work (work(u):
// slot u's), as parts + 1 bounds.
template <typename Work>
std::vector<int64_t> split_slots(const UniqueIndex& index, int parts, Work work) {
  const int64_t num_unique = index.num_unique;
  std::vector<int64_t> bounds(static_cast<size_t>(parts) + 1, num_unique);
  int64_t total = 0;
  for (int64_t u = 0; u < num_unique; ++u) total += work(u);
  int64_t seen = 0;
  int part = 0;
  bounds[0] = 0;
  for (int64_t u = 0; u < num_unique && part + 1 < parts; ++u) {
    seen += work(u);
    while (part + 1 < parts && seen * parts >= total * (part + 1)) bounds[++part] = u + 1;
  }
  return bounds;
}

// segment_sum_update's slots [u_begin, u_end), by one thread: each slot's
// sum in `sum` (a row of scratch), divided by its count, then its row's
// update; a slot of one position standing for one occurrence updates
// straight from that position's row (its sum is that row, and / 1 exact).
// Prefetches the table and state rows of the slot kPrefetchDistance ahead.
// Cloned per vector width (clones.hpp): element-wise math, the same bits
// in every clone.
template <typename Rows>
EMBTRAIN_CPU_CLONES void sum_update_range(OptimizerKind kind, const StepScalars& scalars,
                                          float* table, float* state, int64_t row_offset,
                                          const Rows& rows, const UniqueIndex& index,
                                          const SegmentLayout& layout, bool scale_by_count,
                                          int64_t skip_row, int64_t u_begin, int64_t u_end,
                                          SumScratch* scratch) {
  const int64_t dim = rows.dim;
  const int64_t width = optimizer_state_width(kind, dim);
  if (scratch->partials.size() < static_cast<size_t>(2 * dim))
    scratch->partials.resize(static_cast<size_t>(2 * dim));
  float* sum = scratch->partials.data();
  float* partial = sum + dim;
  const int64_t k_end = index.offsets[u_end];
  for (int64_t u = u_begin; u < u_end; ++u) {
    if (u + kPrefetchDistance < u_end) {
      const int64_t ahead = index.unique[u + kPrefetchDistance] - row_offset;
      prefetch_row(table + ahead * dim, dim, /*for_write=*/true);
      prefetch_row(state + ahead * width, width, /*for_write=*/true);
    }
    if (index.unique[u] == skip_row) continue;
    const int32_t first = index.positions[index.offsets[u]];
    const float* grad;
    if (index.count(u) == 1 && (!layout.weights || layout.weights[first] == 1)) {
      grad = rows.read(first, sum);
    } else {
      sum_slot(rows, index, u, k_end, sum, partial);
      if (scale_by_count) scale_slot(index, layout, u, dim, sum);
      grad = sum;
    }
    const int64_t r = index.unique[u] - row_offset;
    update_row(kind, table + r * dim, state + r * width, grad, dim, scalars);
  }
}

}  // namespace

void segment_sum(const float* src, int64_t dim, const UniqueIndex& index,
                 const SegmentLayout& layout, bool scale_by_count, float* dst) {
  const int32_t* offsets = index.offsets;
  auto summed = [&](int64_t u) { return !layout.dst_offsets || layout.dst_offsets[u] >= 0; };
  // Each thread owns a range of ids holding about equal numbers of the
  // positions to add (under a Zipf law a few ids own thousands; skipped ids
  // such as padding count for nothing). Either walk gives every sum its
  // positions in ascending order, the first copied, so the bits do not
  // depend on the walk or the number of threads (see sum_range for long ids).
  //  - One thread walks the positions in order: the source rows come in
  //    address order, the fastest way to read them alone.
  //  - Several threads each walk their ids' position lists (CSR order),
  //    prefetching rows ahead: threads that each took every other row of a
  //    position walk would get no more bandwidth than one thread
  //    (bench/micro/segment_sum_patterns.cpp); reading disjoint rows they do
  //    (3.3 -> 2.7 ms on bench-A's reduce with 2 threads).
  const int parts = omp_get_max_threads();
  const std::vector<int64_t> bounds = split_slots(index, parts, [&](int64_t u) {
    return summed(u) ? int64_t{offsets[u + 1] - offsets[u]} : 0;
  });
#pragma omp parallel num_threads(parts)
  {
    const int me = omp_get_thread_num();
    thread_local SumScratch scratch;
    if (bounds[me] < bounds[me + 1])
      sum_range(src, dim, index, layout, scale_by_count, dst, bounds[me], bounds[me + 1],
                /*position_walk=*/parts == 1, &scratch);
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

namespace {

// segment_sum_update over either kind of rows (Fp32Rows, WireRows).
template <typename Rows>
void sum_update(OptimizerKind kind, const StepScalars& scalars, float* table, float* state,
                int64_t row_offset, const Rows& rows, const UniqueIndex& index,
                const SegmentLayout& layout, bool scale_by_count, int64_t skip_row) {
  EMBTRAIN_ASSERT(!layout.dst_offsets && layout.src_offsets == rows.offsets);
  if (index.num_unique == 0) return;
  // A slot's work: its positions' adds and its row's update, which reads
  // and writes the row and its state: kUpdateWork adds' worth (bench-A-bag,
  // 2 threads, medians of 4 interleaved runs: 0 -> 9.3-14.0 ms a step,
  // 8 -> 8.0-9.6, 32 -> 8.5-11.7).
  const int parts = omp_get_max_threads();
  const std::vector<int64_t> bounds = split_slots(index, parts, [&](int64_t u) {
    return index.unique[u] == skip_row ? 0 : int64_t{index.count(u)} + kUpdateWork;
  });
#pragma omp parallel num_threads(parts)
  {
    const int me = omp_get_thread_num();
    thread_local SumScratch scratch;
    if (bounds[me] < bounds[me + 1])
      sum_update_range(kind, scalars, table, state, row_offset, rows, index, layout,
                       scale_by_count, skip_row, bounds[me], bounds[me + 1], &scratch);
  }
}

}  // namespace

void segment_sum_update(OptimizerKind kind, const StepScalars& scalars, float* table,
                        float* state, int64_t dim, int64_t row_offset, const float* src,
                        const UniqueIndex& index, const SegmentLayout& layout,
                        bool scale_by_count, int64_t skip_row) {
  sum_update(kind, scalars, table, state, row_offset, Fp32Rows{src, layout.src_offsets, dim},
             index, layout, scale_by_count, skip_row);
}

void segment_sum_update(OptimizerKind kind, const StepScalars& scalars, float* table,
                        float* state, int64_t dim, int64_t row_offset, const void* wire,
                        CommPrecision format, float scale, const UniqueIndex& index,
                        const SegmentLayout& layout, bool scale_by_count, int64_t skip_row) {
  const int64_t* at = layout.src_offsets;
  const auto* packed = static_cast<const uint16_t*>(wire);
  switch (format) {
    case CommPrecision::kFp32:
      EMBTRAIN_ASSERT(scale == 1.f);
      sum_update(kind, scalars, table, state, row_offset,
                 Fp32Rows{static_cast<const float*>(wire), at, dim}, index, layout,
                 scale_by_count, skip_row);
      break;
    case CommPrecision::kBf16:
      sum_update(kind, scalars, table, state, row_offset,
                 WireRows<bf16_to_float>{packed, at, dim, scale}, index, layout, scale_by_count,
                 skip_row);
      break;
    case CommPrecision::kFp16:
      sum_update(kind, scalars, table, state, row_offset,
                 WireRows<fp16_to_float>{packed, at, dim, scale}, index, layout, scale_by_count,
                 skip_row);
      break;
  }
}

}  // namespace cpu
}  // namespace embtrain
