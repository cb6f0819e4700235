// cpu::pack_wire, unpack_wire and round_wire on the device: one thread per
// value, the conversions of comm_precision.hpp (the CPU's bits).
#include <cuda_runtime.h>

#include "common/checks.hpp"
#include "kernels/cuda/cuda_kernels.hpp"
#include "kernels/cuda/warp_rows.cuh"

namespace embtrain {
namespace cuda {

namespace {

using detail::global_thread;

__global__ void pack_kernel(const float* __restrict__ src, int64_t n, CommPrecision p, float scale,
                            uint16_t* __restrict__ out) {
  const int64_t i = global_thread();
  if (i < n) out[i] = to_wire(src[i] * scale, p);
}

__global__ void unpack_kernel(const uint16_t* __restrict__ in, int64_t n, CommPrecision p,
                              float scale, float* __restrict__ dst) {
  const int64_t i = global_thread();
  if (i < n) dst[i] = from_wire(in[i], p) * scale;
}

__global__ void round_kernel(float* __restrict__ data, int64_t n, CommPrecision p, float scale,
                             float inverse) {
  const int64_t i = global_thread();
  if (i < n) data[i] = from_wire(to_wire(data[i] * scale, p), p) * inverse;
}

}  // namespace

void pack_wire(const float* d_src, int64_t n, CommPrecision p, float scale, void* d_wire,
               void* stream) {
  if (n == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  if (p == CommPrecision::kFp32) {
    EMBTRAIN_CUDA_CHECK(cudaMemcpyAsync(d_wire, d_src, static_cast<size_t>(n) * sizeof(float),
                                        cudaMemcpyDeviceToDevice, s));
    return;
  }
  pack_kernel<<<detail::thread_blocks(n), kThreadsPerBlock, 0, s>>>(
      d_src, n, p, scale, static_cast<uint16_t*>(d_wire));
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

void unpack_wire(const void* d_wire, int64_t n, CommPrecision p, float scale, float* d_dst,
                 void* stream) {
  if (n == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  if (p == CommPrecision::kFp32) {
    EMBTRAIN_CUDA_CHECK(cudaMemcpyAsync(d_dst, d_wire, static_cast<size_t>(n) * sizeof(float),
                                        cudaMemcpyDeviceToDevice, s));
    return;
  }
  unpack_kernel<<<detail::thread_blocks(n), kThreadsPerBlock, 0, s>>>(
      static_cast<const uint16_t*>(d_wire), n, p, scale, d_dst);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

void round_wire(float* d_data, int64_t n, CommPrecision p, float scale, void* stream) {
  if (n == 0 || p == CommPrecision::kFp32) return;
  round_kernel<<<detail::thread_blocks(n), kThreadsPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      d_data, n, p, scale, 1.f / scale);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace cuda
}  // namespace embtrain
