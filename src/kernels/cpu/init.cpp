// Fresh rows on the host: the counter-based normals of random.hpp, the
// values cuda::draw_normal_rows draws on a GPU, and constant fills, both on
// all threads (which then first touch the pages: huge_pages.hpp). Built with
// -fno-trapping-math (CMakeLists.txt), which lets the compiler turn the
// draws' selects into vector blends (it changes no value: IEEE results do
// not depend on it, only whether an operation may raise a flag nobody
// reads), and cloned per vector width (clones.hpp): 3-4x the scalar draw.
#include <omp.h>

#include "embtrain/random.hpp"
#include "kernels/cpu/clones.hpp"
#include "kernels/cpu/cpu_kernels.hpp"

namespace embtrain {
namespace cpu {

namespace {

EMBTRAIN_CPU_CLONES
void draw_range(uint64_t seed, int64_t first_row, int64_t row_stride, int64_t begin, int64_t end,
                int64_t dim, float scale, float* rows) {
  for (int64_t k = begin; k < end; ++k) {
    const uint64_t key = random_key(seed, static_cast<uint64_t>(first_row + k * row_stride));
    float* __restrict__ out = rows + k * dim;
    for (int64_t j = 0; j < dim; ++j)
      out[j] = random_normal_keyed(key, static_cast<uint64_t>(j)) * scale;
  }
}

}  // namespace

void draw_normal_rows(uint64_t seed, int64_t first_row, int64_t row_stride, int64_t n,
                      int64_t dim, float scale, float* rows) {
#pragma omp parallel
  {
    const int64_t parts = omp_get_num_threads(), me = omp_get_thread_num();
    draw_range(seed, first_row, row_stride, n * me / parts, n * (me + 1) / parts, dim, scale,
               rows);
  }
}

void fill_floats(float* data, int64_t n, float value) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) data[i] = value;
}

}  // namespace cpu
}  // namespace embtrain
