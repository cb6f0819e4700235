// bucket_by_owner's kernels on the device: the ids as owner-major sort
// keys, the split of a batch's distinct keys by owner, the keys back to
// local rows, and the row offsets of items laid out in per-(peer, table)
// blocks (cpu::cyclic_keys, bucketize, shift_ids, block_offsets).
#include <cuda_runtime.h>

#include "common/checks.hpp"
#include "kernels/cuda/cuda_kernels.hpp"
#include "kernels/cuda/warp_rows.cuh"

namespace embtrain {
namespace cuda {

namespace {

using detail::global_thread;

__global__ void cyclic_keys_kernel(const int64_t* __restrict__ ids, int64_t n, int64_t ranks,
                                   int64_t stride, int64_t* __restrict__ keys) {
  const int64_t i = global_thread();
  if (i < n) keys[i] = ids[i] % ranks * stride + ids[i] / ranks;
}

__global__ void shift_ids_kernel(const int64_t* __restrict__ src, int64_t n, int64_t delta,
                                 int64_t* __restrict__ dst) {
  const int64_t i = global_thread();
  if (i < n) dst[i] = src[i] + delta;
}

__global__ void take_ids_kernel(const int64_t* __restrict__ src,
                                const int64_t* __restrict__ positions, int64_t n,
                                int64_t* __restrict__ dst) {
  const int64_t i = global_thread();
  if (i < n) dst[i] = src[positions[i]];
}

__global__ void bucketize_kernel(const int64_t* __restrict__ unique, int64_t num_unique,
                                 const int64_t* __restrict__ bounds, int64_t num_bounds,
                                 int64_t* __restrict__ begin) {
  const int64_t d = global_thread();
  if (d >= num_bounds) return;
  const int64_t key = bounds[d];
  int64_t lo = 0, hi = num_unique;  // lower_bound: first unique >= key
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (unique[mid] < key)
      lo = mid + 1;
    else
      hi = mid;
  }
  begin[d] = lo;
}

// out[k] = base[b] + (k - starts[b]) * dim for the block b holding k.
__global__ void block_offsets_kernel(const int64_t* __restrict__ starts,
                                     const int64_t* __restrict__ base, int64_t num_blocks,
                                     int64_t dim, int64_t n, int64_t* __restrict__ out) {
  const int64_t k = global_thread();
  if (k >= n) return;
  int64_t lo = 0, hi = num_blocks - 1;  // the last block b with starts[b] <= k
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (starts[mid] <= k)
      lo = mid;
    else
      hi = mid - 1;
  }
  out[k] = base[lo] + (k - starts[lo]) * dim;
}

}  // namespace

void cyclic_keys(const int64_t* d_ids, int64_t n, int64_t ranks, int64_t stride, int64_t* d_keys,
                 void* stream) {
  if (n == 0) return;
  cyclic_keys_kernel<<<detail::thread_blocks(n), kThreadsPerBlock, 0,
                       static_cast<cudaStream_t>(stream)>>>(d_ids, n, ranks, stride, d_keys);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

void shift_ids(const int64_t* d_src, int64_t n, int64_t delta, int64_t* d_dst, void* stream) {
  if (n == 0) return;
  shift_ids_kernel<<<detail::thread_blocks(n), kThreadsPerBlock, 0,
                     static_cast<cudaStream_t>(stream)>>>(d_src, n, delta, d_dst);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

void take_ids(const int64_t* d_src, const int64_t* d_positions, int64_t n, int64_t* d_dst,
              void* stream) {
  if (n == 0) return;
  take_ids_kernel<<<detail::thread_blocks(n), kThreadsPerBlock, 0,
                    static_cast<cudaStream_t>(stream)>>>(d_src, d_positions, n, d_dst);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

void bucketize(const int64_t* d_unique, int64_t num_unique, const int64_t* d_bounds,
               int64_t num_bounds, int64_t* d_begin, void* stream) {
  if (num_bounds == 0) return;
  bucketize_kernel<<<detail::thread_blocks(num_bounds), kThreadsPerBlock, 0,
                     static_cast<cudaStream_t>(stream)>>>(d_unique, num_unique, d_bounds,
                                                          num_bounds, d_begin);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

void block_offsets(const int64_t* d_starts, const int64_t* d_base, int64_t num_blocks, int64_t dim,
                   int64_t n, int64_t* d_out, void* stream) {
  if (n == 0) return;
  block_offsets_kernel<<<detail::thread_blocks(n), kThreadsPerBlock, 0,
                         static_cast<cudaStream_t>(stream)>>>(d_starts, d_base, num_blocks, dim,
                                                              n, d_out);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace cuda
}  // namespace embtrain
