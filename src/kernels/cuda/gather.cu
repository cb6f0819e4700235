// Row gathers, one warp per row (16-byte accesses when dim % 4 == 0 and the
// rows are aligned; see warp_rows.cuh): the owner's gather_owned (rows by
// id, also straight into the format they travel in) and the requester's
// expand (unique rows to every position).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>

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
using detail::Vec;

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

// The same copy with more loads in flight per warp (a variant to measure
// against copy_rows_kernel on a GPU, chosen by EMBTRAIN_CUDA_GATHER=batched;
// bench/gpu_session.sh times both): a warp takes 32 consecutive rows, each lane finds one
// row's source (the index loads of all 32 in parallel instead of one
// dependent load per row), then the warp copies kRowsInFlight rows at a
// time, issuing all their loads before any store.
constexpr int kRowsInFlight = 4;

template <int N, typename RowOf>
__global__ void copy_rows_batched_kernel(RowOf row_of, int64_t dim, int64_t n,
                                         float* __restrict__ out) {
  const int64_t first = global_warp() * kWarpSize;
  if (first >= n) return;  // the whole warp: first is the same for every lane
  const int lane = lane_id();
  const int rows = static_cast<int>(n - first < kWarpSize ? n - first : kWarpSize);
  const float* mine = lane < rows ? row_of(first + lane) : nullptr;
  for (int r = 0; r < rows; r += kRowsInFlight) {  // the same bounds on every lane
    const float* src[kRowsInFlight];
#pragma unroll
    for (int u = 0; u < kRowsInFlight; ++u)
      src[u] = reinterpret_cast<const float*>(__shfl_sync(
          detail::kFullMask, reinterpret_cast<unsigned long long>(mine), (r + u) % kWarpSize));
    for (int64_t j = static_cast<int64_t>(lane) * N; j < dim; j += kWarpSize * N) {
      Vec<N> v[kRowsInFlight];
#pragma unroll
      for (int u = 0; u < kRowsInFlight; ++u)
        if (r + u < rows) v[u] = load<N>(src[u] + j);
#pragma unroll
      for (int u = 0; u < kRowsInFlight; ++u)
        if (r + u < rows) store<N>(out + (first + r + u) * dim + j, v[u]);
    }
  }
}

// Which row-copy kernel runs: EMBTRAIN_CUDA_GATHER = warp (one warp per row,
// the default) or batched (above). Read once, in the middle of a step: an
// unknown value is not an error there (one rank throwing would leave the
// others in the next exchange), it says so and runs the default.
bool batched_gather() {
  static const bool batched = [] {
    const char* v = std::getenv("EMBTRAIN_CUDA_GATHER");
    const std::string name = v ? v : "warp";
    if (name != "warp" && name != "batched")
      std::fprintf(stderr, "embtrain: EMBTRAIN_CUDA_GATHER = '%s' is not one of warp, batched: "
                           "using warp\n", name.c_str());
    return name == "batched";
  }();
  return batched;
}

// 16-byte accesses when every source row starts on 16 bytes: the caller
// says so of `base` (row offsets are then multiples of 4, see
// cuda_kernels.hpp), and dim % 4 == 0 keeps every later row aligned.
template <typename RowOf>
void copy_rows(RowOf row_of, const void* base, int64_t dim, int64_t n, float* d_out,
               void* stream) {
  if (n == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  const bool wide = dim % 4 == 0 && detail::aligned16(base) && detail::aligned16(d_out);
  if (batched_gather()) {
    const unsigned blocks = detail::warp_blocks((n + kWarpSize - 1) / kWarpSize);
    if (wide)
      copy_rows_batched_kernel<4><<<blocks, kThreadsPerBlock, 0, s>>>(row_of, dim, n, d_out);
    else
      copy_rows_batched_kernel<1><<<blocks, kThreadsPerBlock, 0, s>>>(row_of, dim, n, d_out);
  } else if (wide) {
    copy_rows_kernel<4><<<detail::warp_blocks(n), kThreadsPerBlock, 0, s>>>(row_of, dim, n, d_out);
  } else {
    copy_rows_kernel<1><<<detail::warp_blocks(n), kThreadsPerBlock, 0, s>>>(row_of, dim, n, d_out);
  }
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

// Row i of the table by id, in the format it travels in: packed to 16 bits
// at out16 + i * dim, or, with out16 null, rounded as a trip over the wire
// makes it at out32 + i * dim (cpu::gather_rows_packed and
// gather_rows_rounded; comm_precision.hpp's conversions, the CPU's bits).
// One warp per row; N = 4 when dim % 4 == 0 and the rows are aligned: 16-byte
// loads and 8-byte packed stores (each packed row then starts on 8 bytes).
template <int N>
__global__ void gather_wire_kernel(TableRow row_of, int64_t n, CommPrecision p,
                                   uint16_t* __restrict__ out16, float* __restrict__ out32) {
  const int64_t i = global_warp();
  if (i >= n) return;
  const int64_t dim = row_of.dim;
  const float* src = row_of(i);
  for (int64_t j = static_cast<int64_t>(lane_id()) * N; j < dim; j += kWarpSize * N) {
    Vec<N> x = load<N>(src + j);
    if (out16) {
      if constexpr (N == 4) {
        const uint2 packed = make_uint2(
            to_wire(x.v[0], p) | static_cast<uint32_t>(to_wire(x.v[1], p)) << 16,
            to_wire(x.v[2], p) | static_cast<uint32_t>(to_wire(x.v[3], p)) << 16);
        *reinterpret_cast<uint2*>(out16 + i * dim + j) = packed;
      } else {
        out16[i * dim + j] = to_wire(x.v[0], p);
      }
    } else {
#pragma unroll
      for (int k = 0; k < N; ++k) x.v[k] = from_wire(to_wire(x.v[k], p), p);
      store<N>(out32 + i * dim + j, x);
    }
  }
}

void gather_wire(TableRow row_of, int64_t n, CommPrecision p, uint16_t* d_out16, float* d_out32,
                 void* stream) {
  if (n == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  const void* out = d_out16 ? static_cast<const void*>(d_out16) : d_out32;
  const bool wide = row_of.dim % 4 == 0 && detail::aligned16(row_of.table) &&
                    (d_out16 ? reinterpret_cast<uintptr_t>(out) % 8 == 0 : detail::aligned16(out));
  if (wide)
    gather_wire_kernel<4><<<detail::warp_blocks(n), kThreadsPerBlock, 0, s>>>(row_of, n, p, d_out16,
                                                                              d_out32);
  else
    gather_wire_kernel<1><<<detail::warp_blocks(n), kThreadsPerBlock, 0, s>>>(row_of, n, p, d_out16,
                                                                              d_out32);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void gather_rows_packed(const float* d_table, int64_t dim, const int64_t* d_index, int64_t n,
                        int64_t row_offset, CommPrecision p, void* d_wire, void* stream) {
  if (p == CommPrecision::kFp32)
    return gather_rows(d_table, dim, d_index, n, row_offset, static_cast<float*>(d_wire), stream);
  gather_wire(TableRow{d_table, d_index, row_offset, dim}, n, p, static_cast<uint16_t*>(d_wire),
              nullptr, stream);
}

void gather_rows_rounded(const float* d_table, int64_t dim, const int64_t* d_index, int64_t n,
                         int64_t row_offset, CommPrecision p, float* d_out, void* stream) {
  if (p == CommPrecision::kFp32)
    return gather_rows(d_table, dim, d_index, n, row_offset, d_out, stream);
  gather_wire(TableRow{d_table, d_index, row_offset, dim}, n, p, nullptr, d_out, stream);
}

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
