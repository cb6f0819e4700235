// Embedding: LocalStep over the CPU backend on one table, with the checks a
// single process makes itself (no ranks to agree with).
#include "embtrain/embedding.hpp"

#include <algorithm>
#include <vector>

#include "embtrain/errors.hpp"
#include "engine/cpu_backend.hpp"
#include "engine/engine.hpp"
#include "engine/local_step.hpp"

namespace embtrain {


struct Embedding::Impl {
  explicit Impl(EmbeddingTable table)
      : shards(one_table(std::move(table))), backend(&shards, nullptr), step(&backend, &stats) {}

  std::vector<EmbeddingTable> shards;  // the one table
  CpuBackend backend;                  // no exchange: no communicator
  StepStats stats;
  LocalStep<CpuBackend> step;
  bool pending = false;  // backward ran and step has not
  SparseGrad grad;       // grad()'s copy
  bool grad_copied = false;
};

namespace {
// The whole table as the one shard of a plan of one rank.
ShardPlan whole(const TableSpec& spec) {
  spec.validate();
  return ShardPlan(spec.num_embeddings, 1);
}
}  // namespace

Embedding::Embedding(const TableSpec& spec, uint64_t seed)
    : impl_(std::make_unique<Impl>(EmbeddingTable(spec, whole(spec), 0, seed))) {}

Embedding::Embedding(const TableSpec& spec, const std::vector<float>& weights)
    : impl_(std::make_unique<Impl>(EmbeddingTable(spec, whole(spec), 0, weights))) {}

Embedding::~Embedding() = default;
Embedding::Embedding(Embedding&&) noexcept = default;
Embedding& Embedding::operator=(Embedding&&) noexcept = default;

void Embedding::forward(const IdsView& ids, float* out) {
  const TableSpec& spec = table().spec();
  std::string error = check_ids(ids, spec.name, spec.num_embeddings);
  if (error.empty()) error = check_batch_size(spec, ids.numel());
  if (!error.empty()) throw Error(error);
  impl_->step.prepare({impl_->backend.stage_ids(0, ids)});
  impl_->step.forward({out});
}

void Embedding::backward(const float* grad_out) {
  impl_->step.backward({grad_out});
  impl_->pending = true;
  impl_->grad_copied = false;
}

void Embedding::step() {
  EMBTRAIN_REQUIRE(impl_->pending, "Embedding::step() needs a backward() since the last step");
  impl_->step.step();
  impl_->pending = false;
}

const SparseGrad& Embedding::grad() {
  if (!impl_->grad_copied) {
    EMBTRAIN_REQUIRE(impl_->pending,
                     "Embedding::grad() reads the gradient between backward() and step()");
    // The step sums the gradient in its update; here the same sums, apart.
    const OwnerGrads& g = impl_->step.grads(0);
    const UniqueIndex& index = *g.index;
    const int64_t dim = table().dim();
    std::vector<int64_t> at(static_cast<size_t>(index.num_unique), -1);
    impl_->grad.rows.clear();
    for (int64_t u = 0; u < index.num_unique; ++u) {
      if (index.unique[u] == g.skip_row) continue;
      at[u] = static_cast<int64_t>(impl_->grad.rows.size()) * dim;
      impl_->grad.rows.push_back(index.unique[u]);
    }
    impl_->grad.values.resize(impl_->grad.rows.size() * static_cast<size_t>(dim));
    SegmentLayout layout;
    layout.src_offsets = g.src_offsets;
    layout.weights = g.weights;
    layout.dst_offsets = at.data();
    cpu::segment_sum(g.src, dim, index, layout, g.scale_by_count, impl_->grad.values.data());
    impl_->grad_copied = true;
  }
  return impl_->grad;
}

const EmbeddingTable& Embedding::table() const { return impl_->shards[0]; }
EmbeddingTable& Embedding::table() { return impl_->shards[0]; }
const StepStats& Embedding::stats() const { return impl_->stats; }
void Embedding::reset_stats() { impl_->stats = StepStats{}; }

}  // namespace embtrain
