// CPU kernels of the step's local stages, one file each, named as the
// CUDA ones (src/kernels/cuda): unique, bucketize, renorm, gather,
// segment_sum, update. OpenMP spreads rows over threads; the per-row math
// is row_math.hpp's, shared with CUDA. Arrays are host memory.
#pragma once

#include <cstdint>
#include <vector>

#include "embtrain/comm_precision.hpp"
#include "embtrain/row_math.hpp"
#include "kernels/bag_pooling.hpp"
#include "kernels/unique_index.hpp"

namespace embtrain {
namespace cpu {

// --- unique.cpp --------------------------------------------------------------

// The arrays of a UniqueIndex, kept between calls so a step does not fault
// in fresh pages (cuda::UniqueWorkspace on the GPU).
struct UniqueWorkspace {
  std::vector<int64_t> unique;
  std::vector<int32_t> inverse, offsets, positions;
  // Sort buffers.
  std::vector<int64_t> scratch_keys[2];
  std::vector<int32_t> scratch_positions;

  UniqueIndex view() const;
  int64_t num_unique() const { return static_cast<int64_t>(unique.size()); }
  int32_t count(int64_t u) const { return offsets[u + 1] - offsets[u]; }
};

// The index of ids[0..n), every id in [0, id_bound) (validated by the
// caller), in `ws`, valid until the next call on it. A stable LSD radix
// sort: linear in n, with as many passes as id_bound needs 11-bit digits.
UniqueIndex unique_ids(const int64_t* ids, int64_t n, int64_t id_bound, UniqueWorkspace* ws);

// counts[u] = offsets[u + 1] - offsets[u] for u in [0, n): occurrences.
void segment_counts(const int32_t* offsets, int64_t n, int32_t* counts);

// --- bucketize.cpp -----------------------------------------------------------

// keys[i] = (ids[i] % ranks) * stride + ids[i] / ranks: the sort keys of a
// cyclic ShardPlan (ShardPlan::key), which group a batch's ids by owner.
void cyclic_keys(const int64_t* ids, int64_t n, int64_t ranks, int64_t stride, int64_t* keys);

// dst[i] = src[i] + delta: keys back to an owner's local rows.
void shift_ids(const int64_t* src, int64_t n, int64_t delta, int64_t* dst);

// dst[i] = src[positions[i]]: a few ids picked out of a batch.
void take_ids(const int64_t* src, const int64_t* positions, int64_t n, int64_t* dst);

// begin[d] = the first k with unique[k] >= bounds[d] (lower_bound), for d in
// [0, num_bounds). With bounds = each rank's row_begin then num_embeddings,
// owner d's ids are unique[begin[d] .. begin[d + 1]).
void bucketize(const int64_t* unique, int64_t num_unique, const int64_t* bounds,
               int64_t num_bounds, int64_t* begin);

// Row offsets of items laid out in blocks: item k of block b (starts[b] <= k
// < starts[b + 1], num_blocks + 1 starts, the first 0) has its row at
// out[k] = base[b] + (k - starts[b]) * dim.
void block_offsets(const int64_t* starts, const int64_t* base, int64_t num_blocks, int64_t dim,
                   int64_t n, int64_t* out);

// --- renorm.cpp --------------------------------------------------------------

// Applies max_norm (PyTorch's renorm) to table[rows[k] - row_offset].
void renorm_rows(float* table, int64_t dim, const int64_t* rows, int64_t n, int64_t row_offset,
                 float max_norm, float norm_type);

// --- gather.cpp --------------------------------------------------------------

// out[i] = table[index[i] - row_offset] for i in [0, n): rows of `dim` floats.
void gather_rows(const float* table, int64_t dim, const int64_t* index, int64_t n,
                 int64_t row_offset, float* out);
void gather_rows(const float* table, int64_t dim, const int32_t* index, int64_t n,
                 int64_t row_offset, float* out);

// out[i] = base[offsets[index[i]]]: the rows of `dim` floats that `offsets`
// locate in `base`, picked per position (expands unique rows to a batch).
void expand_rows(const float* base, const int64_t* offsets, const int32_t* index, int64_t n,
                 int64_t dim, float* out);

// --- init.cpp ------------------------------------------------------------------

// Fresh rows: rows[k * dim + j] = random_normal(seed, first_row + k *
// row_stride, j) * scale for k < n (random.hpp; the values
// cuda::draw_normal_rows draws).
void draw_normal_rows(uint64_t seed, int64_t first_row, int64_t row_stride, int64_t n,
                      int64_t dim, float scale, float* rows);
// data[0..n) = value, on all threads.
void fill_floats(float* data, int64_t n, float value);

// --- segment_sum.cpp ---------------------------------------------------------

// dst[u] = sum of src[p] over the positions p of unique id u, in ascending
// position order, an id with more than kChunkPositions positions chunk by
// chunk: sum_order.hpp's order, the CUDA kernel's, so the bits depend
// neither on the thread count nor on the backend. With
// scale_by_count the sum is divided by the id's count: the sum of its
// positions' weights, or the number of its positions.
void segment_sum(const float* src, int64_t dim, const UniqueIndex& index,
                 const SegmentLayout& layout, bool scale_by_count, float* dst);

// The common case: plain layouts, and the unique slot `skip` (the padding
// id's, or -1 for none) left out with the rows after it moved up one, so
// `sums` holds exactly the rows that get an update.
void segment_sum(const float* grad, int64_t dim, const UniqueIndex& index, bool scale_by_count,
                 int64_t skip, float* sums);

// combine_at_owner fused with update, as cuda::segment_sum_update: for each
// unique id u except skip_row (the padding row's id, or -1 for none), its
// sum as segment_sum's (divided by its count with scale_by_count) updates
// table row unique[u] - row_offset and its state, with no gradient buffer
// in between (the sums would be written and read back: 12 MB a step at
// bench-A-bag). Same bits as segment_sum then update_rows.
// layout.dst_offsets must be null.
void segment_sum_update(OptimizerKind kind, const StepScalars& scalars, float* table,
                        float* state, int64_t dim, int64_t row_offset, const float* src,
                        const UniqueIndex& index, const SegmentLayout& layout,
                        bool scale_by_count, int64_t skip_row);
// The same with the positions' gradient rows in `wire`, in the format they
// travelled in (comm_precision.hpp), layout.src_offsets counting elements of
// it: each value converted to float and times `scale`, so the same bits as
// unpack_wire(.., scale) then the above, without writing the floats out.
void segment_sum_update(OptimizerKind kind, const StepScalars& scalars, float* table,
                        float* state, int64_t dim, int64_t row_offset, const void* wire,
                        CommPrecision format, float scale, const UniqueIndex& index,
                        const SegmentLayout& layout, bool scale_by_count, int64_t skip_row);
// segment_sum_update spreads ids over threads by their positions plus this
// many per id for its update (reading and writing a row and its state
// costs about as much as that many adds of cached rows; measured).
constexpr int64_t kUpdateWork = 8;

// --- update.cpp --------------------------------------------------------------

// The optimizer update of table rows[k] - row_offset with coalesced gradient
// grads[k]; `state` holds optimizer_state_width(kind, dim) floats per row.
void update_rows(OptimizerKind kind, const StepScalars& scalars, float* table, float* state,
                 int64_t dim, const int64_t* rows, const float* grads, int64_t n,
                 int64_t row_offset);

// --- wire.cpp ----------------------------------------------------------------

// n floats to the wire in precision p, times `scale` first (exact: a power
// of two): 2 bytes each for bf16 and fp16, the floats as they are for fp32.
void pack_wire(const float* src, int64_t n, CommPrecision p, float scale, void* wire);
// Back from the wire, times `scale` after (the inverse of pack's).
void unpack_wire(const void* wire, int64_t n, CommPrecision p, float scale, float* dst);
// In place, what a trip over the wire makes of n floats: pack then unpack.
void round_wire(float* data, int64_t n, CommPrecision p, float scale);

// gather_rows then pack_wire (scale 1) in one pass, so the rows an owner
// serves are written once, in the format they travel in: row i at element
// i * dim of `wire`. The same bytes as the two passes.
void gather_rows_packed(const float* table, int64_t dim, const int64_t* index, int64_t n,
                        int64_t row_offset, CommPrecision p, void* wire);
// gather_rows then round_wire (scale 1) in one pass: the rows an owner
// serves itself, as a trip over the wire would make them.
void gather_rows_rounded(const float* table, int64_t dim, const int64_t* index, int64_t n,
                         int64_t row_offset, CommPrecision p, float* out);

// --- pool.cpp ----------------------------------------------------------------

// Bags (bag_pooling.hpp): out[b] = the pool of position p's row
// (rows.row(p)) over bag b's positions whose id is not skip_id (the
// padding id, or -1); fills bags.counts and, for max, bags.argmax.
void pool_bags(const BagPooling& bags, const PositionRows& rows, const int64_t* ids,
               int64_t skip_id, float* out);
// grad_rows[p] (n rows) = the gradient of position p's row from its bag's
// output gradient grad[b] (counts and argmax as pool_bags left them); 0 for
// positions past the last bag.
void unpool_bags(const BagPooling& bags, const float* grad, int64_t n, float* grad_rows);
// The same gradients as one row per bag, for bags whose positions share it
// (bag_grads_shared): grad_rows[b] (num_bags + 1 rows, the last zeros) and
// src_offsets[p] (n): position p's row's float offset, b * dim for p in
// bag b, num_bags * dim past the last bag. Row src_offsets[p] holds
// unpool_bags' grad_rows[p], bit for bit.
void share_bag_grads(const BagPooling& bags, const float* grad, int64_t n, float* grad_rows,
                     int64_t* src_offsets);

// Bags pooled at the owners (bag_pooling.hpp; the stages in
// engine/sharded_step.hpp). list_bag_entries: the requester's entries of
// one table, from the batch's ids (the padding id `skip_id` left out), the
// inverse of its distinct keys and owner_slots (host, owners + 1: each
// owner's first distinct key); writes bags.counts, and entry_begin and
// partial_begin (host, owners + 1).
void list_bag_entries(const BagPooling& bags, const int64_t* ids, int64_t skip_id,
                      const int32_t* inverse, const int64_t* owner_slots, int owners,
                      BagEntries* out, int64_t* entry_begin, int64_t* partial_begin);
// Owner: a block's partial rows from its kept rows, in entry order (sum of
// x * weight; max: the first entry of the greatest value, into arg).
void pool_partials(const OwnerBlock& block);
// Owner: the partial rows' gradients back to the kept rows (zeroed first),
// summed per id in entry order (times the weight; max: the winning entry),
// chunked as segment_sum's (sum_order.hpp), the order of the CUDA kernel.
void unpool_partials(const OwnerBlock& block);
// Requester: each bag's partial rows combined in owner order into out
// (num_bags x dim): added (mean: then over the bag's count), or for max the
// greatest, the first position winning a tie (into winner).
void combine_partials(const RequesterPartials& p, float* out);
// Requester: one gradient row per partial row from the bags' gradient.
void split_bag_grads(const RequesterPartials& p, const float* grad);

}  // namespace cpu
}  // namespace embtrain
