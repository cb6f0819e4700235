// Fresh tables drawn on the device: the counter-based generator of
// random.hpp, so every value is the one the host draws for the same
// (seed, global row, column), with no host copy of the table on the way.
#include <cuda_runtime.h>

#include <algorithm>

#include "common/checks.hpp"
#include "embtrain/random.hpp"
#include "kernels/cuda/cuda_kernels.hpp"
#include "kernels/cuda/warp_rows.cuh"

namespace embtrain {
namespace cuda {

namespace {

using detail::global_thread;

// A grid-stride loop over the elements: a table may hold more than a grid
// has threads.
constexpr int64_t kMaxBlocks = int64_t{1} << 20;

unsigned capped_blocks(int64_t items) {
  return static_cast<unsigned>(std::min(blocks_for_threads(items), kMaxBlocks));
}

__global__ void draw_normal_kernel(uint64_t seed, int64_t first_row, int64_t row_stride,
                                   int64_t dim, int64_t total, float scale,
                                   float* __restrict__ rows) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = global_thread(); i < total; i += step) {
    const int64_t k = i / dim, j = i - k * dim;
    rows[i] = random_normal(seed, static_cast<uint64_t>(first_row + k * row_stride),
                            static_cast<uint64_t>(j)) *
              scale;
  }
}

__global__ void fill_kernel(float* __restrict__ data, int64_t n, float value) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = global_thread(); i < n; i += step) data[i] = value;
}

}  // namespace

void draw_normal_rows(uint64_t seed, int64_t first_row, int64_t row_stride, int64_t n, int64_t dim,
                      float scale, float* d_rows, void* stream) {
  const int64_t total = n * dim;
  if (total == 0) return;
  draw_normal_kernel<<<capped_blocks(total), kThreadsPerBlock, 0,
                       static_cast<cudaStream_t>(stream)>>>(seed, first_row, row_stride, dim, total,
                                                            scale, d_rows);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

void fill_floats(float* d_data, int64_t n, float value, void* stream) {
  if (n == 0) return;
  fill_kernel<<<capped_blocks(n), kThreadsPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      d_data, n, value);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace cuda
}  // namespace embtrain
