// Bags pooled at the owners (pool_at = owner) on the device: the kernels of
// src/kernels/cpu/owner_pool.cpp, each value built by one thread in the
// CPU's order, so both give the same bits:
//  - list_bag_entries: a thread per (owner, bag), owner-major, counts the
//    bag's entries at that owner; exclusive scans of the counts and of
//    (count > 0) give each (owner, bag) its first entry and its partial row,
//    in the CPU's owner-major, bag-ordered layout; a second pass over the
//    same threads writes the entries in position order.
//  - pool_partials: each partial row's first entry (its entries are one run),
//    then a warp per partial row, lanes over the columns, walking the
//    entries in order from 0 (max: the first entry of the greatest value).
//  - unpool_partials: one gradient row per entry, then segment_sum over the
//    entries' ids (an id's entries in entry order, chunked as sum_order.hpp).
//  - combine_partials, split_bag_grads: a launch per owner in rank order,
//    a warp per partial row (an owner's partial rows have distinct bags).
#include <algorithm>

#include <cub/device/device_scan.cuh>

#include "common/checks.hpp"
#include "kernels/cuda/cuda_kernels.hpp"
#include "kernels/cuda/warp_rows.cuh"

namespace embtrain {
namespace cuda {

namespace {

using detail::global_thread;
using detail::global_warp;
using detail::lane_id;

// The arrays of list_bag_entries for `cells` = owners x bags, as byte
// offsets into the workspace's buffer.
struct EntryPlan {
  size_t slots = 0;   // owners + 1 int64: each owner's first distinct key
  size_t count = 0;   // cells + 1 int32: entries per (owner, bag), then 0
  size_t flag = 0;    // cells + 1 int32: count > 0, then 0
  size_t entry = 0;   // cells + 1 int32: exclusive scan of count
  size_t row = 0;     // cells + 1 int32: exclusive scan of flag
  size_t begin = 0;   // 2 (owners + 1) int64: entry_begin, then partial_begin
  size_t cub_temp = 0;
  size_t total = 0;
};

EntryPlan entry_plan(int64_t cells, int owners, size_t cub_temp_bytes) {
  const size_t items = static_cast<size_t>(cells + 1), ends = static_cast<size_t>(owners + 1);
  ByteLayout layout;
  EntryPlan plan;
  plan.slots = layout.add(ends * sizeof(int64_t));
  plan.count = layout.add(items * sizeof(int32_t));
  plan.flag = layout.add(items * sizeof(int32_t));
  plan.entry = layout.add(items * sizeof(int32_t));
  plan.row = layout.add(items * sizeof(int32_t));
  plan.begin = layout.add(2 * ends * sizeof(int64_t));
  plan.cub_temp = layout.add(cub_temp_bytes);
  plan.total = layout.total();
  return plan;
}

struct EntryArgs {
  BagPooling bags;
  const int64_t* ids = nullptr;
  int64_t skip_id = -1;
  const int32_t* inverse = nullptr;
  const int64_t* slots = nullptr;
  int owners = 0;
  int32_t* count = nullptr;
  int32_t* flag = nullptr;
  const int32_t* entry = nullptr;
  const int32_t* row = nullptr;
};

// The owner of a distinct key: the last d with slots[d] <= key (slots[0] is
// 0 and slots[owners] is past every key).
__device__ int owner_of(const EntryArgs& a, int32_t key) {
  int lo = 0, hi = a.owners;  // slots[lo] <= key < slots[hi]
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (a.slots[mid] <= key)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

// Cell i = d * num_bags + b: bag b's entries at owner d; cell `cells` is
// the scans' extra 0. Owner 0's threads also write the bags' counts.
__global__ void count_entries_kernel(EntryArgs a, int64_t cells) {
  const int64_t i = global_thread();
  if (i > cells) return;
  if (i == cells) {
    a.count[i] = a.flag[i] = 0;
    return;
  }
  const int d = static_cast<int>(i / a.bags.num_bags);
  const int64_t b = i % a.bags.num_bags;
  int32_t here = 0, pooled = 0;
  for (int64_t p = a.bags.offsets[b]; p < a.bags.offsets[b + 1]; ++p) {
    if (a.ids[p] == a.skip_id) continue;
    ++pooled;
    if (owner_of(a, a.inverse[p]) == d) ++here;
  }
  a.count[i] = here;
  a.flag[i] = here > 0;
  if (d == 0) a.bags.counts[b] = pooled;
}

__global__ void write_entries_kernel(EntryArgs a, int64_t cells, BagEntries out) {
  const int64_t i = global_thread();
  if (i >= cells || a.count[i] == 0) return;
  const int d = static_cast<int>(i / a.bags.num_bags);
  const int64_t b = i % a.bags.num_bags;
  const int32_t k = a.row[i];  // this cell's partial row among all owners'
  const int32_t first_row = a.row[static_cast<int64_t>(d) * a.bags.num_bags];
  out.partial_bag[k] = b;
  int64_t e = a.entry[i];
  for (int64_t p = a.bags.offsets[b]; p < a.bags.offsets[b + 1]; ++p) {
    if (a.ids[p] == a.skip_id || owner_of(a, a.inverse[p]) != d) continue;
    out.idx[e] = static_cast<int32_t>(a.inverse[p] - a.slots[d]);
    out.slot[e] = k - first_row;
    out.pos[e] = static_cast<int32_t>(p);
    out.weight[e] = a.bags.weights ? a.bags.weights[p] : 1.f;
    ++e;
  }
}

// begin[d] = entry[d * num_bags], begin[owners + 1 + d] = row[d * num_bags]
// for d in [0, owners] (d = owners: the totals, at the extra cell).
__global__ void entry_begins_kernel(const int32_t* entry, const int32_t* row, int64_t num_bags,
                                    int owners, int64_t* begin) {
  const int64_t d = global_thread();
  if (d > owners) return;
  begin[d] = entry[d * num_bags];
  begin[owners + 1 + d] = row[d * num_bags];
}

// first[slot[e]] = e where a partial row's run of entries starts, and
// first[rows] = entries.
__global__ void first_entries_kernel(const int32_t* slot, int64_t entries, int64_t rows,
                                     int32_t* first) {
  const int64_t e = global_thread();
  if (e >= entries) return;
  if (e == 0 || slot[e] != slot[e - 1]) first[slot[e]] = static_cast<int32_t>(e);
  if (e == entries - 1) first[rows] = static_cast<int32_t>(entries);
}

__global__ void pool_partials_kernel(OwnerBlock block, const int32_t* __restrict__ first) {
  const int64_t k = global_warp();
  if (k >= block.rows) return;
  const int64_t dim = block.dim;
  const bool max = block.mode == PoolMode::kMax;
  const int32_t begin = first[k], end = first[k + 1];
  for (int64_t j = lane_id(); j < dim; j += kWarpSize) {
    float acc = 0.f;
    int32_t arg = -1;
    for (int32_t e = begin; e < end; ++e) {
      const float x = block.kept[static_cast<int64_t>(block.idx[e]) * dim + j];
      if (max)
        pool_column(PoolMode::kMax, x, 1.f, e, e == begin, &acc, &arg);
      else
        acc += x * (block.weight ? block.weight[e] : 1.f);
    }
    block.partial[k * dim + j] = acc;
    if (max) block.arg[k * dim + j] = arg;
  }
}

// terms[e] = entry e's gradient row: its partial row's times its weight, or
// for max the columns it won; keys[e] = its id.
__global__ void entry_terms_kernel(OwnerBlock block, float* __restrict__ terms,
                                   int64_t* __restrict__ keys) {
  const int64_t e = global_warp();
  if (e >= block.entries) return;
  const int64_t dim = block.dim, at = static_cast<int64_t>(block.slot[e]) * dim;
  const float* g = block.partial + at;
  float* y = terms + e * dim;
  if (lane_id() == 0) keys[e] = block.idx[e];
  if (block.mode == PoolMode::kMax) {
    const int32_t* arg = block.arg + at;
    for (int64_t j = lane_id(); j < dim; j += kWarpSize) y[j] = arg[j] == e ? g[j] : 0.f;
  } else {
    const float w = block.weight ? block.weight[e] : 1.f;
    for (int64_t j = lane_id(); j < dim; j += kWarpSize) y[j] = g[j] * w;
  }
}

__global__ void kept_offsets_kernel(const int64_t* unique, int64_t n, int64_t dim,
                                    int64_t* offsets) {
  const int64_t u = global_thread();
  if (u < n) offsets[u] = unique[u] * dim;
}

// One owner's partial rows (n, their bags distinct) into their bags' rows
// of out: added, or for max the greatest, of equal values the smallest
// position (`pos`: the owner's entries' positions; wpos: the winners').
__global__ void combine_owner_kernel(PoolMode mode, int64_t dim, int64_t n, int owner,
                                     const int64_t* __restrict__ partial_bag,
                                     const float* __restrict__ rows,
                                     const int32_t* __restrict__ args,
                                     const int32_t* __restrict__ pos, float* __restrict__ out,
                                     int32_t* __restrict__ winner, int32_t* __restrict__ wpos) {
  const int64_t k = global_warp();
  if (k >= n) return;
  const int64_t b = partial_bag[k];
  const float* x = rows + k * dim;
  float* acc = out + b * dim;
  for (int64_t j = lane_id(); j < dim; j += kWarpSize) {
    if (mode != PoolMode::kMax) {
      acc[j] += x[j];
      continue;
    }
    const int32_t at = pos[args[k * dim + j]];
    const int64_t c = b * dim + j;
    if (winner[c] < 0 || x[j] > acc[j] || (x[j] == acc[j] && at < wpos[c])) {
      acc[j] = x[j];
      winner[c] = owner;
      wpos[c] = at;
    }
  }
}

__global__ void finish_mean_kernel(float* out, const int32_t* counts, int64_t num_bags,
                                   int64_t dim) {
  const int64_t i = global_thread();
  if (i < num_bags * dim) out[i] = finish_column(PoolMode::kMean, out[i], counts[i / dim]);
}

__global__ void split_owner_kernel(PoolMode mode, int64_t dim, int64_t n, int owner,
                                   const int64_t* __restrict__ partial_bag,
                                   const int32_t* __restrict__ counts,
                                   const int32_t* __restrict__ winner,
                                   const float* __restrict__ grad, float* __restrict__ rows) {
  const int64_t k = global_warp();
  if (k >= n) return;
  const int64_t b = partial_bag[k];
  const float* g = grad + b * dim;
  float* y = rows + k * dim;
  for (int64_t j = lane_id(); j < dim; j += kWarpSize) {
    switch (mode) {
      case PoolMode::kSum: y[j] = g[j]; break;
      case PoolMode::kMean: y[j] = g[j] / static_cast<float>(counts[b]); break;
      case PoolMode::kMax: y[j] = winner[b * dim + j] == owner ? g[j] : 0.f; break;
    }
  }
}

}  // namespace

void list_bag_entries(const BagPooling& bags, const int64_t* d_ids, int64_t skip_id,
                      const int32_t* d_inverse, const int64_t* owner_slots, int owners,
                      BagEntries* out, int64_t* entry_begin, int64_t* partial_begin,
                      OwnerPoolWorkspace* ws, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t cells = bags.num_bags * owners;
  if (cells == 0) {  // no bags: no entries
    std::fill(entry_begin, entry_begin + owners + 1, 0);
    std::fill(partial_begin, partial_begin + owners + 1, 0);
    return;
  }
  EMBTRAIN_REQUIRE(cells < (int64_t{1} << 31) - 1, bags.num_bags, " bags x ", owners,
                   " owners are more cells than pool_at = owner handles on a GPU (2^31 - 1)");
  const int items = static_cast<int>(cells + 1);
  size_t scan_bytes = 0;
  EMBTRAIN_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes,
                                                    static_cast<const int32_t*>(nullptr),
                                                    static_cast<int32_t*>(nullptr), items, s));
  const EntryPlan plan = entry_plan(cells, owners, scan_bytes);
  ws->buffer.reserve(plan.total);
  const size_t ends = static_cast<size_t>(owners) + 1;
  ws->host.reserve(3 * ends * sizeof(int64_t));
  int64_t* h_slots = ws->host.as<int64_t>();
  int64_t* h_begin = h_slots + ends;
  std::copy(owner_slots, owner_slots + ends, h_slots);

