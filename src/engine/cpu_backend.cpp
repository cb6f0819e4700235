#include "engine/cpu_backend.hpp"

#include <algorithm>
#include <new>

namespace embtrain {

void HostBytes::reserve(size_t bytes) {
  if (bytes <= capacity_) return;
  // A quarter more than asked: batch sizes vary from step to step, and each
  // new allocation costs a page fault per page on first touch.
  constexpr size_t kAlign = 64;
  const size_t grown = std::max(bytes, capacity_ + capacity_ / 4);
  data_.reset();
  capacity_ = 0;
  void* p = std::aligned_alloc(kAlign, (grown + kAlign - 1) / kAlign * kAlign);
  if (!p) throw std::bad_alloc();
  data_.reset(p);
  capacity_ = grown;
}

std::pair<int64_t, int64_t> CpuBackend::find_bad_id(const IdSpan& ids, int64_t bound) {
  for (int64_t i = 0; i < ids.n; ++i)
    if (ids.data[i] < 0 || ids.data[i] >= bound) return {i, ids.data[i]};
  return {-1, 0};
}

void CpuBackend::renorm_rows(int t, const int64_t* rows, int64_t n) {
  const TableSpec& s = spec(t);
  if (!s.max_norm || n == 0) return;
  cpu::renorm_rows(weights(t), s.dim, rows, n, /*row_offset=*/0,
                   static_cast<float>(*s.max_norm), static_cast<float>(s.norm_type));
}

void CpuBackend::combine(int t, const OwnerGrads& args, Grads* grads) {
  const UniqueIndex& index = *args.index;
  const int64_t dim = spec(t).dim;
  // An id whose one position stands for one occurrence (count 1, so scaled
  // by exactly 1) has its gradient as it arrived: update reads it in `src`.
  // Only the others are summed, into `sums`.
  grads->rows.clear();
  grads->grad_rows.clear();
  grads->sum_offsets.resize(static_cast<size_t>(index.num_unique));
  int64_t num_sums = 0;
  for (int64_t u = 0; u < index.num_unique; ++u) {
    grads->sum_offsets[u] = -1;
    if (index.unique[u] == args.skip_row) continue;
    grads->rows.push_back(index.unique[u]);
    const int32_t first = index.positions[index.offsets[u]];
    const bool as_arrived = index.count(u) == 1 && (!args.weights || args.weights[first] == 1);
    if (!as_arrived) grads->sum_offsets[u] = num_sums++ * dim;
  }
  if (grads->sums.size() < static_cast<size_t>(num_sums * dim))
    grads->sums.resize(static_cast<size_t>(num_sums * dim));
  for (int64_t u = 0; u < index.num_unique; ++u) {
    if (index.unique[u] == args.skip_row) continue;
    const int64_t p = index.positions[index.offsets[u]];
    grads->grad_rows.push_back(grads->sum_offsets[u] >= 0
                                   ? grads->sums.data() + grads->sum_offsets[u]
                                   : args.src + (args.src_offsets ? args.src_offsets[p] : p * dim));
  }
  SegmentLayout layout;
  layout.src_offsets = args.src_offsets;
  layout.weights = args.weights;
  layout.dst_offsets = grads->sum_offsets.data();
  cpu::segment_sum(args.src, dim, index, layout, args.scale_by_count, grads->sums.data());
}

void CpuBackend::update(int t, const StepScalars& scalars, const Grads& grads) {
  const int64_t n = static_cast<int64_t>(grads.rows.size());
  if (n == 0) return;
  cpu::update_rows(spec(t).optimizer.kind, scalars, weights(t), state(t), spec(t).dim,
                   grads.rows.data(), grads.grad_rows.data(), n, /*row_offset=*/0);
}

}  // namespace embtrain
