// Id kernels: widen int32 ids, find the first bad id, the deterministic
// unique (sort + run heads + scan) and the split of unique ids by owner.
//
// unique_ids builds the same UniqueIndex as the CPU kernel:
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

#include "cuda_check.hpp"
#include "embtrain/kernels_cuda.hpp"
#include "warp_rows.cuh"

namespace embtrain {
namespace cuda {

namespace {

using detail::global_thread;

unsigned thread_blocks(int64_t n) { return static_cast<unsigned>(blocks_for_threads(n)); }

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

template <typename Id>
void find_bad_id_impl(const Id* d_ids, int64_t n, int64_t bound, int64_t* d_result, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  // 0x7f in every byte: a position above any n.
  EMBTRAIN_CUDA_CHECK(cudaMemsetAsync(d_result, 0x7f, sizeof(int64_t), s));
  if (n > 0) {
    find_bad_kernel<<<thread_blocks(n), kThreadsPerBlock, 0, s>>>(d_ids, n, bound, d_result);
    EMBTRAIN_CUDA_CHECK(cudaGetLastError());
  }
  finish_bad_kernel<<<1, 1, 0, s>>>(d_ids, n, d_result);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
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

__global__ void segment_counts_kernel(const int32_t* __restrict__ offsets, int64_t n,
                                      int32_t* __restrict__ counts) {
  const int64_t u = global_thread();
  if (u < n) counts[u] = offsets[u + 1] - offsets[u];
}

}  // namespace

void widen_ids(const int32_t* d_in, int64_t n, int64_t* d_out, void* stream) {
  if (n == 0) return;
  widen_kernel<<<thread_blocks(n), kThreadsPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      d_in, n, d_out);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

void find_bad_id(const int64_t* d_ids, int64_t n, int64_t bound, int64_t* d_result, void* stream) {
  find_bad_id_impl(d_ids, n, bound, d_result, stream);
}

void find_bad_id(const int32_t* d_ids, int64_t n, int64_t bound, int64_t* d_result, void* stream) {
  find_bad_id_impl(d_ids, n, bound, d_result, stream);
}

DeviceUniqueIndex unique_ids(const int64_t* d_ids, int64_t n, int64_t id_bound, UniqueWorkspace* ws,
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
  DeviceUniqueIndex index = ws->lay_out(plan, n);

  if (n == 0) {
    EMBTRAIN_CUDA_CHECK(cudaMemsetAsync(index.offsets, 0, sizeof(int32_t), s));
    return index;
  }

  auto* sorted_keys = ws->buffer.as<uint64_t>(plan.sorted_keys);
  auto* iota = ws->buffer.as<int32_t>(plan.iota);
  auto* heads = ws->buffer.as<int32_t>(plan.heads);
  auto* slots = ws->buffer.as<int32_t>(plan.slots);
  void* temp = ws->buffer.as<void>(plan.cub_temp);
  const unsigned blocks = thread_blocks(n);

  iota_kernel<<<blocks, kThreadsPerBlock, 0, s>>>(iota, n);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
  EMBTRAIN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, sorted_keys, iota,
                                                      index.positions, count, 0, end_bit, s));
  heads_kernel<<<blocks, kThreadsPerBlock, 0, s>>>(sorted_keys, n, heads);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
  EMBTRAIN_CUDA_CHECK(cub::DeviceScan::InclusiveSum(temp, temp_bytes, heads, slots, count, s));
  scatter_unique_kernel<<<blocks, kThreadsPerBlock, 0, s>>>(
      sorted_keys, index.positions, heads, slots, n, index.unique, index.inverse, index.offsets);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());

  int32_t* h_count = ws->host.as<int32_t>();
  EMBTRAIN_CUDA_CHECK(
      cudaMemcpyAsync(h_count, slots + (n - 1), sizeof(int32_t), cudaMemcpyDeviceToHost, s));
  EMBTRAIN_CUDA_CHECK(cudaStreamSynchronize(s));
  index.num_unique = *h_count;
  return index;
}

void bucketize(const int64_t* d_unique, int64_t num_unique, const int64_t* d_bounds,
               int64_t num_bounds, int64_t* d_begin, void* stream) {
  if (num_bounds == 0) return;
  bucketize_kernel<<<thread_blocks(num_bounds), kThreadsPerBlock, 0,
                     static_cast<cudaStream_t>(stream)>>>(d_unique, num_unique, d_bounds,
                                                          num_bounds, d_begin);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

void block_offsets(const int64_t* d_starts, const int64_t* d_base, int64_t num_blocks, int64_t dim,
                   int64_t n, int64_t* d_out, void* stream) {
  if (n == 0) return;
  block_offsets_kernel<<<thread_blocks(n), kThreadsPerBlock, 0,
                         static_cast<cudaStream_t>(stream)>>>(d_starts, d_base, num_blocks, dim,
                                                              n, d_out);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

void segment_counts(const int32_t* d_offsets, int64_t num_unique, int32_t* d_counts,
                    void* stream) {
  if (num_unique == 0) return;
  segment_counts_kernel<<<thread_blocks(num_unique), kThreadsPerBlock, 0,
                          static_cast<cudaStream_t>(stream)>>>(d_offsets, num_unique, d_counts);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace cuda
}  // namespace embtrain
