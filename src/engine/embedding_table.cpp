#include "embtrain/embedding_table.hpp"

#include <cmath>
#include <sstream>

#include "embtrain/errors.hpp"
#include "embtrain/kernels_cpu.hpp"
#include "embtrain/random.hpp"

namespace embtrain {

void TableSpec::validate() const {
  const std::string t = "table '" + name + "': ";
  EMBTRAIN_REQUIRE(num_embeddings >= 1, t, "num_embeddings = ", num_embeddings,
                   " is invalid (valid: >= 1)");
  EMBTRAIN_REQUIRE(dim >= 1, t, "embedding_dim = ", dim, " is invalid (valid: >= 1)");
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

int64_t IdsView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

IdsView IdsView::of(const NpyArray& a) {
  EMBTRAIN_REQUIRE(a.dtype == DType::kInt32 || a.dtype == DType::kInt64,
                   "ids must be int32 or int64, got ", dtype_name(a.dtype));
  return IdsView{a.data.data(), a.dtype, a.shape};
}

namespace {

// The multi-dimensional position of flat index `flat` in `shape`.
std::string position_string(int64_t flat, const std::vector<int64_t>& shape) {
  std::vector<int64_t> pos(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    pos[d] = flat % shape[d];
    flat /= shape[d];
  }
  return shape_to_string(pos);
}

template <typename T>
int64_t first_bad(const T* ids, int64_t n, int64_t bound) {
  int64_t bad = n;
#pragma omp parallel for reduction(min : bad)
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || static_cast<int64_t>(ids[i]) >= bound) bad = i < bad ? i : bad;
  return bad;
}

}  // namespace

std::string check_ids(const IdsView& ids, const TableSpec& spec) {
  if (ids.dtype != DType::kInt32 && ids.dtype != DType::kInt64)
    return detail::concat("table '", spec.name, "': ids must be int32 or int64, got ",
                          dtype_name(ids.dtype));
  const int64_t n = ids.numel();
  int64_t bad;
  int64_t value;
  if (ids.dtype == DType::kInt32) {
    const auto* p = static_cast<const int32_t*>(ids.data);
    bad = first_bad(p, n, spec.num_embeddings);
    value = bad < n ? p[bad] : 0;
  } else {
    const auto* p = static_cast<const int64_t*>(ids.data);
    bad = first_bad(p, n, spec.num_embeddings);
    value = bad < n ? p[bad] : 0;
  }
  if (bad == n) return "";
  return detail::concat("table '", spec.name, "': index ", value, " at position ",
                        position_string(bad, ids.shape), " of ids with shape ",
                        shape_to_string(ids.shape), " is out of range [0, ",
                        spec.num_embeddings, ")");
}

void ids_to_int64(const IdsView& ids, std::vector<int64_t>* out) {
  const int64_t n = ids.numel();
  out->resize(static_cast<size_t>(n));
  if (ids.dtype == DType::kInt32) {
    const auto* p = static_cast<const int32_t*>(ids.data);
    std::copy(p, p + n, out->begin());
  } else {
    const auto* p = static_cast<const int64_t*>(ids.data);
    std::copy(p, p + n, out->begin());
  }
}

std::vector<int64_t> validate_ids(const IdsView& ids, const TableSpec& spec) {
  const std::string error = check_ids(ids, spec);
  if (!error.empty()) throw Error(error);
  std::vector<int64_t> out;
  ids_to_int64(ids, &out);
  return out;
}

EmbeddingTable::EmbeddingTable(const TableSpec& spec, int64_t row_begin, int64_t num_rows,
                               uint64_t seed)
    : spec_(spec), row_begin_(row_begin), num_rows_(num_rows) {
  spec_.validate();
  weights_.resize(static_cast<size_t>(num_rows * spec_.dim));
  const int64_t dim = spec_.dim;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < num_rows; ++r)
    for (int64_t j = 0; j < dim; ++j)
      weights_[r * dim + j] = random_normal(seed, static_cast<uint64_t>(row_begin + r),
                                            static_cast<uint64_t>(j));
  const int64_t pad = spec_.padding_row();
  if (pad >= 0 && owns(pad))
    std::fill_n(weights_.begin() + (pad - row_begin) * dim, dim, 0.f);
  init_state();
}

EmbeddingTable::EmbeddingTable(const TableSpec& spec, int64_t row_begin, int64_t num_rows,
                               const std::vector<float>& rows)
    : spec_(spec), row_begin_(row_begin), num_rows_(num_rows), weights_(rows.begin(), rows.end()) {
  spec_.validate();
  EMBTRAIN_REQUIRE(static_cast<int64_t>(weights_.size()) == num_rows * spec_.dim, "table '",
                   spec_.name, "': given weights hold ", weights_.size(), " floats, expected ",
                   num_rows, " x ", spec_.dim);
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
  state_.assign(static_cast<size_t>(num_rows_ * width), init);
}

void EmbeddingTable::renorm(const int64_t* rows, int64_t n) {
  if (!spec_.max_norm) return;
  cpu::renorm_rows(weights_.data(), spec_.dim, rows, n, row_begin_,
                   static_cast<float>(*spec_.max_norm), static_cast<float>(spec_.norm_type));
}

void EmbeddingTable::gather(const int64_t* rows, int64_t n, float* out) const {
  cpu::gather_rows(weights_.data(), spec_.dim, rows, n, row_begin_, out);
}

void EmbeddingTable::apply_gradients(const int64_t* rows, const float* grads, int64_t n) {
  ++step_;
  if (spec_.freeze || n == 0) return;
  cpu::update_rows(spec_.optimizer.kind, step_scalars(spec_.optimizer, step_), weights_.data(),
                   state_.data(), spec_.dim, rows, grads, n, row_begin_);
}

void EmbeddingTable::apply_gradients(const int64_t* rows, const float* const* grads, int64_t n) {
  ++step_;
  if (spec_.freeze || n == 0) return;
  cpu::update_rows(spec_.optimizer.kind, step_scalars(spec_.optimizer, step_), weights_.data(),
                   state_.data(), spec_.dim, rows, grads, n, row_begin_);
}

}  // namespace embtrain
