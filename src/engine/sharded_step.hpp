// The sharded step: tables row-sharded over the ranks of the job, every
// rank both a requester (it has a batch of ids) and an owner (it holds a
// block of each table's rows). Written once over a backend (backend.hpp):
// the CPU and the CUDA engine run these stages, with these names, on their
// own memory and kernels. A step gives the result of one process on the
// global batch (the ranks' batches concatenated in rank order), up to float
// summation order.
//
// Forward:
//  bucket_by_owner   Requester: the distinct ids of each table's batch as
//                    owner-major keys in ascending order (ShardPlan::key:
//                    tables are sharded cyclically), so that each owner's
//                    ids form one range of them.
//  exchange_ids      Counts per (peer, table) over the control communicator,
//                    then ExchangeLayout, then the ids as the owner's local
//                    rows, all tables in one all-to-all.
//  gather_owned      Owner: the distinct rows that all requesters asked for
//                    together, renormed once if max_norm (as one process
//                    renorms the global batch's rows), then each
//                    requester's rows gathered into its block.
//  exchange_rows     Rows back; those a rank asked of itself stay put. A
//                    table whose rows travel in 16 bits (comm_precision)
//                    is packed into a wire buffer and unpacked after; its
//                    self rows are rounded alike, so that every row of the
//                    step has made the same trip.
//  expand            Requester: its rows arrived in the layout its ids left
//                    in; expand them through the inverse map to (*, dim).
// Backward runs the same route in reverse:
//  reduce_requested  Requester: the output gradient summed per distinct id
//                    into the place its row arrived at (the padding id
//                    skipped), and each id's count if a table scales by
//                    frequency.
//  exchange_grads    Sums (and counts) back to the owners, into the places
//                    the rows left from.
//  combine_at_owner  Owner: the senders' sums per row in rank order,
//                    divided by the global count for scale_grad_by_freq,
//                    the padding row dropped.
// Step:
//  update            The optimizer on exactly these rows.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "common/timer.hpp"
#include "embtrain/communicator.hpp"
#include "embtrain/embedding_table.hpp"
#include "embtrain/ids.hpp"
#include "embtrain/optimizer.hpp"
#include "embtrain/shard_plan.hpp"
#include "embtrain/step_stats.hpp"
#include "engine/backend.hpp"
#include "engine/exchange_layout.hpp"

namespace embtrain {

template <typename Backend>
class ShardedStep {
 public:
  // `backend`, `control` (a host communicator over the same ranks as the
  // backend's data communicator) and `stats` outlive the step.
  ShardedStep(Backend* backend, Communicator* control, const std::vector<ShardPlan>& plans,
              StepStats* stats);

  // ids[t] (validated) and out[t] in the backend's memory. Collectives.
  void forward(const std::vector<IdSpan>& ids, const std::vector<float*>& out) {
    bucket_by_owner(ids);
    exchange_ids();
    gather_owned();
    exchange_rows();
    expand(out);
    ++stats_.steps;
  }
  void backward(const std::vector<const float*>& grad_out) {
    reduce_requested(grad_out);
    exchange_grads();
    combine_at_owner();
  }
  void step() { update(); }

  void measure_skew(bool on) { measure_skew_ = on; }
  std::vector<TransferShape> last_transfers() const;

 private:
  template <typename T>
  using Buffer = typename Backend::template Buffer<T>;

  // A table's bucket bounds: each rank's first row, the table's end, then
  // the padding row and the one after it, whose slots say whether and where
  // the padding id is among a batch's distinct ids.
  int num_bounds() const { return P_ + 3; }

  // Requester side of one table.
  struct Requested {
    typename Backend::UniqueWorkspace ws;
    Buffer<int64_t> keys;            // the batch's ids as sort keys (ShardPlan::key)
    UniqueIndex index;               // their distinct keys
    Buffer<int64_t> bounds;          // num_bounds(), see above
    std::vector<int64_t> begin;      // num_bounds(): bucketize's answer, on the host
    int64_t pad_slot = -1;           // the padding id's slot in index, or -1
    Buffer<int64_t> slot_rows;       // per slot: its row in rows_ (-1 skips it in the reduce)
  };
  // Owner side of one table.
  struct Served {
    typename Backend::UniqueWorkspace ws;
    Buffer<int64_t> ids;             // the local rows requesters asked for, in rank order
    std::vector<int64_t> starts;     // P + 1: where each requester's ids start in `ids`
    UniqueIndex index;               // their distinct ids
    Buffer<int64_t> src_rows;        // per position of `ids`: its row in rows_
    Buffer<int32_t> weights;         // per position: the requester's count of the id
    typename Backend::Grads grads;
  };

