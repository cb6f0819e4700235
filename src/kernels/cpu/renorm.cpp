// max_norm before a lookup (PyTorch's embedding_renorm_), on the distinct
// rows of a batch; the per-row math is row_math.hpp's renorm_row.
#include "kernels/cpu/cpu_kernels.hpp"

namespace embtrain {
namespace cpu {

void renorm_rows(float* table, int64_t dim, const int64_t* rows, int64_t n, int64_t row_offset,
                 float max_norm, float norm_type) {
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < n; ++k)
    renorm_row(table + (rows[k] - row_offset) * dim, dim, max_norm, norm_type);
}

}  // namespace cpu
}  // namespace embtrain
