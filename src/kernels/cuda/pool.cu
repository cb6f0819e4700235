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

__global__ void pool_bags_kernel(BagPooling bags, PositionRows rows,
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
      pool_column(bags.mode, rows.row(p, dim)[j], w, static_cast<int32_t>(p), count == 0, &acc, &arg);
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

// share_bag_grads: a warp per bag writes its row and its positions'
// offsets; the zero row past the bags is written by the host's memset.
__global__ void share_bag_grads_kernel(BagPooling bags, const float* __restrict__ grad,
                                       float* __restrict__ grad_rows,
                                       int64_t* __restrict__ src_offsets) {
  const int64_t b = global_warp();
  if (b >= bags.num_bags) return;
  const int64_t dim = bags.dim;
  const int32_t count = bags.counts[b];
  for (int64_t j = lane_id(); j < dim; j += kWarpSize)
    grad_rows[b * dim + j] =
        unpool_column(bags.mode, grad[b * dim + j], 1.f, count, /*position=*/0, /*arg=*/-1);
  for (int64_t p = bags.offsets[b] + lane_id(); p < bags.offsets[b + 1]; p += kWarpSize)
    src_offsets[p] = b * dim;
}

__global__ void fill_offsets_kernel(int64_t* __restrict__ dst, int64_t n, int64_t value) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = value;
}

}  // namespace

void pool_bags(const BagPooling& bags, const PositionRows& d_rows, const int64_t* d_ids,
               int64_t skip_id, float* d_out, void* stream) {
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

void share_bag_grads(const BagPooling& bags, const float* d_grad, int64_t n,
                     int64_t first_unbagged, float* d_grad_rows, int64_t* d_src_offsets,
                     void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (bags.num_bags > 0) {
    share_bag_grads_kernel<<<detail::warp_blocks(bags.num_bags), kThreadsPerBlock, 0, s>>>(
        bags, d_grad, d_grad_rows, d_src_offsets);
    EMBTRAIN_CUDA_CHECK(cudaGetLastError());
  }
  EMBTRAIN_CUDA_CHECK(cudaMemsetAsync(d_grad_rows + bags.num_bags * bags.dim, 0,
                                      bags.dim * sizeof(float), s));
  if (n > first_unbagged) {
    const int64_t rest = n - first_unbagged;
    fill_offsets_kernel<<<static_cast<unsigned>(blocks_for_threads(rest)), kThreadsPerBlock, 0,
                          s>>>(d_src_offsets + first_unbagged, rest, bags.num_bags * bags.dim);
    EMBTRAIN_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace cuda
}  // namespace embtrain
