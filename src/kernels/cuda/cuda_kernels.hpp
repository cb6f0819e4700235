// CUDA kernels of the step's local stages, one file each, named as the CPU
// ones (src/kernels/cpu): unique, bucketize, renorm, gather, segment_sum,
// update, pool (bags), owner_pool (bags pooled at the owners); plus ids.cu
// (the device side of check_ids) and device.cu (devices, memory, streams).
// Same contracts as cpu_kernels.hpp, on device pointers (d_ prefix) and a
// stream (a cudaStream_t as void*, nullptr for the default stream); the
// per-row math is row_math.hpp, shared with the CPU. Declared in every build (the header includes no CUDA header), defined
// only where the CUDA backend is built, or by the emulated device of the
// tests (tests/emulated).
//
// Every kernel is deterministic: no float atomics, and sums are added in an
// order fixed by the data and the constants of launch.hpp, never by the
// grid. Rows are spread one warp per row; when dim % 4 == 0 and the row
// pointers are 16-byte aligned the lanes move 16 bytes at a time, so row
// offsets given in floats (SegmentLayout, expand_rows) must then be
// multiples of 4, as row starts of a dim-wide layout are.
#pragma once

#include <cstdint>
#include <string>

#include "embtrain/comm_precision.hpp"
#include "embtrain/row_math.hpp"
#include "kernels/bag_pooling.hpp"
#include "kernels/cuda/device_memory.hpp"
#include "kernels/cuda/launch.hpp"
#include "kernels/unique_index.hpp"

