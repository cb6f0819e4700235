#include "embtrain/embedding.hpp"

#include <algorithm>

#include "embtrain/errors.hpp"
#include "embtrain/timer.hpp"

namespace embtrain {

Embedding::Embedding(const TableSpec& spec, uint64_t seed)
    : table_(spec, 0, spec.num_embeddings, seed) {}

Embedding::Embedding(const TableSpec& spec, const std::vector<float>& weights)
    : table_(spec, 0, spec.num_embeddings, weights) {}

void LocalStep::forward(EmbeddingTable& table, const IdsView& ids, float* out,
                        PhaseTimes* times, bool checked) {
  const TableSpec& spec = table.spec();
  Stopwatch clock;
  if (!checked) {
    const std::string error = check_ids(ids, spec);
    if (!error.empty()) throw Error(error);
  }
  ids_to_int64(ids, &ids_);
  const int64_t n = static_cast<int64_t>(ids_.size());
  cpu::unique_ids(ids_.data(), n, spec.num_embeddings, &index_);
  times->unique += clock.lap_ms();

  // max_norm visits each distinct row once, padding row included, before
  // any lookup (PyTorch's embedding_renorm_).
  table.renorm(index_.unique.data(), index_.num_unique());
  table.gather(ids_.data(), n, out);
  times->gather += clock.lap_ms();
}

void LocalStep::backward(const EmbeddingTable& table, const float* grad_out,
                         PhaseTimes* times) {
  const TableSpec& spec = table.spec();
  Stopwatch clock;
  const int64_t num_unique = index_.num_unique();
  const int64_t pad = spec.padding_row();
  // Most ids of a batch occur once: their coalesced gradient is their own
  // row of grad_out (a count of 1 scales by exactly 1), so only ids seen
  // more than once are summed, into sums_.
  sum_offsets_.resize(static_cast<size_t>(num_unique));
  rows_.clear();
  int64_t num_sums = 0;
  for (int64_t u = 0; u < num_unique; ++u) {
    const bool summed = index_.unique[u] != pad && index_.count(u) > 1;
    sum_offsets_[u] = summed ? num_sums++ * spec.dim : -1;
    if (index_.unique[u] != pad) rows_.push_back(index_.unique[u]);
  }
  if (sums_.size() < static_cast<size_t>(num_sums * spec.dim))
    sums_.resize(static_cast<size_t>(num_sums * spec.dim));
  grad_rows_.clear();
  for (int64_t u = 0; u < num_unique; ++u) {
    if (index_.unique[u] == pad) continue;
    grad_rows_.push_back(sum_offsets_[u] >= 0
                             ? sums_.data() + sum_offsets_[u]
                             : grad_out + index_.positions[index_.offsets[u]] * spec.dim);
  }
  cpu::SegmentLayout layout;
  layout.dst_offsets = sum_offsets_.data();
  cpu::segment_sum(grad_out, spec.dim, index_, layout, spec.scale_grad_by_freq, sums_.data());
  pending_ = true;
  grad_copied_ = false;
  times->reduce += clock.lap_ms();
}

const SparseGrad& LocalStep::grad(const EmbeddingTable& table) {
  if (!grad_copied_) {
    EMBTRAIN_REQUIRE(pending_, "Embedding::grad() reads the gradient between backward() and step()");
    const int64_t dim = table.dim();
    grad_.rows = rows_;
    grad_.values.resize(rows_.size() * static_cast<size_t>(dim));
    for (size_t k = 0; k < rows_.size(); ++k)
      std::copy(grad_rows_[k], grad_rows_[k] + dim, grad_.values.begin() + k * dim);
    grad_copied_ = true;
  }
  return grad_;
}

void LocalStep::step(EmbeddingTable& table, PhaseTimes* times) {
  EMBTRAIN_REQUIRE(pending_, "Embedding::step() needs a backward() since the last step");
  Stopwatch clock;
  table.apply_gradients(rows_.data(), grad_rows_.data(), static_cast<int64_t>(rows_.size()));
  pending_ = false;
  times->update += clock.lap_ms();
}

}  // namespace embtrain
