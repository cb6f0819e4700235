// Bags: torch.nn.EmbeddingBag's pooled lookups. A table's batch of ids is
// cut into bags of consecutive positions, and each bag's rows are pooled
// into one output row (sum, mean or max), the padding id taking no part.
// The exact semantics are in shared/TORCH_SEMANTICS.md ("EmbeddingBag");
// ShardedEmbedding::forward takes BagsView, and BagInput turns PyTorch's
// two ways of giving bags (a 2-D batch, or 1-D ids with offsets) into it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "embtrain/ids.hpp"

namespace embtrain {

// How a bag's rows become its output row (torch.nn.EmbeddingBag's `mode`).
enum class PoolMode { kSum, kMean, kMax };

const char* pool_mode_name(PoolMode mode);  // "sum", "mean", "max"
// Parses "sum", "mean" or "max"; false for anything else.
bool parse_pool_mode(const std::string& text, PoolMode* mode);

// Where a sharded table's bags are pooled (TableSpec::pool_at):
//  - requester: the rows of the bags' distinct ids travel to the requester,
//    as for Embedding, and are pooled there (bitwise one process's result);
//  - owner: each owner pools the ids it holds per bag and sends one partial
//    row per (bag, owner touched); the requester combines the partials in
//    owner rank order (one process's result up to float summation order).
// With one rank both are the same step.
enum class PoolAt { kRequester, kOwner };

const char* pool_at_name(PoolAt at);  // "requester", "owner"
// Parses "requester" or "owner"; false for anything else.
bool parse_pool_at(const std::string& text, PoolAt* at);

// The bags of one table's batch, in host memory: bag b holds the positions
// [offsets[b], offsets[b + 1]) of the flattened ids (num_bags + 1 offsets,
// the first 0, non-decreasing, the last at most the number of ids; ids past
// it belong to no bag: they are looked up, renormed and counted for
// scale_grad_by_freq, but pooled nowhere, as PyTorch's include_last_offset
// allows). `weights`: one per id, multiplying its row (sum only), or null.
struct BagsView {
  PoolMode mode = PoolMode::kMean;
  const int64_t* offsets = nullptr;  // null: the table's batch is not pooled
  int64_t num_bags = 0;
  const float* weights = nullptr;

  bool pooled() const { return offsets != nullptr; }
};

// Checks bags against a batch of n ids of `table` that scales by frequency
// or not: offsets as described above, weights only with sum, max not with
// scale_grad_by_freq (as PyTorch); "" or the error, naming the table, the
// offending offset's position and value and the valid range.
std::string check_bags(const BagsView& bags, int64_t n, const std::string& table,
                       bool scale_grad_by_freq);

// A batch as PyTorch's EmbeddingBag takes it, in the BagsView form.
//  - ids of shape (B, L) and no offsets: B bags of L ids each;
//  - 1-D ids and B offsets (the start of each bag; the last bag ends at
//    the end of ids) or, with include_last_offset, B + 1 of them.
// Owns the normalized offsets that view() points at.
class BagInput {
 public:
  // Throws embtrain::Error with PyTorch's conditions, naming `what` (a file
  // or "table 'name'"): offsets given with 2-D ids, none with 1-D ids, a
  // first offset other than 0, a decreasing or out-of-range one.
  BagInput(const IdsView& ids, const std::vector<int64_t>* offsets, bool include_last_offset,
           const std::string& what);

  int64_t num_bags() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  const std::vector<int64_t>& offsets() const { return offsets_; }
  BagsView view(PoolMode mode, const float* weights = nullptr) const {
    return BagsView{mode, offsets_.data(), num_bags(), weights};
  }

 private:
  std::vector<int64_t> offsets_;  // num_bags + 1
};

}  // namespace embtrain
