// unique_ids on the device, the same UniqueIndex as the CPU kernel builds:
//  1. CUB's radix sort of (id, position) pairs over only the bits id_bound
//     needs. The sort is stable, so the positions of one id stay ascending.
//  2. heads[i] = 1 where a run of equal ids starts; an inclusive scan turns
//     them into each sorted element's slot + 1.
//  3. One scatter writes unique[slot] and offsets[slot] at run heads and
//     inverse[position] = slot everywhere.
//  4. The last slot comes back to the host: num_unique (the one sync).
// Every array, CUB's temporary storage included, lives in one grow-only
// buffer of the workspace, so steady-state calls do not allocate.
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include "common/checks.hpp"
#include "kernels/cuda/cuda_kernels.hpp"
#include "kernels/cuda/warp_rows.cuh"

namespace embtrain {
namespace cuda {

namespace {

using detail::global_thread;

__global__ void iota_kernel(int32_t* out, int64_t n) {
  const int64_t i = global_thread();
  if (i < n) out[i] = static_cast<int32_t>(i);
}

__global__ void heads_kernel(const uint64_t* __restrict__ keys, int64_t n,
                             int32_t* __restrict__ heads) {
  const int64_t i = global_thread();
  if (i < n) heads[i] = i == 0 || keys[i] != keys[i - 1];
}

__global__ void scatter_unique_kernel(const uint64_t* __restrict__ keys,
                                      const int32_t* __restrict__ sorted_positions,
                                      const int32_t* __restrict__ heads,
                                      const int32_t* __restrict__ slots, int64_t n,
                                      int64_t* __restrict__ unique, int32_t* __restrict__ inverse,
                                      int32_t* __restrict__ offsets) {
  const int64_t i = global_thread();
  if (i >= n) return;
  const int32_t slot = slots[i] - 1;
  inverse[sorted_positions[i]] = slot;
  if (heads[i]) {
    unique[slot] = static_cast<int64_t>(keys[i]);
    offsets[slot] = static_cast<int32_t>(i);
  }
  if (i == n - 1) offsets[slot + 1] = static_cast<int32_t>(n);
}

__global__ void segment_counts_kernel(const int32_t* __restrict__ offsets, int64_t n,
                                      int32_t* __restrict__ counts) {
  const int64_t u = global_thread();
  if (u < n) counts[u] = offsets[u + 1] - offsets[u];
}

}  // namespace

UniqueIndex unique_ids(const int64_t* d_ids, int64_t n, int64_t id_bound, UniqueWorkspace* ws,
                       void* stream) {
  EMBTRAIN_REQUIRE(n < (int64_t{1} << 31), "a batch holds ", n,
                   " ids; one table's batch per rank is limited to 2^31 - 1");
  auto s = static_cast<cudaStream_t>(stream);
  const int count = static_cast<int>(n);
  const int end_bit = radix_bits(id_bound);
  // Ids are validated non-negative, so as unsigned keys they sort the same
  // and the sort needs no sign handling.
  const auto* keys_in = reinterpret_cast<const uint64_t*>(d_ids);

  // CUB's temporary storage for the sort and the scan (a size query only).
  size_t sort_bytes = 0, scan_bytes = 0;
  EMBTRAIN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, sort_bytes, keys_in, static_cast<uint64_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), count, 0, end_bit, s));
  EMBTRAIN_CUDA_CHECK(cub::DeviceScan::InclusiveSum(nullptr, scan_bytes,
                                                    static_cast<const int32_t*>(nullptr),
                                                    static_cast<int32_t*>(nullptr), count, s));
  size_t temp_bytes = sort_bytes > scan_bytes ? sort_bytes : scan_bytes;
  const UniquePlan plan = unique_plan(n, temp_bytes);
  ws->buffer.reserve(plan.total);
  ws->host.reserve(sizeof(int32_t));
  auto* unique = ws->buffer.as<int64_t>(plan.unique);
  auto* inverse = ws->buffer.as<int32_t>(plan.inverse);
  auto* offsets = ws->buffer.as<int32_t>(plan.offsets);
  auto* positions = ws->buffer.as<int32_t>(plan.positions);
  UniqueIndex index{unique, inverse, offsets, positions, 0, n};

  if (n == 0) {
    EMBTRAIN_CUDA_CHECK(cudaMemsetAsync(offsets, 0, sizeof(int32_t), s));
    return index;
  }

  auto* sorted_keys = ws->buffer.as<uint64_t>(plan.sorted_keys);
  auto* iota = ws->buffer.as<int32_t>(plan.iota);
  auto* heads = ws->buffer.as<int32_t>(plan.heads);
  auto* slots = ws->buffer.as<int32_t>(plan.slots);
  void* temp = ws->buffer.as<void>(plan.cub_temp);
  const unsigned blocks = detail::thread_blocks(n);

  iota_kernel<<<blocks, kThreadsPerBlock, 0, s>>>(iota, n);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
  EMBTRAIN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, sorted_keys, iota,
                                                      positions, count, 0, end_bit, s));
  heads_kernel<<<blocks, kThreadsPerBlock, 0, s>>>(sorted_keys, n, heads);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
  EMBTRAIN_CUDA_CHECK(cub::DeviceScan::InclusiveSum(temp, temp_bytes, heads, slots, count, s));
  scatter_unique_kernel<<<blocks, kThreadsPerBlock, 0, s>>>(
      sorted_keys, positions, heads, slots, n, unique, inverse, offsets);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());

  int32_t* h_count = ws->host.as<int32_t>();
  EMBTRAIN_CUDA_CHECK(
      cudaMemcpyAsync(h_count, slots + (n - 1), sizeof(int32_t), cudaMemcpyDeviceToHost, s));
  EMBTRAIN_CUDA_CHECK(cudaStreamSynchronize(s));
  index.num_unique = *h_count;
  return index;
}

void segment_counts(const int32_t* d_offsets, int64_t num_unique, int32_t* d_counts,
                    void* stream) {
  if (num_unique == 0) return;
  segment_counts_kernel<<<detail::thread_blocks(num_unique), kThreadsPerBlock, 0,
                          static_cast<cudaStream_t>(stream)>>>(d_offsets, num_unique, d_counts);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace cuda
}  // namespace embtrain
