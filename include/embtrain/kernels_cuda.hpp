// CUDA kernels for the local stages of a step. Same contracts as
// kernels_cpu.hpp, on device pointers (d_ prefix) and a stream (a
// cudaStream_t as void*, nullptr for the default stream); the per-row math is
// row_math.hpp, shared with the CPU. Declared only when the CUDA backend is
// built (EMBTRAIN_HAVE_CUDA); this header includes no CUDA header.
//
// Every kernel is deterministic: no float atomics, and sums are added in an
// order fixed by the data and the constants of cuda_launch.hpp, never by the
// grid. Rows are spread one warp per row; when dim % 4 == 0 and the row
// pointers are 16-byte aligned the lanes move 16 bytes at a time, so row
// offsets given in floats (SegmentLayout, gather_rows_at) must then be
// multiples of 4, as row starts of a dim-wide layout are.
#pragma once

#include <cstdint>
#include <string>

#include "embtrain/cuda_launch.hpp"
#include "embtrain/device_memory.hpp"
#include "embtrain/row_math.hpp"

namespace embtrain {
namespace cuda {

// Number of usable CUDA devices; 0 when there is no device or no driver
// (never throws, so callers can skip GPU work cleanly).
int device_count();
// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)"-style description of a device.
std::string device_description(int device);
// Copy bandwidth of the current device in GB/s, bytes read plus bytes
// written, from device-to-device copies of `bytes`: the ceiling a
// memory-bound step's floor is measured against.
double copy_bandwidth_gbps(size_t bytes = size_t{1} << 30);

// --- Ids ---------------------------------------------------------------------

// d_out[i] = d_in[i] for i in [0, n): int32 ids to the int64 the kernels take.
void widen_ids(const int32_t* d_in, int64_t n, int64_t* d_out, void* stream);

// d_result[0..1] = {the first position p with d_ids[p] outside [0, bound),
// d_ids[p]}, or {-1, 0} when every id is in range: what the host needs to
// phrase PyTorch's error. The smallest such position, whatever the schedule.
void find_bad_id(const int64_t* d_ids, int64_t n, int64_t bound, int64_t* d_result, void* stream);
void find_bad_id(const int32_t* d_ids, int64_t n, int64_t bound, int64_t* d_result, void* stream);

// cpu::UniqueIndex on the device. The arrays live in the UniqueWorkspace
// that made them and stay valid until its next unique_ids call.
struct DeviceUniqueIndex {
  int64_t* unique = nullptr;     // num_unique ascending distinct ids
  int32_t* inverse = nullptr;    // n: position -> index into unique
  int32_t* offsets = nullptr;    // num_unique + 1 CSR offsets into positions
  int32_t* positions = nullptr;  // n positions grouped by id, ascending within an id
  int64_t num_unique = 0;        // on the host
  int64_t n = 0;                 // positions
};

// Everything unique_ids needs, kept between calls (CUB's temporary storage
// included): once sizes stop growing, a call allocates nothing.
struct UniqueWorkspace {
  DeviceBuffer buffer;  // the arrays, laid out by unique_plan
  PinnedBuffer host;    // num_unique on its way back

