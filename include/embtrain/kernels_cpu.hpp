// CPU kernels for the local stages of a step: unique, gather, renorm,
// segment-sum and the optimizer row update. OpenMP spreads rows over
// threads; the per-row math is in row_math.hpp, shared with CUDA.
#pragma once

#include <cstdint>
#include <vector>

#include "embtrain/row_math.hpp"

namespace embtrain {
namespace cpu {

// The distinct ids of a batch in ascending order, with the inverse map and,
// for each distinct id, the positions where it occurs (CSR, ascending
// positions). Ascending order makes "bucket by owner" a split into
// contiguous ranges, since owners hold contiguous row blocks.
struct UniqueIndex {
  std::vector<int64_t> unique;     // ascending distinct ids
  std::vector<int32_t> inverse;    // position -> index into unique
  std::vector<int32_t> offsets;    // unique.size() + 1 CSR offsets into positions
  std::vector<int32_t> positions;  // positions grouped by unique id

  int64_t num_unique() const { return static_cast<int64_t>(unique.size()); }
  int32_t count(int64_t u) const { return offsets[u + 1] - offsets[u]; }

  // Sort buffers kept between calls so a step does not fault in fresh pages.
  std::vector<int64_t> scratch_keys[2];
  std::vector<int32_t> scratch_positions;
};

// Builds the index of ids[0..n) with every id in [0, id_bound) (the caller
// has validated them). A stable LSD radix sort: linear in n, with as many
// passes as id_bound needs 11-bit digits.
void unique_ids(const int64_t* ids, int64_t n, int64_t id_bound, UniqueIndex* out);

// out[i] = table[index[i] - row_offset] for i in [0, n): rows of `dim` floats.
void gather_rows(const float* table, int64_t dim, const int64_t* index, int64_t n,
                 int64_t row_offset, float* out);
void gather_rows(const float* table, int64_t dim, const int32_t* index, int64_t n,
                 int64_t row_offset, float* out);

// Applies max_norm (PyTorch's renorm) to table[rows[k] - row_offset].
void renorm_rows(float* table, int64_t dim, const int64_t* rows, int64_t n, int64_t row_offset,
                 float max_norm, float norm_type);

// Where segment_sum reads and writes rows, as float offsets. A null array
// means the plain layout: position p's row at p * dim, unique u's at u * dim.
struct SegmentLayout {
  const int64_t* src_offsets = nullptr;  // per position: its row in src
  const int32_t* weights = nullptr;      // per position: occurrences it stands for (null: 1)
  const int64_t* dst_offsets = nullptr;  // per unique id: its row in dst, or -1 to skip it
};

// dst[u] = sum of src[p] over the positions p of unique id u, in ascending
// position order (so the result does not depend on the thread count). With
// scale_by_count the sum is divided by the id's count: the sum of its
// positions' weights, or the number of its positions.
void segment_sum(const float* src, int64_t dim, const UniqueIndex& index,
                 const SegmentLayout& layout, bool scale_by_count, float* dst);

// The common case: plain layouts, and the unique slot `skip` (the padding
// id's, or -1 for none) left out with the rows after it moved up one, so
// `sums` holds exactly the rows that get an update.
void segment_sum(const float* grad, int64_t dim, const UniqueIndex& index, bool scale_by_count,
                 int64_t skip, float* sums);

// out[i] = base[offsets[index[i]]]: the rows of `dim` floats that `offsets`
// locate in `base`, picked per position (expands unique rows to a batch).
void gather_rows_at(const float* base, const int64_t* offsets, const int32_t* index, int64_t n,
                    int64_t dim, float* out);

// The optimizer update of table rows[k] - row_offset with coalesced gradient
// grads[k]; `state` holds optimizer_state_width(kind, dim) floats per row.
void update_rows(OptimizerKind kind, const StepScalars& scalars, float* table, float* state,
                 int64_t dim, const int64_t* rows, const float* grads, int64_t n,
                 int64_t row_offset);
// The same with row k's gradient at grads[k], wherever it lies (a row of
// the output gradient for an id seen once, a sum for the others).
void update_rows(OptimizerKind kind, const StepScalars& scalars, float* table, float* state,
                 int64_t dim, const int64_t* rows, const float* const* grads, int64_t n,
                 int64_t row_offset);

}  // namespace cpu
}  // namespace embtrain
