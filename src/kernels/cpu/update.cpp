// The optimizer update of the rows a step touched (update).
#include <omp.h>

#include "kernels/cpu/clones.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cpu/prefetch.hpp"

namespace embtrain {
namespace cpu {

namespace {

// The update of rows [begin, end), cloned per vector width (clones.hpp):
// the Adam and Adagrad rows spend their time in vector sqrt and divide.
EMBTRAIN_CPU_CLONES
void update_range(OptimizerKind kind, const StepScalars& scalars, float* table, float* state,
                  int64_t dim, const int64_t* rows, const float* grads, int64_t begin,
                  int64_t end, int64_t n, int64_t row_offset) {
  const int64_t width = optimizer_state_width(kind, dim);
  for (int64_t k = begin; k < end; ++k) {
    if (k + kPrefetchDistance < n) {
      const int64_t ahead = rows[k + kPrefetchDistance] - row_offset;
      prefetch_row(table + ahead * dim, dim, /*for_write=*/true);
      prefetch_row(state + ahead * width, width, /*for_write=*/true);
    }
    const int64_t r = rows[k] - row_offset;
    update_row(kind, table + r * dim, state + r * width, grads + k * dim, dim, scalars);
  }
}

}  // namespace

void update_rows(OptimizerKind kind, const StepScalars& scalars, float* table, float* state,
                 int64_t dim, const int64_t* rows, const float* grads, int64_t n,
                 int64_t row_offset) {
#pragma omp parallel
  {
    const int64_t parts = omp_get_num_threads(), me = omp_get_thread_num();
    update_range(kind, scalars, table, state, dim, rows, grads, n * me / parts,
                 n * (me + 1) / parts, n, row_offset);
  }
}

}  // namespace cpu
}  // namespace embtrain
