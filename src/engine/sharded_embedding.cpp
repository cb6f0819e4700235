// ShardedEmbedding: the shards of each table and the engine that steps them
// (step_engine.hpp), chosen when the tables are built and again when they
// move to a GPU. Every call goes to the engine.
#include "embtrain/sharded_embedding.hpp"

#include <utility>

#include "embtrain/errors.hpp"
#include "embtrain/random.hpp"
#include "engine/step_engine.hpp"

namespace embtrain {

namespace {

// Seed of table t's initial rows.
uint64_t table_seed(uint64_t seed, int t) {
  return random_bits(seed, 0x7ab1e5eedull, static_cast<uint64_t>(t));
}

std::vector<ShardPlan> plans_of(const std::vector<TableSpec>& specs, int ranks) {
  std::vector<ShardPlan> plans;
  for (const TableSpec& spec : specs) {
    spec.validate();
    plans.push_back(ShardedEmbedding::table_plan(spec.num_embeddings, ranks));
  }
  return plans;
}

}  // namespace

ShardedEmbedding::ShardedEmbedding(const std::vector<TableSpec>& specs, Communicator* comm,
                                   uint64_t seed)
    : comm_(comm), specs_(specs), plans_(plans_of(specs, comm->size())) {
  const int me = comm->rank();
  std::vector<EmbeddingTable> shards;
  for (int t = 0; t < num_tables(); ++t)
    shards.emplace_back(specs[t], plans_[t], me, table_seed(seed, t));
  engine_ = make_cpu_engine(std::move(shards), plans_, comm);
}

ShardedEmbedding::ShardedEmbedding(const std::vector<TableSpec>& specs, Communicator* comm,
                                   const std::vector<std::vector<float>>& local_rows)
    : comm_(comm), specs_(specs), plans_(plans_of(specs, comm->size())) {
  EMBTRAIN_ASSERT(local_rows.size() == specs.size());
  const int me = comm->rank();
  std::vector<EmbeddingTable> shards;
  for (int t = 0; t < num_tables(); ++t)
    shards.emplace_back(specs[t], plans_[t], me, local_rows[t]);
  engine_ = make_cpu_engine(std::move(shards), plans_, comm);
}

// Cyclic: frequency-ordered ids spread over every rank (see shard_plan.hpp).
ShardPlan ShardedEmbedding::table_plan(int64_t num_embeddings, int ranks) {
  return ShardPlan(num_embeddings, ranks, ShardPlan::Layout::kCyclic);
}

ShardedEmbedding::~ShardedEmbedding() = default;
ShardedEmbedding::ShardedEmbedding(ShardedEmbedding&&) noexcept = default;
ShardedEmbedding& ShardedEmbedding::operator=(ShardedEmbedding&&) noexcept = default;

const EmbeddingTable& ShardedEmbedding::shard(int t) const { return engine_->shards()[t]; }
EmbeddingTable& ShardedEmbedding::shard(int t) { return engine_->writable_shards()[t]; }

void ShardedEmbedding::use_cuda(const CudaOptions& options) {
  if (engine_->on_gpu()) return;
  // The shards leave the CPU engine only once the GPU engine has them.
  engine_ = make_cuda_engine(&engine_->writable_shards(), plans_, comm_, options);
}

bool ShardedEmbedding::on_gpu() const { return engine_->on_gpu(); }
std::string ShardedEmbedding::device_description() const { return engine_->description(); }

void ShardedEmbedding::forward(const std::vector<IdsView>& ids, const std::vector<float*>& out) {
  engine_->forward(ids, out);
}
void ShardedEmbedding::backward(const std::vector<const float*>& grad_out) {
  engine_->backward(grad_out);
}
void ShardedEmbedding::step() { engine_->step(); }

void ShardedEmbedding::prefetch(const std::vector<IdsView>& next_ids) {
  engine_->prefetch(next_ids);
}
void ShardedEmbedding::prefetch_device(const std::vector<IdSpan>& next_ids) {
  engine_->prefetch_device(next_ids);
}

void ShardedEmbedding::forward_device(const std::vector<IdSpan>& ids,
                                      const std::vector<float*>& out) {
  engine_->forward_device(ids, out);
}
void ShardedEmbedding::backward_device(const std::vector<const float*>& grad_out) {
  engine_->backward_device(grad_out);
}
void ShardedEmbedding::synchronize() { engine_->synchronize(); }

std::vector<float> ShardedEmbedding::gather_table(int t, int root) {
  const ShardPlan& plan = plans_[t];
  const int64_t dim = specs_[t].dim;
  std::vector<int64_t> counts(comm_->size());
  for (int r = 0; r < comm_->size(); ++r) counts[r] = plan.shard_rows(r) * dim;
  std::vector<float> shards, table;
  if (comm_->rank() == root) shards.resize(static_cast<size_t>(plan.num_rows() * dim));
  comm_->gatherv(std::as_const(*this).shard(t).weights().data(), counts[comm_->rank()],
                 shards.data(), counts, CommType::kFloat32, root);
  if (comm_->rank() != root) return table;
  // The shards arrived in rank order; each row goes to its global place.
  table.resize(shards.size());
  const float* shard = shards.data();
  for (int r = 0; r < comm_->size(); ++r) {
    plan.place_shard(r, shard, dim, table.data());
    shard += counts[r];
  }
  return table;
}

const StepStats& ShardedEmbedding::stats() const { return engine_->stats(); }
void ShardedEmbedding::reset_stats() { engine_->stats() = StepStats{}; }
void ShardedEmbedding::measure_skew(bool on) { engine_->measure_skew(on); }
std::vector<TransferShape> ShardedEmbedding::last_transfers() const {
  return engine_->last_transfers();
}
Communicator& ShardedEmbedding::data_comm() { return engine_->data_comm(); }

}  // namespace embtrain
