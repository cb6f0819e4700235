#include "embtrain/embedding_table.hpp"

#include <cmath>
#include <sstream>

#include "embtrain/checked_size.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/random.hpp"

namespace embtrain {

void TableSpec::validate() const {
  const std::string t = "table '" + name + "': ";
  EMBTRAIN_REQUIRE(num_embeddings >= 1, t, "num_embeddings = ", num_embeddings,
                   " is invalid (valid: >= 1)");
  EMBTRAIN_REQUIRE(dim >= 1, t, "embedding_dim = ", dim, " is invalid (valid: >= 1)");
  // Weights plus at most two rows of optimizer state, in bytes, must not
  // overflow any size computed from them.
  EMBTRAIN_REQUIRE(checked_mul(num_embeddings, dim, kMaxTableElements), t, "num_embeddings x ",
                   "embedding_dim = ", num_embeddings, " x ", dim,
                   " is too large (valid: a product <= 2^59 = ", kMaxTableElements, ")");
  if (padding_idx) {
    const int64_t p = *padding_idx;
    EMBTRAIN_REQUIRE(p >= -num_embeddings && p < num_embeddings, t, "padding_idx = ", p,
                     " must be within num_embeddings (valid: [", -num_embeddings, ", ",
                     num_embeddings - 1, "])");
  }
  if (max_norm) {
    EMBTRAIN_REQUIRE(std::isfinite(*max_norm) && *max_norm > 0, t, "max_norm = ", *max_norm,
                     " is invalid (valid: a finite value > 0)");
    EMBTRAIN_REQUIRE(norm_type > 0, t, "norm_type = ", norm_type,
                     " is invalid (valid: > 0, or inf)");
  }
  try {
    optimizer.validate();
  } catch (const Error& e) {
    throw make_error(t, e.what());
  }
}

int64_t TableSpec::padding_row() const {
  if (!padding_idx) return -1;
  return *padding_idx < 0 ? num_embeddings + *padding_idx : *padding_idx;
}

EmbeddingTable::EmbeddingTable(const TableSpec& spec, const ShardPlan& plan, int rank,
                               uint64_t seed)
    : spec_(spec), plan_(plan), rank_(rank) {
  spec_.validate();
  EMBTRAIN_ASSERT(plan.num_rows() == spec_.num_embeddings && rank >= 0 && rank < plan.num_ranks());
  const int64_t rows = num_rows(), dim = spec_.dim;
  weights_.resize(static_cast<size_t>(rows * dim));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < dim; ++j)
      weights_[r * dim + j] = random_normal(seed, static_cast<uint64_t>(global_row(r)),
                                            static_cast<uint64_t>(j));
  const int64_t pad = spec_.padding_row();
  if (pad >= 0 && owns(pad))
    std::fill_n(weights_.begin() + plan_.local_row(pad) * dim, dim, 0.f);
  init_state();
}

EmbeddingTable::EmbeddingTable(const TableSpec& spec, const ShardPlan& plan, int rank,
                               const std::vector<float>& rows)
    : spec_(spec), plan_(plan), rank_(rank), weights_(rows.begin(), rows.end()) {
  spec_.validate();
  EMBTRAIN_ASSERT(plan.num_rows() == spec_.num_embeddings && rank >= 0 && rank < plan.num_ranks());
  EMBTRAIN_REQUIRE(static_cast<int64_t>(weights_.size()) == num_rows() * spec_.dim, "table '",
                   spec_.name, "': given weights hold ", weights_.size(), " floats, expected ",
                   num_rows(), " x ", spec_.dim);
  init_state();
}

int64_t EmbeddingTable::state_width() const {
  return spec_.freeze ? 0 : optimizer_state_width(spec_.optimizer.kind, spec_.dim);
}

void EmbeddingTable::init_state() {
  if (spec_.freeze) return;  // a frozen table never updates: keep no state
  const OptimizerConfig& opt = spec_.optimizer;
  const int64_t width = state_width();
  const float init = opt.kind == OptimizerKind::kAdagrad ||
                             opt.kind == OptimizerKind::kRowwiseAdagrad
                         ? static_cast<float>(opt.initial_accumulator_value)
                         : 0.f;
  state_.assign(static_cast<size_t>(num_rows() * width), init);
}

}  // namespace embtrain
