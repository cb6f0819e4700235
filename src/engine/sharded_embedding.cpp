// ShardedEmbedding: the shards of each table and the engine that steps them
// (step_engine.hpp), chosen when the tables are placed (fresh tables wait,
// undrawn, until the first call that needs an engine or use_cuda) and
// again when they move to a GPU. Every call goes to the engine.
#include "embtrain/sharded_embedding.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>

#include "embtrain/comm_precision.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/optimizer.hpp"
#include "embtrain/random.hpp"
#include "engine/step_engine.hpp"

namespace embtrain {

namespace {

constexpr size_t kDefaultChunkBytes = size_t{64} << 20;

// 0: not set yet (the environment's, else the default, on first use).
std::atomic<size_t> g_chunk_bytes{0};

}  // namespace

size_t transfer_chunk_bytes() {
  size_t bytes = g_chunk_bytes.load();
  if (bytes != 0) return bytes;
  bytes = kDefaultChunkBytes;
  if (const char* env = std::getenv("EMBTRAIN_TRANSFER_CHUNK_BYTES")) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(env, &end, 10);
    EMBTRAIN_REQUIRE(end != env && *end == '\0' && v >= 1, "EMBTRAIN_TRANSFER_CHUNK_BYTES = '", env,
                     "' is invalid (valid: a number of bytes >= 1)");
    bytes = static_cast<size_t>(v);
  }
  set_transfer_chunk_bytes(bytes);
  return g_chunk_bytes.load();
}

void set_transfer_chunk_bytes(size_t bytes) {
  g_chunk_bytes = std::max(bytes - bytes % sizeof(float), sizeof(float));
}

int64_t transfer_chunk_rows(int64_t width) {
  const auto row_bytes = static_cast<size_t>(std::max<int64_t>(width, 1)) * sizeof(float);
  return static_cast<int64_t>(std::max<size_t>(1, transfer_chunk_bytes() / row_bytes));
}

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

namespace {

std::string optional_text(const std::optional<double>& v) {
  return v ? detail::concat(*v) : "none";
}

// Everything about the tables that every rank must hold the same, by name.
AgreedValues spec_values(const std::vector<TableSpec>& specs) {
  AgreedValues values;
  for (const TableSpec& s : specs) {
    const std::string p = "table." + s.name + ".";
    const OptimizerConfig& o = s.optimizer;
    const std::pair<const char*, std::string> fields[] = {
        {"rows", detail::concat(s.num_embeddings)},
        {"dim", detail::concat(s.dim)},
        {"padding_idx", s.padding_idx ? detail::concat(*s.padding_idx) : "none"},
        {"max_norm", optional_text(s.max_norm)},
        {"norm_type", detail::concat(s.norm_type)},
        {"scale_grad_by_freq", s.scale_grad_by_freq ? "true" : "false"},
        {"freeze", s.freeze ? "true" : "false"},
        {"optimizer", optimizer_name(o.kind)},
        {"lr", detail::concat(o.lr)},
        {"betas", detail::concat(o.beta1, ",", o.beta2)},
        {"eps", optional_text(o.eps)},
        {"lr_decay", detail::concat(o.lr_decay)},
        {"initial_accumulator_value", detail::concat(o.initial_accumulator_value)},
        {"comm_precision", comm_precision_name(s.comm_precision)},
        {"pool_at", pool_at_name(s.pool_at)},
    };
    for (const auto& [key, value] : fields) values.emplace_back(p + key, value);
  }
  return values;
}

// Every rank must build the same tables: a rank with another dim or row
// count would overflow its peers' buffers in the first exchange.
void agree_on_tables(Communicator& comm, const AgreedValues& values) {
  const std::string differ = find_disagreement(comm, values, "table setting");
  if (!differ.empty())
    throw AgreedError(differ + "; every rank must build the same tables (the same configuration "
                               "on every rank)");
}

}  // namespace

ShardedEmbedding::ShardedEmbedding(const std::vector<TableSpec>& specs, Communicator* comm,
                                   uint64_t seed)
    : comm_(comm), specs_(specs), plans_(plans_of(specs, comm->size())) {
  AgreedValues values = spec_values(specs);
  values.emplace_back("seed", std::to_string(seed));
  agree_on_tables(*comm, values);
  // Drawn where they are placed (engine(), use_cuda).
  const int me = comm->rank();
  for (int t = 0; t < num_tables(); ++t)
    unplaced_.push_back(
        EmbeddingTable::unplaced(specs[t], plans_[t], me, FreshRows{table_seed(seed, t)}));
}

