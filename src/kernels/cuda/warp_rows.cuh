// Device building blocks of the row kernels, which all give one warp to one
// row: lanes stride over the row's columns in units of Vec<N> (N = 4 turns
// the loads into 16-byte ones when dim % 4 == 0 and the rows are aligned,
// N = 1 otherwise), warp reductions, and the optimizer update of a row whose
// gradient the caller computes column by column. The element math itself is
// row_math.hpp's, shared with the CPU.
#pragma once

#include <cstdint>

#include "kernels/cuda/launch.hpp"
#include "embtrain/row_math.hpp"
#include "embtrain/sum_order.hpp"

namespace embtrain {
namespace cuda {
namespace detail {

constexpr unsigned kFullMask = 0xffffffffu;

// The warp this thread belongs to, counted over the grid, and its lane.
__device__ __forceinline__ int64_t global_warp() {
  return static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
}
__device__ __forceinline__ int lane_id() { return static_cast<int>(threadIdx.x % kWarpSize); }

__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

// Butterfly reductions: every lane ends with the same bits (each step adds
// the same two values, only commuted), and the order depends only on the
// lane, so results are deterministic.
__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2)
    v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}
__device__ __forceinline__ long long warp_sum(long long v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// N consecutive floats of a row, loaded and stored as one access.
template <int N>
struct alignas(sizeof(float) * N) Vec {
  float v[N];
};

template <int N>
__device__ __forceinline__ Vec<N> load(const float* p) {
  if constexpr (N == 4) {
    const float4 t = *reinterpret_cast<const float4*>(p);
    return Vec<4>{{t.x, t.y, t.z, t.w}};
  } else {
    return Vec<1>{{*p}};
  }
}

template <int N>
__device__ __forceinline__ void store(float* p, const Vec<N>& x) {
  if constexpr (N == 4)
    *reinterpret_cast<float4*>(p) = make_float4(x.v[0], x.v[1], x.v[2], x.v[3]);
  else
    *p = x.v[0];
}

template <int N>
__device__ __forceinline__ void add_to(Vec<N>& acc, const Vec<N>& x) {
#pragma unroll
  for (int i = 0; i < N; ++i) acc.v[i] += x.v[i];
}

template <int N>
__device__ __forceinline__ void scale(Vec<N>& x, float s) {
#pragma unroll
  for (int i = 0; i < N; ++i) x.v[i] *= s;
}

// A row reduction in sum_order.hpp's order (item 2), by the calling warp:
// lane l adds term(j) for its columns j (groups of kLaneColumns, every
// kSumLanes groups) one at a time in ascending order, then warp_sum. With
// N = 4 a lane's group is one Vec<4>; with N = 1 it walks the same columns
// one by one, so the bits do not depend on N. terms(j) returns the terms of
// columns [j, j + N) as a Vec<N>.
template <int N, typename Terms>
__device__ __forceinline__ float ordered_warp_sum(int64_t dim, Terms terms) {
  static_assert(kSumLanes == kWarpSize && kLaneColumns % N == 0, "sum_order.hpp's lanes");
  float acc = 0.f;
  for (int64_t base = static_cast<int64_t>(lane_id()) * kLaneColumns; base < dim;
       base += kSumLanes * kLaneColumns)
#pragma unroll
    for (int i = 0; i < kLaneColumns; i += N)
      if (base + i < dim) {  // N = 4 only when dim % 4 == 0: whole groups
        const Vec<N> t = terms(base + i);
#pragma unroll
        for (int k = 0; k < N; ++k) acc += t.v[k];
      }
  return warp_sum(acc);
}

// Host side: grids that give each of `items` a warp, or a thread.
inline unsigned warp_blocks(int64_t items) { return static_cast<unsigned>(blocks_for_warps(items)); }
inline unsigned thread_blocks(int64_t items) {
  return static_cast<unsigned>(blocks_for_threads(items));
}

// Host side: whether a row kernel may use N = 4 on these pointers.
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Whether update_row_warp<4> may run on a table and its state: SGD has no
// state and row-wise Adagrad reads its one float per row alone.
inline bool can_vectorize_update(OptimizerKind kind, int64_t dim, const float* table,
                                 const float* state) {
  const bool state_by_column = kind == OptimizerKind::kAdagrad || kind == OptimizerKind::kAdam;
  return dim % 4 == 0 && aligned16(table) && (!state_by_column || aligned16(state));
}

// The optimizer update of one row `w` (state `st`, see optimizer_state_width)
// by the calling warp. grad_at(j) returns the gradient's columns [j, j + N);
// row-wise Adagrad needs the whole row's squared norm (in sum_order.hpp's
// order) before it can update any column, so it calls grad_at twice per
// column (the caller's sum is deterministic, so both calls give the same
// bits).
template <int N, typename GradAt>
__device__ __forceinline__ void update_row_warp(OptimizerKind kind, const StepScalars& s, float* w,
                                                float* st, int64_t dim, GradAt grad_at) {
  const int64_t first = static_cast<int64_t>(lane_id()) * N, stride = kWarpSize * N;
  switch (kind) {
    case OptimizerKind::kSgd:
      for (int64_t j = first; j < dim; j += stride) {
        const Vec<N> g = grad_at(j);
        Vec<N> x = load<N>(w + j);
#pragma unroll
        for (int i = 0; i < N; ++i) sgd_element(x.v[i], g.v[i], s);
        store<N>(w + j, x);
      }
      break;
    case OptimizerKind::kAdagrad:
      for (int64_t j = first; j < dim; j += stride) {
        const Vec<N> g = grad_at(j);
        Vec<N> x = load<N>(w + j), sum = load<N>(st + j);
#pragma unroll
        for (int i = 0; i < N; ++i) adagrad_element(x.v[i], sum.v[i], g.v[i], s);
        store<N>(w + j, x);
        store<N>(st + j, sum);
      }
      break;
    case OptimizerKind::kAdam:
      for (int64_t j = first; j < dim; j += stride) {
        const Vec<N> g = grad_at(j);
        Vec<N> x = load<N>(w + j), m = load<N>(st + j), v = load<N>(st + dim + j);
#pragma unroll
        for (int i = 0; i < N; ++i) adam_element(x.v[i], m.v[i], v.v[i], g.v[i], s);
        store<N>(w + j, x);
        store<N>(st + j, m);
        store<N>(st + dim + j, v);
      }
      break;
    case OptimizerKind::kRowwiseAdagrad: {
      const float sq = ordered_warp_sum<N>(dim, [&](int64_t j) {
        Vec<N> g = grad_at(j);
#pragma unroll
        for (int i = 0; i < N; ++i) g.v[i] *= g.v[i];
        return g;
      });
      float rate = 0.f;
      if (lane_id() == 0) rate = rowwise_adagrad_rate(st[0], sq, dim, s);
      rate = __shfl_sync(kFullMask, rate, 0);
      for (int64_t j = first; j < dim; j += stride) {
        const Vec<N> g = grad_at(j);
        Vec<N> x = load<N>(w + j);
#pragma unroll
        for (int i = 0; i < N; ++i) x.v[i] -= rate * g.v[i];
        store<N>(w + j, x);
      }
      break;
    }
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace embtrain
