// Embedding: one whole table in one process, used the way torch.nn.Embedding
// is: forward(ids) -> (*, dim), backward(grad) -> coalesced sparse gradient,
// step() -> optimizer update of the touched rows. The CPU engine's
// single-process step (src/engine/local_step.hpp), which a ShardedEmbedding
// of one rank runs too.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "embtrain/embedding_table.hpp"
#include "embtrain/ids.hpp"
#include "embtrain/step_stats.hpp"

namespace embtrain {

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
  ~Embedding();
  Embedding(Embedding&&) noexcept;
  Embedding& operator=(Embedding&&) noexcept;

  // Renorms the batch's rows if max_norm, then writes ids.numel() x dim
  // floats to `out`. Throws embtrain::Error for an id out of range.
  void forward(const IdsView& ids, float* out);
  // Gradient of the last forward's output (ids.numel() x dim floats). The
  // rows of ids seen once are not copied: step() reads them from
  // `grad_out`, which must stay valid until step().
  void backward(const float* grad_out);
  // Optimizer step with the last backward's gradient (one step per backward).
  void step();

  // The last backward's coalesced gradient (a copy made on first use, so
  // first call it between backward() and step()).
  const SparseGrad& grad();
  const EmbeddingTable& table() const;
  EmbeddingTable& table();
  // Time per stage, summed over steps (bucket_by_owner: the distinct ids;
  // gather_owned; combine_at_owner: the reduce; update).
  const StepStats& stats() const;
  void reset_stats();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace embtrain
