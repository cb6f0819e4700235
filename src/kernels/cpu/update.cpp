#include "embtrain/kernels_cpu.hpp"
#include "embtrain/prefetch.hpp"

namespace embtrain {
namespace cpu {

void update_rows(OptimizerKind kind, const StepScalars& scalars, float* table, float* state,
                 int64_t dim, const int64_t* rows, const float* grads, int64_t n,
                 int64_t row_offset) {
  const int64_t width = optimizer_state_width(kind, dim);
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < n; ++k) {
    if (k + kPrefetchDistance < n) {
      const int64_t ahead = rows[k + kPrefetchDistance] - row_offset;
      prefetch_row(table + ahead * dim, dim, /*for_write=*/true);
      prefetch_row(state + ahead * width, width, /*for_write=*/true);
      prefetch_row(grads + (k + kPrefetchDistance) * dim, dim, /*for_write=*/false);
    }
    const int64_t r = rows[k] - row_offset;
    update_row(kind, table + r * dim, state + r * width, grads + k * dim, dim, scalars);
  }
}

}  // namespace cpu
}  // namespace embtrain
