// Per-row math shared by the CPU and CUDA backends: renorm scale, gradient
// frequency scaling and the four optimizer row updates. Each function works
// on one row of `dim` floats; the backends only choose how rows are spread
// over threads. The formulas are PyTorch's (see shared/TORCH_SEMANTICS.md).
#pragma once

#include <cmath>
#include <cstdint>

#include "embtrain/host_device.hpp"
#include "embtrain/sum_order.hpp"

namespace embtrain {

enum class OptimizerKind : int { kSgd = 0, kAdagrad = 1, kAdam = 2, kRowwiseAdagrad = 3 };

// p-norm of a row as PyTorch's CPU kernel computes it: on |x|, accumulated
// in float32. p = +inf gives the max of |x|. The terms are added in
// sum_order.hpp's row order, the CUDA kernel's (renorm.cu), so both give
// the same bits (for p other than 1, 2 and inf, as far as powf does).
EMBTRAIN_HD float row_norm(const float* row, int64_t dim, float p) {
  if (p == INFINITY) return ordered_row_max(dim, [=](int64_t j) { return fabsf(row[j]); });
  if (p == 1.f) return ordered_row_sum(dim, [=](int64_t j) { return fabsf(row[j]); });
  if (p == 2.f) return sqrtf(ordered_row_sum(dim, [=](int64_t j) { return row[j] * row[j]; }));
  const float acc = ordered_row_sum(dim, [=](int64_t j) { return powf(fabsf(row[j]), p); });
  return powf(acc, 1.f / p);
}

// Scale that max_norm applies to a row whose norm is `norm`, or 1 when the
// row is within bounds. Strict comparison and the 1e-7 guard are PyTorch's;
// the scale is computed in double as its CPU kernel does.
EMBTRAIN_HD float renorm_scale(float norm, float max_norm) {
  if (!(norm > max_norm)) return 1.f;
  return static_cast<float>(static_cast<double>(max_norm) /
                            (static_cast<double>(norm) + 1e-7));
}

EMBTRAIN_HD void renorm_row(float* row, int64_t dim, float max_norm, float p) {
  const float scale = renorm_scale(row_norm(row, dim, p), max_norm);
  if (scale != 1.f)
    for (int64_t j = 0; j < dim; ++j) row[j] *= scale;
}

// Scalars of one optimizer step that are the same for every row: computed
// once per step on the host from the step counter t (t >= 1).
struct StepScalars {
  float lr = 0.f;         // effective rate: lr (SGD, row-wise), clr (Adagrad), step_size (Adam)
  float eps = 0.f;
  float one_minus_beta1 = 0.f;
  float one_minus_beta2 = 0.f;
};

// One optimizer update with coalesced gradient g (duplicates summed,
// frequency scaling already applied). Element functions update one
// coordinate, so a GPU warp can split a row; the row functions loop them.
// Row state: Adagrad sum (dim floats); Adam m then v (2 x dim floats);
// row-wise Adagrad one accumulator G. SGD keeps none.
EMBTRAIN_HD void sgd_element(float& w, float g, const StepScalars& s) { w -= s.lr * g; }

EMBTRAIN_HD void adagrad_element(float& w, float& sum, float g, const StepScalars& s) {
  sum += g * g;
  w -= s.lr * (g / (sqrtf(sum) + s.eps));
}

EMBTRAIN_HD void adam_element(float& w, float& m, float& v, float g, const StepScalars& s) {
  m += (g - m) * s.one_minus_beta1;
  v += (g * g - v) * s.one_minus_beta2;
  w -= s.lr * (m / (sqrtf(v) + s.eps));
}

// FBGEMM's exact row-wise Adagrad: one accumulator per row, fed the mean of
// the squared gradient; returns the rate that every element of the row then
// uses as w -= rate * g.
EMBTRAIN_HD float rowwise_adagrad_rate(float& acc, float sum_of_squares, int64_t dim,
                                       const StepScalars& s) {
  acc += sum_of_squares / static_cast<float>(dim);
  return s.lr / (sqrtf(acc) + s.eps);
}

EMBTRAIN_HD void sgd_row(float* __restrict__ w, const float* __restrict__ g, int64_t dim,
                         const StepScalars& s) {
  for (int64_t j = 0; j < dim; ++j) sgd_element(w[j], g[j], s);
}

EMBTRAIN_HD void adagrad_row(float* __restrict__ w, float* __restrict__ sum,
                             const float* __restrict__ g, int64_t dim, const StepScalars& s) {
  for (int64_t j = 0; j < dim; ++j) adagrad_element(w[j], sum[j], g[j], s);
}

EMBTRAIN_HD void adam_row(float* __restrict__ w, float* __restrict__ m, float* __restrict__ v,
                          const float* __restrict__ g, int64_t dim, const StepScalars& s) {
  for (int64_t j = 0; j < dim; ++j) adam_element(w[j], m[j], v[j], g[j], s);
}

EMBTRAIN_HD void rowwise_adagrad_row(float* __restrict__ w, float* __restrict__ acc,
                                     const float* __restrict__ g, int64_t dim,
                                     const StepScalars& s) {
  // The squared norm in sum_order.hpp's row order, as update_row_warp's.
  const float sq = ordered_row_sum(dim, [=](int64_t j) { return g[j] * g[j]; });
  const float rate = rowwise_adagrad_rate(*acc, sq, dim, s);
  for (int64_t j = 0; j < dim; ++j) w[j] -= rate * g[j];
}

// Dispatch on the optimizer kind; `state` points at the row's state block
// (see optimizer_state_width for its size per row).
EMBTRAIN_HD void update_row(OptimizerKind kind, float* w, float* state, const float* g,
                            int64_t dim, const StepScalars& s) {
  switch (kind) {
    case OptimizerKind::kSgd: sgd_row(w, g, dim, s); break;
    case OptimizerKind::kAdagrad: adagrad_row(w, state, g, dim, s); break;
    case OptimizerKind::kAdam: adam_row(w, state, state + dim, g, dim, s); break;
    case OptimizerKind::kRowwiseAdagrad: rowwise_adagrad_row(w, state, g, dim, s); break;
  }
}

// Floats of optimizer state kept per row.
EMBTRAIN_HD int64_t optimizer_state_width(OptimizerKind kind, int64_t dim) {
  switch (kind) {
    case OptimizerKind::kSgd: return 0;
    case OptimizerKind::kAdagrad: return dim;
    case OptimizerKind::kAdam: return 2 * dim;
    case OptimizerKind::kRowwiseAdagrad: return 1;
  }
  return 0;
}

}  // namespace embtrain
