// An emulated CUDA device, built only for tests: every function of
// cuda_kernels.hpp and device_memory.hpp on the host, with "device" memory
// that is ordinary host memory (emulated_comm.cpp does the same for the
// device data communicators). Linked into a test binary together with the
// GPU engine (src/engine/cuda_backend.cpp, cuda_engine.cpp), it lets the GPU
// engine's host side (buffer layouts, counts, offsets, which kernel runs on
// which buffer) run in CI, where there is no GPU, against the
// single-process CPU reference. The kernels themselves are checked against
// the CPU kernels by tests/cuda on a real GPU.
//
// Each function keeps the contract documented in kernels_cuda.hpp and
// delegates to the CPU kernel (kernels_cpu.hpp) where there is one. What
// the emulation cannot show: stream ordering. Every "asynchronous" call here
// is done when it returns, so a missing synchronize, a host read of device
// memory or a pageable buffer reused too early goes unnoticed; those need a
// review of cuda_backend.cpp, or a run on a GPU.
//
// What it does show beyond a plain host build:
//  - Freshly reserved "device" and "pinned" memory is filled with a poison
//    byte (cudaMalloc gives garbage, not zeros), so a read of something
//    never written shows up as huge values in the results or as an
//    out-of-range offset, and not as a lucky zero.
//  - The preconditions of the real kernels that the CPU kernels do not
//    have are checked: ids inside the sort's id_bound, no overlap in a
//    device-to-device copy, and above all 16-byte row starts wherever the
//    real kernel takes its float4 path (dim % 4 == 0 and aligned base
//    pointers), where a misaligned row offset would fault on the GPU. A
//    violation is what a GPU makes of it, a fatal error: the message, then
//    abort, which ends the whole mpiexec job at once instead of leaving the
//    other ranks waiting in a collective.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "embtrain/errors.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cuda/cuda_kernels.hpp"
#include "kernels/cuda/device_memory.hpp"

namespace embtrain {
namespace cuda {

namespace {

std::atomic<int64_t> g_allocations{0};

// 0x7f in every byte: a float of 3.4e38 and an int of 2^31 or 2^63 - a few,
// neither of which a kernel's output could be by chance (-1 would read as
// "skip" in a dst_offsets array).
constexpr int kPoison = 0x7f;

// cudaMalloc's alignment (kWorkspaceAlign), so the alignment tests of the
// real kernels see the same pointers; exactly `bytes`, so that an address
// sanitizer sees an overrun of what was reserved.
void* allocate(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, kWorkspaceAlign, std::max<size_t>(bytes, 1)) != 0) throw std::bad_alloc();
  std::memset(p, kPoison, bytes);
  ++g_allocations;
  return p;
}

// A broken precondition of the real kernel: fatal, as on a GPU.
template <typename... Args>
[[noreturn]] void contract_violation(const char* kernel, const Args&... args) {
  const std::string message = detail::concat(args...);
  std::fprintf(stderr, "emulated CUDA: %s: %s\n", kernel, message.c_str());
  std::fflush(stderr);
  std::abort();
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The real kernels' float4 path (warp_rows.cuh): taken when dim % 4 == 0 and
// the base pointers are 16-byte aligned; every row offset must then be a
// multiple of 4 floats.
void check_row_offset(const char* kernel, const char* what, int64_t offset, int64_t k) {
  if (offset % 4 != 0)
    contract_violation(kernel, what, "[", k, "] = ", offset,
                       " floats is not a multiple of 4 on the float4 path (dim % 4 == 0, "
                       "aligned base): the CUDA kernel would fault with a misaligned address");
}

template <typename Id>
void find_bad_id_impl(const Id* d_ids, int64_t n, int64_t bound, int64_t* d_result) {
  d_result[0] = -1;
  d_result[1] = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = d_ids[i];
    if (id < 0 || id >= bound) {
      d_result[0] = i;
      d_result[1] = id;
      return;
    }
  }
}

}  // namespace

// --- Devices -------------------------------------------------------------------

int device_count() { return 1; }

std::string device_description(int device) {
  EMBTRAIN_REQUIRE(device == 0, "emulated CUDA: no device ", device);
  return "emulated CUDA device (host memory)";
}

