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

// One table's step in one process, on a table held by the caller: what
// Embedding runs, and what ShardedEmbedding runs when it has one rank.
class LocalStep {
 public:
  // Renorms the batch's rows if max_norm, then writes ids.numel() x dim
  // floats to `out`. Throws embtrain::Error for an id out of range, unless
  // the caller has `checked` them already (check_ids).
  void forward(EmbeddingTable& table, const IdsView& ids, float* out, PhaseTimes* times,
               bool checked = false);
  // Gradient of the last forward's output (ids.numel() x dim floats). The
  // rows of ids seen once are not copied: step() reads them from
  // `grad_out`, which must stay valid until step().
  void backward(const EmbeddingTable& table, const float* grad_out, PhaseTimes* times);
  // Optimizer step with the last backward's gradient (one step per backward).
  void step(EmbeddingTable& table, PhaseTimes* times);
  // The last backward's coalesced gradient (a copy made on first use, so
  // first call it between backward() and step()).
  const SparseGrad& grad(const EmbeddingTable& table);

 private:
  std::vector<int64_t> ids_;  // the last forward's ids, validated
  cpu::UniqueIndex index_;
  // The last backward's gradient, row by row: rows_[k] has grad_rows_[k],
  // a row of the caller's grad_out for an id seen once, else a row of sums_.
  std::vector<int64_t> rows_;
  std::vector<const float*> grad_rows_;
  RowBuffer sums_;
  std::vector<int64_t> sum_offsets_;  // per unique slot: its row in sums_, or -1
  bool pending_ = false;              // backward ran and step has not
  SparseGrad grad_;                   // grad()'s copy
  bool grad_copied_ = false;
};

class Embedding {
 public:
  // A fresh table: N(0, 1) rows drawn from `seed`, padding row zeroed.
  Embedding(const TableSpec& spec, uint64_t seed);
  // torch.nn.Embedding.from_pretrained: weights used as given
  // (num_embeddings x dim floats); spec.freeze stops updates.
  Embedding(const TableSpec& spec, const std::vector<float>& weights);

  // LocalStep's forward, backward (grad_out must stay valid until step())
  // and step on this table.
  void forward(const IdsView& ids, float* out) { step_.forward(table_, ids, out, &times_); }
  void backward(const float* grad_out) { step_.backward(table_, grad_out, &times_); }
  void step() { step_.step(table_, &times_); }

  // The last backward's coalesced gradient (a copy made on first use, so
  // first call it between backward() and step()).
  const SparseGrad& grad() { return step_.grad(table_); }
  const EmbeddingTable& table() const { return table_; }
  EmbeddingTable& table() { return table_; }
  const PhaseTimes& times() const { return times_; }
  void reset_times() { times_ = PhaseTimes{}; }

 private:
  EmbeddingTable table_;
  LocalStep step_;
  PhaseTimes times_;
};

}  // namespace embtrain