  // Adds the time since `clock` last lapped to `stage`, once the backend's
  // work is done (so each stage is timed alone on a GPU too).
  void finish(Stage stage, Stopwatch* clock) {
    b_.synchronize();
    stats_[stage] += clock->lap_ms();
  }
  // With measure_skew, every rank waits here for the slowest before an
  // exchange stage transfers anything; the wait is recorded apart.
  void wait_for_ranks(Stage stage) {
    if (!measure_skew_) return;
    Stopwatch wait;
    control_.barrier();
    stats_.wait_ms[static_cast<int>(stage)] += wait.lap_ms();
  }
  // Runs the transfers of an exchange stage on the data communicator and
  // waits for them; the bytes they sent to other ranks go to `bytes`.
  template <typename Transfers>
  void exchange(Stage stage, int64_t* bytes, Stopwatch* clock, Transfers transfers) {
    Communicator& data = b_.data();
    const int64_t before = data.traffic().bytes_sent;
    transfers(data);
    data.synchronize();
    *bytes += data.traffic().bytes_sent - before;
    finish(stage, clock);
  }
  // Rows from the owners' served blocks to the requesters' requested
  // blocks, or `back` the other way (the gradients): straight from the rows
  // buffer, or through the wire buffers when a table travels in 16 bits.
  void move_rows(Communicator& data, bool back) {
    if (layout_.has_wire()) return move_wire(data, back);
    float* served = rows_.data() + layout_.served_rows();
    float* requested = rows_.data() + layout_.requested_rows();
    if (back)
      data.alltoallv(requested, layout_.rows_from_owners(), served, layout_.rows_to_requesters(),
                     CommType::kFloat32);
    else
      data.alltoallv(served, layout_.rows_to_requesters(), requested, layout_.rows_from_owners(),
                     CommType::kFloat32);
  }
  void move_wire(Communicator& data, bool back);
  // What table t's values are multiplied by on the wire (gradients in fp16).
  float wire_scale(int t, bool gradients) const {
    return gradients && b_.spec(t).comm_precision == CommPrecision::kFp16 ? kFp16GradScale : 1.f;
  }

  void bucket_by_owner(const std::vector<IdSpan>& ids);
  void exchange_ids();
  void gather_owned();
  void exchange_rows();
  void expand(const std::vector<float*>& out);
  void reduce_requested(const std::vector<const float*>& grad_out);
  void exchange_grads();
  void combine_at_owner();
  void update();

