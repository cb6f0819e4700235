#include "embtrain/optimizer.hpp"

#include <cmath>

#include "embtrain/errors.hpp"

namespace embtrain {

OptimizerKind parse_optimizer_kind(const std::string& name) {
  if (name == "sgd") return OptimizerKind::kSgd;
  if (name == "adagrad") return OptimizerKind::kAdagrad;
  if (name == "adam" || name == "sparse_adam") return OptimizerKind::kAdam;
  if (name == "rowwise_adagrad") return OptimizerKind::kRowwiseAdagrad;
  throw make_error("unknown optimizer '", name,
                   "' (valid: sgd, adagrad, adam, rowwise_adagrad)");
}

const char* optimizer_name(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSgd: return "sgd";
    case OptimizerKind::kAdagrad: return "adagrad";
    case OptimizerKind::kAdam: return "adam";
    case OptimizerKind::kRowwiseAdagrad: return "rowwise_adagrad";
  }
  return "?";
}

double OptimizerConfig::resolved_eps() const {
  if (eps) return *eps;
  return kind == OptimizerKind::kAdagrad ? 1e-10 : 1e-8;
}

void OptimizerConfig::validate() const {
  EMBTRAIN_REQUIRE(std::isfinite(lr) && lr >= 0, "optimizer lr = ", lr,
                   " is invalid (valid: a finite value >= 0)");
  EMBTRAIN_REQUIRE(std::isfinite(resolved_eps()) && resolved_eps() >= 0, "optimizer eps = ",
                   resolved_eps(), " is invalid (valid: a finite value >= 0)");
  EMBTRAIN_REQUIRE(beta1 >= 0 && beta1 < 1, "optimizer beta1 = ", beta1,
                   " is invalid (valid: [0, 1))");
  EMBTRAIN_REQUIRE(beta2 >= 0 && beta2 < 1, "optimizer beta2 = ", beta2,
                   " is invalid (valid: [0, 1))");
  EMBTRAIN_REQUIRE(std::isfinite(lr_decay) && lr_decay >= 0, "optimizer lr_decay = ", lr_decay,
                   " is invalid (valid: a finite value >= 0)");
  EMBTRAIN_REQUIRE(std::isfinite(initial_accumulator_value) && initial_accumulator_value >= 0,
                   "optimizer initial_accumulator_value = ", initial_accumulator_value,
                   " is invalid (valid: a finite value >= 0)");
}

StepScalars step_scalars(const OptimizerConfig& config, int64_t t) {
  StepScalars s;
  s.eps = static_cast<float>(config.resolved_eps());
  double lr = config.lr;
  switch (config.kind) {
    case OptimizerKind::kAdagrad:
      lr = config.lr / (1.0 + static_cast<double>(t - 1) * config.lr_decay);
      break;
    case OptimizerKind::kAdam: {
      const double bias1 = 1.0 - std::pow(config.beta1, static_cast<double>(t));
      const double bias2 = 1.0 - std::pow(config.beta2, static_cast<double>(t));
      lr = config.lr * std::sqrt(bias2) / bias1;
      s.one_minus_beta1 = static_cast<float>(1.0 - config.beta1);
      s.one_minus_beta2 = static_cast<float>(1.0 - config.beta2);
      break;
    }
    default: break;
  }
  s.lr = static_cast<float>(lr);
  return s;
}

}  // namespace embtrain
