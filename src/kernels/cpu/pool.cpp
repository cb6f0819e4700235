// Bag pooling (torch.nn.EmbeddingBag) on the requester: the rows of a
// batch's positions pooled per bag, and a bag gradient back to its
// positions. The order is bag_pooling.hpp's; bags spread over threads.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/clones.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cpu/prefetch.hpp"

namespace embtrain {
namespace cpu {

namespace {

// Bags [begin, end) of pool_bags, by one thread; `arg`: dim ints (max).
// Cloned per vector width (clones.hpp): element-wise adds and compares,
// the same bits in every clone.
EMBTRAIN_CPU_CLONES
void pool_range(const BagPooling& bags, const PositionRows& rows, const int64_t* ids,
                int64_t skip_id, float* out, int64_t begin, int64_t end, int32_t* arg) {
  const int64_t dim = bags.dim;
  const bool max = bags.mode == PoolMode::kMax;
  const int64_t last = bags.offsets[bags.num_bags];
  for (int64_t b = begin; b < end; ++b) {
    float* __restrict acc = out + b * dim;
    std::fill(acc, acc + dim, 0.f);
    if (max) std::fill(arg, arg + dim, -1);
    int32_t count = 0;
    for (int64_t p = bags.offsets[b]; p < bags.offsets[b + 1]; ++p) {
      // The rows are the table's, or a buffer's, in no useful order: ask
      // for the row a few positions ahead (the next bags' too).
      if (p + kPrefetchDistance < last)
        prefetch_row(rows.row(p + kPrefetchDistance, dim), dim, /*for_write=*/false);
      if (ids[p] == skip_id) continue;
      const float* __restrict x = rows.row(p, dim);
      const float w = bags.weights ? bags.weights[p] : 1.f;
      const bool first = count == 0;
      const int32_t position = static_cast<int32_t>(p);
      if (max) {
        for (int64_t j = 0; j < dim; ++j)
          pool_column(PoolMode::kMax, x[j], w, position, first, acc + j, arg + j);
      } else if (bags.weights) {
        for (int64_t j = 0; j < dim; ++j) acc[j] += x[j] * w;  // pool_column's sum, vectorised
      } else {
        for (int64_t j = 0; j < dim; ++j) acc[j] += x[j];  // x * 1 is x exactly
      }
      ++count;
    }
    for (int64_t j = 0; j < dim; ++j) acc[j] = finish_column(bags.mode, acc[j], count);
    bags.counts[b] = count;
    if (max) std::copy(arg, arg + dim, bags.argmax + b * dim);
  }
}

}  // namespace

void pool_bags(const BagPooling& bags, const PositionRows& rows, const int64_t* ids,
               int64_t skip_id, float* out) {
  const bool max = bags.mode == PoolMode::kMax;
#pragma omp parallel
  {
    std::vector<int32_t> arg(static_cast<size_t>(max ? bags.dim : 0));
    const int64_t parts = omp_get_num_threads(), me = omp_get_thread_num();
    pool_range(bags, rows, ids, skip_id, out, bags.num_bags * me / parts,
               bags.num_bags * (me + 1) / parts, arg.data());
  }
}

void unpool_bags(const BagPooling& bags, const float* grad, int64_t n, float* grad_rows) {
  const int64_t dim = bags.dim;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < bags.num_bags; ++b) {
    const float* g = grad + b * dim;
    const int32_t count = bags.counts[b];
    for (int64_t p = bags.offsets[b]; p < bags.offsets[b + 1]; ++p) {
      float* dst = grad_rows + p * dim;
      // unpool_column's cases, one loop each so that they vectorise.
      switch (bags.mode) {
        case PoolMode::kSum: {
          const float w = bags.weights ? bags.weights[p] : 1.f;
          for (int64_t j = 0; j < dim; ++j) dst[j] = g[j] * w;
          break;
        }
        case PoolMode::kMean: {
          const float c = static_cast<float>(count);
          if (count > 0)
            for (int64_t j = 0; j < dim; ++j) dst[j] = g[j] / c;
          else
            std::fill(dst, dst + dim, 0.f);
          break;
        }
        case PoolMode::kMax: {
          const int32_t* arg = bags.argmax + b * dim;
          const auto position = static_cast<int32_t>(p);
          for (int64_t j = 0; j < dim; ++j) dst[j] = arg[j] == position ? g[j] : 0.f;
          break;
        }
      }
    }
  }
  // Positions past the last bag are in no bag: no gradient.
  const int64_t end = bags.offsets[bags.num_bags];
  std::fill(grad_rows + end * dim, grad_rows + n * dim, 0.f);
}

void share_bag_grads(const BagPooling& bags, const float* grad, int64_t n, float* grad_rows,
                     int64_t* src_offsets) {
  const int64_t dim = bags.dim;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < bags.num_bags; ++b) {
    const float* g = grad + b * dim;
    float* dst = grad_rows + b * dim;
    const int32_t count = bags.counts[b];
    if (bags.mode == PoolMode::kSum) {
      std::copy(g, g + dim, dst);
    } else if (count > 0) {  // mean
      const float c = static_cast<float>(count);
      for (int64_t j = 0; j < dim; ++j) dst[j] = g[j] / c;
    } else {
      std::fill(dst, dst + dim, 0.f);
    }
    for (int64_t p = bags.offsets[b]; p < bags.offsets[b + 1]; ++p) src_offsets[p] = b * dim;
  }
  float* zero = grad_rows + bags.num_bags * dim;
  std::fill(zero, zero + dim, 0.f);
  const int64_t end = bags.offsets[bags.num_bags];
  std::fill(src_offsets + end, src_offsets + n, bags.num_bags * dim);
}

}  // namespace cpu
}  // namespace embtrain