ShardedEmbedding::ShardedEmbedding(const std::vector<TableSpec>& specs, Communicator* comm,
                                   const std::vector<std::vector<float>>& local_rows)
    : comm_(comm), specs_(specs), plans_(plans_of(specs, comm->size())) {
  EMBTRAIN_ASSERT(local_rows.size() == specs.size());
  agree_on_tables(*comm, spec_values(specs));
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

StepEngine& ShardedEmbedding::engine() const {
  if (!engine_) {
    for (EmbeddingTable& shard : unplaced_) shard.place_on_host();
    engine_ = make_cpu_engine(std::move(unplaced_), plans_, comm_);
    unplaced_.clear();
  }
  return *engine_;
}

const EmbeddingTable& ShardedEmbedding::shard(int t) const { return engine().shards()[t]; }
EmbeddingTable& ShardedEmbedding::shard(int t) { return engine().shards()[t]; }

int64_t ShardedEmbedding::width(int t, TablePart part) const {
  return part_width(specs_[t], part);
}

void ShardedEmbedding::read_rows(int t, TablePart part, int64_t first, int64_t count,
                                 float* out) const {
  EMBTRAIN_ASSERT(t >= 0 && t < num_tables() && first >= 0 && count >= 0 &&
                  first + count <= plans_[t].shard_rows(comm_->rank()));
  if (count > 0 && width(t, part) > 0) engine().read_rows(t, part, first, count, out);
}

void ShardedEmbedding::write_rows(int t, TablePart part, int64_t first, int64_t count,
                                  const float* in) {
  EMBTRAIN_ASSERT(t >= 0 && t < num_tables() && first >= 0 && count >= 0 &&
                  first + count <= plans_[t].shard_rows(comm_->rank()));
  if (count > 0 && width(t, part) > 0) engine().write_rows(t, part, first, count, in);
}

void ShardedEmbedding::set_fresh_rows(int t, float scale, bool zeros) {
  EMBTRAIN_REQUIRE(!engine_, "table '", specs_[t].name,
                   "': set_fresh_rows must come before the tables are placed (before any step, "
                   "row access or use_cuda)");
  FreshRows fresh = unplaced_[t].fresh();
  fresh.scale = scale;
  fresh.zeros = zeros;
  unplaced_[t].set_fresh(fresh);
}

void ShardedEmbedding::use_cuda(const CudaOptions& options) {
  if (engine_ && engine_->on_gpu()) return;
  // Unplaced shards are drawn on the GPU; placed ones leave the CPU engine
  // only once the GPU engine has them.
  if (!engine_) {
    engine_ = make_cuda_engine(&unplaced_, plans_, comm_, options);
    unplaced_.clear();
    return;
  }
  engine_ = make_cuda_engine(&engine_->shards(), plans_, comm_, options);
}

bool ShardedEmbedding::on_gpu() const { return engine_ && engine_->on_gpu(); }
std::string ShardedEmbedding::device_description() const {
  return engine_ ? engine_->description() : "";
}

void ShardedEmbedding::forward(const std::vector<IdsView>& ids, const std::vector<float*>& out) {
  engine().forward(ids, out);
}
void ShardedEmbedding::forward(const std::vector<IdsView>& ids, const std::vector<BagsView>& bags,
                               const std::vector<float*>& out) {
  engine().forward(ids, bags, out);
}
void ShardedEmbedding::backward(const std::vector<const float*>& grad_out) {
  engine().backward(grad_out);
}
void ShardedEmbedding::step() { engine().step(); }

void ShardedEmbedding::prefetch(const std::vector<IdsView>& next_ids) {
  engine().prefetch(next_ids);
}
void ShardedEmbedding::prefetch_device(const std::vector<IdSpan>& next_ids) {
  engine().prefetch_device(next_ids);
}

void ShardedEmbedding::forward_device(const std::vector<IdSpan>& ids,
                                      const std::vector<float*>& out) {
  engine().forward_device(ids, out);
}
void ShardedEmbedding::backward_device(const std::vector<const float*>& grad_out) {
  engine().backward_device(grad_out);
}
void ShardedEmbedding::synchronize() { engine().synchronize(); }

std::vector<float> ShardedEmbedding::gather_table(int t, int root) {
  const ShardPlan& plan = plans_[t];
  const int64_t dim = specs_[t].dim;
  std::vector<int64_t> counts(comm_->size());
  for (int r = 0; r < comm_->size(); ++r) counts[r] = plan.shard_rows(r) * dim;
  // A GPU's rows come to the host first; the CPU's are sent as they are.
  std::vector<float> mine, shards, table;
  const float* rows = nullptr;
  if (on_gpu()) {
    mine.resize(static_cast<size_t>(counts[comm_->rank()]));
    read_rows(t, TablePart::kWeights, 0, plan.shard_rows(comm_->rank()), mine.data());
    rows = mine.data();
  } else {
    rows = std::as_const(*this).shard(t).weights().data();
  }
  if (comm_->rank() == root) shards.resize(static_cast<size_t>(plan.num_rows() * dim));
  comm_->gatherv(rows, counts[comm_->rank()], shards.data(), counts, CommType::kFloat32, root);
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

const StepStats& ShardedEmbedding::stats() const { return engine().stats(); }
void ShardedEmbedding::reset_stats() { engine().stats() = StepStats{}; }
void ShardedEmbedding::measure_skew(bool on) { engine().measure_skew(on); }
void ShardedEmbedding::overlap_exchanges(int chunks) {
  EMBTRAIN_REQUIRE(chunks >= 1, "overlap chunks = ", chunks, " is invalid (valid: >= 1)");
  engine().overlap_exchanges(chunks);
}
std::vector<TransferShape> ShardedEmbedding::last_transfers() const {
  return engine().last_transfers();
}
Communicator& ShardedEmbedding::data_comm() { return engine().data_comm(); }

}  // namespace embtrain