  EntryArgs a;
  a.bags = bags;
  a.ids = d_ids;
  a.skip_id = skip_id;
  a.inverse = d_inverse;
  a.owners = owners;
  auto* slots = ws->buffer.as<int64_t>(plan.slots);
  a.slots = slots;
  a.count = ws->buffer.as<int32_t>(plan.count);
  a.flag = ws->buffer.as<int32_t>(plan.flag);
  auto* entry = ws->buffer.as<int32_t>(plan.entry);
  auto* row = ws->buffer.as<int32_t>(plan.row);
  a.entry = entry;
  a.row = row;
  auto* d_begin = ws->buffer.as<int64_t>(plan.begin);
  void* temp = ws->buffer.as<void>(plan.cub_temp);

  EMBTRAIN_CUDA_CHECK(
      cudaMemcpyAsync(slots, h_slots, ends * sizeof(int64_t), cudaMemcpyHostToDevice, s));
  const unsigned blocks = detail::thread_blocks(items);
  count_entries_kernel<<<blocks, kThreadsPerBlock, 0, s>>>(a, cells);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
  EMBTRAIN_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(temp, scan_bytes, a.count, entry, items, s));
  EMBTRAIN_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(temp, scan_bytes, a.flag, row, items, s));
  write_entries_kernel<<<blocks, kThreadsPerBlock, 0, s>>>(a, cells, *out);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
  entry_begins_kernel<<<detail::thread_blocks(owners + 1), kThreadsPerBlock, 0, s>>>(
      entry, row, bags.num_bags, owners, d_begin);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
  EMBTRAIN_CUDA_CHECK(
      cudaMemcpyAsync(h_begin, d_begin, 2 * ends * sizeof(int64_t), cudaMemcpyDeviceToHost, s));
  EMBTRAIN_CUDA_CHECK(cudaStreamSynchronize(s));
  std::copy(h_begin, h_begin + ends, entry_begin);
  std::copy(h_begin + ends, h_begin + 2 * ends, partial_begin);
}

