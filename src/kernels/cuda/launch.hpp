// Launch shapes and workspace sizes of the CUDA kernels, as plain host
// functions: how many blocks a kernel gets, how long segments are cut into
// chunks, where each array of a workspace lies in its one device buffer.
// No CUDA headers, so the CPU-only build unit-tests them (tests/unit).
#pragma once

#include <cstddef>
#include <cstdint>

#include "embtrain/host_device.hpp"
#include "embtrain/sum_order.hpp"

namespace embtrain {
namespace cuda {

constexpr int kWarpSize = 32;
constexpr int kWarpsPerBlock = 8;
constexpr int kThreadsPerBlock = kWarpSize * kWarpsPerBlock;

// Long segments are cut into chunks of kChunkPositions positions, each
// summed into a partial row, and the partials then added in chunk order:
// the order both backends follow (embtrain/sum_order.hpp, where the
// constant lives).
using embtrain::chunks_for_count;
using embtrain::kChunkPositions;

// Blocks that give each of `items` its own warp.
constexpr int64_t blocks_for_warps(int64_t items) {
  return (items + kWarpsPerBlock - 1) / kWarpsPerBlock;
}

// Blocks that give each of `items` its own thread.
constexpr int64_t blocks_for_threads(int64_t items) {
  return (items + kThreadsPerBlock - 1) / kThreadsPerBlock;
}

// An upper bound on the chunks of n positions however they split into
// segments, so the partial buffer is sized before the split is known: a cut
// segment has count > K, hence ceil(count / K) <= (count + K - 1) / K
// <= 2 * count / K, and the counts add up to at most n.
constexpr int64_t max_chunks(int64_t n) { return 2 * n / kChunkPositions; }

// Bits an id in [0, bound) needs: the radix sort sorts only those (at least
// one, so a sort always has a digit).
constexpr int radix_bits(int64_t bound) {
  int bits = 1;
  while (bits < 63 && (int64_t{1} << bits) < bound) ++bits;
  return bits;
}

// Every array of a workspace starts on a 256-byte boundary (what cudaMalloc
// gives and CUB asks for its temporary storage).
constexpr size_t kWorkspaceAlign = 256;

constexpr size_t align_up(size_t bytes) {
  return (bytes + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign;
}

// Lays arrays out one after another in one buffer: add() returns the byte
// offset of the next array.
class ByteLayout {
 public:
  size_t add(size_t bytes) {
    const size_t at = total_;
    total_ = align_up(at + bytes);
    return at;
  }
  size_t total() const { return total_; }

 private:
  size_t total_ = 0;
};

// The arrays of unique_ids for n ids, as byte offsets into one buffer.
// cub_temp_bytes is what CUB asked for its sort and scan.
struct UniquePlan {
  size_t sorted_keys = 0;  // n uint64: the ids in ascending order
  size_t iota = 0;         // n int32: 0..n-1, the sort's input values
  size_t heads = 0;        // n int32: 1 where a run of equal ids starts
  size_t slots = 0;        // n int32: inclusive scan of heads
  size_t unique = 0;       // n int64
  size_t inverse = 0;      // n int32
  size_t offsets = 0;      // n + 1 int32
  size_t positions = 0;    // n int32
  size_t cub_temp = 0;
  size_t total = 0;
};

inline UniquePlan unique_plan(int64_t n, size_t cub_temp_bytes) {
  const size_t count = static_cast<size_t>(n);
  ByteLayout layout;
  UniquePlan plan;
  plan.sorted_keys = layout.add(count * sizeof(uint64_t));
  plan.iota = layout.add(count * sizeof(int32_t));
  plan.heads = layout.add(count * sizeof(int32_t));
  plan.slots = layout.add(count * sizeof(int32_t));
  plan.unique = layout.add(count * sizeof(int64_t));
  plan.inverse = layout.add(count * sizeof(int32_t));
  plan.offsets = layout.add((count + 1) * sizeof(int32_t));
  plan.positions = layout.add(count * sizeof(int32_t));
  plan.cub_temp = layout.add(cub_temp_bytes);
  plan.total = layout.total();
  return plan;
}

// The arrays of a segment reduce over n positions in num_unique segments of
// rows of `dim` floats, as byte offsets into one buffer.
struct SegmentPlan {
  int64_t max_chunks = 0;   // partial rows reserved (max_chunks(n))
  size_t chunk_counts = 0;  // num_unique + 1 int32: chunks per segment
  size_t chunk_start = 0;   // num_unique + 1 int32: their exclusive scan
  size_t partials = 0;      // max_chunks rows of dim floats
  size_t cub_temp = 0;
  size_t total = 0;
};

inline SegmentPlan segment_plan(int64_t n, int64_t num_unique, int64_t dim, size_t cub_temp_bytes) {
  ByteLayout layout;
  SegmentPlan plan;
  plan.max_chunks = max_chunks(n);
  plan.chunk_counts = layout.add(static_cast<size_t>(num_unique + 1) * sizeof(int32_t));
  plan.chunk_start = layout.add(static_cast<size_t>(num_unique + 1) * sizeof(int32_t));
  plan.partials = layout.add(static_cast<size_t>(plan.max_chunks * dim) * sizeof(float));
  plan.cub_temp = layout.add(cub_temp_bytes);
  plan.total = layout.total();
  return plan;
}

}  // namespace cuda
}  // namespace embtrain
