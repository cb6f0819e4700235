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

void CpuBackend::update(int t, const StepScalars& scalars, const Grads& grads) {
  if (!grads.index || grads.index->num_unique == 0) return;
  SegmentLayout layout;
  layout.src_offsets = grads.src_offsets;
  layout.weights = grads.weights;
  const TableSpec& s = spec(t);
  if (grads.wire)
    cpu::segment_sum_update(s.optimizer.kind, scalars, weights(t), state(t), s.dim,
                            /*row_offset=*/0, grads.wire, grads.wire_format, grads.wire_scale,
                            *grads.index, layout, grads.scale_by_count, grads.skip_row);
  else
    cpu::segment_sum_update(s.optimizer.kind, scalars, weights(t), state(t), s.dim,
                            /*row_offset=*/0, grads.src, *grads.index, layout,
                            grads.scale_by_count, grads.skip_row);
}

}  // namespace embtrain
