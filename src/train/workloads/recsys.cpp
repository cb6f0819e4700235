// The recsys workload: one training step and the evaluation over the
// row-sharded "users" and "items" tables (the math is in recsys_model.cpp,
// the data in recsys_data.cpp).
#include "embtrain/workloads/recsys.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>
#include <utility>

#include "embtrain/bags.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/shard_plan.hpp"

namespace embtrain {

void RecsysConfig::validate() const {
  using L = RecsysLimits;
  auto check = [](bool ok, const char* key, auto value, auto lo, auto hi) {
    EMBTRAIN_REQUIRE(ok, "recsys.", key, " = ", value, " is out of range (valid: [", lo, ", ", hi,
                     "])");
  };
  check(users >= 1 && users <= L::kMaxIds, "users", users, 1, L::kMaxIds);
  check(items >= 1 && items <= L::kMaxIds, "items", items, 1, L::kMaxIds);
  check(history >= 0 && history <= L::kMaxHistory, "history", history, 0, L::kMaxHistory);
  check(latent_dim >= 1 && latent_dim <= L::kMaxLatentDim, "latent_dim", latent_dim, 1,
        L::kMaxLatentDim);
  check(zipf >= 0 && zipf <= L::kMaxZipf, "zipf", zipf, 0, L::kMaxZipf);
  check(temperature >= L::kMinTemperature && temperature <= L::kMaxTemperature, "temperature",
        temperature, L::kMinTemperature, L::kMaxTemperature);
  check(train_samples >= 1 && train_samples <= L::kMaxSamples, "train_samples", train_samples, 1,
        L::kMaxSamples);
  check(eval_samples >= 1 && eval_samples <= L::kMaxEvalSamples, "eval_samples", eval_samples, 1,
        L::kMaxEvalSamples);
  check(eval_fraction >= 0 && eval_fraction <= L::kMaxEvalFraction, "eval_fraction", eval_fraction,
        0, L::kMaxEvalFraction);
  if (bias_lr)
    check(*bias_lr >= 0 && *bias_lr <= L::kMaxBiasLr, "bias_lr", *bias_lr, 0, L::kMaxBiasLr);
  EMBTRAIN_REQUIRE(eval_data.empty() || !data.empty(), "recsys.eval_data = ", eval_data,
                   " needs recsys.data (the training click log) too");
}

namespace {

using recsys::ClickGrads;
using recsys::ClickRows;
using recsys::Clicks;

constexpr int64_t kEvalChunk = RecsysLimits::kEvalChunk;

// The sum over ranks of one value per rank, added in rank order on every
// rank. MPI_Allreduce may combine the values in a different order on
// different ranks, and the dense bias must stay bitwise equal everywhere.
double sum_in_rank_order(Communicator& comm, double local) {
  const int P = comm.size();
  std::vector<double> send(static_cast<size_t>(P), local), recv(static_cast<size_t>(P));
  comm.alltoall(send.data(), recv.data(), 1, CommType::kFloat64);
  return std::accumulate(recv.begin(), recv.end(), 0.0);
}

class RecsysWorkload final : public Workload {
 public:
  RecsysWorkload(const RecsysConfig& config, const WorkloadContext& context,
                 std::unique_ptr<recsys::ClickSource> source, int64_t dim)
      : config_(config),
        items_pool_(pool_of(context, "items")),
        comm_(context.comm),
        batch_size_(context.batch_size),
        dim_(dim),
        source_(std::move(source)) {}

  std::string name() const override { return "recsys"; }
  std::string describe() const override {
    return detail::concat(source_->describe(), "; embedding dim ", dim_);
  }
  std::vector<std::string> table_names() const override { return {"users", "items"}; }
  int64_t table_rows(const std::string& name) const override {
    if (name == "users") return config_.users;
    if (name == "items") return config_.items + 1;  // row 0: the history padding
    throw make_error("recsys has no table '", name, "' (its tables: users, items)");
  }
  int64_t steps_per_epoch() const override {
    const int64_t global = global_batch();
    return (source_->train_size() + global - 1) / global;
  }
  int64_t epoch_samples() const override { return source_->train_size(); }
  int64_t global_batch() const override { return batch_size_ * comm_->size(); }