double copy_bandwidth_gbps(size_t bytes) {
  // memcpy of at most 64 MiB: a host copy, not worth gigabytes of memory.
  bytes = std::max<size_t>(std::min<size_t>(bytes, size_t{64} << 20), 1);
  std::vector<char> a(bytes, 1), b(bytes);
  std::memcpy(b.data(), a.data(), bytes);  // warm-up
  constexpr int kRepeats = 10;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kRepeats; ++i)
    std::memcpy(i % 2 ? a.data() : b.data(), i % 2 ? b.data() : a.data(), bytes);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return 2.0 * static_cast<double>(bytes) * kRepeats / (std::max(s, 1e-9) * 1e9);
}

int64_t allocation_count() { return g_allocations.load(); }

// --- Buffers: both kinds are host memory ---------------------------------------

void* allocate_memory(MemoryKind, size_t bytes) { return allocate(bytes); }

void free_memory(MemoryKind, void* p) noexcept { std::free(p); }

// --- Streams and copies: everything is done when it returns ------------------------

// A non-null handle that is never dereferenced, so code that passes it on
// looks as it does with a real stream.
Stream::Stream() : stream_(this) {}
Stream::~Stream() = default;
void Stream::synchronize() const {}

void copy_to_device(void* d_dst, const void* h_src, size_t bytes, void*) {
  if (bytes > 0) std::memcpy(d_dst, h_src, bytes);
}
void copy_to_host(void* h_dst, const void* d_src, size_t bytes, void*) {
  if (bytes > 0) std::memcpy(h_dst, d_src, bytes);
}
void copy_on_device(void* d_dst, const void* d_src, size_t bytes, void*) {
  if (bytes == 0) return;
  const auto dst = reinterpret_cast<uintptr_t>(d_dst), src = reinterpret_cast<uintptr_t>(d_src);
  if (dst < src + bytes && src < dst + bytes)
    contract_violation("copy_on_device", "source and destination of ", bytes,
                       " bytes overlap (undefined for cudaMemcpyAsync)");
  std::memcpy(d_dst, d_src, bytes);
}
void memset_device(void* d_dst, int byte_value, size_t bytes, void*) {
  if (bytes > 0) std::memset(d_dst, byte_value, bytes);
}
void synchronize(void*) {}

void set_device(int device) {
  EMBTRAIN_REQUIRE(device == 0, "emulated CUDA: set_device(", device, ") with one device");
}

// --- Ids -----------------------------------------------------------------------

void widen_ids(const int32_t* d_in, int64_t n, int64_t* d_out, void*) {
  std::copy(d_in, d_in + n, d_out);
}

void find_bad_id(const int64_t* d_ids, int64_t n, int64_t bound, int64_t* d_result, void*) {
  find_bad_id_impl(d_ids, n, bound, d_result);
}
void find_bad_id(const int32_t* d_ids, int64_t n, int64_t bound, int64_t* d_result, void*) {
  find_bad_id_impl(d_ids, n, bound, d_result);
}

// cpu::unique_ids, then its four arrays into the workspace's buffer at the
// offsets the CUDA kernel uses, so they live (and get overwritten) where
// the real ones do: valid until the next call on the same workspace.
UniqueIndex unique_ids(const int64_t* d_ids, int64_t n, int64_t id_bound, UniqueWorkspace* ws,
                       void*) {
  EMBTRAIN_REQUIRE(n < (int64_t{1} << 31), "a batch holds ", n,
                   " ids; one table's batch per rank is limited to 2^31 - 1");
  // The real sort looks at the bits id_bound needs and no others.
  for (int64_t i = 0; i < n; ++i)
    if (d_ids[i] < 0 || d_ids[i] >= id_bound)
      contract_violation("unique_ids", "id ", d_ids[i], " at position ", i, " is outside [0, ",
                         id_bound, ")");
  thread_local cpu::UniqueWorkspace scratch;  // sort buffers kept between calls
  cpu::unique_ids(d_ids, n, id_bound, &scratch);

  const UniquePlan plan = unique_plan(n, 0);
  ws->buffer.reserve(plan.total);
  auto* unique = ws->buffer.as<int64_t>(plan.unique);
  auto* inverse = ws->buffer.as<int32_t>(plan.inverse);
  auto* offsets = ws->buffer.as<int32_t>(plan.offsets);
  auto* positions = ws->buffer.as<int32_t>(plan.positions);
  std::copy(scratch.unique.begin(), scratch.unique.end(), unique);
  std::copy(scratch.inverse.begin(), scratch.inverse.end(), inverse);
  std::copy(scratch.offsets.begin(), scratch.offsets.end(), offsets);
  std::copy(scratch.positions.begin(), scratch.positions.end(), positions);
  if (n == 0) offsets[0] = 0;  // whatever the CPU kernel leaves for no ids
  return UniqueIndex{unique, inverse, offsets, positions, scratch.num_unique(), n};
}

