// bucket_by_owner's kernels: the ids as owner-major sort keys, the split of
// a batch's distinct keys by owner, the keys back to local rows, and the row
// offsets of items laid out in per-(peer, table) blocks. The same contract
// as the CUDA kernels of bucketize.cu, on host arrays.
#include <algorithm>

#include "kernels/cpu/cpu_kernels.hpp"

namespace embtrain {
namespace cpu {

void cyclic_keys(const int64_t* ids, int64_t n, int64_t ranks, int64_t stride, int64_t* keys) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) keys[i] = ids[i] % ranks * stride + ids[i] / ranks;
}

void shift_ids(const int64_t* src, int64_t n, int64_t delta, int64_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i] + delta;
}

void take_ids(const int64_t* src, const int64_t* positions, int64_t n, int64_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[positions[i]];
}

void bucketize(const int64_t* unique, int64_t num_unique, const int64_t* bounds,
               int64_t num_bounds, int64_t* begin) {
  for (int64_t d = 0; d < num_bounds; ++d)
    begin[d] = std::lower_bound(unique, unique + num_unique, bounds[d]) - unique;
}

void block_offsets(const int64_t* starts, const int64_t* base, int64_t num_blocks, int64_t dim,
                   int64_t n, int64_t* out) {
  // Blocks are consecutive, so one walk over them fills every item.
  for (int64_t b = 0; b < num_blocks; ++b) {
    const int64_t end = b + 1 < num_blocks ? std::min(starts[b + 1], n) : n;
    for (int64_t k = starts[b]; k < end; ++k) out[k] = base[b] + (k - starts[b]) * dim;
  }
}

}  // namespace cpu
}  // namespace embtrain
