// EmbeddingBag: LocalStep over the CPU backend on one table, the bags
// pooled by the CPU kernels around it, as Engine pools them for a
// ShardedEmbedding.
#include "embtrain/embedding_bag.hpp"

#include "embtrain/errors.hpp"
#include "engine/cpu_backend.hpp"
#include "engine/engine.hpp"
#include "engine/local_step.hpp"

namespace embtrain {

struct EmbeddingBag::Impl {
  Impl(EmbeddingTable table, const BagOptions& bag_options)
      : options(bag_options),
        shards(one_table(std::move(table))),
        backend(&shards, nullptr),
        step(&backend, &stats) {}

  BagOptions options;
  std::vector<EmbeddingTable> shards;  // the one table
  CpuBackend backend;                  // no exchange: no communicator
  StepStats stats;
  LocalStep<CpuBackend> step;
  // The last forward's bags and what pooling kept for backward.
  std::vector<int64_t> offsets;
  std::vector<float> weights, rows, grad_rows;
  std::vector<int32_t> counts, argmax;
  BagPooling pooling;
  int64_t n = 0;
  bool pending = false;  // backward ran and step has not
};

namespace {
ShardPlan whole(const TableSpec& spec) {
  spec.validate();
  return ShardPlan(spec.num_embeddings, 1);
}
}  // namespace

EmbeddingBag::EmbeddingBag(const TableSpec& spec, const BagOptions& options, uint64_t seed)
    : impl_(std::make_unique<Impl>(EmbeddingTable(spec, whole(spec), 0, seed), options)) {}

EmbeddingBag::EmbeddingBag(const TableSpec& spec, const BagOptions& options,
                           const std::vector<float>& weights)
    : impl_(std::make_unique<Impl>(EmbeddingTable(spec, whole(spec), 0, weights), options)) {}

EmbeddingBag::~EmbeddingBag() = default;
EmbeddingBag::EmbeddingBag(EmbeddingBag&&) noexcept = default;
EmbeddingBag& EmbeddingBag::operator=(EmbeddingBag&&) noexcept = default;

void EmbeddingBag::forward(const IdsView& ids, const std::vector<int64_t>* offsets, float* out,
                           const float* per_sample_weights) {
  Impl& m = *impl_;
  const TableSpec& spec = table().spec();
  const std::string what = "table '" + spec.name + "'";
  const BagInput input(ids, offsets, m.options.include_last_offset, what);
  const BagsView bags = input.view(m.options.mode, per_sample_weights);
  std::string error = check_bags(bags, ids.numel(), spec.name, spec.scale_grad_by_freq);
  if (error.empty()) error = check_ids(ids, spec.name, spec.num_embeddings);
  if (error.empty()) error = check_batch_size(spec, ids.numel());
  if (!error.empty()) throw Error(error);

  m.n = ids.numel();
  m.offsets = input.offsets();
  const IdSpan staged = m.backend.stage_ids(0, ids);
  m.step.prepare({staged});
  m.rows.resize(static_cast<size_t>(m.n * spec.dim));
  m.step.forward({m.rows.data()});
  m.weights.assign(per_sample_weights, per_sample_weights ? per_sample_weights + m.n : nullptr);
  m.counts.resize(static_cast<size_t>(input.num_bags()));
  const bool max = m.options.mode == PoolMode::kMax;
  m.argmax.resize(max ? static_cast<size_t>(input.num_bags() * spec.dim) : 0);
  m.pooling = BagPooling{m.options.mode, m.offsets.data(), input.num_bags(),
                         per_sample_weights ? m.weights.data() : nullptr, spec.dim,
                         m.counts.data(), max ? m.argmax.data() : nullptr};
  cpu::pool_bags(m.pooling, m.rows.data(), staged.data, spec.padding_row(), out);
}

int64_t EmbeddingBag::num_bags() const { return impl_->pooling.num_bags; }

void EmbeddingBag::backward(const float* grad_out) {
  Impl& m = *impl_;
  m.grad_rows.resize(static_cast<size_t>(m.n * table().dim()));
  cpu::unpool_bags(m.pooling, grad_out, m.n, m.grad_rows.data());
  m.step.backward({m.grad_rows.data()});  // read until step(): kept in grad_rows
  m.pending = true;
}

void EmbeddingBag::step() {
  EMBTRAIN_REQUIRE(impl_->pending, "EmbeddingBag::step() needs a backward() since the last step");
  impl_->step.step();
  impl_->pending = false;
}

const EmbeddingTable& EmbeddingBag::table() const { return impl_->shards[0]; }
EmbeddingTable& EmbeddingBag::table() { return impl_->shards[0]; }

}  // namespace embtrain