  std::string data_identity() const override { return source_->identity(); }

  StepOutput train_step(ShardedEmbedding& tables, int64_t step) override {
    check_tables(tables);
    if (next_.step == step) {
      std::swap(batch_, next_);
    } else {
      load_train_batch(step, &batch_);
    }
    lookup(tables, batch_);
    if (prefetch_step() >= 0) {  // the next batch's ids travel during this step's math
      load_train_batch(prefetch_step(), &next_);
      tables.prefetch(ids_of(next_));
    }

    const int64_t n = batch_.clicks.size(), H = batch_.clicks.history_len;
    user_grads_.resize(user_rows_.size());
    item_grads_.resize(item_rows_.size());
    ClickGrads<float> grads;
    grads.users = user_grads_.data();
    if (bags()) {  // laid out as the items table's output (rows())
      grads.pooled_history = item_grads_.data();
      grads.candidates = item_grads_.data() + n * dim_;
    } else {
      grads.history = item_grads_.data();
      grads.candidates = item_grads_.data() + n * H * dim_;
    }
    // The loss is the mean over the global batch, so every sample's
    // gradient is scaled by 1 / (batch_size x ranks).
    const double grad_scale = 1.0 / static_cast<double>(batch_size_ * comm_->size());
    const double loss = recsys::click_model(batch_.clicks, dim_, rows(n), dense_[0], grad_scale,
                                            /*scores=*/nullptr, &grads);
    if (apply_step(loss)) {
      tables.backward({user_grads_.data(), item_grads_.data()});
      tables.step();
      // The bias is data-parallel: every rank applies the same SGD step with
      // the global batch's gradient.
      const double bias_lr = config_.bias_lr ? *config_.bias_lr : tables.spec(1).optimizer.lr;
      dense_[0] = static_cast<float>(dense_[0] - bias_lr * sum_in_rank_order(*comm_, grads.bias));
    }

    StepOutput out;
    out.loss_sum = loss;
    out.examples = n;
    out.lookups = n + n * (H + 1);
    return out;
  }

  // Each rank scores its contiguous part of the held-out set; rank 0
  // gathers the scores, computes the exact AUC and the mean loss (it holds
  // every label), and broadcasts both.
  std::map<std::string, double> evaluate(ShardedEmbedding& tables) override {
    check_tables(tables);
    const Clicks& eval = source_->eval_set();
    const int P = comm_->size(), rank = comm_->rank();
    const ShardPlan parts(eval.size(), P);  // lower ranks take the extra samples
    const int64_t begin = parts.row_begin(rank), count = parts.shard_rows(rank);
    // Every rank makes as many lookups as rank 0, whose part is the largest.
    const int64_t rounds = (parts.shard_rows(0) + kEvalChunk - 1) / kEvalChunk;

    std::vector<double> scores(static_cast<size_t>(count));
    for (int64_t r = 0; r < rounds; ++r) {
      const int64_t lo = std::min(count, r * kEvalChunk), hi = std::min(count, lo + kEvalChunk);
      Clicks& clicks = batch_.clicks;
      clicks.resize(hi - lo, eval.history_len);
      for (int64_t i = lo; i < hi; ++i) clicks.copy_sample(i - lo, eval, begin + i);
      join_items(&batch_);
      batch_.step = -1;
      lookup(tables, batch_);
      recsys::click_model(clicks, dim_, rows(hi - lo), dense_[0], 0.0, scores.data() + lo,
                          static_cast<ClickGrads<float>*>(nullptr));
    }

    std::vector<int64_t> counts(static_cast<size_t>(P));
    for (int q = 0; q < P; ++q) counts[q] = parts.shard_rows(q);
    std::vector<double> all_scores(rank == 0 ? static_cast<size_t>(eval.size()) : 0);
    comm_->gatherv(scores.data(), count, all_scores.data(), counts, CommType::kFloat64, 0);
    double result[2] = {0, 0};  // loss, auc
    if (rank == 0) {
      for (int64_t i = 0; i < eval.size(); ++i)
        result[0] += recsys::logistic_loss(all_scores[i], eval.labels[i]);
      result[0] /= static_cast<double>(eval.size());
      result[1] = recsys::roc_auc(all_scores.data(), eval.labels.data(), eval.size());
    }
    comm_->broadcast(result, 2, CommType::kFloat64, 0);
    return {{"loss", result[0]}, {"auc", result[1]}};
  }

