// Row kernels: one warp per row, lanes striding over the row's columns.
#include "cuda_check.hpp"
#include "embtrain/kernels_cuda.hpp"

namespace embtrain {
namespace cuda {

namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 8;

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__global__ void gather_rows_vec4(const float4* __restrict__ table, int64_t dim4,
                                 const int64_t* __restrict__ index, int64_t n,
                                 int64_t row_offset, float4* __restrict__ out) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (row >= n) return;
  const float4* src = table + (index[row] - row_offset) * dim4;
  float4* dst = out + row * dim4;
  for (int64_t j = threadIdx.x % kWarp; j < dim4; j += kWarp) dst[j] = src[j];
}

__global__ void gather_rows_scalar(const float* __restrict__ table, int64_t dim,
                                   const int64_t* __restrict__ index, int64_t n,
                                   int64_t row_offset, float* __restrict__ out) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (row >= n) return;
  const float* src = table + (index[row] - row_offset) * dim;
  float* dst = out + row * dim;
  for (int64_t j = threadIdx.x % kWarp; j < dim; j += kWarp) dst[j] = src[j];
}

__global__ void update_rows_kernel(OptimizerKind kind, StepScalars s, float* __restrict__ table,
                                   float* __restrict__ state, int64_t dim,
                                   const int64_t* __restrict__ rows,
                                   const float* __restrict__ grads, int64_t n,
                                   int64_t row_offset) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (k >= n) return;  // whole warps exit together: k is uniform in a warp
  const int lane = threadIdx.x % kWarp;
  const int64_t r = rows[k] - row_offset;
  float* w = table + r * dim;
  const float* g = grads + k * dim;
  float* st = state + r * optimizer_state_width(kind, dim);
  switch (kind) {
    case OptimizerKind::kSgd:
      for (int64_t j = lane; j < dim; j += kWarp) sgd_element(w[j], g[j], s);
      break;
    case OptimizerKind::kAdagrad:
      for (int64_t j = lane; j < dim; j += kWarp) adagrad_element(w[j], st[j], g[j], s);
      break;
    case OptimizerKind::kAdam:
      for (int64_t j = lane; j < dim; j += kWarp) adam_element(w[j], st[j], st[dim + j], g[j], s);
      break;
    case OptimizerKind::kRowwiseAdagrad: {
      float sq = 0.f;
      for (int64_t j = lane; j < dim; j += kWarp) sq += g[j] * g[j];
      sq = warp_sum(sq);
      float rate = 0.f;
      if (lane == 0) rate = rowwise_adagrad_rate(st[0], sq, dim, s);
      rate = __shfl_sync(0xffffffffu, rate, 0);
      for (int64_t j = lane; j < dim; j += kWarp) w[j] -= rate * g[j];
      break;
    }
  }
}

unsigned blocks_for(int64_t rows) {
  return static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

}  // namespace

void gather_rows(const float* d_table, int64_t dim, const int64_t* d_index, int64_t n,
                 int64_t row_offset, float* d_out, void* stream) {
  if (n == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  if (dim % 4 == 0)
    gather_rows_vec4<<<blocks_for(n), kWarp * kWarpsPerBlock, 0, s>>>(
        reinterpret_cast<const float4*>(d_table), dim / 4, d_index, n, row_offset,
        reinterpret_cast<float4*>(d_out));
  else
    gather_rows_scalar<<<blocks_for(n), kWarp * kWarpsPerBlock, 0, s>>>(d_table, dim, d_index, n,
                                                                         row_offset, d_out);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

void update_rows(OptimizerKind kind, const StepScalars& scalars, float* d_table, float* d_state,
                 int64_t dim, const int64_t* d_rows, const float* d_grads, int64_t n,
                 int64_t row_offset, void* stream) {
  if (n == 0) return;
  update_rows_kernel<<<blocks_for(n), kWarp * kWarpsPerBlock, 0,
                       static_cast<cudaStream_t>(stream)>>>(kind, scalars, d_table, d_state, dim,
                                                            d_rows, d_grads, n, row_offset);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace cuda
}  // namespace embtrain
