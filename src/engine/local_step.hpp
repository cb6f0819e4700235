// The step of one rank, which owns every row: the single-process step of
// torch.nn.Embedding on each table, with nothing to exchange. Written once
// over a backend (backend.hpp); Embedding and a ShardedEmbedding of one rank
// run it on the CPU, a ShardedEmbedding of one rank on a GPU runs it there.
//
//  forward:  bucket_by_owner  the batch's distinct ids (one owner: no split)
//            gather_owned     renorm them once (max_norm), then gather the
//                             batch's rows straight from the table, or
//                             pool a table's bags straight from it
//  backward: combine_at_owner the output gradient per distinct id, handed
//                             to update; with bags, each position's
//                             gradient read from its bag's
//  step:     update           summed per id and the optimizer applied, row
//                             by row in one pass (segment_sum_update)
#pragma once

#include <utility>
#include <vector>

#include "common/timer.hpp"
#include "embtrain/embedding_table.hpp"
#include "embtrain/ids.hpp"
#include "embtrain/optimizer.hpp"
#include "embtrain/step_stats.hpp"
#include "engine/backend.hpp"

namespace embtrain {

// The shards of a single process's step over one whole table (Embedding,
// EmbeddingBag): that table alone.
inline std::vector<EmbeddingTable> one_table(EmbeddingTable table) {
  std::vector<EmbeddingTable> tables;
  tables.push_back(std::move(table));
  return tables;
}

template <typename Backend>
class LocalStep {
 public:
  // `backend` and `stats` outlive the step. One rank owns every row, so a
  // table with pool_at = owner pools its bags here as at the requester.
  LocalStep(Backend* backend, StepStats* stats)
      : b_(*backend), stats_(*stats), tables_(static_cast<size_t>(backend->num_tables())) {}

  // The next step's distinct ids: ids[t] (validated) in the backend's
  // memory, which must stay there until its forward(). It can run a step
  // ahead (ShardedEmbedding::prefetch).
  void prepare(const std::vector<IdSpan>& ids) {
    next_ = ids;
    bucket_by_owner(ids);
  }
  // The prepared step's forward: out[t] in the backend's memory, the
  // pooled bags (bags x dim) of a table whose bags[t] is given (not null;
  // it must stay valid until step()), else the rows of its ids.
  void forward(const std::vector<float*>& out, const std::vector<const StepBags*>& bags = {}) {
    current_ ^= 1;
    bags_ = bags;
    bags_.resize(tables_.size(), nullptr);
    gather_owned(next_, out);
    ++stats_.steps;
  }
  // grad_out[t] (bags x dim for a pooled table) must stay valid until step().
  void backward(const std::vector<const float*>& grad_out) { combine_at_owner(grad_out); }
  void step() { update(); }

  // One rank has nothing to exchange.
  void measure_skew(bool) {}
  void set_overlap_chunks(int) {}
  std::vector<TransferShape> last_transfers() const { return {}; }

  // The last combine_at_owner's gradients of table t (for Embedding::grad).
  const typename Backend::Grads& grads(int t) const { return tables_[t].grads; }

 private:
  // A step's distinct ids, twice: prepare() fills one while the step
  // before may still use the other.
  struct Table {
    typename Backend::UniqueWorkspace ws[2];
    UniqueIndex index[2];
    typename Backend::Grads grads;
    BagGrads<Backend> bag_grads;
  };

  int num_tables() const { return static_cast<int>(tables_.size()); }

  void bucket_by_owner(const std::vector<IdSpan>& ids) {
    Stopwatch clock;
    const int slot = current_ ^ 1;
    for (int t = 0; t < num_tables(); ++t)
      tables_[t].index[slot] = b_.unique_ids(ids[t].data, ids[t].n, b_.spec(t).num_embeddings,
                                             &tables_[t].ws[slot]);
    stats_[Stage::kBucketByOwner] += clock.lap_ms();
  }

  // max_norm visits each distinct row once, padding row included, before
  // any lookup (PyTorch's embedding_renorm_).
  void gather_owned(const std::vector<IdSpan>& ids, const std::vector<float*>& out) {
    Stopwatch clock;
    for (int t = 0; t < num_tables(); ++t) {
      const UniqueIndex& index = tables_[t].index[current_];
      b_.renorm_rows(t, index.unique, index.num_unique);
      if (const StepBags* bags = bags_[t]) {
        // A position's row is its id's: the table's row unique[inverse[p]].
        const PositionRows rows{b_.weights(t), index.inverse, index.unique, b_.spec(t).dim};
        b_.pool_bags(bags->pooling, rows, bags->ids, b_.spec(t).padding_row(), out[t]);
      } else {
        b_.gather_rows(t, ids[t].data, ids[t].n, out[t]);
      }
    }
    b_.synchronize();
    stats_[Stage::kGatherOwned] += clock.lap_ms();
  }

  void combine_at_owner(const std::vector<const float*>& grad_out) {
    Stopwatch clock;
    for (int t = 0; t < num_tables(); ++t) {
      OwnerGrads args;
      args.index = &tables_[t].index[current_];
      args.src = grad_out[t];
      if (const StepBags* bags = bags_[t]) {
        const auto rows = tables_[t].bag_grads.from_bags(b_, *bags, grad_out[t], args.index->n);
        args.src = rows.src;
        args.src_offsets = rows.src_offsets;
      }
      args.scale_by_count = b_.spec(t).scale_grad_by_freq;
      args.skip_row = b_.spec(t).padding_row();
      b_.combine(t, args, &tables_[t].grads);
    }
    b_.synchronize();
    stats_[Stage::kCombineAtOwner] += clock.lap_ms();
  }

  // Every table's step counter advances, also when no row of it was in
  // the batch (PyTorch's optimizers count steps per parameter).
  void update() {
    Stopwatch clock;
    for (int t = 0; t < num_tables(); ++t) {
      EmbeddingTable& host = b_.host(t);
      host.set_step(host.step() + 1);
      if (host.spec().freeze) continue;
      b_.update(t, step_scalars(host.spec().optimizer, host.step()), tables_[t].grads);
    }
    b_.synchronize();
    stats_[Stage::kUpdate] += clock.lap_ms();
  }

  Backend& b_;
  StepStats& stats_;
  std::vector<Table> tables_;
  int current_ = 0;            // the index forward() last took up
  std::vector<IdSpan> next_;   // the prepared step's ids
  std::vector<const StepBags*> bags_;  // the last forward's, per table (null: none)
};

}  // namespace embtrain