  std::map<std::string, double> reference_metrics() override {
    return source_->reference_metrics();
  }
  std::vector<float>* dense_parameters() override { return &dense_; }

 private:
  // A batch and the ids it looks up: the items table takes the history ids
  // and then the candidate ids in one list; with bags, each history is a
  // bag and each candidate a bag of one (its mean is its row, exactly).
  struct Batch {
    Clicks clicks;
    std::vector<int64_t> item_ids;
    std::vector<int64_t> item_bags;  // 2n + 1 offsets
    int64_t step = -1;  // the training step it is the batch of; -1: evaluation
  };

  // Whether the items table pools the histories (table.items.kind = bag).
  bool bags() const { return items_pool_.has_value(); }

  void load_train_batch(int64_t step, Batch* batch) {
    source_->train_batch(step, comm_->rank(), comm_->size(), batch_size_, &batch->clicks);
    join_items(batch);
    batch->step = step;
  }

  static void join_items(Batch* batch) {
    const Clicks& c = batch->clicks;
    batch->item_ids.assign(c.history.begin(), c.history.end());
    batch->item_ids.insert(batch->item_ids.end(), c.candidates.begin(), c.candidates.end());
    const int64_t n = c.size(), H = c.history_len;
    batch->item_bags.resize(static_cast<size_t>(2 * n + 1));
    for (int64_t i = 0; i <= n; ++i) batch->item_bags[i] = i * H;
    for (int64_t i = 1; i <= n; ++i) batch->item_bags[n + i] = n * H + i;
  }

  static std::vector<IdsView> ids_of(const Batch& batch) {
    const int64_t n = batch.clicks.size(), items = static_cast<int64_t>(batch.item_ids.size());
    return {IdsView{batch.clicks.users.data(), DType::kInt64, {n}},
            IdsView{batch.item_ids.data(), DType::kInt64, {items}}};
  }

  // Looks up the batch's rows: one forward for both tables; with bags the
  // items table gives n pooled histories, then the n candidates.
  void lookup(ShardedEmbedding& tables, const Batch& batch) {
    const int64_t n = batch.clicks.size();
    user_rows_.resize(static_cast<size_t>(n * dim_));
    if (!bags()) {
      item_rows_.resize(batch.item_ids.size() * static_cast<size_t>(dim_));
      tables.forward(ids_of(batch), {user_rows_.data(), item_rows_.data()});
      return;
    }
    item_rows_.resize(static_cast<size_t>(2 * n * dim_));
    // Candidates are bags of one: any mode gives their row exactly.
    const BagsView items{*items_pool_, batch.item_bags.data(), 2 * n, nullptr};
    tables.forward(ids_of(batch), {BagsView{}, items}, {user_rows_.data(), item_rows_.data()});
  }

  // The rows of the last lookup of n samples.
  ClickRows<float> rows(int64_t n) const {
    ClickRows<float> r;
    r.users = user_rows_.data();
    if (bags()) {
      r.pooled_history = item_rows_.data();
      r.candidates = item_rows_.data() + n * dim_;
    } else {
      r.history = item_rows_.data();
      r.candidates = item_rows_.data() + n * batch_.clicks.history_len * dim_;
    }
    return r;
  }