void cyclic_keys(const int64_t* d_ids, int64_t n, int64_t ranks, int64_t stride, int64_t* d_keys,
                 void*) {
  cpu::cyclic_keys(d_ids, n, ranks, stride, d_keys);
}

void shift_ids(const int64_t* d_src, int64_t n, int64_t delta, int64_t* d_dst, void*) {
  cpu::shift_ids(d_src, n, delta, d_dst);
}

void bucketize(const int64_t* d_unique, int64_t num_unique, const int64_t* d_bounds,
               int64_t num_bounds, int64_t* d_begin, void*) {
  cpu::bucketize(d_unique, num_unique, d_bounds, num_bounds, d_begin);
}

void block_offsets(const int64_t* d_starts, const int64_t* d_base, int64_t num_blocks, int64_t dim,
                   int64_t n, int64_t* d_out, void*) {
  cpu::block_offsets(d_starts, d_base, num_blocks, dim, n, d_out);
}

void segment_counts(const int32_t* d_offsets, int64_t num_unique, int32_t* d_counts, void*) {
  cpu::segment_counts(d_offsets, num_unique, d_counts);
}

// --- Rows ------------------------------------------------------------------------

void gather_rows(const float* d_table, int64_t dim, const int64_t* d_index, int64_t n,
                 int64_t row_offset, float* d_out, void*) {
  if (n > 0) cpu::gather_rows(d_table, dim, d_index, n, row_offset, d_out);
}

void expand_rows(const float* d_base, const int64_t* d_offsets, const int32_t* d_index, int64_t n,
                 int64_t dim, float* d_out, void*) {
  if (n == 0) return;
  if (dim % 4 == 0 && aligned16(d_base) && aligned16(d_out))
    for (int64_t i = 0; i < n; ++i)
      check_row_offset("expand_rows", "offsets", d_offsets[d_index[i]], d_index[i]);
  cpu::expand_rows(d_base, d_offsets, d_index, n, dim, d_out);
}

void renorm_rows(float* d_table, int64_t dim, const int64_t* d_rows, int64_t n, int64_t row_offset,
                 float max_norm, float norm_type, void*) {
  if (n > 0) cpu::renorm_rows(d_table, dim, d_rows, n, row_offset, max_norm, norm_type);
}

void update_rows(OptimizerKind kind, const StepScalars& scalars, float* d_table, float* d_state,
                 int64_t dim, const int64_t* d_rows, const float* d_grads, int64_t n,
                 int64_t row_offset, void*) {
  if (n > 0) cpu::update_rows(kind, scalars, d_table, d_state, dim, d_rows, d_grads, n, row_offset);
}

// --- Segment sums ------------------------------------------------------------------

// The source rows the kernel reads: those of the positions of every id it
// does not skip (dst_offsets[u] < 0, or unique[u] == skip_row).
void check_src_offsets(const char* kernel, const UniqueIndex& index,
                       const SegmentLayout& layout, int64_t skip_row) {
  if (!layout.src_offsets) return;
  for (int64_t u = 0; u < index.num_unique; ++u) {
    if ((layout.dst_offsets && layout.dst_offsets[u] < 0) || index.unique[u] == skip_row) continue;
    for (int32_t k = index.offsets[u]; k < index.offsets[u + 1]; ++k)
      check_row_offset(kernel, "src_offsets", layout.src_offsets[index.positions[k]],
                       index.positions[k]);
  }
}