void pool_partials(const OwnerBlock& block, OwnerPoolWorkspace* ws, void* stream) {
  if (block.entries == 0 || block.rows == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  ws->buffer.reserve(static_cast<size_t>(block.rows + 1) * sizeof(int32_t));
  auto* first = ws->buffer.as<int32_t>();
  first_entries_kernel<<<detail::thread_blocks(block.entries), kThreadsPerBlock, 0, s>>>(
      block.slot, block.entries, block.rows, first);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
  pool_partials_kernel<<<detail::warp_blocks(block.rows), kThreadsPerBlock, 0, s>>>(block, first);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
}

void unpool_partials(const OwnerBlock& block, OwnerPoolWorkspace* ws, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t dim = block.dim, n = block.entries;
  if (block.num_ids > 0)  // ids without entries get no gradient
    EMBTRAIN_CUDA_CHECK(
        cudaMemsetAsync(block.kept, 0, static_cast<size_t>(block.num_ids * dim) * sizeof(float), s));
  if (n == 0) return;
  ByteLayout layout;
  const size_t keys_at = layout.add(static_cast<size_t>(n) * sizeof(int64_t));
  const size_t dst_at = layout.add(static_cast<size_t>(n) * sizeof(int64_t));
  ws->buffer.reserve(layout.total());
  ws->terms.reserve(static_cast<size_t>(n * dim) * sizeof(float));
  auto* keys = ws->buffer.as<int64_t>(keys_at);
  auto* dst = ws->buffer.as<int64_t>(dst_at);
  auto* terms = ws->terms.as<float>();
  entry_terms_kernel<<<detail::warp_blocks(n), kThreadsPerBlock, 0, s>>>(block, terms, keys);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
  const UniqueIndex index = cuda::unique_ids(keys, n, block.num_ids, &ws->unique, stream);
  kept_offsets_kernel<<<detail::thread_blocks(index.num_unique), kThreadsPerBlock, 0, s>>>(
      index.unique, index.num_unique, dim, dst);
  EMBTRAIN_CUDA_CHECK(cudaGetLastError());
  SegmentLayout rows;
  rows.dst_offsets = dst;
  cuda::segment_sum(terms, dim, index, rows, /*scale_by_count=*/false, block.kept, &ws->segment,
                    stream);
}

void combine_partials(const RequesterPartials& p, float* d_out, OwnerPoolWorkspace* ws,
                      void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t dim = p.dim, cells = p.num_bags * dim;
  if (cells == 0) return;
  const bool max = p.mode == PoolMode::kMax;
  EMBTRAIN_CUDA_CHECK(cudaMemsetAsync(d_out, 0, static_cast<size_t>(cells) * sizeof(float), s));
  int32_t* wpos = nullptr;
  if (max) {
    EMBTRAIN_CUDA_CHECK(  // -1 in every winner: all bytes 0xff
        cudaMemsetAsync(p.winner, 0xff, static_cast<size_t>(cells) * sizeof(int32_t), s));
    ws->buffer.reserve(static_cast<size_t>(cells) * sizeof(int32_t));
    wpos = ws->buffer.as<int32_t>();
  }
  // Owner by owner, in rank order: each bag's row gets its owners' partials in that order.
  for (int d = 0; d < p.num_owners; ++d) {
    const int64_t begin = p.partial_begin[d], n = p.partial_begin[d + 1] - begin;
    if (n == 0) continue;
    combine_owner_kernel<<<detail::warp_blocks(n), kThreadsPerBlock, 0, s>>>(
        p.mode, dim, n, d, p.partial_bag + begin, p.rows[d], max ? p.args[d] : nullptr,
        p.pos + p.entry_begin[d], d_out, p.winner, wpos);
    EMBTRAIN_CUDA_CHECK(cudaGetLastError());
  }
  if (p.mode == PoolMode::kMean) {
    finish_mean_kernel<<<detail::thread_blocks(cells), kThreadsPerBlock, 0, s>>>(d_out, p.counts,
                                                                                p.num_bags, dim);
    EMBTRAIN_CUDA_CHECK(cudaGetLastError());
  }
}

void split_bag_grads(const RequesterPartials& p, const float* d_grad, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  for (int d = 0; d < p.num_owners; ++d) {
    const int64_t begin = p.partial_begin[d], n = p.partial_begin[d + 1] - begin;
    if (n == 0) continue;
    split_owner_kernel<<<detail::warp_blocks(n), kThreadsPerBlock, 0, s>>>(
        p.mode, p.dim, n, d, p.partial_bag + begin, p.counts, p.winner, d_grad, p.rows[d]);
    EMBTRAIN_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace cuda
}  // namespace embtrain
