// EmbeddingBag: LocalStep over the CPU backend on one table, which pools
// the bags straight from the table, as for a ShardedEmbedding of one rank.
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
  std::vector<float> weights;
  std::vector<int32_t> counts, argmax;
  StepBags bags;
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

  const int64_t n = ids.numel();
  m.offsets = input.offsets();
  const IdSpan staged = m.backend.stage_ids(0, ids);
  m.step.prepare({staged});
  m.weights.assign(per_sample_weights, per_sample_weights ? per_sample_weights + n : nullptr);
  m.counts.resize(static_cast<size_t>(input.num_bags()));
  const bool max = m.options.mode == PoolMode::kMax;
  m.argmax.resize(max ? static_cast<size_t>(input.num_bags() * spec.dim) : 0);
  m.bags.pooling = BagPooling{m.options.mode, m.offsets.data(), input.num_bags(),
                              per_sample_weights ? m.weights.data() : nullptr, spec.dim,
                              m.counts.data(), max ? m.argmax.data() : nullptr};
  m.bags.ids = staged.data;
  m.bags.end = m.offsets.back();
  m.step.forward({out}, {&m.bags});
}

int64_t EmbeddingBag::num_bags() const { return impl_->bags.pooling.num_bags; }

void EmbeddingBag::backward(const float* grad_out) {
  Impl& m = *impl_;
  // The CPU step sums the gradient per id here: grad_out is read by now.
  m.step.backward({grad_out});
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
