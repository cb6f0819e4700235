// The optimizer update of given rows with dense gradients, one warp per row
// (update_row_warp in warp_rows.cuh; the owner's usual path is the fused
// segment_sum_update of segment_sum.cu).
#include <cuda_runtime.h>

#include "common/checks.hpp"
#include "kernels/cuda/cuda_kernels.hpp"
#include "kernels/cuda/warp_rows.cuh"

namespace embtrain {
namespace cuda {

namespace {

using detail::global_warp;
using detail::load;

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

}  // namespace

void update_rows(OptimizerKind kind, const StepScalars& scalars, float* d_table, float* d_state,
                 int64_t dim, const int64_t* d_rows, const float* d_grads, int64_t n,
                 int64_t row_offset, void* stream) {
  if (n == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  if (detail::can_vectorize_update(kind, dim, d_table, d_state) && detail::aligned16(d_grads))
    update_rows_kernel<4><<<detail::warp_blocks(n), kThreadsPerBlock, 0, s>>>(
        kind, scalars, d_table, d_state, dim, d_rows, d_grads, n, row_offset);
  else
    update_rows_kernel<1><<<detail::warp_blocks(n), kThreadsPerBlock, 0, s>>>(
        kind, scalars, d_table, d_state, dim, d_rows, d_grads, n, row_offset);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace cuda
}  // namespace embtrain
