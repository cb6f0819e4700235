// EmbeddingBag: one whole table in one process, used the way
// torch.nn.EmbeddingBag is: forward(ids, offsets) -> one pooled row per bag
// (sum, mean or max; bags.hpp), backward(grad) -> the rows' sparse gradient,
// step() -> optimizer update of the rows looked up. Embedding's step
// (LocalStep on the CPU) with the bags pooled around it; a ShardedEmbedding
// given BagsView does the same over ranks.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "embtrain/bags.hpp"
#include "embtrain/embedding_table.hpp"
#include "embtrain/ids.hpp"

namespace embtrain {

// torch.nn.EmbeddingBag's constructor arguments beyond the table's.
struct BagOptions {
  PoolMode mode = PoolMode::kMean;
  bool include_last_offset = false;
};

class EmbeddingBag {
 public:
  // A fresh table: N(0, 1) rows drawn from `seed`, padding row zeroed.
  EmbeddingBag(const TableSpec& spec, const BagOptions& options, uint64_t seed);
  // from_pretrained: weights used as given (num_embeddings x dim floats).
  EmbeddingBag(const TableSpec& spec, const BagOptions& options, const std::vector<float>& weights);
  ~EmbeddingBag();
  EmbeddingBag(EmbeddingBag&&) noexcept;
  EmbeddingBag& operator=(EmbeddingBag&&) noexcept;

  // Bags of `ids` as torch.nn.EmbeddingBag takes them (BagInput): a 2-D
  // batch with offsets null, or 1-D ids with offsets; per_sample_weights
  // (one per id, sum only) or null. Writes num_bags() x dim floats to
  // `out`. Throws embtrain::Error for bad ids, offsets or weights.
  void forward(const IdsView& ids, const std::vector<int64_t>* offsets, float* out,
               const float* per_sample_weights = nullptr);
  int64_t num_bags() const;  // of the last forward
  // Gradient of the last forward's output (num_bags() x dim floats).
  void backward(const float* grad_out);
  // Optimizer step with the last backward's gradient.
  void step();

  const EmbeddingTable& table() const;
  EmbeddingTable& table();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace embtrain
