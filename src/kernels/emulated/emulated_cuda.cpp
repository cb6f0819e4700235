// An emulated CUDA backend, built only for tests: every function of
// kernels_cuda.hpp and device_memory.hpp, plus make_nccl_communicator and
// make_cuda_copier, on the host, with "device" memory that is ordinary host
// memory. Linked into a test binary together with src/engine/cuda_step.cpp,
// it lets the GPU engine's host-side protocol (buffer layouts, counts,
// offsets, which kernel runs on which buffer) run in CI, where there is no
// GPU, against the single-process CPU reference. The kernels themselves are
// checked against the CPU kernels by tests/cuda on a real GPU.
//
// Each function keeps the contract documented in kernels_cuda.hpp and
// delegates to the CPU kernel (kernels_cpu.hpp) where there is one. What
// the emulation cannot show: stream ordering. Every "asynchronous" call here
// is done when it returns, so a missing synchronize, a host read of device
// memory or a pageable buffer reused too early goes unnoticed; those need a
// review of cuda_step.cpp, or a run on a GPU.
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

#include "embtrain/communicator.hpp"
#include "embtrain/device_memory.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/kernels_cpu.hpp"
#include "embtrain/kernels_cuda.hpp"
#include "embtrain/nccl_communicator.hpp"
#include "embtrain/staged_communicator.hpp"

#if !defined(EMBTRAIN_EMULATED_CUDA)
#error "emulated_cuda.cpp is a test stand-in for the CUDA backend (EMBTRAIN_EMULATED_CUDA)"
#endif

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

// The CPU index of a device index: the four arrays copied into vectors.
void to_cpu_index(const DeviceUniqueIndex& index, cpu::UniqueIndex* out) {
  const auto nu = static_cast<size_t>(index.num_unique), n = static_cast<size_t>(index.n);
  out->unique.assign(index.unique, index.unique + nu);
  out->inverse.assign(index.inverse, index.inverse + n);
  out->offsets.assign(index.offsets, index.offsets + nu + 1);
  out->positions.assign(index.positions, index.positions + n);
}

