// Segment sums over a UniqueIndex: dst[u] = sum of the source rows of
// unique id u's positions (segment_sum), or the same sum fed straight into
// the optimizer update of the table row it belongs to (segment_sum_update,
// what the owner runs, with no gradient buffer in between).
//
// Determinism without float atomics, also under a Zipf law where one id can
// own tens of thousands of positions:
//  1. count_chunks: an id with more than kChunkPositions positions is cut
//     into chunks of kChunkPositions consecutive positions (skipped ids get
//     none); an exclusive scan gives each id its first chunk.
//  2. sum_chunks: one warp per chunk adds its positions' rows in ascending
//     position order into a partial row. The grid is sized by an upper bound
//     on the chunks (max_chunks(n)), so the host does not wait for the scan.
//  3. reduce_segments: one warp per id adds its partials in chunk order, or,
//     for a short id, its positions' rows in ascending order directly; then
//     scales by the count and stores the row or applies the update.
// Chunk boundaries depend only on the constant kChunkPositions, so the bits
// of every result are the same on every launch. This is the order of
// embtrain/sum_order.hpp, which the CPU kernel follows too: both give the
// same bits for every id, long or short.
#include <cub/device/device_scan.cuh>

#include "common/checks.hpp"
#include "kernels/cuda/cuda_kernels.hpp"
#include "kernels/cuda/warp_rows.cuh"