  // Grows the buffers to `plan` and returns the index of n positions laid
  // out in them (num_unique still 0).
  DeviceUniqueIndex lay_out(const UniquePlan& plan, int64_t n) {
    buffer.reserve(plan.total);
    host.reserve(sizeof(int32_t));
    DeviceUniqueIndex index;
    index.unique = buffer.as<int64_t>(plan.unique);
    index.inverse = buffer.as<int32_t>(plan.inverse);
    index.offsets = buffer.as<int32_t>(plan.offsets);
    index.positions = buffer.as<int32_t>(plan.positions);
    index.n = n;
    return index;
  }
};

// Builds the index of d_ids[0..n), every id in [0, id_bound) (validated by
// the caller, e.g. with find_bad_id): a stable radix sort over the bits
// id_bound needs, run heads and a scan. Waits on `stream` once, for
// num_unique. n < 2^31.
DeviceUniqueIndex unique_ids(const int64_t* d_ids, int64_t n, int64_t id_bound, UniqueWorkspace* ws,
                             void* stream);

// d_begin[d] = the first k with d_unique[k] >= d_bounds[d] (lower_bound), for
// d in [0, num_bounds). With bounds = each rank's row_begin then
// num_embeddings, owner d's ids are unique[begin[d] .. begin[d + 1]).
void bucketize(const int64_t* d_unique, int64_t num_unique, const int64_t* d_bounds,
               int64_t num_bounds, int64_t* d_begin, void* stream);

// Row offsets of items laid out in blocks: item k of block b (starts[b] <= k
// < starts[b + 1], num_blocks + 1 starts, the first 0) has its row at
// d_out[k] = base[b] + (k - starts[b]) * dim. The sharded step's buffers hold
// one block per (peer, table); this maps a table's items to their rows.
void block_offsets(const int64_t* d_starts, const int64_t* d_base, int64_t num_blocks, int64_t dim,
                   int64_t n, int64_t* d_out, void* stream);

// d_counts[u] = offsets[u + 1] - offsets[u]: each distinct id's occurrences.
void segment_counts(const int32_t* d_offsets, int64_t num_unique, int32_t* d_counts,
                    void* stream);

// --- Rows --------------------------------------------------------------------

// out[i] = table[index[i] - row_offset].
void gather_rows(const float* d_table, int64_t dim, const int64_t* d_index, int64_t n,
                 int64_t row_offset, float* d_out, void* stream);

// out[i] = base[offsets[index[i]]]: expands unique rows to a batch.
void gather_rows_at(const float* d_base, const int64_t* d_offsets, const int32_t* d_index,
                    int64_t n, int64_t dim, float* d_out, void* stream);

// PyTorch's renorm (max_norm, norm_type) of table[rows[k] - row_offset];
// the rows must be distinct.
void renorm_rows(float* d_table, int64_t dim, const int64_t* d_rows, int64_t n, int64_t row_offset,
                 float max_norm, float norm_type, void* stream);

// Optimizer update of rows d_rows[k] - row_offset (distinct) with gradient
// d_grads[k]; `d_state` holds optimizer_state_width(kind, dim) floats per row.
void update_rows(OptimizerKind kind, const StepScalars& scalars, float* d_table, float* d_state,
                 int64_t dim, const int64_t* d_rows, const float* d_grads, int64_t n,
                 int64_t row_offset, void* stream);

// --- Segment sums --------------------------------------------------------------

// cpu::SegmentLayout with device arrays: where segment_sum reads and writes
// rows, as float offsets; a null array means the plain layout.
struct SegmentLayout {
  const int64_t* src_offsets = nullptr;  // per position: its row in src
  const int32_t* weights = nullptr;      // per position: occurrences it stands for (null: 1)
  const int64_t* dst_offsets = nullptr;  // per unique id: its row in dst, or -1 to skip it
};

// The partial rows and chunk plan of a segment sum (see segment.cu), kept
// between calls like UniqueWorkspace.
struct SegmentWorkspace {
  DeviceBuffer buffer;  // laid out by segment_plan
};

// dst[u] = sum of src[p] over the positions p of unique id u, with
// scale_by_count dividing by the id's count (sum of its positions' weights,
// or their number): cpu::segment_sum. Long segments are summed in fixed
// chunks of kChunkPositions positions, then the chunks in order.
void segment_sum(const float* d_src, int64_t dim, const DeviceUniqueIndex& index,
                 const SegmentLayout& layout, bool scale_by_count, float* d_dst,
                 SegmentWorkspace* ws, void* stream);

// The owner's reduce fused with the optimizer: for each unique id u except
// skip_row (the padding row's id, or -1 for none), its summed (and, with
// scale_by_count, divided) gradient updates table row unique[u] - row_offset
// and its state, with no gradient buffer in between. Same result as
// cpu::segment_sum then cpu::update_rows. layout.dst_offsets must be null.
void segment_sum_update(OptimizerKind kind, const StepScalars& scalars, float* d_table,
                        float* d_state, int64_t dim, int64_t row_offset, const float* d_src,
                        const DeviceUniqueIndex& index, const SegmentLayout& layout,
                        bool scale_by_count, int64_t skip_row, SegmentWorkspace* ws, void* stream);

}  // namespace cuda
}  // namespace embtrain