// The workspace is not needed on the host (the CPU kernel sums in position
// order without partial rows); it stays untouched.
void segment_sum(const float* d_src, int64_t dim, const UniqueIndex& index,
                 const SegmentLayout& layout, bool scale_by_count, float* d_dst, SegmentWorkspace*,
                 void*) {
  if (index.num_unique == 0) return;
  if (dim % 4 == 0 && aligned16(d_src) && aligned16(d_dst)) {
    check_src_offsets("segment_sum", index, layout, /*skip_row=*/-1);
    if (layout.dst_offsets)
      for (int64_t u = 0; u < index.num_unique; ++u)
        if (layout.dst_offsets[u] >= 0)
          check_row_offset("segment_sum", "dst_offsets", layout.dst_offsets[u], u);
  }
  cpu::segment_sum(d_src, dim, index, layout, scale_by_count, d_dst);
}

// cpu::segment_sum of every id but skip_row into a dense buffer, then
// cpu::update_rows of those ids: the documented "same result as
// cpu::segment_sum then cpu::update_rows".
void segment_sum_update(OptimizerKind kind, const StepScalars& scalars, float* d_table,
                        float* d_state, int64_t dim, int64_t row_offset, const float* d_src,
                        const UniqueIndex& index, const SegmentLayout& layout,
                        bool scale_by_count, int64_t skip_row, SegmentWorkspace*, void*) {
  EMBTRAIN_ASSERT(layout.dst_offsets == nullptr);
  if (index.num_unique == 0) return;
  // can_vectorize_update (warp_rows.cuh): Adagrad and Adam read their state
  // by column, so it must be aligned too.
  const bool state_by_column = kind == OptimizerKind::kAdagrad || kind == OptimizerKind::kAdam;
  if (dim % 4 == 0 && aligned16(d_table) && (!state_by_column || aligned16(d_state)) &&
      aligned16(d_src))
    check_src_offsets("segment_sum_update", index, layout, skip_row);
  std::vector<int64_t> dst(static_cast<size_t>(index.num_unique)), rows;
  for (int64_t u = 0; u < index.num_unique; ++u) {
    if (index.unique[u] == skip_row) {
      dst[u] = -1;
      continue;
    }
    dst[u] = static_cast<int64_t>(rows.size()) * dim;
    rows.push_back(index.unique[u]);
  }
  SegmentLayout l = layout;
  l.dst_offsets = dst.data();
  std::vector<float> grads(rows.size() * static_cast<size_t>(dim));
  cpu::segment_sum(d_src, dim, index, l, scale_by_count, grads.data());
  if (!rows.empty())
    cpu::update_rows(kind, scalars, d_table, d_state, dim, rows.data(), grads.data(),
                     static_cast<int64_t>(rows.size()), row_offset);
}

// --- Wire --------------------------------------------------------------------------

void pack_wire(const float* d_src, int64_t n, CommPrecision p, float scale, void* d_wire, void*) {
  cpu::pack_wire(d_src, n, p, scale, d_wire);
}
void unpack_wire(const void* d_wire, int64_t n, CommPrecision p, float scale, float* d_dst,
                 void*) {
  cpu::unpack_wire(d_wire, n, p, scale, d_dst);
}
void round_wire(float* d_data, int64_t n, CommPrecision p, float scale, void*) {
  cpu::round_wire(d_data, n, p, scale);
}

void pool_bags(const BagPooling& bags, const float* d_rows, const int64_t* d_ids, int64_t skip_id,
               float* d_out, void*) {
  cpu::pool_bags(bags, d_rows, d_ids, skip_id, d_out);
}

void unpool_bags(const BagPooling& bags, const float* d_grad, int64_t n, int64_t first_unbagged,
                 float* d_grad_rows, void*) {
  // The host's word for where the bags end must be the device's offsets.
  if (first_unbagged != bags.offsets[bags.num_bags] || first_unbagged > n)
    contract_violation("unpool_bags", "first_unbagged = ", first_unbagged, " but offsets[",
                       bags.num_bags, "] = ", bags.offsets[bags.num_bags], " of n = ", n);
  cpu::unpool_bags(bags, d_grad, n, d_grad_rows);
}

}  // namespace cuda
}  // namespace embtrain
