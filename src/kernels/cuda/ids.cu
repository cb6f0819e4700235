// The device side of check_ids: the first id out of range in a batch that
// is already in device memory, and int32 ids widened to the int64 the
// kernels take.
#include <cuda_runtime.h>

#include "common/checks.hpp"
#include "kernels/cuda/cuda_kernels.hpp"
#include "kernels/cuda/warp_rows.cuh"

namespace embtrain {
namespace cuda {

namespace {

using detail::global_thread;

__global__ void widen_kernel(const int32_t* __restrict__ in, int64_t n, int64_t* __restrict__ out) {
  const int64_t i = global_thread();
  if (i < n) out[i] = in[i];
}

// result[0] holds the smallest bad position seen (it starts above any n):
// integer atomicMin, so the answer does not depend on the schedule.
template <typename Id>
__global__ void find_bad_kernel(const Id* __restrict__ ids, int64_t n, int64_t bound,
                                int64_t* result) {
  const int64_t i = global_thread();
  if (i >= n) return;
  const int64_t id = ids[i];
  if (id < 0 || id >= bound)
    atomicMin(reinterpret_cast<long long*>(result), static_cast<long long>(i));
}

template <typename Id>
__global__ void finish_bad_kernel(const Id* __restrict__ ids, int64_t n, int64_t* result) {
  const int64_t at = result[0];
  result[0] = at < n ? at : -1;
  result[1] = at < n ? static_cast<int64_t>(ids[at]) : 0;
}

template <typename Id>
void find_bad_id_impl(const Id* d_ids, int64_t n, int64_t bound, int64_t* d_result, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  // 0x7f in every byte: a position above any n.
  EMBTRAIN_CUDA_CHECK(cudaMemsetAsync(d_result, 0x7f, sizeof(int64_t), s));
  if (n > 0) {
    find_bad_kernel<<<detail::thread_blocks(n), kThreadsPerBlock, 0, s>>>(d_ids, n, bound, d_result);
    EMBTRAIN_CUDA_CHECK(cudaGetLastError());
  }
  finish_bad_kernel<<<1, 1, 0, s>>>(d_ids, n, d_result);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void widen_ids(const int32_t* d_in, int64_t n, int64_t* d_out, void* stream) {
  if (n == 0) return;
  widen_kernel<<<detail::thread_blocks(n), kThreadsPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      d_in, n, d_out);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

void find_bad_id(const int64_t* d_ids, int64_t n, int64_t bound, int64_t* d_result, void* stream) {
  find_bad_id_impl(d_ids, n, bound, d_result, stream);
}

void find_bad_id(const int32_t* d_ids, int64_t n, int64_t bound, int64_t* d_result, void* stream) {
  find_bad_id_impl(d_ids, n, bound, d_result, stream);
}

}  // namespace cuda
}  // namespace embtrain
