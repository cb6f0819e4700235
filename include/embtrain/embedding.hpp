// Embedding: one whole table in one process, used the way torch.nn.Embedding
// is: forward(ids) -> (*, dim), backward(grad) -> coalesced sparse gradient,
// step() -> optimizer update of the touched rows.
#pragma once

#include <cstdint>
#include <vector>

#include "embtrain/embedding_table.hpp"
#include "embtrain/kernels_cpu.hpp"

namespace embtrain {

// Time spent in each stage of the step, in milliseconds, summed over calls.
struct PhaseTimes {
  double unique = 0, gather = 0, reduce = 0, update = 0;
};

// Rows present in a step's gradient (distinct, ascending, padding excluded)
// with their summed, frequency-scaled gradient.
struct SparseGrad {
  std::vector<int64_t> rows;
  std::vector<float> values;  // rows.size() x dim
};

class Embedding {
 public:
  // A fresh table: N(0, 1) rows drawn from `seed`, padding row zeroed.
  Embedding(const TableSpec& spec, uint64_t seed);
  // torch.nn.Embedding.from_pretrained: weights used as given
  // (num_embeddings x dim floats); spec.freeze stops updates.
  Embedding(const TableSpec& spec, const std::vector<float>& weights);

  // Renorms the batch's rows if max_norm, then writes ids.numel() x dim
  // floats to `out`. Throws embtrain::Error for an id out of range.
  void forward(const IdsView& ids, float* out);
  // Gradient of the last forward's output (ids.numel() x dim floats).
  void backward(const float* grad_out);
  // Optimizer step with the last backward's gradient.
  void step();

  const SparseGrad& grad() const { return grad_; }
  const EmbeddingTable& table() const { return table_; }
  EmbeddingTable& table() { return table_; }
  const PhaseTimes& times() const { return times_; }
  void reset_times() { times_ = PhaseTimes{}; }

 private:
  EmbeddingTable table_;
  std::vector<int64_t> ids_;  // the last forward's ids, validated
  cpu::UniqueIndex index_;
  SparseGrad grad_;
  PhaseTimes times_;
};

}  // namespace embtrain