  Backend& b_;
  Communicator& control_;
  StepStats& stats_;
  const int P_, T_, rank_;
  bool any_scaled_ = false;  // a table scales by frequency: counts travel with the gradients
  bool measure_skew_ = false;
  std::vector<int64_t> dims_;
  std::vector<ShardPlan> plans_;
  std::vector<int64_t> skip_row_;  // per table: the padding row if it is here (local), or -1
  std::vector<int> wire_bytes_;    // per table, when any travels in 16 bits; else empty
  std::vector<Requested> requested_;
  std::vector<Served> served_;
  // Per (peer, table) id counts of this step: what this rank requests of
  // each owner, what each requester asks of it.
  std::vector<int64_t> requested_counts_, served_counts_;
  ExchangeLayout layout_;
  Buffer<int64_t> begin_all_;  // bucketize's answers of every table
  std::vector<int64_t> h_begin_all_;
  Buffer<int64_t> ids_send_, ids_recv_;
  Buffer<float> rows_;  // see ExchangeLayout
  Buffer<int32_t> counts_send_, counts_recv_;
  Buffer<char> served_wire_, requested_wire_;  // see ExchangeLayout
};

template <typename Backend>
ShardedStep<Backend>::ShardedStep(Backend* backend, Communicator* control,
                                  const std::vector<ShardPlan>& plans, StepStats* stats)
    : b_(*backend),
      control_(*control),
      stats_(*stats),
      P_(control->size()),
      T_(backend->num_tables()),
      rank_(control->rank()),
      plans_(plans),
      requested_(static_cast<size_t>(T_)),
      served_(static_cast<size_t>(T_)) {
  for (int t = 0; t < T_; ++t) {
    const TableSpec& spec = b_.spec(t);
    const ShardPlan& plan = plans_[t];
    EMBTRAIN_ASSERT(plan.layout() == ShardPlan::Layout::kCyclic && plan.num_ranks() == P_);
    any_scaled_ |= spec.scale_grad_by_freq;
    dims_.push_back(spec.dim);
    std::vector<int64_t> bounds(static_cast<size_t>(num_bounds()));
    for (int d = 0; d <= P_; ++d) bounds[d] = plan.key_begin(d);
    const int64_t pad = spec.padding_row();
    bounds[P_ + 1] = pad >= 0 ? plan.key(pad) : plan.key_bound();
    bounds[P_ + 2] = pad >= 0 ? plan.key(pad) + 1 : plan.key_bound();
    skip_row_.push_back(pad >= 0 && plan.owner(pad) == rank_ ? plan.local_row(pad) : -1);
    wire_bytes_.push_back(comm_bytes(spec.comm_precision));
    b_.upload(requested_[t].bounds.reserve(num_bounds()), bounds.data(), num_bounds());
  }
  // All fp32: rows travel straight from the rows buffer, with no wire.
  if (std::all_of(wire_bytes_.begin(), wire_bytes_.end(), [](int b) { return b == 4; }))
    wire_bytes_.clear();
  b_.synchronize();
}

template <typename Backend>
void ShardedStep<Backend>::bucket_by_owner(const std::vector<IdSpan>& ids) {
  Stopwatch clock;
  const int nb = num_bounds();
  int64_t* begin_all = begin_all_.reserve(int64_t{nb} * T_);
  for (int t = 0; t < T_; ++t) {
    Requested& r = requested_[t];
    const ShardPlan& plan = plans_[t];
    int64_t* keys = r.keys.reserve(ids[t].n);
    b_.cyclic_keys(ids[t].data, ids[t].n, P_, plan.key_begin(1), keys);
    r.index = b_.unique_ids(keys, ids[t].n, plan.key_bound(), &r.ws);
    b_.bucketize(r.index, r.bounds.data(), nb, begin_all + int64_t{nb} * t);
  }
  // The one wait of forward before the exchange: the counts go to the host.
  h_begin_all_.resize(static_cast<size_t>(nb) * T_);
  b_.download(h_begin_all_.data(), begin_all, int64_t{nb} * T_);
  requested_counts_.assign(static_cast<size_t>(P_) * T_, 0);
  for (int t = 0; t < T_; ++t) {
    Requested& r = requested_[t];
    r.begin.assign(h_begin_all_.begin() + nb * t, h_begin_all_.begin() + nb * (t + 1));
    r.pad_slot = r.begin[P_ + 2] - r.begin[P_ + 1] == 1 ? r.begin[P_ + 1] : -1;
    for (int d = 0; d < P_; ++d) requested_counts_[d * T_ + t] = r.begin[d + 1] - r.begin[d];
  }
  finish(Stage::kBucketByOwner, &clock);
}

template <typename Backend>
void ShardedStep<Backend>::exchange_ids() {
  Stopwatch clock;
  wait_for_ranks(Stage::kExchangeIds);
  served_counts_.assign(static_cast<size_t>(P_) * T_, 0);
  control_.alltoall(requested_counts_.data(), served_counts_.data(), T_, CommType::kInt64);
  layout_.assign(rank_, dims_, Backend::kRowAlign, requested_counts_, served_counts_,
                 wire_bytes_);
  // Every exchange buffer of the step grows here, before the first
  // transfer: growing device memory waits for all work using it.
  int64_t* send = ids_send_.reserve(layout_.num_requested());
  int64_t* recv = ids_recv_.reserve(layout_.num_served());
  rows_.reserve(layout_.rows_floats());
  if (layout_.has_wire()) {
    served_wire_.reserve(layout_.served_wire_bytes());
    requested_wire_.reserve(layout_.requested_wire_bytes());
  }
  if (any_scaled_) {
    counts_send_.reserve(layout_.num_requested());
    counts_recv_.reserve(layout_.num_served());
  }
  // Owner d's keys less its first key: the rows it holds them at.
  for (int d = 0; d < P_; ++d)
    for (int t = 0; t < T_; ++t) {
      const ExchangeLayout::Block& block = layout_.requested(d, t);
      b_.shift_ids(requested_[t].index.unique + requested_[t].begin[d], block.count,
                   -plans_[t].key_begin(d), send + block.id);
    }
  exchange(Stage::kExchangeIds, &stats_.ids_bytes_sent, &clock, [&](Communicator& data) {
    data.alltoallv(send, layout_.ids_to_owners(), recv, layout_.ids_from_requesters(),
                   CommType::kInt64);
  });
}

template <typename Backend>
void ShardedStep<Backend>::gather_owned() {
  Stopwatch clock;
  float* rows = rows_.data();
  for (int t = 0; t < T_; ++t) {
    Served& s = served_[t];
    const int64_t dim = dims_[t];
    // Table t's requested ids, one block per requester, in rank order.
    s.starts.assign(static_cast<size_t>(P_) + 1, 0);
    std::vector<int64_t> base(static_cast<size_t>(P_));
    for (int r = 0; r < P_; ++r) {
      s.starts[r + 1] = s.starts[r] + layout_.served(r, t).count;
      base[r] = layout_.served(r, t).row;
    }
    const int64_t m = s.starts[P_];
    int64_t* ids = s.ids.reserve(m);
    for (int r = 0; r < P_; ++r)
      b_.copy(ids + s.starts[r], ids_recv_.data() + layout_.served(r, t).id,
              layout_.served(r, t).count);
    s.index = b_.unique_ids(ids, m, plans_[t].shard_rows(rank_), &s.ws);
    b_.renorm_rows(t, s.index.unique, s.index.num_unique);
    for (int r = 0; r < P_; ++r)
      b_.gather_rows(t, ids + s.starts[r], layout_.served(r, t).count,
                     rows + layout_.served(r, t).row);
    // Where the gradients of these rows will come back: the same places.
    b_.block_offsets(s.starts, base, dim, m, s.src_rows.reserve(m));
  }
  finish(Stage::kGatherOwned, &clock);
}

template <typename Backend>
void ShardedStep<Backend>::exchange_rows() {
  Stopwatch clock;
  wait_for_ranks(Stage::kExchangeRows);
  exchange(Stage::kExchangeRows, &stats_.rows_bytes_sent, &clock,
           [&](Communicator& data) { move_rows(data, /*back=*/false); });
}

// The rows (or, `back`, the gradients) through the wire buffers: packed
// from the sending blocks, moved, unpacked into the receiving ones; the
// self blocks rounded in place.
template <typename Backend>
void ShardedStep<Backend>::move_wire(Communicator& data, bool back) {
  float* rows = rows_.data();
  char* from = back ? requested_wire_.data() : served_wire_.data();
  char* to = back ? served_wire_.data() : requested_wire_.data();
  auto sending = [&](int p, int t) { return back ? layout_.requested(p, t) : layout_.served(p, t); };
  auto receiving = [&](int p, int t) {
    return back ? layout_.served(p, t) : layout_.requested(p, t);
  };
  for (int p = 0; p < P_; ++p)
    for (int t = 0; t < T_; ++t) {
      const ExchangeLayout::Block& b = sending(p, t);
      const CommPrecision precision = b_.spec(t).comm_precision;
      const int64_t n = b.count * dims_[t];
      if (p == rank_)
        b_.round_wire(rows + b.row, n, precision, wire_scale(t, back));
      else
        b_.pack_wire(rows + b.row, n, precision, wire_scale(t, back), from + b.wire);
    }
  if (back)
    data.alltoallv(from, layout_.wire_from_owners(), to, layout_.wire_to_requesters(),
                   CommType::kByte);
  else
    data.alltoallv(from, layout_.wire_to_requesters(), to, layout_.wire_from_owners(),
                   CommType::kByte);
  for (int p = 0; p < P_; ++p)
    for (int t = 0; t < T_; ++t) {
      if (p == rank_) continue;
      const ExchangeLayout::Block& b = receiving(p, t);
      b_.unpack_wire(to + b.wire, b.count * dims_[t], b_.spec(t).comm_precision,
                     1.f / wire_scale(t, back), rows + b.row);
    }
}

template <typename Backend>
void ShardedStep<Backend>::expand(const std::vector<float*>& out) {
  Stopwatch clock;
  for (int t = 0; t < T_; ++t) {
    Requested& r = requested_[t];
    // Owner d's rows of table t arrived as one block.
    std::vector<int64_t> starts(r.begin.begin(), r.begin.begin() + P_ + 1), base(P_);
    for (int d = 0; d < P_; ++d) base[d] = layout_.requested(d, t).row;
    int64_t* slot_rows = r.slot_rows.reserve(r.index.num_unique);
    b_.block_offsets(starts, base, dims_[t], r.index.num_unique, slot_rows);
    b_.expand_rows(rows_.data(), slot_rows, r.index, dims_[t], out[t]);
  }
  finish(Stage::kExpand, &clock);
}

template <typename Backend>
void ShardedStep<Backend>::reduce_requested(const std::vector<const float*>& grad_out) {
  Stopwatch clock;
  static const int64_t kSkip = -1;
  for (int t = 0; t < T_; ++t) {
    Requested& r = requested_[t];
    // The padding id's sum is never used (its owner drops it): skip it.
    if (r.pad_slot >= 0) b_.upload(r.slot_rows.data() + r.pad_slot, &kSkip, 1);
    SegmentLayout layout;
    layout.dst_offsets = r.slot_rows.data();
    b_.segment_sum(grad_out[t], dims_[t], r.index, layout, rows_.data());
    if (!any_scaled_) continue;
    for (int d = 0; d < P_; ++d) {
      const ExchangeLayout::Block& block = layout_.requested(d, t);
      if (block.count > 0)
        b_.segment_counts(r.index.offsets + r.begin[d], block.count,
                          counts_send_.data() + block.id);
    }
  }
  finish(Stage::kReduceRequested, &clock);
}

template <typename Backend>
void ShardedStep<Backend>::exchange_grads() {
  Stopwatch clock;
  wait_for_ranks(Stage::kExchangeGrads);
  exchange(Stage::kExchangeGrads, &stats_.grads_bytes_sent, &clock, [&](Communicator& data) {
    move_rows(data, /*back=*/true);
    if (any_scaled_)
      data.alltoallv(counts_send_.data(), layout_.ids_to_owners(), counts_recv_.data(),
                     layout_.ids_from_requesters(), CommType::kInt32);
  });
}

template <typename Backend>
void ShardedStep<Backend>::combine_at_owner() {
  Stopwatch clock;
  for (int t = 0; t < T_; ++t) {
    Served& s = served_[t];
    const TableSpec& spec = b_.spec(t);
    OwnerGrads args;
    args.index = &s.index;
    args.src = rows_.data();
    args.src_offsets = s.src_rows.data();
    args.scale_by_count = spec.scale_grad_by_freq;
    args.skip_row = skip_row_[t];
    if (spec.scale_grad_by_freq) {
      // Each requester's count of each id it sent, in the order of s.ids.
      int32_t* weights = s.weights.reserve(s.starts[P_]);
      for (int r = 0; r < P_; ++r)
        b_.copy(weights + s.starts[r], counts_recv_.data() + layout_.served(r, t).id,
                layout_.served(r, t).count);
      args.weights = weights;
    }
    b_.combine(t, args, &s.grads);
  }
  finish(Stage::kCombineAtOwner, &clock);
}

template <typename Backend>
std::vector<TransferShape> ShardedStep<Backend>::last_transfers() const {
  auto bytes = [](const std::vector<int64_t>& counts, int64_t size) {
    std::vector<int64_t> b(counts);
    for (int64_t& x : b) x *= size;
    return b;
  };
  const std::vector<int64_t> counts(static_cast<size_t>(P_), T_ * int64_t{8});
  std::vector<TransferShape> t = {
      {Stage::kExchangeIds, counts, counts},
      {Stage::kExchangeIds, bytes(layout_.ids_to_owners(), 8),
       bytes(layout_.ids_from_requesters(), 8)},
      {Stage::kExchangeRows, bytes(layout_.rows_to_requesters(), 4),
       bytes(layout_.rows_from_owners(), 4)},
      {Stage::kExchangeGrads, bytes(layout_.rows_from_owners(), 4),
       bytes(layout_.rows_to_requesters(), 4)}};
  if (layout_.has_wire()) {
    t[2] = {Stage::kExchangeRows, layout_.wire_to_requesters(), layout_.wire_from_owners()};
    t[3] = {Stage::kExchangeGrads, layout_.wire_from_owners(), layout_.wire_to_requesters()};
  }
  if (any_scaled_)
    t.push_back({Stage::kExchangeGrads, bytes(layout_.ids_to_owners(), 4),
                 bytes(layout_.ids_from_requesters(), 4)});
  return t;
}

// Every table's step counter advances, also when no row of it was asked
// for (PyTorch's optimizers count steps per parameter).
template <typename Backend>
void ShardedStep<Backend>::update() {
  Stopwatch clock;
  for (int t = 0; t < T_; ++t) {
    EmbeddingTable& host = b_.host(t);
    host.set_step(host.step() + 1);
    if (host.spec().freeze) continue;
    b_.update(t, step_scalars(host.spec().optimizer, host.step()), served_[t].grads);
  }
  finish(Stage::kUpdate, &clock);
}

}  // namespace embtrain
