// Engine: a StepEngine made of a backend and a step over it (LocalStep or
// ShardedStep). What every engine does around the stages lives here once:
// the checks that every rank agrees on before a step, moving the caller's
// host batch (and bags) into the backend's memory and the output back, and
// a shard's rows to and from the host.
#pragma once

#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/timer.hpp"
#include "embtrain/communicator.hpp"
#include "embtrain/errors.hpp"
#include "engine/local_step.hpp"
#include "engine/sharded_step.hpp"
#include "engine/step_engine.hpp"

namespace embtrain {

// The ranks' verdict on their batches: "" when every rank's are fine, else
// the lowest failing rank's error, naming its rank when there are several.
std::string agree_on_batch(Communicator& control, std::string error);

// The error for a batch of n ids of `table` beyond what the kernels index
// (int32 positions), or "".
std::string check_batch_size(const TableSpec& spec, int64_t n);

// A 64-bit fingerprint of batches (FNV-1a over their type and shape, its
// word-wise form over the ids),
// by which forward() knows the batch that prefetch() prepared; of device
// batches, their addresses and sizes.
uint64_t fingerprint(const std::vector<IdsView>& ids);
uint64_t fingerprint(const std::vector<IdSpan>& ids);

// Whether every rank's prefetched batch is the one its forward() was given:
// only then do the ranks take it up, together. A collective; when any
// rank's `error` (what it found wrong with its batch) is not empty, every
// rank throws agree_on_batch's AgreedError instead.
bool agree_on_prefetch(Communicator& control, bool mine, const std::string* error = nullptr);

template <typename Backend, template <typename> class Step>
class Engine final : public StepEngine {
 public:
  // The engine owns `shards` and `backend` (built on them).
  template <typename... StepArgs>
  Engine(std::unique_ptr<std::vector<EmbeddingTable>> shards, std::unique_ptr<Backend> backend,
         Communicator* control, StepArgs&&... step_args)
      : shards_(std::move(shards)),
        backend_(std::move(backend)),
        control_(*control),
        step_(backend_.get(), std::forward<StepArgs>(step_args)..., &stats_),
        n_(shards_->size()),
        next_n_(shards_->size()),
        spans_(shards_->size()),
        next_spans_(shards_->size()),
        bags_(shards_->size()),
        no_bags_(shards_->size()) {}

  // While an exception unwinds (this rank may be failing alone), the data
  // communicator gives up its transfers before the step's buffers are
  // freed: on a GPU, freeing waits for the device, which an NCCL transfer
  // no peer will complete would keep busy for good.
  ~Engine() override {
    if (std::uncaught_exceptions() > 0) backend_->abandon_transfers();
  }

  // No bags: forward with every table's bags empty (unpooled).
  void forward(const std::vector<IdsView>& ids, const std::vector<float*>& out) override {
    forward(ids, no_bags_, out);
  }

  // A table with bags gets them pooled by the step: on the requester
  // straight from the rows (so a sharded step moves the rows of the
  // distinct ids, as without bags), or at the owners (pool_at = owner,
  // sharded_step.hpp); backward takes their bags' gradient.
  void forward(const std::vector<IdsView>& ids, const std::vector<BagsView>& bags,
               const std::vector<float*>& out) override {
    EMBTRAIN_ASSERT(ids.size() == n_.size() && bags.size() == n_.size() &&
                    out.size() == n_.size());
    // The ranks agree on the bags in the collective the step makes anyway
    // (taking up its prefetch, or checking its ids).
    std::string error;
    for (size_t t = 0; t < ids.size() && error.empty(); ++t) {
      const TableSpec& spec = backend_->spec(static_cast<int>(t));
      error = check_bags(bags[t], ids[t].numel(), spec.name, spec.scale_grad_by_freq);
      if (error.empty()) error = check_owner_bags(spec, bags[t].pooled());
    }
    if (!take_prefetched(ids, error)) prepare(ids, error);
    n_ = next_n_;
    spans_ = next_spans_;
    std::vector<float*> staged(ids.size());
    std::vector<const StepBags*> step_bags(ids.size(), nullptr);
    for (int t = 0; t < static_cast<int>(ids.size()); ++t) {
      const int64_t rows = bags[t].pooled() ? bags[t].num_bags : n_[t];
      bags_[t].pooled = bags[t].pooled();
      if (bags_[t].pooled) step_bags[t] = &stage_bags(t, bags[t]);
      staged[t] = backend_->stage_output(t, out[t], rows * backend_->spec(t).dim);
    }
    step_.forward(staged, step_bags);
    for (int t = 0; t < static_cast<int>(ids.size()); ++t) {
      const int64_t rows = bags_[t].pooled ? bags[t].num_bags : n_[t];
      backend_->finish_output(t, out[t], staged[t], rows * backend_->spec(t).dim);
    }
    backend_->synchronize();
  }

