#include "embtrain/embedding_table.hpp"

#include <cmath>
#include <sstream>

#include "embtrain/checked_size.hpp"
#include "embtrain/errors.hpp"
#include "kernels/cpu/cpu_kernels.hpp"

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

void draw_fresh_rows(const FreshRows& fresh, const TableSpec& spec, const ShardPlan& plan, int rank,
                     int64_t first, int64_t n, float* out) {
  const int64_t dim = spec.dim;
  if (fresh.zeros) {
    cpu::fill_floats(out, n * dim, 0.f);
    return;
  }
  if (n > 0)
    cpu::draw_normal_rows(fresh.seed, plan.global_row(rank, first), plan.row_stride(), n, dim,
                          fresh.scale, out);
  const int64_t pad = spec.padding_row();
  if (pad >= 0 && plan.owner(pad) == rank) {
    const int64_t local = plan.local_row(pad);
    if (local >= first && local < first + n) std::fill_n(out + (local - first) * dim, dim, 0.f);
  }
}

EmbeddingTable::EmbeddingTable(const TableSpec& spec, const ShardPlan& plan, int rank)
    : spec_(spec), plan_(plan), rank_(rank) {
  spec_.validate();
  EMBTRAIN_ASSERT(plan.num_rows() == spec_.num_embeddings && rank >= 0 && rank < plan.num_ranks());
}

EmbeddingTable::EmbeddingTable(const TableSpec& spec, const ShardPlan& plan, int rank,
                               uint64_t seed)
    : EmbeddingTable(unplaced(spec, plan, rank, FreshRows{seed})) {
  place_on_host();
}

EmbeddingTable EmbeddingTable::unplaced(const TableSpec& spec, const ShardPlan& plan, int rank,
                                        const FreshRows& fresh) {
  EmbeddingTable table(spec, plan, rank);
  table.placed_ = false;
  table.fresh_ = fresh;
  return table;
}

void EmbeddingTable::place_on_host() {
  if (placed_) return;
  weights_.resize(static_cast<size_t>(num_rows() * spec_.dim));  // unset: drawn next
  draw_fresh_rows(fresh_, spec_, plan_, rank_, 0, num_rows(), weights_.data());
  init_state();
  placed_ = true;
}

void EmbeddingTable::release_rows() {
  RowBuffer().swap(weights_);
  RowBuffer().swap(state_);
  placed_ = false;
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

int64_t part_width(const TableSpec& spec, TablePart part) {
  if (part == TablePart::kWeights) return spec.dim;
  return spec.freeze ? 0 : optimizer_state_width(spec.optimizer.kind, spec.dim);
}

int64_t EmbeddingTable::state_width() const { return part_width(spec_, TablePart::kState); }

float EmbeddingTable::initial_state() const {
  const OptimizerConfig& opt = spec_.optimizer;
  return opt.kind == OptimizerKind::kAdagrad || opt.kind == OptimizerKind::kRowwiseAdagrad
             ? static_cast<float>(opt.initial_accumulator_value)
             : 0.f;
}

void EmbeddingTable::init_state() {
  if (spec_.freeze) return;  // a frozen table never updates: keep no state
  state_.resize(static_cast<size_t>(num_rows() * state_width()));  // unset (huge_pages.hpp)
  cpu::fill_floats(state_.data(), static_cast<int64_t>(state_.size()), initial_state());
}

}  // namespace embtrain
