// Row kernels: gather, gather through offsets, renorm and the optimizer
// update of given rows. One warp per row, lanes striding over its columns
// (16-byte accesses when dim % 4 == 0 and the rows are aligned); see
// warp_rows.cuh. Launch shapes come from cuda_launch.hpp.
#include "cuda_check.hpp"
#include "embtrain/kernels_cuda.hpp"
#include "warp_rows.cuh"

namespace embtrain {
namespace cuda {

namespace {

using detail::global_warp;
using detail::lane_id;
using detail::load;
using detail::store;
using detail::Vec;

// out[i] = the row that row_of(i) points at; one warp per row.
template <int N, typename RowOf>
__device__ __forceinline__ void copy_row(RowOf row_of, int64_t dim, int64_t n, float* out) {
  const int64_t i = global_warp();
  if (i >= n) return;
  const float* src = row_of(i);
  float* dst = out + i * dim;
  for (int64_t j = static_cast<int64_t>(lane_id()) * N; j < dim; j += kWarpSize * N)
    store<N>(dst + j, load<N>(src + j));
}

template <int N>
__global__ void gather_rows_kernel(const float* __restrict__ table, int64_t dim,
                                   const int64_t* __restrict__ index, int64_t n, int64_t row_offset,
                                   float* __restrict__ out) {
  copy_row<N>([=](int64_t i) { return table + (index[i] - row_offset) * dim; }, dim, n, out);
}

template <int N>
__global__ void gather_rows_at_kernel(const float* __restrict__ base,
                                      const int64_t* __restrict__ offsets,
                                      const int32_t* __restrict__ index, int64_t n, int64_t dim,
                                      float* __restrict__ out) {
  copy_row<N>([=](int64_t i) { return base + offsets[index[i]]; }, dim, n, out);
}

// p-norm of a row by the calling warp, as row_norm computes it (on |x|, in
// float) but with lane partials added by a butterfly.
__device__ float warp_row_norm(const float* row, int64_t dim, float p) {
  float acc = 0.f;
  const int lane = lane_id();
  if (p == INFINITY) {
    for (int64_t j = lane; j < dim; j += kWarpSize) acc = fmaxf(acc, fabsf(row[j]));
    return detail::warp_max(acc);
  }
  if (p == 1.f) {
    for (int64_t j = lane; j < dim; j += kWarpSize) acc += fabsf(row[j]);
    return detail::warp_sum(acc);
  }
  if (p == 2.f) {
    for (int64_t j = lane; j < dim; j += kWarpSize) acc += row[j] * row[j];
    return sqrtf(detail::warp_sum(acc));
  }
  for (int64_t j = lane; j < dim; j += kWarpSize) acc += powf(fabsf(row[j]), p);
  return powf(detail::warp_sum(acc), 1.f / p);
}

__global__ void renorm_rows_kernel(float* __restrict__ table, int64_t dim,
                                   const int64_t* __restrict__ rows, int64_t n, int64_t row_offset,
                                   float max_norm, float norm_type) {
  const int64_t k = global_warp();
  if (k >= n) return;
  float* row = table + (rows[k] - row_offset) * dim;
  // Every lane holds the same norm (butterfly), so the same scale.
  const float scale = renorm_scale(warp_row_norm(row, dim, norm_type), max_norm);
  if (scale == 1.f) return;
  for (int64_t j = lane_id(); j < dim; j += kWarpSize) row[j] *= scale;
}

template <int N>
__global__ void update_rows_kernel(OptimizerKind kind, StepScalars s, float* __restrict__ table,
                                   float* __restrict__ state, int64_t dim,
                                   const int64_t* __restrict__ rows,
                                   const float* __restrict__ grads, int64_t n, int64_t row_offset) {
  const int64_t k = global_warp();
  if (k >= n) return;  // whole warps exit together: k is uniform in a warp
  const int64_t r = rows[k] - row_offset;
  const float* g = grads + k * dim;
  detail::update_row_warp<N>(kind, s, table + r * dim, state + r * optimizer_state_width(kind, dim),
                             dim, [=](int64_t j) { return load<N>(g + j); });
}

unsigned warp_blocks(int64_t rows) { return static_cast<unsigned>(blocks_for_warps(rows)); }

}  // namespace

void gather_rows(const float* d_table, int64_t dim, const int64_t* d_index, int64_t n,
                 int64_t row_offset, float* d_out, void* stream) {
  if (n == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  if (dim % 4 == 0 && detail::aligned16(d_table) && detail::aligned16(d_out))
    gather_rows_kernel<4>
        <<<warp_blocks(n), kThreadsPerBlock, 0, s>>>(d_table, dim, d_index, n, row_offset, d_out);
  else
    gather_rows_kernel<1>
        <<<warp_blocks(n), kThreadsPerBlock, 0, s>>>(d_table, dim, d_index, n, row_offset, d_out);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

void gather_rows_at(const float* d_base, const int64_t* d_offsets, const int32_t* d_index,
                    int64_t n, int64_t dim, float* d_out, void* stream) {
  if (n == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  if (dim % 4 == 0 && detail::aligned16(d_base) && detail::aligned16(d_out))
    gather_rows_at_kernel<4>
        <<<warp_blocks(n), kThreadsPerBlock, 0, s>>>(d_base, d_offsets, d_index, n, dim, d_out);
  else
    gather_rows_at_kernel<1>
        <<<warp_blocks(n), kThreadsPerBlock, 0, s>>>(d_base, d_offsets, d_index, n, dim, d_out);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

void renorm_rows(float* d_table, int64_t dim, const int64_t* d_rows, int64_t n, int64_t row_offset,
                 float max_norm, float norm_type, void* stream) {
  if (n == 0) return;
  renorm_rows_kernel<<<warp_blocks(n), kThreadsPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      d_table, dim, d_rows, n, row_offset, max_norm, norm_type);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

void update_rows(OptimizerKind kind, const StepScalars& scalars, float* d_table, float* d_state,
                 int64_t dim, const int64_t* d_rows, const float* d_grads, int64_t n,
                 int64_t row_offset, void* stream) {
  if (n == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  if (detail::can_vectorize_update(kind, dim, d_table, d_state) && detail::aligned16(d_grads))
    update_rows_kernel<4><<<warp_blocks(n), kThreadsPerBlock, 0, s>>>(
        kind, scalars, d_table, d_state, dim, d_rows, d_grads, n, row_offset);
  else
    update_rows_kernel<1><<<warp_blocks(n), kThreadsPerBlock, 0, s>>>(
        kind, scalars, d_table, d_state, dim, d_rows, d_grads, n, row_offset);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace cuda
}  // namespace embtrain