  void prefetch(const std::vector<IdsView>& ids) override {
    EMBTRAIN_ASSERT(ids.size() == n_.size());
    prefetched_ = false;
    prepare(ids);
    prefetched_ = true;
    prefetched_fingerprint_ = fingerprint(ids);
  }

  void backward(const std::vector<const float*>& grad_out) override {
    EMBTRAIN_ASSERT(grad_out.size() == n_.size());
    std::vector<const float*> staged(grad_out.size());
    for (int t = 0; t < static_cast<int>(grad_out.size()); ++t) {
      const int64_t rows = bags_[t].pooled ? bags_[t].bags.pooling.num_bags : n_[t];
      staged[t] = backend_->stage_grad(t, grad_out[t], rows * backend_->spec(t).dim);
    }
    step_.backward(staged);
    backend_->synchronize();  // the caller may reuse grad_out
  }

  void forward_device(const std::vector<IdSpan>& ids, const std::vector<float*>& out) override {
    EMBTRAIN_ASSERT(ids.size() == n_.size() && out.size() == n_.size());
    std::string error;
    for (int t = 0; t < static_cast<int>(ids.size()) && error.empty(); ++t)
      error = check_owner_bags(backend_->spec(t), /*given=*/false);
    if (!take_prefetched(ids, error)) prepare_device(ids, error);
    n_ = next_n_;
    spans_ = next_spans_;
    for (Bags& b : bags_) b.pooled = false;
    step_.forward(out);
  }

  void prefetch_device(const std::vector<IdSpan>& ids) override {
    EMBTRAIN_ASSERT(ids.size() == n_.size());
    prefetched_ = false;
    prepare_device(ids);
    prefetched_ = true;
    prefetched_fingerprint_ = fingerprint(ids);
  }

  void backward_device(const std::vector<const float*>& grad_out) override {
    EMBTRAIN_ASSERT(grad_out.size() == n_.size());
    step_.backward(grad_out);
  }

  // forward() without a prefetch takes up the step it prepares itself.
  void step() override { step_.step(); }

  void synchronize() override {
    backend_->data().synchronize();
    backend_->synchronize();
  }

  std::vector<EmbeddingTable>& shards() override { return *shards_; }
  void read_rows(int t, TablePart part, int64_t first, int64_t count, float* out) override {
    backend_->read_rows(t, part, first, count, out);
  }
  void write_rows(int t, TablePart part, int64_t first, int64_t count, const float* in) override {
    backend_->write_rows(t, part, first, count, in);
  }

  StepStats& stats() override { return stats_; }
  void measure_skew(bool on) override { step_.measure_skew(on); }
  void overlap_exchanges(int chunks) override { step_.set_overlap_chunks(chunks); }
  std::vector<TransferShape> last_transfers() const override { return step_.last_transfers(); }
  Communicator& data_comm() override { return backend_->data(); }
  bool on_gpu() const override { return !backend_->description().empty(); }
  std::string description() const override { return backend_->description(); }

 private:
  // Checks a host batch on every rank, moves it into the backend's memory
  // and prepares its step (the input distribution): bucket_by_owner's time.
  // `error`: what the caller found wrong with this rank's batch already.
  void prepare(const std::vector<IdsView>& ids, std::string error = "") {
    Stopwatch clock;
    for (size_t t = 0; t < ids.size() && error.empty(); ++t) {
      const TableSpec& spec = backend_->spec(static_cast<int>(t));
      error = check_ids(ids[t], spec.name, spec.num_embeddings);
      if (error.empty()) error = check_batch_size(spec, ids[t].numel());
    }
    error = agree_on_batch(control_, error);
    if (!error.empty()) throw AgreedError(error);
    std::vector<IdSpan> spans(ids.size());
    for (int t = 0; t < static_cast<int>(ids.size()); ++t) spans[t] = backend_->stage_ids(t, ids[t]);
    stats_[Stage::kBucketByOwner] += clock.lap_ms();
    prepare_spans(spans);
  }

  // The same for a batch already in the backend's memory.
  void prepare_device(const std::vector<IdSpan>& ids, std::string error = "") {
    for (size_t t = 0; t < ids.size() && error.empty(); ++t)
      error = check_resident_ids(static_cast<int>(t), ids[t]);
    error = agree_on_batch(control_, error);
    if (!error.empty()) throw AgreedError(error);
    prepare_spans(ids);
  }

