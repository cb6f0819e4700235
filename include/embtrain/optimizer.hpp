// Optimizer settings and the per-step scalars derived from them. The row
// updates themselves are in row_math.hpp.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "embtrain/row_math.hpp"

namespace embtrain {

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::kSgd;
  double lr = 0.01;
  double beta1 = 0.9, beta2 = 0.999;     // Adam
  std::optional<double> eps;             // default depends on kind: see resolved_eps
  double lr_decay = 0.0;                 // Adagrad
  double initial_accumulator_value = 0;  // Adagrad and row-wise Adagrad

  double resolved_eps() const;  // PyTorch's / FBGEMM's default when unset
  // Throws embtrain::Error naming the first setting out of its valid range.
  void validate() const;
};

// "sgd", "adagrad", "adam" (SparseAdam), "rowwise_adagrad".
OptimizerKind parse_optimizer_kind(const std::string& name);
const char* optimizer_name(OptimizerKind kind);

// The scalars of step t (t >= 1, counted per table), computed in double as
// PyTorch's Python code does and rounded to float once.
StepScalars step_scalars(const OptimizerConfig& config, int64_t t);

}  // namespace embtrain
