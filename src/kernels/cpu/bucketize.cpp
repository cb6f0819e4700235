// bucket_by_owner's split of a batch's distinct ids by owner, and the row
// offsets of items laid out in per-(peer, table) blocks: the same contract
// as the CUDA kernels of bucketize.cu, on host arrays.
#include <algorithm>

#include "kernels/cpu/cpu_kernels.hpp"

namespace embtrain {
namespace cpu {

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