  void prepare_spans(const std::vector<IdSpan>& ids) {
    for (size_t t = 0; t < ids.size(); ++t) next_n_[t] = ids[t].n;
    next_spans_ = ids;
    step_.prepare(ids);
  }

  // The error for a forward of `spec`'s table with bags `given` or not,
  // when it pools them at the owners, or "".
  static std::string check_owner_bags(const TableSpec& spec, bool given) {
    if (spec.pool_at != PoolAt::kOwner) return "";
    if (!given)
      return "table '" + spec.name +
             "' pools its bags at the owners (pool_at = owner): every forward must give its bags";
    return "";
  }

  // Table t's bags in the backend's memory with the batch's ids, with room
  // for what pooling leaves for backward.
  const StepBags& stage_bags(int t, const BagsView& bags) {
    Bags& b = bags_[t];
    const int64_t dim = backend_->spec(t).dim;
    BagPooling& pooling = b.bags.pooling;
    pooling.mode = bags.mode;
    pooling.num_bags = bags.num_bags;
    pooling.dim = dim;
    int64_t* offsets = b.offsets.reserve(bags.num_bags + 1);
    backend_->upload(offsets, bags.offsets, bags.num_bags + 1);
    pooling.offsets = offsets;
    pooling.weights = nullptr;
    if (bags.weights) {
      float* weights = b.weights.reserve(n_[t]);
      backend_->upload(weights, bags.weights, n_[t]);
      pooling.weights = weights;
    }
    pooling.counts = b.counts.reserve(bags.num_bags);
    pooling.argmax = bags.mode == PoolMode::kMax ? b.argmax.reserve(bags.num_bags * dim) : nullptr;
    b.bags.ids = spans_[t].data;
    b.bags.end = bags.offsets[bags.num_bags];
    return b.bags;
  }

  // Takes up the prefetched step when every rank's is the batch given now
  // (then forward skips prepare); else it is dropped. The batch is only
  // fingerprinted when a prefetch awaits it.
  template <typename Batch>
  bool take_prefetched(const Batch& ids, const std::string& error = "") {
    if (!prefetched_) return false;  // prepare agrees on `error`
    prefetched_ = false;
    // One collective: whether every rank's batch is fine and the prefetched one.
    const bool taken =
        agree_on_prefetch(control_, fingerprint(ids) == prefetched_fingerprint_, &error);
    stats_.prefetched_steps += taken ? 1 : 0;
    return taken;
  }

  // check_ids for a batch already in the backend's memory.
  std::string check_resident_ids(int t, const IdSpan& ids) {
    const TableSpec& spec = backend_->spec(t);
    const std::string error = check_batch_size(spec, ids.n);
    if (!error.empty()) return error;
    const auto [position, id] = backend_->find_bad_id(ids, spec.num_embeddings);
    if (position < 0) return "";
    return detail::concat("table '", spec.name, "': index ", id, " at position ", position,
                          " of ", ids.n, " ids is out of range [0, ", spec.num_embeddings, ")");
  }

  std::unique_ptr<std::vector<EmbeddingTable>> shards_;
  std::unique_ptr<Backend> backend_;
  Communicator& control_;
  StepStats stats_;
  Step<Backend> step_;
  template <typename T>
  using Buffer = typename Backend::template Buffer<T>;
  // A table's bags in the backend's memory, as its last forward was given
  // them (bags.pooling points into the buffers), for the step to pool.
  struct Bags {
    bool pooled = false;  // the last forward had bags
    StepBags bags;
    Buffer<int64_t> offsets;
    Buffer<float> weights;
    Buffer<int32_t> counts, argmax;
  };

  std::vector<int64_t> n_;       // ids per table in the last forward
  std::vector<int64_t> next_n_;  // in the last prepare
  std::vector<IdSpan> spans_, next_spans_;  // the ids of the last forward, of the last prepare
  std::vector<Bags> bags_;
  const std::vector<BagsView> no_bags_;  // one unpooled BagsView per table
  bool prefetched_ = false;      // a prefetch() awaits its forward()
  uint64_t prefetched_fingerprint_ = 0;
};

// The engine of `backend` on `shards`: the single-process step with one
// rank, the sharded one with several. `control` outlives it.
template <typename Backend>
std::unique_ptr<StepEngine> make_engine(std::unique_ptr<std::vector<EmbeddingTable>> shards,
                                        std::unique_ptr<Backend> backend, Communicator* control,
                                        const std::vector<ShardPlan>& plans) {
  if (control->size() == 1)
    return std::make_unique<Engine<Backend, LocalStep>>(std::move(shards), std::move(backend),
                                                        control);
  return std::make_unique<Engine<Backend, ShardedStep>>(std::move(shards), std::move(backend),
                                                        control, control, plans);
}

}  // namespace embtrain