namespace embtrain {
namespace cuda {

namespace {

using detail::add_to;
using detail::global_thread;
using detail::global_warp;
using detail::lane_id;
using detail::load;
using detail::scale;
using detail::store;
using detail::Vec;

// What every kernel of a segment reduce reads (device pointers).
struct SegmentArgs {
  const float* src = nullptr;
  int64_t dim = 0;
  const int64_t* src_offsets = nullptr;  // per position, or null: p * dim
  const int32_t* weights = nullptr;      // per position, or null: 1
  const int64_t* dst_offsets = nullptr;  // per unique, -1 skips it; null: u * dim
  const int64_t* unique = nullptr;
  const int32_t* offsets = nullptr;
  const int32_t* positions = nullptr;
  int64_t num_unique = 0;
  int64_t skip_row = -1;  // an id whose segment is skipped (-1: none)
  bool scale_by_count = false;
  int32_t* chunk_counts = nullptr;
  int32_t* chunk_start = nullptr;  // num_unique + 1 entries
  float* partials = nullptr;
  int64_t max_chunks = 0;
};

// Where reduce_segments applies the optimizer instead of storing dst.
struct UpdateArgs {
  OptimizerKind kind = OptimizerKind::kSgd;
  StepScalars scalars;
  float* table = nullptr;
  float* state = nullptr;
  int64_t row_offset = 0;
};

__device__ __forceinline__ bool skipped(const SegmentArgs& a, int64_t u) {
  return (a.dst_offsets && a.dst_offsets[u] < 0) || a.unique[u] == a.skip_row;
}

__device__ __forceinline__ const float* src_row(const SegmentArgs& a, int32_t p) {
  return a.src + (a.src_offsets ? a.src_offsets[p] : static_cast<int64_t>(p) * a.dim);
}

// Columns [j, j + N) of the sum of the rows of sorted positions [begin, end),
// added in order (the first row copied, as the CPU kernel does).
template <int N>
__device__ __forceinline__ Vec<N> sum_positions(const SegmentArgs& a, int32_t begin, int32_t end,
                                                int64_t j) {
  Vec<N> acc = load<N>(src_row(a, a.positions[begin]) + j);
  for (int32_t k = begin + 1; k < end; ++k) add_to(acc, load<N>(src_row(a, a.positions[k]) + j));
  return acc;
}

// Columns [j, j + N) of id u's sum: its partials in chunk order, or its
// positions directly when it was not cut.
template <int N>
__device__ __forceinline__ Vec<N> segment_at(const SegmentArgs& a, int64_t u, int64_t j) {
  const int32_t first = a.chunk_start[u], last = a.chunk_start[u + 1];
  if (first == last) return sum_positions<N>(a, a.offsets[u], a.offsets[u + 1], j);
  Vec<N> acc = load<N>(a.partials + first * a.dim + j);
  for (int32_t c = first + 1; c < last; ++c) add_to(acc, load<N>(a.partials + c * a.dim + j));
  return acc;
}

// 1 / count of id u for scale_by_count, computed by the calling warp: the
// sum of its positions' weights (integers, so any order gives the same), or
// the number of its positions.
__device__ float inverse_count(const SegmentArgs& a, int64_t u) {
  const int32_t begin = a.offsets[u], end = a.offsets[u + 1];
  long long count = end - begin;
  if (a.weights) {
    long long part = 0;
    // k in int64: a lane's k + 32 may pass 2^31 - 1 when the batch is near its limit.
    for (int64_t k = begin + lane_id(); k < end; k += kWarpSize) part += a.weights[a.positions[k]];
    count = detail::warp_sum(part);
  }
  return 1.f / static_cast<float>(count);
}

// chunk_counts[u] for u in [0, num_unique], the extra entry 0 so that the
// exclusive scan's last entry is the total.
__global__ void count_chunks_kernel(SegmentArgs a) {
  const int64_t u = global_thread();
  if (u > a.num_unique) return;
  a.chunk_counts[u] = u == a.num_unique || skipped(a, u)
                          ? 0
                          : static_cast<int32_t>(chunks_for_count(a.offsets[u + 1] - a.offsets[u]));
}

template <int N>
__global__ void sum_chunks_kernel(SegmentArgs a) {
  const int64_t c = global_warp();
  if (c >= a.max_chunks || c >= a.chunk_start[a.num_unique]) return;
  // The id of chunk c: the last u with chunk_start[u] <= c (ids without
  // chunks share their start with the next id and are passed over).
  int64_t lo = 0, hi = a.num_unique;  // invariant: chunk_start[lo] <= c < chunk_start[hi]
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (a.chunk_start[mid] <= c)
      lo = mid;
    else
      hi = mid;
  }
  const int64_t u = lo;
  const int32_t begin =
      a.offsets[u] + static_cast<int32_t>((c - a.chunk_start[u]) * kChunkPositions);
  // In int64: begin + kChunkPositions may pass 2^31 - 1 in a batch near its limit.
  const int32_t end = static_cast<int32_t>(
      min(static_cast<int64_t>(begin) + kChunkPositions, static_cast<int64_t>(a.offsets[u + 1])));
  float* out = a.partials + c * a.dim;
  for (int64_t j = static_cast<int64_t>(lane_id()) * N; j < a.dim; j += kWarpSize * N)
    store<N>(out + j, sum_positions<N>(a, begin, end, j));
}

template <int N, bool kUpdate>
__global__ void reduce_segments_kernel(SegmentArgs a, UpdateArgs up, float* dst) {
  const int64_t u = global_warp();
  if (u >= a.num_unique || skipped(a, u)) return;  // uniform in the warp
  const float inv = a.scale_by_count ? inverse_count(a, u) : 1.f;
  auto grad_at = [&](int64_t j) {
    Vec<N> g = segment_at<N>(a, u, j);
    if (a.scale_by_count) scale(g, inv);
    return g;
  };
  if constexpr (kUpdate) {
    const int64_t r = a.unique[u] - up.row_offset;
    detail::update_row_warp<N>(up.kind, up.scalars, up.table + r * a.dim,
                               up.state + r * optimizer_state_width(up.kind, a.dim), a.dim,
                               grad_at);
  } else {
    float* out = dst + (a.dst_offsets ? a.dst_offsets[u] : u * a.dim);
    for (int64_t j = static_cast<int64_t>(lane_id()) * N; j < a.dim; j += kWarpSize * N)
      store<N>(out + j, grad_at(j));
  }
}

// Steps 1-3 of the file comment; `dst` (segment_sum) or `up` (update).
template <bool kUpdate>
void reduce(SegmentArgs a, const UpdateArgs& up, float* dst, bool vectorize, int64_t n,
            SegmentWorkspace* ws, cudaStream_t s) {
  if (a.num_unique == 0) return;
  const int items = static_cast<int>(a.num_unique + 1);
  size_t scan_bytes = 0;
  EMBTRAIN_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes,
                                                    static_cast<const int32_t*>(nullptr),
                                                    static_cast<int32_t*>(nullptr), items, s));
  const SegmentPlan plan = segment_plan(n, a.num_unique, a.dim, scan_bytes);
  ws->buffer.reserve(plan.total);
  a.chunk_counts = ws->buffer.as<int32_t>(plan.chunk_counts);
  a.chunk_start = ws->buffer.as<int32_t>(plan.chunk_start);
  a.partials = ws->buffer.as<float>(plan.partials);
  a.max_chunks = plan.max_chunks;

