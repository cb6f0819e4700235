#include "embtrain/embedding.hpp"

#include <algorithm>

#include "embtrain/errors.hpp"
#include "embtrain/timer.hpp"

namespace embtrain {

Embedding::Embedding(const TableSpec& spec, uint64_t seed)
    : table_(spec, 0, spec.num_embeddings, seed) {}

Embedding::Embedding(const TableSpec& spec, const std::vector<float>& weights)
    : table_(spec, 0, spec.num_embeddings, weights) {}

void Embedding::forward(const IdsView& ids, float* out) {
  const TableSpec& spec = table_.spec();
  Stopwatch clock;
  ids_ = validate_ids(ids, spec);
  const int64_t n = static_cast<int64_t>(ids_.size());
  cpu::unique_ids(ids_.data(), n, spec.num_embeddings, &index_);
  times_.unique += clock.lap_ms();

  // max_norm visits each distinct row once, padding row included, before
  // any lookup (PyTorch's embedding_renorm_).
  table_.renorm(index_.unique.data(), index_.num_unique());
  table_.gather(ids_.data(), n, out);
  times_.gather += clock.lap_ms();
}

void Embedding::backward(const float* grad_out) {
  const TableSpec& spec = table_.spec();
  Stopwatch clock;
  const std::vector<int64_t>& unique = index_.unique;
  const int64_t pad = spec.padding_row();
  int64_t skip = -1;
  if (pad >= 0) {
    auto it = std::lower_bound(unique.begin(), unique.end(), pad);
    if (it != unique.end() && *it == pad) skip = it - unique.begin();
  }
  grad_.rows.clear();
  for (int64_t u = 0; u < index_.num_unique(); ++u)
    if (u != skip) grad_.rows.push_back(unique[u]);
  grad_.values.resize(grad_.rows.size() * static_cast<size_t>(spec.dim));
  cpu::segment_sum(grad_out, spec.dim, index_, spec.scale_grad_by_freq, skip,
                   grad_.values.data());
  times_.reduce += clock.lap_ms();
}

void Embedding::step() {
  Stopwatch clock;
  table_.apply_gradients(grad_.rows.data(), grad_.values.data(),
                         static_cast<int64_t>(grad_.rows.size()));
  times_.update += clock.lap_ms();
}

}  // namespace embtrain
