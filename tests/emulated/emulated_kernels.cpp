// An emulated CUDA device, built only for tests: every function of
// cuda_kernels.hpp and device_memory.hpp on the host, with "device" memory
// that is ordinary host memory (emulated_comm.cpp stands in for NCCL).
// Linked into a test binary together with the
// GPU engine (src/engine/cuda_backend.cpp, cuda_engine.cpp), it lets the GPU
// engine's host side (buffer layouts, counts, offsets, which kernel runs on
// which buffer) run in CI, where there is no GPU, against the
// single-process CPU reference. The kernels themselves are checked against
// the CPU kernels by tests/cuda on a real GPU.
//
// Each function keeps the contract documented in kernels_cuda.hpp and
// delegates to the CPU kernel (kernels_cpu.hpp) where there is one, except
// the kernels that add floats up: segment_sum, segment_sum_update,
// renorm_rows and update_rows transcribe the CUDA kernels' loops
// (segment_sum.cu, renorm.cu, warp_rows.cuh: chunks, partial rows, a warp's
// 32 lanes and its butterfly), so that tests comparing them with the CPU
// kernels bit for bit check that the CPU adds in the GPU's order
// (embtrain/sum_order.hpp) rather than comparing the CPU with itself.
//
// Asynchrony as a GPU has it: work "enqueued on a stream" (every kernel,
// copy_on_device, memset_device, a copy to or from pinned host memory)
// runs later, in the order it was enqueued, when the host waits for the
// device: a synchronize, a copy into pageable host memory (cudaMemcpyAsync
// returns only once that is done), a call whose result the host reads
// (unique_ids' count, list_bag_entries' host arrays) and freeing memory
// (cudaFree waits for the device); the staged communicator's copies are
// those of src/comm/cuda_copier.cpp, enqueued too. So a host read of a result before its wait, or a
// pinned buffer refilled before the copy out of it ran, gives wrong values
// here as it may on a GPU. Copies from pageable host memory read it at
// once, as CUDA's do. What it still cannot show: two streams running beside
// each other (there is one queue, in order), the real NCCL's side stream,
// and a host read of device memory (here it is host memory).
// EMBTRAIN_EMULATED_SYNC=1 runs every call when it is made instead.
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
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include "embtrain/errors.hpp"
#include "embtrain/random.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cuda/cuda_kernels.hpp"
#include "kernels/cuda/device_memory.hpp"

