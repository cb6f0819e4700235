// max_norm before a lookup (PyTorch's embedding_renorm_) on the distinct
// rows of a batch, one warp per row; the scale is row_math.hpp's.
#include <cuda_runtime.h>

#include "common/checks.hpp"
#include "kernels/cuda/cuda_kernels.hpp"
#include "kernels/cuda/warp_rows.cuh"

namespace embtrain {
namespace cuda {

namespace {

using detail::global_warp;
using detail::lane_id;

// p-norm of a row by the calling warp, as row_norm computes it: on |x|, in
// float, in sum_order.hpp's row order (lanes over groups of 4 columns, then
// a butterfly), so the bits are the CPU's.
__device__ float warp_row_norm(const float* row, int64_t dim, float p) {
  using detail::Vec;
  if (p == INFINITY) {
    float acc = 0.f;
    for (int64_t base = static_cast<int64_t>(lane_id()) * kLaneColumns; base < dim;
         base += kSumLanes * kLaneColumns)
      for (int i = 0; i < kLaneColumns && base + i < dim; ++i)
        acc = fmaxf(acc, fabsf(row[base + i]));
    return detail::warp_max(acc);
  }
  if (p == 1.f)
    return detail::ordered_warp_sum<1>(dim, [=](int64_t j) { return Vec<1>{{fabsf(row[j])}}; });
  if (p == 2.f)
    return sqrtf(
        detail::ordered_warp_sum<1>(dim, [=](int64_t j) { return Vec<1>{{row[j] * row[j]}}; }));
  const float acc =
      detail::ordered_warp_sum<1>(dim, [=](int64_t j) { return Vec<1>{{powf(fabsf(row[j]), p)}}; });
  return powf(acc, 1.f / p);
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

}  // namespace

void renorm_rows(float* d_table, int64_t dim, const int64_t* d_rows, int64_t n, int64_t row_offset,
                 float max_norm, float norm_type, void* stream) {
  if (n == 0) return;
  renorm_rows_kernel<<<detail::warp_blocks(n), kThreadsPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      d_table, dim, d_rows, n, row_offset, max_norm, norm_type);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace cuda
}  // namespace embtrain