cpu::SegmentLayout to_cpu_layout(const SegmentLayout& layout) {
  cpu::SegmentLayout l;
  l.src_offsets = layout.src_offsets;
  l.weights = layout.weights;
  l.dst_offsets = layout.dst_offsets;
  return l;
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
DeviceUniqueIndex unique_ids(const int64_t* d_ids, int64_t n, int64_t id_bound, UniqueWorkspace* ws,
                             void*) {
  EMBTRAIN_REQUIRE(n < (int64_t{1} << 31), "a batch holds ", n,
                   " ids; one table's batch per rank is limited to 2^31 - 1");
  // The real sort looks at the bits id_bound needs and no others.
  for (int64_t i = 0; i < n; ++i)
    if (d_ids[i] < 0 || d_ids[i] >= id_bound)
      contract_violation("unique_ids", "id ", d_ids[i], " at position ", i, " is outside [0, ",
                         id_bound, ")");
  thread_local cpu::UniqueIndex scratch;  // sort buffers kept between calls
  cpu::unique_ids(d_ids, n, id_bound, &scratch);

  const UniquePlan plan = unique_plan(n, 0);
  DeviceUniqueIndex index = ws->lay_out(plan, n);
  index.num_unique = scratch.num_unique();
  std::copy(scratch.unique.begin(), scratch.unique.end(), index.unique);
  std::copy(scratch.inverse.begin(), scratch.inverse.end(), index.inverse);
  std::copy(scratch.offsets.begin(), scratch.offsets.end(), index.offsets);
  std::copy(scratch.positions.begin(), scratch.positions.end(), index.positions);
  if (n == 0) index.offsets[0] = 0;  // whatever the CPU kernel leaves for no ids
  return index;
}

void bucketize(const int64_t* d_unique, int64_t num_unique, const int64_t* d_bounds,
               int64_t num_bounds, int64_t* d_begin, void*) {
  for (int64_t d = 0; d < num_bounds; ++d)
    d_begin[d] = std::lower_bound(d_unique, d_unique + num_unique, d_bounds[d]) - d_unique;
}

void block_offsets(const int64_t* d_starts, const int64_t* d_base, int64_t num_blocks, int64_t dim,
                   int64_t n, int64_t* d_out, void*) {
  for (int64_t k = 0; k < n; ++k) {
    // The last block b with starts[b] <= k, as the kernel's binary search.
    const int64_t b = std::upper_bound(d_starts, d_starts + num_blocks, k) - d_starts - 1;
    EMBTRAIN_ASSERT(b >= 0);
    d_out[k] = d_base[b] + (k - d_starts[b]) * dim;
  }
}

void segment_counts(const int32_t* d_offsets, int64_t num_unique, int32_t* d_counts, void*) {
  for (int64_t u = 0; u < num_unique; ++u) d_counts[u] = d_offsets[u + 1] - d_offsets[u];
}

// --- Rows ------------------------------------------------------------------------

void gather_rows(const float* d_table, int64_t dim, const int64_t* d_index, int64_t n,
                 int64_t row_offset, float* d_out, void*) {
  if (n > 0) cpu::gather_rows(d_table, dim, d_index, n, row_offset, d_out);
}

void gather_rows_at(const float* d_base, const int64_t* d_offsets, const int32_t* d_index,
                    int64_t n, int64_t dim, float* d_out, void*) {
  if (n == 0) return;
  if (dim % 4 == 0 && aligned16(d_base) && aligned16(d_out))
    for (int64_t i = 0; i < n; ++i)
      check_row_offset("gather_rows_at", "offsets", d_offsets[d_index[i]], d_index[i]);
  cpu::gather_rows_at(d_base, d_offsets, d_index, n, dim, d_out);
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
void check_src_offsets(const char* kernel, const DeviceUniqueIndex& index,
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
void segment_sum(const float* d_src, int64_t dim, const DeviceUniqueIndex& index,
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
  thread_local cpu::UniqueIndex cpu_index;
  to_cpu_index(index, &cpu_index);
  cpu::segment_sum(d_src, dim, cpu_index, to_cpu_layout(layout), scale_by_count, d_dst);
}

// cpu::segment_sum of every id but skip_row into a dense buffer, then
// cpu::update_rows of those ids: the documented "same result as
// cpu::segment_sum then cpu::update_rows".
void segment_sum_update(OptimizerKind kind, const StepScalars& scalars, float* d_table,
                        float* d_state, int64_t dim, int64_t row_offset, const float* d_src,
                        const DeviceUniqueIndex& index, const SegmentLayout& layout,
                        bool scale_by_count, int64_t skip_row, SegmentWorkspace*, void*) {
  EMBTRAIN_ASSERT(layout.dst_offsets == nullptr);
  if (index.num_unique == 0) return;
  // can_vectorize_update (warp_rows.cuh): Adagrad and Adam read their state
  // by column, so it must be aligned too.
  const bool state_by_column = kind == OptimizerKind::kAdagrad || kind == OptimizerKind::kAdam;
  if (dim % 4 == 0 && aligned16(d_table) && (!state_by_column || aligned16(d_state)) &&
      aligned16(d_src))
    check_src_offsets("segment_sum_update", index, layout, skip_row);
  thread_local cpu::UniqueIndex cpu_index;
  to_cpu_index(index, &cpu_index);
  std::vector<int64_t> dst(static_cast<size_t>(index.num_unique)), rows;
  for (int64_t u = 0; u < index.num_unique; ++u) {
    if (index.unique[u] == skip_row) {
      dst[u] = -1;
      continue;
    }
    dst[u] = static_cast<int64_t>(rows.size()) * dim;
    rows.push_back(index.unique[u]);
  }
  cpu::SegmentLayout l = to_cpu_layout(layout);
  l.dst_offsets = dst.data();
  std::vector<float> grads(rows.size() * static_cast<size_t>(dim));
  cpu::segment_sum(d_src, dim, cpu_index, l, scale_by_count, grads.data());
  if (!rows.empty())
    cpu::update_rows(kind, scalars, d_table, d_state, dim, rows.data(), grads.data(),
                     static_cast<int64_t>(rows.size()), row_offset);
}

}  // namespace cuda

// --- Data communicators -------------------------------------------------------------

// "Device" pointers are host pointers, so the staged path with memcpy is
// exactly the CUDA copier's semantics.
std::unique_ptr<DeviceCopier> make_cuda_copier(void*) { return make_memcpy_copier(); }

// NCCL's contract (collectives on device buffers over the ranks of
// `control`) met by the staged communicator on a fresh MPI communicator of
// its own. Its calls block, which an enqueue-only NCCL call may too.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& control, void*) {
  std::unique_ptr<Communicator> host = make_mpi_communicator();
  EMBTRAIN_REQUIRE(host->size() == control.size() && host->rank() == control.rank(),
                   "emulated NCCL: the control communicator must span MPI_COMM_WORLD");
  return make_staged_communicator(std::move(host), make_memcpy_copier());
}

}  // namespace embtrain
