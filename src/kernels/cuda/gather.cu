// Row gathers, one warp per row (16-byte accesses when dim % 4 == 0 and the
// rows are aligned; see warp_rows.cuh): the owner's gather_owned (rows by
// id) and the requester's expand (unique rows to every position).
#include <cuda_runtime.h>

#include "common/checks.hpp"
#include "kernels/cuda/cuda_kernels.hpp"
#include "kernels/cuda/warp_rows.cuh"

namespace embtrain {
namespace cuda {

namespace {

using detail::global_warp;
using detail::lane_id;
using detail::load;
using detail::store;

// Where output row i comes from: a table row by id ...
struct TableRow {
  const float* table;
  const int64_t* index;
  int64_t row_offset, dim;
  __device__ const float* operator()(int64_t i) const { return table + (index[i] - row_offset) * dim; }
};

// ... or a row that an offset locates in a buffer, picked per position.
struct OffsetRow {
  const float* base;
  const int64_t* offsets;
  const int32_t* index;
  __device__ const float* operator()(int64_t i) const { return base + offsets[index[i]]; }
};

// out[i] = the row that row_of(i) points at; one warp per row.
template <int N, typename RowOf>
__global__ void copy_rows_kernel(RowOf row_of, int64_t dim, int64_t n, float* __restrict__ out) {
  const int64_t i = global_warp();
  if (i >= n) return;
  const float* src = row_of(i);
  float* dst = out + i * dim;
  for (int64_t j = static_cast<int64_t>(lane_id()) * N; j < dim; j += kWarpSize * N)
    store<N>(dst + j, load<N>(src + j));
}

// 16-byte accesses when every source row starts on 16 bytes: the caller
// says so of `base` (row offsets are then multiples of 4, see
// cuda_kernels.hpp), and dim % 4 == 0 keeps every later row aligned.
template <typename RowOf>
void copy_rows(RowOf row_of, const void* base, int64_t dim, int64_t n, float* d_out,
               void* stream) {
  if (n == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  if (dim % 4 == 0 && detail::aligned16(base) && detail::aligned16(d_out))
    copy_rows_kernel<4><<<detail::warp_blocks(n), kThreadsPerBlock, 0, s>>>(row_of, dim, n, d_out);
  else
    copy_rows_kernel<1><<<detail::warp_blocks(n), kThreadsPerBlock, 0, s>>>(row_of, dim, n, d_out);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void gather_rows(const float* d_table, int64_t dim, const int64_t* d_index, int64_t n,
                 int64_t row_offset, float* d_out, void* stream) {
  copy_rows(TableRow{d_table, d_index, row_offset, dim}, d_table, dim, n, d_out, stream);
}

void expand_rows(const float* d_base, const int64_t* d_offsets, const int32_t* d_index, int64_t n,
                 int64_t dim, float* d_out, void* stream) {
  copy_rows(OffsetRow{d_base, d_offsets, d_index}, d_base, dim, n, d_out, stream);
}

}  // namespace cuda
}  // namespace embtrain
