// Bag pooling (torch.nn.EmbeddingBag) on the requester, one warp per bag:
// lanes stride over the columns and walk the bag's positions in order, so
// each column is built in bag_pooling.hpp's order, as on the CPU.
#include <cuda_runtime.h>

#include "common/checks.hpp"
#include "kernels/cuda/cuda_kernels.hpp"
#include "kernels/cuda/warp_rows.cuh"

namespace embtrain {
namespace cuda {

namespace {

using detail::global_warp;
using detail::lane_id;

__global__ void pool_bags_kernel(BagPooling bags, const float* __restrict__ rows,
                                 const int64_t* __restrict__ ids, int64_t skip_id,
                                 float* __restrict__ out) {
  const int64_t b = global_warp();
  if (b >= bags.num_bags) return;
  const int64_t dim = bags.dim, begin = bags.offsets[b], end = bags.offsets[b + 1];
  for (int64_t j = lane_id(); j < dim; j += kWarpSize) {
    float acc = 0.f;
    int32_t arg = -1, count = 0;
    for (int64_t p = begin; p < end; ++p) {
      if (ids[p] == skip_id) continue;
      const float w = bags.weights ? bags.weights[p] : 1.f;
      pool_column(bags.mode, rows[p * dim + j], w, static_cast<int32_t>(p), count == 0, &acc, &arg);
      ++count;
    }
    out[b * dim + j] = finish_column(bags.mode, acc, count);
    if (bags.argmax) bags.argmax[b * dim + j] = arg;
    if (j == 0) bags.counts[b] = count;
  }
}

__global__ void unpool_bags_kernel(BagPooling bags, const float* __restrict__ grad,
                                   float* __restrict__ grad_rows) {
  const int64_t b = global_warp();
  if (b >= bags.num_bags) return;
  const int64_t dim = bags.dim;
  const int32_t count = bags.counts[b];
  for (int64_t p = bags.offsets[b]; p < bags.offsets[b + 1]; ++p) {
    const float w = bags.weights ? bags.weights[p] : 1.f;
    for (int64_t j = lane_id(); j < dim; j += kWarpSize)
      grad_rows[p * dim + j] =
          unpool_column(bags.mode, grad[b * dim + j], w, count, static_cast<int32_t>(p),
                        bags.argmax ? bags.argmax[b * dim + j] : -1);
  }
}

}  // namespace

void pool_bags(const BagPooling& bags, const float* d_rows, const int64_t* d_ids, int64_t skip_id,
               float* d_out, void* stream) {
  if (bags.num_bags == 0) return;
  pool_bags_kernel<<<detail::warp_blocks(bags.num_bags), kThreadsPerBlock, 0,
                     static_cast<cudaStream_t>(stream)>>>(bags, d_rows, d_ids, skip_id, d_out);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

void unpool_bags(const BagPooling& bags, const float* d_grad, int64_t n, int64_t first_unbagged,
                 float* d_grad_rows, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (bags.num_bags > 0) {
    unpool_bags_kernel<<<detail::warp_blocks(bags.num_bags), kThreadsPerBlock, 0, s>>>(
        bags, d_grad, d_grad_rows);
    EMBTRAIN_CUDA_CHECK(cudaGetLastError());
  }
  // Positions past the last bag are in no bag: no gradient.
  if (n > first_unbagged)
    EMBTRAIN_CUDA_CHECK(cudaMemsetAsync(d_grad_rows + first_unbagged * bags.dim, 0,
                                        (n - first_unbagged) * bags.dim * sizeof(float), s));
}

}  // namespace cuda
}  // namespace embtrain