namespace embtrain {
namespace cuda {

// Number of usable CUDA devices; 0 when there is no device or no driver
// (never throws, so callers can skip GPU work cleanly).
int device_count();
// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)"-style description of a device.
std::string device_description(int device);
// The device's UUID as 32 hex digits: which physical GPU it is, whatever
// number CUDA_VISIBLE_DEVICES gave it in this process.
std::string device_uuid(int device);
// The current device's free and total memory, in bytes.
void memory_info(size_t* free_bytes, size_t* total_bytes);
// Copy bandwidth of the current device in GB/s, bytes read plus bytes
// written, from device-to-device copies of `bytes`: the ceiling a
// memory-bound step's floor is measured against.
double copy_bandwidth_gbps(size_t bytes = size_t{1} << 30);

// --- ids.cu --------------------------------------------------------------------

// d_out[i] = d_in[i] for i in [0, n): int32 ids to the int64 the kernels take.
void widen_ids(const int32_t* d_in, int64_t n, int64_t* d_out, void* stream);

// d_result[0..1] = {the first position p with d_ids[p] outside [0, bound),
// d_ids[p]}, or {-1, 0} when every id is in range: what the host needs to
// phrase PyTorch's error. The smallest such position, whatever the schedule.
void find_bad_id(const int64_t* d_ids, int64_t n, int64_t bound, int64_t* d_result, void* stream);
void find_bad_id(const int32_t* d_ids, int64_t n, int64_t bound, int64_t* d_result, void* stream);

// --- unique.cu -----------------------------------------------------------------

// Everything unique_ids needs, kept between calls (CUB's temporary storage
// included): once sizes stop growing, a call allocates nothing.
struct UniqueWorkspace {
  DeviceBuffer buffer;  // the arrays, laid out by unique_plan
  PinnedBuffer host;    // num_unique on its way back
};

// cpu::unique_ids on the device: the index of d_ids[0..n), every id in
// [0, id_bound) (validated by the caller, e.g. with find_bad_id), its arrays
// in `ws` until the next call on it. A stable radix sort over the bits
// id_bound needs, run heads and a scan. Waits on `stream` once, for
// num_unique. n < 2^31.
UniqueIndex unique_ids(const int64_t* d_ids, int64_t n, int64_t id_bound, UniqueWorkspace* ws,
                       void* stream);

// d_counts[u] = offsets[u + 1] - offsets[u]: each distinct id's occurrences.
void segment_counts(const int32_t* d_offsets, int64_t num_unique, int32_t* d_counts,
                    void* stream);

// --- bucketize.cu --------------------------------------------------------------

// cpu::cyclic_keys, cpu::shift_ids and cpu::take_ids on the device.
void cyclic_keys(const int64_t* d_ids, int64_t n, int64_t ranks, int64_t stride, int64_t* d_keys,
                 void* stream);
void shift_ids(const int64_t* d_src, int64_t n, int64_t delta, int64_t* d_dst, void* stream);
void take_ids(const int64_t* d_src, const int64_t* d_positions, int64_t n, int64_t* d_dst,
              void* stream);

// cpu::bucketize: d_begin[d] = lower_bound(d_unique, d_bounds[d]).
void bucketize(const int64_t* d_unique, int64_t num_unique, const int64_t* d_bounds,
               int64_t num_bounds, int64_t* d_begin, void* stream);

// cpu::block_offsets: item k of block b has its row at
// d_out[k] = base[b] + (k - starts[b]) * dim.
void block_offsets(const int64_t* d_starts, const int64_t* d_base, int64_t num_blocks, int64_t dim,
                   int64_t n, int64_t* d_out, void* stream);

// --- renorm.cu -------------------------------------------------------------------

// PyTorch's renorm (max_norm, norm_type) of table[rows[k] - row_offset];
// the rows must be distinct.
void renorm_rows(float* d_table, int64_t dim, const int64_t* d_rows, int64_t n, int64_t row_offset,
                 float max_norm, float norm_type, void* stream);

// --- gather.cu -------------------------------------------------------------------

// out[i] = table[index[i] - row_offset].
void gather_rows(const float* d_table, int64_t dim, const int64_t* d_index, int64_t n,
                 int64_t row_offset, float* d_out, void* stream);
// cpu::gather_rows_packed and gather_rows_rounded on the device.
void gather_rows_packed(const float* d_table, int64_t dim, const int64_t* d_index, int64_t n,
                        int64_t row_offset, CommPrecision p, void* d_wire, void* stream);
void gather_rows_rounded(const float* d_table, int64_t dim, const int64_t* d_index, int64_t n,
                         int64_t row_offset, CommPrecision p, float* d_out, void* stream);

// out[i] = base[offsets[index[i]]]: expands unique rows to a batch.
void expand_rows(const float* d_base, const int64_t* d_offsets, const int32_t* d_index, int64_t n,
                 int64_t dim, float* d_out, void* stream);

// --- segment_sum.cu --------------------------------------------------------------

// The partial rows and chunk plan of a segment sum (see segment_sum.cu),
// kept between calls like UniqueWorkspace.
struct SegmentWorkspace {
  DeviceBuffer buffer;  // laid out by segment_plan
};

// cpu::segment_sum on the device, with the same bits. Long segments are
// summed in fixed chunks of kChunkPositions positions, then the chunks in
// order (embtrain/sum_order.hpp).
void segment_sum(const float* d_src, int64_t dim, const UniqueIndex& index,
                 const SegmentLayout& layout, bool scale_by_count, float* d_dst,
                 SegmentWorkspace* ws, void* stream);

// The owner's combine_at_owner fused with its update: for each unique id u
// except skip_row (the padding row's id, or -1 for none), its summed (and,
// with scale_by_count, divided) gradient updates table row unique[u] -
// row_offset and its state, with no gradient buffer in between. Same bits
// as cpu::segment_sum then cpu::update_rows. layout.dst_offsets must be null.
void segment_sum_update(OptimizerKind kind, const StepScalars& scalars, float* d_table,
                        float* d_state, int64_t dim, int64_t row_offset, const float* d_src,
                        const UniqueIndex& index, const SegmentLayout& layout,
                        bool scale_by_count, int64_t skip_row, SegmentWorkspace* ws, void* stream);

// --- update.cu -------------------------------------------------------------------

// Optimizer update of rows d_rows[k] - row_offset (distinct) with gradient
// d_grads[k]; `d_state` holds optimizer_state_width(kind, dim) floats per row.
void update_rows(OptimizerKind kind, const StepScalars& scalars, float* d_table, float* d_state,
                 int64_t dim, const int64_t* d_rows, const float* d_grads, int64_t n,
                 int64_t row_offset, void* stream);

// --- wire.cu ---------------------------------------------------------------------

// cpu::pack_wire, unpack_wire and round_wire on the device.
void pack_wire(const float* d_src, int64_t n, CommPrecision p, float scale, void* d_wire,
               void* stream);
void unpack_wire(const void* d_wire, int64_t n, CommPrecision p, float scale, float* d_dst,
                 void* stream);
void round_wire(float* d_data, int64_t n, CommPrecision p, float scale, void* stream);

// --- pool.cu -------------------------------------------------------------------

// cpu::pool_bags, cpu::unpool_bags and cpu::share_bag_grads on the device,
// one warp per bag; unpool zeroes the rows of positions [first_unbagged,
// n), past the last bag (offsets[num_bags], which the host knows), and
// share points them at the zero row.
void pool_bags(const BagPooling& bags, const PositionRows& d_rows, const int64_t* d_ids,
               int64_t skip_id, float* d_out, void* stream);
void unpool_bags(const BagPooling& bags, const float* d_grad, int64_t n, int64_t first_unbagged,
                 float* d_grad_rows, void* stream);
void share_bag_grads(const BagPooling& bags, const float* d_grad, int64_t n,
                     int64_t first_unbagged, float* d_grad_rows, int64_t* d_src_offsets,
                     void* stream);

// --- init.cu -------------------------------------------------------------------

// A fresh shard drawn in device memory, the values draw_fresh_rows
// (embedding_table.hpp) draws on the host: d_rows[k * dim + j] =
// random_normal(seed, first_row + k * row_stride, j) * scale (random.hpp)
// for local rows k in [0, n); the caller zeroes the padding row.
void draw_normal_rows(uint64_t seed, int64_t first_row, int64_t row_stride, int64_t n, int64_t dim,
                      float scale, float* d_rows, void* stream);
// d_data[0, n) = value (an optimizer state's start).
void fill_floats(float* d_data, int64_t n, float value, void* stream);

// --- owner_pool.cu -------------------------------------------------------------

// What the kernels of bags pooled at the owners keep between calls, grow-only
// like the other workspaces: list_bag_entries' counts and scans, the first
// entries of pool_partials, the positions of combine_partials' winners, and
// unpool_partials' entry rows, index and segment sum.
struct OwnerPoolWorkspace {
  DeviceBuffer buffer;  // laid out per call
  DeviceBuffer terms;   // unpool_partials: one gradient row per entry
  PinnedBuffer host;    // list_bag_entries: owner slots up, the begins down
  UniqueWorkspace unique;
  SegmentWorkspace segment;
};

// The cpu:: kernels of the same names (bag_pooling.hpp, cpu_kernels.hpp) on
// the device, with the same bits: each value is built by one thread in the
// CPU's order (entries in order at the owner, owners in rank order at the
// requester; unpool_partials: segment_sum over the entries' ids). Host
// arrays as there: owner_slots, entry_begin and partial_begin
// (list_bag_entries, which waits on the stream for the last two), and
// RequesterPartials' partial_begin, entry_begin, rows and args; the rest is
// device memory. pool_partials launches block.rows partial rows.
void list_bag_entries(const BagPooling& bags, const int64_t* d_ids, int64_t skip_id,
                      const int32_t* d_inverse, const int64_t* owner_slots, int owners,
                      BagEntries* out, int64_t* entry_begin, int64_t* partial_begin,
                      OwnerPoolWorkspace* ws, void* stream);
void pool_partials(const OwnerBlock& block, OwnerPoolWorkspace* ws, void* stream);
void unpool_partials(const OwnerBlock& block, OwnerPoolWorkspace* ws, void* stream);
void combine_partials(const RequesterPartials& p, float* d_out, OwnerPoolWorkspace* ws,
                      void* stream);
void split_bag_grads(const RequesterPartials& p, const float* d_grad, void* stream);

}  // namespace cuda
}  // namespace embtrain