  count_chunks_kernel<<<static_cast<unsigned>(blocks_for_threads(items)), kThreadsPerBlock, 0, s>>>(
      a);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
  EMBTRAIN_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(ws->buffer.as<void>(plan.cub_temp), scan_bytes,
                                                    a.chunk_counts, a.chunk_start, items, s));
  const unsigned chunk_blocks = static_cast<unsigned>(blocks_for_warps(a.max_chunks));
  const unsigned unique_blocks = static_cast<unsigned>(blocks_for_warps(a.num_unique));
  if (vectorize) {
    if (chunk_blocks > 0) sum_chunks_kernel<4><<<chunk_blocks, kThreadsPerBlock, 0, s>>>(a);
    EMBTRAIN_CUDA_CHECK(cudaGetLastError());
    reduce_segments_kernel<4, kUpdate><<<unique_blocks, kThreadsPerBlock, 0, s>>>(a, up, dst);
  } else {
    if (chunk_blocks > 0) sum_chunks_kernel<1><<<chunk_blocks, kThreadsPerBlock, 0, s>>>(a);
    EMBTRAIN_CUDA_CHECK(cudaGetLastError());
    reduce_segments_kernel<1, kUpdate><<<unique_blocks, kThreadsPerBlock, 0, s>>>(a, up, dst);
  }
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

SegmentArgs segment_args(const float* d_src, int64_t dim, const UniqueIndex& index,
                         const SegmentLayout& layout, bool scale_by_count) {
  SegmentArgs a;
  a.src = d_src;
  a.dim = dim;
  a.src_offsets = layout.src_offsets;
  a.weights = layout.weights;
  a.dst_offsets = layout.dst_offsets;
  a.unique = index.unique;
  a.offsets = index.offsets;
  a.positions = index.positions;
  a.num_unique = index.num_unique;
  a.scale_by_count = scale_by_count;
  return a;
}

}  // namespace

void segment_sum(const float* d_src, int64_t dim, const UniqueIndex& index,
                 const SegmentLayout& layout, bool scale_by_count, float* d_dst,
                 SegmentWorkspace* ws, void* stream) {
  const SegmentArgs a = segment_args(d_src, dim, index, layout, scale_by_count);
  const bool vectorize = dim % 4 == 0 && detail::aligned16(d_src) && detail::aligned16(d_dst);
  reduce<false>(a, UpdateArgs{}, d_dst, vectorize, index.n, ws, static_cast<cudaStream_t>(stream));
}

void segment_sum_update(OptimizerKind kind, const StepScalars& scalars, float* d_table,
                        float* d_state, int64_t dim, int64_t row_offset, const float* d_src,
                        const UniqueIndex& index, const SegmentLayout& layout,
                        bool scale_by_count, int64_t skip_row, SegmentWorkspace* ws, void* stream) {
  EMBTRAIN_ASSERT(layout.dst_offsets == nullptr);
  SegmentArgs a = segment_args(d_src, dim, index, layout, scale_by_count);
  a.skip_row = skip_row;
  UpdateArgs up;
  up.kind = kind;
  up.scalars = scalars;
  up.table = d_table;
  up.state = d_state;
  up.row_offset = row_offset;
  const bool vectorize =
      detail::can_vectorize_update(kind, dim, d_table, d_state) && detail::aligned16(d_src);
  reduce<true>(a, up, nullptr, vectorize, index.n, ws, static_cast<cudaStream_t>(stream));
}

}  // namespace cuda
}  // namespace embtrain