  // The trainer builds the tables from table_names()/table_rows() and the
  // user's table keys, so a mismatch is a config error. It is the same on
  // every rank, but the ranks still agree on it (once, on the first call:
  // a collective inside train_step/evaluate, which every rank calls), so
  // that the job ends with one message.
  void check_tables(const ShardedEmbedding& tables) {
    if (tables_checked_) return;
    run_agreed(*comm_, [&] {
      const std::vector<std::string> names = table_names();
      EMBTRAIN_REQUIRE(tables.num_tables() == 2, "recsys needs 2 tables (users, items), got ",
                       tables.num_tables());
      for (int t = 0; t < 2; ++t) {
        const TableSpec& spec = tables.spec(t);
        const int64_t rows = table_rows(names[t]);
        EMBTRAIN_REQUIRE(spec.name == names[t] && spec.num_embeddings == rows && spec.dim == dim_,
                         "recsys: table ", t, " is '", spec.name, "' (", spec.num_embeddings, " x ",
                         spec.dim, ") but the workload needs '", names[t], "' (", rows, " x ", dim_,
                         ")");
      }
      const int64_t padding = tables.spec(1).padding_row();
      EMBTRAIN_REQUIRE(padding == -1 || padding == recsys::kPaddingItem,
                       "recsys: table.items.padding_idx is row ", padding,
                       ", a real item that would never learn (valid: 0, the history padding, or "
                       "unset)");
      EMBTRAIN_REQUIRE(padding == recsys::kPaddingItem || !bags(),
                       "recsys: table.items.kind = bag needs table.items.padding_idx = 0, so that "
                       "the bags leave the history padding out (or set table.items.kind = "
                       "embedding)");
    });
    tables_checked_ = true;
  }

  static std::optional<PoolMode> pool_of(const WorkloadContext& context, const std::string& table) {
    const auto it = context.table_bags.find(table);
    if (it == context.table_bags.end()) return std::nullopt;
    return it->second;
  }

  RecsysConfig config_;
  std::optional<PoolMode> items_pool_;  // table.items.mode when kind = bag
  Communicator* comm_;
  int64_t batch_size_, dim_;
  std::unique_ptr<recsys::ClickSource> source_;
  std::vector<float> dense_{0.0f};  // the bias b
  bool tables_checked_ = false;
  // Buffers reused across steps.
  Batch batch_;  // the batch of the step (or evaluation round) in progress
  Batch next_;   // the batch a prefetch has started distributing
  std::vector<float> user_rows_, item_rows_, user_grads_, item_grads_;
};

}  // namespace

std::unique_ptr<Workload> make_recsys_workload(const RecsysConfig& config,
                                               const WorkloadContext& context) {
  EMBTRAIN_ASSERT(context.comm != nullptr);
  std::unique_ptr<recsys::ClickSource> source;
  int64_t dim = 0;
  run_agreed(*context.comm, [&] {
    EMBTRAIN_REQUIRE(context.batch_size >= 1, "recsys: batch size ", context.batch_size,
                     " is out of range (valid: >= 1)");
    const auto users = context.table_dims.find("users");
    const auto items = context.table_dims.find("items");
    EMBTRAIN_REQUIRE(users != context.table_dims.end() && items != context.table_dims.end(),
                     "recsys: the dims of tables 'users' and 'items' are required");
    EMBTRAIN_REQUIRE(users->second == items->second, "recsys: table.users.dim = ", users->second,
                     key_place(context.key_source, "table.users.dim"), " and table.items.dim = ",
                     items->second, key_place(context.key_source, "table.items.dim"),
                     " must be equal (the model takes dot products of user and item rows)");
    dim = users->second;
    EMBTRAIN_REQUIRE(!context.table_bags.count("users"),
                     "recsys: table.users.kind = bag, but a sample has one user: it is looked up, "
                     "not pooled (valid: embedding)");
    config.validate();
    if (config.data.empty())
      source = std::make_unique<recsys::SyntheticClicks>(config, context.seed);
    else
      source = std::make_unique<recsys::ClickLog>(config, context.seed);
  });
  return std::make_unique<RecsysWorkload>(config, context, std::move(source), dim);
}

}  // namespace embtrain