namespace embtrain {
namespace cuda {

namespace {

std::atomic<int64_t> g_allocations{0};

// The device's queue of enqueued work (see the top), whether it is
// running (a device function called meanwhile, by a reserve inside queued
// work, runs at once, in its place in the order), and an error of queued
// work that no one could be told of yet.
std::vector<std::function<void()>> g_queue;
bool g_running = false;
std::exception_ptr g_error;

bool synchronous() {
  static const bool sync = [] {
    const char* v = std::getenv("EMBTRAIN_EMULATED_SYNC");
    return v && std::string(v) == "1";
  }();
  return sync;
}

// Enqueues `work` (or runs it, see above).
void later(std::function<void()> work) {
  if (synchronous() || g_running) return work();
  g_queue.push_back(std::move(work));
}

// Pinned host allocations (start -> bytes): copies to and from them are
// enqueued, as CUDA's are.
std::map<uintptr_t, size_t> g_pinned;

bool is_pinned(const void* h) {
  const auto p = reinterpret_cast<uintptr_t>(h);
  auto it = g_pinned.upper_bound(p);
  if (it == g_pinned.begin()) return false;
  --it;
  return p < it->first + it->second;
}

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

// Runs the enqueued work, in order: the host waits for the device. Throws
// the first error of work run so far (also one kept by free_memory).
void finish_device_work() {
  if (g_running) return;  // called by enqueued work: everything before it has run
  if (g_error) std::rethrow_exception(std::exchange(g_error, nullptr));
  g_running = true;
  try {
    for (size_t i = 0; i < g_queue.size(); ++i) g_queue[i]();
  } catch (...) {
    g_queue.clear();
    g_running = false;
    throw;
  }
  g_queue.clear();
  g_running = false;
}

}  // namespace

// --- Devices -------------------------------------------------------------------

int device_count() { return 1; }

std::string device_description(int device) {
  EMBTRAIN_REQUIRE(device == 0, "emulated CUDA: no device ", device);
  return "emulated CUDA device (host memory)";
}

// One emulated device per host: every rank of a host shares it.
std::string device_uuid(int device) {
  EMBTRAIN_REQUIRE(device == 0, "emulated CUDA: no device ", device);
  return "emulated";
}

// The device's memory is the host's: what is available of it, or, when
// EMBTRAIN_EMULATED_DEVICE_MEMORY gives bytes, a device that small (and
// empty), so that tests can see a run refused.
void memory_info(size_t* free_bytes, size_t* total_bytes) {
  if (const char* size = std::getenv("EMBTRAIN_EMULATED_DEVICE_MEMORY")) {
    *free_bytes = *total_bytes = static_cast<size_t>(std::strtoull(size, nullptr, 10));
    return;
  }
  const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  *free_bytes = static_cast<size_t>(sysconf(_SC_AVPHYS_PAGES)) * page;
  *total_bytes = static_cast<size_t>(sysconf(_SC_PHYS_PAGES)) * page;
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

void* allocate_memory(MemoryKind kind, size_t bytes) {
  void* p = allocate(bytes);
  if (kind == MemoryKind::kPinned) g_pinned[reinterpret_cast<uintptr_t>(p)] = bytes;
  return p;
}

// Waits for the device first, as cudaFree does (not for null, as ours
// does not call it then). An error of the work run meanwhile is kept for
// the next wait to report, as CUDA keeps a launch's.
void free_memory(MemoryKind kind, void* p) noexcept {
  if (!p) return;
  try {
    finish_device_work();
  } catch (...) {
    g_error = std::current_exception();
  }
  if (kind == MemoryKind::kPinned) g_pinned.erase(reinterpret_cast<uintptr_t>(p));
  std::free(p);
}

// --- Streams and copies (enqueued, see the top) -------------------------------------

// A non-null handle that is never dereferenced, so code that passes it on
// looks as it does with a real stream.
Stream::Stream() : stream_(this) {}
Stream::~Stream() = default;
void Stream::synchronize() const { finish_device_work(); }

// From pinned memory when the copy runs; from pageable memory, read now (CUDA
// stages it before it returns).
void copy_to_device(void* d_dst, const void* h_src, size_t bytes, void*) {
  if (bytes == 0) return;
  if (is_pinned(h_src)) return later([=] { std::memcpy(d_dst, h_src, bytes); });
  auto staged = std::make_shared<std::vector<char>>(static_cast<const char*>(h_src),
                                                    static_cast<const char*>(h_src) + bytes);
  later([=] { std::memcpy(d_dst, staged->data(), bytes); });
}
// Into pinned memory when the copy runs; into pageable memory, once the
// device has done everything before it (CUDA returns then).
void copy_to_host(void* h_dst, const void* d_src, size_t bytes, void*) {
  if (bytes == 0) return;
  if (is_pinned(h_dst)) return later([=] { std::memcpy(h_dst, d_src, bytes); });
  finish_device_work();
  std::memcpy(h_dst, d_src, bytes);
}
void copy_on_device(void* d_dst, const void* d_src, size_t bytes, void*) {
  later([=] {
    if (bytes == 0) return;
    const auto dst = reinterpret_cast<uintptr_t>(d_dst), src = reinterpret_cast<uintptr_t>(d_src);
    if (dst < src + bytes && src < dst + bytes)
      contract_violation("copy_on_device", "source and destination of ", bytes,
                         " bytes overlap (undefined for cudaMemcpyAsync)");
    std::memcpy(d_dst, d_src, bytes);
  });
}
void memset_device(void* d_dst, int byte_value, size_t bytes, void*) {
  later([=] {
    if (bytes > 0) std::memset(d_dst, byte_value, bytes);
  });
}
void synchronize(void*) { finish_device_work(); }

void set_device(int device) {
  EMBTRAIN_REQUIRE(device == 0, "emulated CUDA: set_device(", device, ") with one device");
}

// --- Ids -----------------------------------------------------------------------

void widen_ids(const int32_t* d_in, int64_t n, int64_t* d_out, void*) {
  later([=] {
    std::copy(d_in, d_in + n, d_out);
  });
}

void find_bad_id(const int64_t* d_ids, int64_t n, int64_t bound, int64_t* d_result, void*) {
  later([=] {
    find_bad_id_impl(d_ids, n, bound, d_result);
  });
}
void find_bad_id(const int32_t* d_ids, int64_t n, int64_t bound, int64_t* d_result, void*) {
  later([=] {
    find_bad_id_impl(d_ids, n, bound, d_result);
  });
}

// cpu::unique_ids, then its four arrays into the workspace's buffer at the
// offsets the CUDA kernel uses, so they live (and get overwritten) where
// the real ones do: valid until the next call on the same workspace.
UniqueIndex unique_ids(const int64_t* d_ids, int64_t n, int64_t id_bound, UniqueWorkspace* ws,
                       void*) {
  EMBTRAIN_REQUIRE(n < (int64_t{1} << 31), "a batch holds ", n,
                   " ids; one table's batch per rank is limited to 2^31 - 1");
  if (n == 0) {  // the real one enqueues offsets[0] = 0 and waits for nothing
    const UniquePlan plan = unique_plan(0, 0);
    ws->buffer.reserve(plan.total);
    auto* offsets = ws->buffer.as<int32_t>(plan.offsets);
    later([=] { offsets[0] = 0; });
    return UniqueIndex{ws->buffer.as<int64_t>(plan.unique), ws->buffer.as<int32_t>(plan.inverse),
                       offsets, ws->buffer.as<int32_t>(plan.positions), 0, 0};
  }
  finish_device_work();  // the count comes to the host
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
  return UniqueIndex{unique, inverse, offsets, positions, scratch.num_unique(), n};
}

void cyclic_keys(const int64_t* d_ids, int64_t n, int64_t ranks, int64_t stride, int64_t* d_keys,
                 void*) {
  later([=] {
    cpu::cyclic_keys(d_ids, n, ranks, stride, d_keys);
  });
}

void shift_ids(const int64_t* d_src, int64_t n, int64_t delta, int64_t* d_dst, void*) {
  later([=] {
    cpu::shift_ids(d_src, n, delta, d_dst);
  });
}

void take_ids(const int64_t* d_src, const int64_t* d_positions, int64_t n, int64_t* d_dst, void*) {
  later([=] {
    cpu::take_ids(d_src, d_positions, n, d_dst);
  });
}

void bucketize(const int64_t* d_unique, int64_t num_unique, const int64_t* d_bounds,
               int64_t num_bounds, int64_t* d_begin, void*) {
  later([=] {
    cpu::bucketize(d_unique, num_unique, d_bounds, num_bounds, d_begin);
  });
}

void block_offsets(const int64_t* d_starts, const int64_t* d_base, int64_t num_blocks, int64_t dim,
                   int64_t n, int64_t* d_out, void*) {
  later([=] {
    cpu::block_offsets(d_starts, d_base, num_blocks, dim, n, d_out);
  });
}

void segment_counts(const int32_t* d_offsets, int64_t num_unique, int32_t* d_counts, void*) {
  later([=] {
    cpu::segment_counts(d_offsets, num_unique, d_counts);
  });
}

// --- Rows ------------------------------------------------------------------------

void gather_rows(const float* d_table, int64_t dim, const int64_t* d_index, int64_t n,
                 int64_t row_offset, float* d_out, void*) {
  later([=] {
    if (n > 0) cpu::gather_rows(d_table, dim, d_index, n, row_offset, d_out);
  });
}

void gather_rows_packed(const float* d_table, int64_t dim, const int64_t* d_index, int64_t n,
                        int64_t row_offset, CommPrecision p, void* d_wire, void*) {
  later([=] {
    cpu::gather_rows_packed(d_table, dim, d_index, n, row_offset, p, d_wire);
  });
}

void gather_rows_rounded(const float* d_table, int64_t dim, const int64_t* d_index, int64_t n,
                         int64_t row_offset, CommPrecision p, float* d_out, void*) {
  later([=] {
    cpu::gather_rows_rounded(d_table, dim, d_index, n, row_offset, p, d_out);
  });
}

void expand_rows(const float* d_base, const int64_t* d_offsets, const int32_t* d_index, int64_t n,
                 int64_t dim, float* d_out, void*) {
  later([=] {
    if (n == 0) return;
    if (dim % 4 == 0 && aligned16(d_base) && aligned16(d_out))
      for (int64_t i = 0; i < n; ++i)
        check_row_offset("expand_rows", "offsets", d_offsets[d_index[i]], d_index[i]);
    cpu::expand_rows(d_base, d_offsets, d_index, n, dim, d_out);
  });
}

// --- The CUDA kernels' float sums, transcribed ------------------------------------
//
// A warp is an array of kWarpSize lane values; __shfl_xor_sync(v, offset)
// reads the value of lane ^ offset. `vec` is the N of the kernel's Vec<N>
// (4 on its float4 path, else 1), chosen as the kernel chooses it.

namespace {

// warp_sum / warp_max (warp_rows.cuh): the butterfly. Every lane ends with
// the same value; lane 0's is returned.
template <typename Combine>
float butterfly(std::array<float, kWarpSize> v, Combine combine) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    std::array<float, kWarpSize> other;
    for (int lane = 0; lane < kWarpSize; ++lane) other[lane] = v[lane ^ offset];
    for (int lane = 0; lane < kWarpSize; ++lane) v[lane] = combine(v[lane], other[lane]);
  }
  return v[0];
}

float add(float a, float b) { return a + b; }

// ordered_warp_sum<vec> (warp_rows.cuh) of term(j) over the columns of a row.
template <typename Term>
float warp_ordered_sum(int64_t dim, int vec, Term term) {
  std::array<float, kWarpSize> acc{};
  for (int lane = 0; lane < kWarpSize; ++lane)
    for (int64_t base = int64_t{lane} * kLaneColumns; base < dim; base += kWarpSize * kLaneColumns)
      for (int i = 0; i < kLaneColumns; i += vec)
        if (base + i < dim)
          for (int k = 0; k < vec; ++k) acc[lane] += term(base + i + k);
  return butterfly(acc, add);
}

// warp_row_norm (renorm.cu).
float warp_row_norm(const float* row, int64_t dim, float p) {
  if (p == INFINITY) {
    std::array<float, kWarpSize> acc{};
    for (int lane = 0; lane < kWarpSize; ++lane)
      for (int64_t base = int64_t{lane} * kLaneColumns; base < dim;
           base += kWarpSize * kLaneColumns)
        for (int i = 0; i < kLaneColumns && base + i < dim; ++i)
          acc[lane] = std::fmax(acc[lane], std::fabs(row[base + i]));
    return butterfly(acc, [](float a, float b) { return std::fmax(a, b); });
  }
  if (p == 1.f) return warp_ordered_sum(dim, 1, [&](int64_t j) { return std::fabs(row[j]); });
  if (p == 2.f)
    return std::sqrt(warp_ordered_sum(dim, 1, [&](int64_t j) { return row[j] * row[j]; }));
  const float acc =
      warp_ordered_sum(dim, 1, [&](int64_t j) { return std::pow(std::fabs(row[j]), p); });
  return std::pow(acc, 1.f / p);
}

// update_row_warp (warp_rows.cuh) of row w (state st) with gradient g.
void update_row_warp(OptimizerKind kind, const StepScalars& s, float* w, float* st,
                     const float* g, int64_t dim, int vec) {
  switch (kind) {
    case OptimizerKind::kSgd:
      for (int64_t j = 0; j < dim; ++j) sgd_element(w[j], g[j], s);
      break;
    case OptimizerKind::kAdagrad:
      for (int64_t j = 0; j < dim; ++j) adagrad_element(w[j], st[j], g[j], s);
      break;
    case OptimizerKind::kAdam:
      for (int64_t j = 0; j < dim; ++j) adam_element(w[j], st[j], st[dim + j], g[j], s);
      break;
    case OptimizerKind::kRowwiseAdagrad: {
      const float sq = warp_ordered_sum(dim, vec, [&](int64_t j) { return g[j] * g[j]; });
      const float rate = rowwise_adagrad_rate(st[0], sq, dim, s);
      for (int64_t j = 0; j < dim; ++j) w[j] -= rate * g[j];
      break;
    }
  }
}

bool update_vectorizes(OptimizerKind kind, int64_t dim, const float* table, const float* state) {
  const bool state_by_column = kind == OptimizerKind::kAdagrad || kind == OptimizerKind::kAdam;
  return dim % 4 == 0 && aligned16(table) && (!state_by_column || aligned16(state));
}

}  // namespace

void renorm_rows(float* d_table, int64_t dim, const int64_t* d_rows, int64_t n, int64_t row_offset,
                 float max_norm, float norm_type, void*) {
  later([=] {
    for (int64_t k = 0; k < n; ++k) {
      float* row = d_table + (d_rows[k] - row_offset) * dim;
      const float scale = renorm_scale(warp_row_norm(row, dim, norm_type), max_norm);
      if (scale == 1.f) continue;
      for (int64_t j = 0; j < dim; ++j) row[j] *= scale;
    }
  });
}

void update_rows(OptimizerKind kind, const StepScalars& scalars, float* d_table, float* d_state,
                 int64_t dim, const int64_t* d_rows, const float* d_grads, int64_t n,
                 int64_t row_offset, void*) {
  later([=] {
    const int vec =
        update_vectorizes(kind, dim, d_table, d_state) && aligned16(d_grads) ? 4 : 1;
    const int64_t width = optimizer_state_width(kind, dim);
    for (int64_t k = 0; k < n; ++k) {
      const int64_t r = d_rows[k] - row_offset;
      update_row_warp(kind, scalars, d_table + r * dim, d_state + r * width, d_grads + k * dim, dim,
                      vec);
    }
  });
}

// --- Segment sums ------------------------------------------------------------------

namespace {

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

// reduce<kUpdate> of segment_sum.cu, its three kernels in turn, with the
// chunk arrays and partial rows where segment_plan puts them in the
// workspace. `up` null: store the sums at dst (segment_sum); else apply
// the update to the rows unique[u] - row_offset.
struct UpdateTarget {
  OptimizerKind kind;
  StepScalars scalars;
  float* table;
  float* state;
  int64_t row_offset;
};

// The chunk arrays and partial rows in the workspace, reserved when the
// call is made, as the real reduce does (a reserve that grows the buffer
// waits for the work still using it).
struct ReduceSpace {
  int32_t* chunk_counts;
  int32_t* chunk_start;
  float* partials;
  int64_t max_chunks;
};

ReduceSpace reserve_reduce(const UniqueIndex& index, int64_t dim, SegmentWorkspace* ws) {
  const SegmentPlan plan = segment_plan(index.n, index.num_unique, dim, /*cub_temp_bytes=*/0);
  ws->buffer.reserve(plan.total);
  return {ws->buffer.as<int32_t>(plan.chunk_counts), ws->buffer.as<int32_t>(plan.chunk_start),
          ws->buffer.as<float>(plan.partials), plan.max_chunks};
}

void reduce(const float* src, int64_t dim, const UniqueIndex& index, const SegmentLayout& layout,
            bool scale_by_count, int64_t skip_row, float* dst, const UpdateTarget* up, int vec,
            const ReduceSpace& space) {
  const int64_t num_unique = index.num_unique;
  const int32_t* offsets = index.offsets;
  const int32_t* positions = index.positions;
  auto skipped = [&](int64_t u) {
    return (layout.dst_offsets && layout.dst_offsets[u] < 0) || index.unique[u] == skip_row;
  };
  auto src_row = [&](int32_t p) {
    return src + (layout.src_offsets ? layout.src_offsets[p] : int64_t{p} * dim);
  };
  int32_t* chunk_counts = space.chunk_counts;
  int32_t* chunk_start = space.chunk_start;
  float* partials = space.partials;

  // count_chunks_kernel, then the exclusive scan.
  for (int64_t u = 0; u <= num_unique; ++u)
    chunk_counts[u] = u == num_unique || skipped(u)
                          ? 0
                          : static_cast<int32_t>(chunks_for_count(offsets[u + 1] - offsets[u]));
  int32_t total = 0;
  for (int64_t u = 0; u <= num_unique; ++u) {
    chunk_start[u] = total;
    total += chunk_counts[u];
  }
  if (chunk_start[num_unique] > space.max_chunks)
    contract_violation("segment_sum", chunk_start[num_unique], " chunks, more than the ",
                       space.max_chunks, " partial rows reserved (max_chunks)");

  // sum_positions: the rows of sorted positions [begin, end) added in order,
  // the first copied, into out (all columns at once: each column's order is
  // the kernel's).
  auto sum_positions = [&](int32_t begin, int32_t end, float* out) {
    std::copy(src_row(positions[begin]), src_row(positions[begin]) + dim, out);
    for (int32_t k = begin + 1; k < end; ++k) {
      const float* row = src_row(positions[k]);
      for (int64_t j = 0; j < dim; ++j) out[j] += row[j];
    }
  };

  // sum_chunks_kernel: chunk c of the id whose chunks hold it.
  for (int64_t c = 0; c < chunk_start[num_unique]; ++c) {
    const int64_t u =
        std::upper_bound(chunk_start, chunk_start + num_unique + 1, c) - chunk_start - 1;
    const int32_t begin = offsets[u] + static_cast<int32_t>((c - chunk_start[u]) * kChunkPositions);
    const int32_t end = static_cast<int32_t>(
        std::min<int64_t>(int64_t{begin} + kChunkPositions, offsets[u + 1]));
    sum_positions(begin, end, partials + c * dim);
  }

  // reduce_segments_kernel: partials in chunk order, or the positions.
  std::vector<float> g(static_cast<size_t>(dim));
  for (int64_t u = 0; u < num_unique; ++u) {
    if (skipped(u)) continue;
    const int32_t first = chunk_start[u], last = chunk_start[u + 1];
    if (first == last) {
      sum_positions(offsets[u], offsets[u + 1], g.data());
    } else {
      std::copy(partials + first * dim, partials + (first + 1) * dim, g.begin());
      for (int32_t c = first + 1; c < last; ++c)
        for (int64_t j = 0; j < dim; ++j) g[j] += partials[c * dim + j];
    }
    if (scale_by_count) {  // inverse_count: integer counts, any order
      long long count = offsets[u + 1] - offsets[u];
      if (layout.weights) {
        count = 0;
        for (int32_t k = offsets[u]; k < offsets[u + 1]; ++k) count += layout.weights[positions[k]];
      }
      const float inv = 1.f / static_cast<float>(count);
      for (float& x : g) x *= inv;
    }
    if (up) {
      const int64_t r = index.unique[u] - up->row_offset;
      update_row_warp(up->kind, up->scalars, up->table + r * dim,
                      up->state + r * optimizer_state_width(up->kind, dim), g.data(), dim, vec);
    } else {
      std::copy(g.begin(), g.end(), dst + (layout.dst_offsets ? layout.dst_offsets[u] : u * dim));
    }
  }
}

}  // namespace

void segment_sum(const float* d_src, int64_t dim, const UniqueIndex& index,
                 const SegmentLayout& layout, bool scale_by_count, float* d_dst,
                 SegmentWorkspace* ws, void*) {
  if (index.num_unique == 0) return;
  const ReduceSpace space = reserve_reduce(index, dim, ws);
  later([=] {
    if (dim % 4 == 0 && aligned16(d_src) && aligned16(d_dst)) {
      check_src_offsets("segment_sum", index, layout, /*skip_row=*/-1);
      if (layout.dst_offsets)
        for (int64_t u = 0; u < index.num_unique; ++u)
          if (layout.dst_offsets[u] >= 0)
            check_row_offset("segment_sum", "dst_offsets", layout.dst_offsets[u], u);
    }
    reduce(d_src, dim, index, layout, scale_by_count, /*skip_row=*/-1, d_dst, nullptr, /*vec=*/1,
           space);
  });
}

void segment_sum_update(OptimizerKind kind, const StepScalars& scalars, float* d_table,
                        float* d_state, int64_t dim, int64_t row_offset, const float* d_src,
                        const UniqueIndex& index, const SegmentLayout& layout,
                        bool scale_by_count, int64_t skip_row, SegmentWorkspace* ws, void*) {
  EMBTRAIN_ASSERT(layout.dst_offsets == nullptr);
  if (index.num_unique == 0) return;
  const ReduceSpace space = reserve_reduce(index, dim, ws);
  later([=] {
    const bool vectorize = update_vectorizes(kind, dim, d_table, d_state) && aligned16(d_src);
    if (vectorize) check_src_offsets("segment_sum_update", index, layout, skip_row);
    const UpdateTarget up{kind, scalars, d_table, d_state, row_offset};
    reduce(d_src, dim, index, layout, scale_by_count, skip_row, nullptr, &up, vectorize ? 4 : 1,
           space);
  });
}

// --- Wire --------------------------------------------------------------------------

void pack_wire(const float* d_src, int64_t n, CommPrecision p, float scale, void* d_wire, void*) {
  later([=] {
    cpu::pack_wire(d_src, n, p, scale, d_wire);
  });
}
void unpack_wire(const void* d_wire, int64_t n, CommPrecision p, float scale, float* d_dst,
                 void*) {
  later([=] {
    cpu::unpack_wire(d_wire, n, p, scale, d_dst);
  });
}
void round_wire(float* d_data, int64_t n, CommPrecision p, float scale, void*) {
  later([=] {
    cpu::round_wire(d_data, n, p, scale);
  });
}

// pool.cu's kernels transcribed: a warp per bag, lane l building the
// columns l, l + 32, ... from the bag's positions in order.
void pool_bags(const BagPooling& bags, const PositionRows& d_rows, const int64_t* d_ids,
               int64_t skip_id, float* d_out, void*) {
  later([=] {
    const int64_t dim = bags.dim;
    for (int64_t b = 0; b < bags.num_bags; ++b)
      for (int lane = 0; lane < kWarpSize; ++lane)
        for (int64_t j = lane; j < dim; j += kWarpSize) {
          float acc = 0.f;
          int32_t arg = -1, count = 0;
          for (int64_t p = bags.offsets[b]; p < bags.offsets[b + 1]; ++p) {
            if (d_ids[p] == skip_id) continue;
            const float w = bags.weights ? bags.weights[p] : 1.f;
            pool_column(bags.mode, d_rows.row(p, dim)[j], w, static_cast<int32_t>(p), count == 0,
                        &acc, &arg);
            ++count;
          }
          d_out[b * dim + j] = finish_column(bags.mode, acc, count);
          if (bags.argmax) bags.argmax[b * dim + j] = arg;
          if (j == 0) bags.counts[b] = count;
        }
  });
}

void unpool_bags(const BagPooling& bags, const float* d_grad, int64_t n, int64_t first_unbagged,
                 float* d_grad_rows, void*) {
  later([=] {
    // The host's word for where the bags end must be the device's offsets.
    if (first_unbagged != bags.offsets[bags.num_bags] || first_unbagged > n)
      contract_violation("unpool_bags", "first_unbagged = ", first_unbagged, " but offsets[",
                         bags.num_bags, "] = ", bags.offsets[bags.num_bags], " of n = ", n);
    const int64_t dim = bags.dim;
    for (int64_t b = 0; b < bags.num_bags; ++b)
      for (int64_t p = bags.offsets[b]; p < bags.offsets[b + 1]; ++p)
        for (int lane = 0; lane < kWarpSize; ++lane)
          for (int64_t j = lane; j < dim; j += kWarpSize)
            d_grad_rows[p * dim + j] =
                unpool_column(bags.mode, d_grad[b * dim + j], bags.weights ? bags.weights[p] : 1.f,
                              bags.counts[b], static_cast<int32_t>(p),
                              bags.argmax ? bags.argmax[b * dim + j] : -1);
    std::fill(d_grad_rows + first_unbagged * dim, d_grad_rows + n * dim, 0.f);
  });
}

void share_bag_grads(const BagPooling& bags, const float* d_grad, int64_t n,
                     int64_t first_unbagged, float* d_grad_rows, int64_t* d_src_offsets, void*) {
  later([=] {
    if (first_unbagged != bags.offsets[bags.num_bags] || first_unbagged > n)
      contract_violation("share_bag_grads", "first_unbagged = ", first_unbagged, " but offsets[",
                         bags.num_bags, "] = ", bags.offsets[bags.num_bags], " of n = ", n);
    if (!bag_grads_shared(bags))
      contract_violation("share_bag_grads", "bags whose positions take different gradients (mode ",
                         static_cast<int>(bags.mode), bags.weights ? ", weighted" : "", ")");
    const int64_t dim = bags.dim;
    for (int64_t b = 0; b < bags.num_bags; ++b) {
      for (int lane = 0; lane < kWarpSize; ++lane)
        for (int64_t j = lane; j < dim; j += kWarpSize)
          d_grad_rows[b * dim + j] =
              unpool_column(bags.mode, d_grad[b * dim + j], 1.f, bags.counts[b], 0, -1);
      for (int64_t p = bags.offsets[b]; p < bags.offsets[b + 1]; ++p) d_src_offsets[p] = b * dim;
    }
    std::fill(d_grad_rows + bags.num_bags * dim, d_grad_rows + (bags.num_bags + 1) * dim, 0.f);
    std::fill(d_src_offsets + first_unbagged, d_src_offsets + n, bags.num_bags * dim);
  });
}

// init.cu: the generator is random.hpp's, the kernel's element loop as it is.
void draw_normal_rows(uint64_t seed, int64_t first_row, int64_t row_stride, int64_t n, int64_t dim,
                      float scale, float* d_rows, void*) {
  later([=] {
    const int64_t total = n * dim;
    for (int64_t i = 0; i < total; ++i) {
      const int64_t k = i / dim, j = i - k * dim;
      d_rows[i] = random_normal(seed, static_cast<uint64_t>(first_row + k * row_stride),
                                static_cast<uint64_t>(j)) *
                  scale;
    }
  });
}

void fill_floats(float* d_data, int64_t n, float value, void*) {
  later([=] {
    std::fill_n(d_data, n, value);
  });
}

// --- Bags pooled at the owners -----------------------------------------------------

// owner_pool.cu's contracts (the CPU kernels otherwise): the owner slots
// ascend from 0 past every key; a block's slots run 0 .. rows - 1 in order
// (pool_partials launches `rows` partial rows and finds each one's run of
// entries) and its ids lie in [0, num_ids) (unpool_partials sorts them);
// an owner's partial rows have distinct bags (combine_partials and
// split_bag_grads give each a thread of its own). unpool_partials is the
// CUDA one's composition over this device's unique_ids and segment_sum,
// whose loops are the GPU's: bit-equal to cpu::unpool_partials only if the
// CPU adds in the GPU's order.
namespace {

void check_block(const char* kernel, const OwnerBlock& block) {
  for (int64_t e = 0; e < block.entries; ++e) {
    const int32_t prev = e == 0 ? -1 : block.slot[e - 1];
    if (e == 0 ? block.slot[e] != 0 : block.slot[e] != prev && block.slot[e] != prev + 1)
      contract_violation(kernel, "slot[", e, "] = ", block.slot[e], " after ", prev,
                         ": slots must run 0 .. rows - 1 in entry order");
    if (block.idx[e] < 0 || block.idx[e] >= block.num_ids)
      contract_violation(kernel, "idx[", e, "] = ", block.idx[e], " is outside [0, ",
                         block.num_ids, ")");
  }
  if (block.entries > 0 && block.slot[block.entries - 1] != block.rows - 1)
    contract_violation(kernel, block.rows, " partial rows, but the last entry's slot is ",
                       block.slot[block.entries - 1]);
}

void check_partial_bags(const char* kernel, const RequesterPartials& p) {
  std::vector<int> last(static_cast<size_t>(p.num_bags), -1);
  for (int d = 0; d < p.num_owners; ++d)
    for (int64_t k = p.partial_begin[d]; k < p.partial_begin[d + 1]; ++k) {
      const int64_t b = p.partial_bag[k];
      if (b < 0 || b >= p.num_bags || last[b] == d)
        contract_violation(kernel, "owner ", d, "'s partial row ", k, " has bag ", b,
                           ": outside [0, ", p.num_bags, ") or that owner's already");
      last[b] = d;
    }
}

}  // namespace

void list_bag_entries(const BagPooling& bags, const int64_t* d_ids, int64_t skip_id,
                      const int32_t* d_inverse, const int64_t* owner_slots, int owners,
                      BagEntries* out, int64_t* entry_begin, int64_t* partial_begin,
                      OwnerPoolWorkspace*, void*) {
  if (bags.num_bags * owners == 0) {  // no bags, no entries: the real one waits for nothing
    std::fill(entry_begin, entry_begin + owners + 1, 0);
    std::fill(partial_begin, partial_begin + owners + 1, 0);
    return;
  }
  finish_device_work();  // the begins come to the host
  if (owner_slots[0] != 0)
    contract_violation("list_bag_entries", "owner_slots[0] = ", owner_slots[0], ", not 0");
  for (int d = 0; d < owners; ++d)
    if (owner_slots[d + 1] < owner_slots[d])
      contract_violation("list_bag_entries", "owner_slots descend at ", d);
  if (bags.num_bags * owners >= (int64_t{1} << 31) - 1)
    contract_violation("list_bag_entries", bags.num_bags, " bags x ", owners, " owners");
  for (int64_t p = 0; p < (bags.num_bags > 0 ? bags.offsets[bags.num_bags] : 0); ++p)
    if (d_ids[p] != skip_id && (d_inverse[p] < 0 || d_inverse[p] >= owner_slots[owners]))
      contract_violation("list_bag_entries", "inverse[", p, "] = ", d_inverse[p],
                         " is past the owners' keys (", owner_slots[owners], ")");
  cpu::list_bag_entries(bags, d_ids, skip_id, d_inverse, owner_slots, owners, out, entry_begin,
                        partial_begin);
}

void pool_partials(const OwnerBlock& block, OwnerPoolWorkspace*, void*) {
  later([=] {
    check_block("pool_partials", block);
    cpu::pool_partials(block);
  });
}

void unpool_partials(const OwnerBlock& block, OwnerPoolWorkspace* ws, void* stream) {
  const int64_t dim = block.dim, n = block.entries;
  if (n == 0) {  // the kept rows zeroed; the real one waits for nothing
    later([=] { std::fill(block.kept, block.kept + block.num_ids * dim, 0.f); });
    return;
  }
  finish_device_work();  // as the real one's unique_ids waits for its count
  check_block("unpool_partials", block);
  std::fill(block.kept, block.kept + block.num_ids * dim, 0.f);
  // entry_terms_kernel, into the workspace's buffers as the real one.
  ByteLayout layout;
  const size_t keys_at = layout.add(static_cast<size_t>(n) * sizeof(int64_t));
  const size_t dst_at = layout.add(static_cast<size_t>(n) * sizeof(int64_t));
  ws->buffer.reserve(layout.total());
  ws->terms.reserve(static_cast<size_t>(n * dim) * sizeof(float));
  auto* keys = ws->buffer.as<int64_t>(keys_at);
  auto* dst = ws->buffer.as<int64_t>(dst_at);
  auto* terms = ws->terms.as<float>();
  for (int64_t e = 0; e < n; ++e) {
    const float* g = block.partial + int64_t{block.slot[e]} * dim;
    keys[e] = block.idx[e];
    for (int64_t j = 0; j < dim; ++j)
      terms[e * dim + j] = block.mode == PoolMode::kMax
                               ? (block.arg[int64_t{block.slot[e]} * dim + j] == e ? g[j] : 0.f)
                               : g[j] * (block.weight ? block.weight[e] : 1.f);
  }
  const UniqueIndex index = unique_ids(keys, n, block.num_ids, &ws->unique, stream);
  for (int64_t u = 0; u < index.num_unique; ++u) dst[u] = index.unique[u] * dim;
  SegmentLayout rows;
  rows.dst_offsets = dst;
  segment_sum(terms, dim, index, rows, /*scale_by_count=*/false, block.kept, &ws->segment, stream);
}

namespace {

// RequesterPartials' host arrays, copied when the call is made (the real
// launches read them then, owner by owner), for the work that runs later.
struct HostPartials {
  std::vector<int64_t> partial_begin, entry_begin;
  std::vector<float*> rows;
  std::vector<const int32_t*> args;
  RequesterPartials p;
};

std::shared_ptr<const HostPartials> snapshot(const RequesterPartials& p) {
  auto h = std::make_shared<HostPartials>();
  const size_t owners = static_cast<size_t>(p.num_owners);
  h->partial_begin.assign(p.partial_begin, p.partial_begin + owners + 1);
  h->entry_begin.assign(p.entry_begin, p.entry_begin + owners + 1);
  h->rows.assign(p.rows, p.rows + owners);
  if (p.args) h->args.assign(p.args, p.args + owners);
  h->p = p;
  h->p.partial_begin = h->partial_begin.data();
  h->p.entry_begin = h->entry_begin.data();
  h->p.rows = h->rows.data();
  h->p.args = p.args ? h->args.data() : nullptr;
  return h;
}

}  // namespace

void combine_partials(const RequesterPartials& p, float* d_out, OwnerPoolWorkspace*, void*) {
  const auto h = snapshot(p);
  later([=] {
    check_partial_bags("combine_partials", h->p);
    cpu::combine_partials(h->p, d_out);
  });
}

void split_bag_grads(const RequesterPartials& p, const float* d_grad, void*) {
  const auto h = snapshot(p);
  later([=] {
    check_partial_bags("split_bag_grads", h->p);
    cpu::split_bag_grads(h->p, d_grad);
  });
}

}  // namespace cuda
}  // namespace embtrain
