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
//                    requester's rows gathered into its block; a table
//                    whose rows travel in 16 bits (comm_precision) gathered
//                    straight into the wire buffer, packed, and its self
//                    rows rounded alike, so that every row of the step has
//                    made the same trip.
//  exchange_rows     Rows back; those a rank asked of itself stay put. Rows
//                    that came through the wire are unpacked after.
//  expand            Requester: its rows arrived in the layout its ids left
//                    in; expand them through the inverse map to (*, dim),
//                    or pool a table's bags straight from them.
// Backward runs the same route in reverse:
//  reduce_requested  Requester: the output gradient summed per distinct id
//                    into the place its row arrived at (the padding id
//                    skipped; with bags, each position's gradient read from
//                    its bag's), and each id's count if a table scales by
//                    frequency.
//  exchange_grads    Sums (and counts) back to the owners, into the places
//                    the rows left from. A 16-bit table's sums stay in
//                    their wire format where they land when the backend's
//                    update reads them so (the CPU's), the rank's own
//                    packed beside them; else they are unpacked.
//  combine_at_owner  Owner: the senders' sums per row in rank order,
//                    divided by the global count for scale_grad_by_freq,
//                    the padding row dropped; recorded here, computed by
//                    update, which adds them up per row and applies the
//                    optimizer in one pass (no gradient buffer between).
// Step:
//  update            The optimizer on exactly these rows.
//
// Overlapped exchanges (set_overlap_chunks(K), K > 1, with two or more
// ranks; either backend): every (peer, table) block of rows and of gradients
// of a table not pooled at the owners travels in K slices, slice k being the
// block's elements [count * k / K, count * (k + 1) / K), which sender and
// receiver both compute from the block's count: slice k of a table, of
// every peer, is one non-blocking all-to-all of parts (K x T in all).
//  exchange_rows     The owner gathers slice k of every block and sends it
//                    while it gathers slice k + 1 (gather_owned leaves the
//                    gathering to it).
//  exchange_grads    The requester posts the first four slices of every
//                    table (counts first, whole); update posts slice k + 4
//                    once slice k has landed.
//  update            The owner takes the slices in order and, after slice
//                    k, updates the rows whose gradients have all arrived:
//                    a peer's ids come sorted, so after its slices 0..k
//                    every row below the first id of its slice k + 1 is
//                    complete; the rows below the lowest such bound over
//                    the peers are updated while the later slices travel.
// A table pooled at the owners moves whole, first: its partial rows once
// pool_at_owner has made them, its gradients before unpool_at_owner.
// Every value takes the same path through the same kernels, so the results
// are bitwise those of K = 1. The time an exchange stage reports is then
// what the transfers left exposed (waits, posting, packing); the gathers
// and updates count as their own stages. On a GPU (Backend::kAsynchronous)
// the gathers and updates are kernels that run after the host has moved
// on: what the host waits for (the staged copies, the last synchronize)
// includes them, so their time lands in the exchange stages, and the
// owner work hidden behind transfers (StepStats::hidden_ms) is not
// measured.
//
// Tables whose bags are pooled at the owners (TableSpec::pool_at = owner)
// take the same route with bags on it. Their distinct ids travel as above
// (so renorm and the counts of scale_grad_by_freq are as for any table);
// then, once forward knows the bags:
//  exchange_ids      (its second half) Requester: one entry per pooled
//                    position (the padding id left out), grouped by owner
//                    in position order: which of the ids it sent that owner,
//                    which partial row (one per bag the owner touches, in
//                    bag order), its weight. The counts of partial rows and
//                    entries go over the control communicator, with how the
//                    rank pools each table, which every rank must share.
//  gather_owned      Owner: the rows into a region that stays put (kept),
//                    then each requester's entries pooled, in their order,
//                    into its partial rows: sum (times the weight; mean is a
//                    sum here), or max with the winning entry per column.
//  exchange_rows     The partial rows back (and max's winning entries).
//  expand            Requester: each bag's partials combined in owner rank
//                    order: added, then divided by the bag's pooled count
//                    for mean (the requester knows it); for max the
//                    greatest, the first position winning a tie.
//  reduce_requested  One gradient row per partial: the bag's (over its count
//                    for mean; for max only in the columns that partial won).
//  exchange_grads    As above, into the places the partials left from.
//  combine_at_owner  Owner: each partial's gradient back to its entries
//                    (times the weight; max: the winning entry per column),
//                    summed per id in entry order into the kept rows, which
//                    then combine as any table's.
#pragma once

#include <algorithm>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "common/progress.hpp"
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

  // The next step's input distribution (bucket_by_owner and exchange_ids),
  // which its ids alone determine: ids[t] (validated) in the backend's
  // memory. The ids exchange may still be in flight when it returns; it can
  // run a step ahead, during the current step's backward and update
  // (ShardedEmbedding::prefetch). A collective.
  void prepare(const std::vector<IdSpan>& ids) {
    Input& in = inputs_[current_ ^ 1];
    if (in.ids_in_flight) in.ids_in_flight->wait();  // an unused prepare, discarded
    bucket_by_owner(&in, ids);
    start_exchange_ids(&in);
  }
  // The prepared step's forward: out[t] in the backend's memory, bags x
  // dim for a table whose bags[t] is given (not null; it must stay valid
  // until step(), and be given in every forward of a table pooled at the
  // owners), else the rows of its ids. Collectives.
  void forward(const std::vector<float*>& out, const std::vector<const StepBags*>& bags = {}) {
    wait_for_grads();  // a backward without its step: nothing may still land
    overlap_chunks_ = next_overlap_chunks_;  // set_overlap_chunks takes effect here
    current_ ^= 1;
    bags_ = bags;
    bags_.resize(static_cast<size_t>(T_), nullptr);
    finish_exchange_ids();
    if (any_at_owner_) exchange_bags();
    gather_owned();
    if (any_at_owner_) pool_at_owner();
    exchange_rows();
    expand(out);
    ++stats_.steps;
  }
  void backward(const std::vector<const float*>& grad_out) {
    reduce_requested(grad_out);
    exchange_grads();
    if (any_at_owner_) unpool_at_owner();
    combine_at_owner();
  }
  void step() { update(); }

  void measure_skew(bool on) { measure_skew_ = on; }
  // Rows and gradients in `chunks` slices whose transfers overlap the
  // owner's gathers and updates (see the top); 1: each exchange whole.
  // From the next forward on (a step's exchanges all slice alike). Every
  // rank must set the same. No effect where overlapped() says so.
  void set_overlap_chunks(int chunks) {
    EMBTRAIN_ASSERT(chunks >= 1);
    next_overlap_chunks_ = chunks;
  }
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
    std::vector<int64_t> begin;      // num_bounds(): bucketize's answer, on the host
    int64_t pad_slot = -1;           // the padding id's slot in index, or -1
    Buffer<int64_t> slot_rows;       // per slot: its row in rows_ (-1 skips it in the reduce)
    BagGrads<Backend> bag_grads;     // bags pooled here: their positions' gradients
  };
  // What a step's ids alone determine: prepare() fills one while the step
  // before may still use the other.
  struct Input {
    std::vector<Requested> tables;
    // Per (peer, table) id counts: what this rank requests of each owner,
    // what each requester asks of it.
    std::vector<int64_t> requested_counts, served_counts;
    ExchangeLayout layout;
    Buffer<int64_t> begin_all;  // bucketize's answers of every table
    std::vector<int64_t> h_begin_all;
    Buffer<int64_t> ids_send, ids_recv;
    std::unique_ptr<Communicator::Request> ids_in_flight;
  };
  Input& cur() { return inputs_[current_]; }
  const Input& cur() const { return inputs_[current_]; }
  // Owner side of one table.
  struct Served {
    typename Backend::UniqueWorkspace ws;
    Buffer<int64_t> ids;             // the local rows requesters asked for, in rank order
    std::vector<int64_t> starts;     // P + 1: where each requester's ids start in `ids`
    UniqueIndex index;               // their distinct ids
    Buffer<int64_t> src_rows;        // per position of `ids`: its gradient's row in rows_ (or,
                                     // grads_stay_packed, its element in served_wire_)
    Buffer<int32_t> weights;         // per position: the requester's count of the id
    typename Backend::Grads grads;
    // Overlapped: per gradient slice k, the distinct rows (a prefix of
    // index) whose gradients have all arrived once slices 0..k have.
    std::vector<int64_t> slice_end;
  };
  // Requester side of a table pooled at the owners, this step: its entries
  // and partial rows (bag_pooling.hpp), owner-major.
  struct Pooling {
    Buffer<int32_t> idx, slot, pos, winner;
    Buffer<float> weight;
    Buffer<int64_t> partial_bag;
    BagEntries entries;  // into the buffers above
    std::vector<int64_t> entry_begin, partial_begin;  // P + 1 each
  };

  // Adds the time since `clock` last lapped to `stage`, once the backend's
  // work is done (so each stage is timed alone on a GPU too).
  void finish(Stage stage, Stopwatch* clock) {
    b_.synchronize();
    stats_[stage] += clock->lap_ms();
    mark_progress(stage_name(stage));  // for the watchdog (progress.hpp)
  }
  // finish() for an overlapped stage, which ran two stages' work: `part_ms`
  // of the time since `clock` last lapped goes to `part`, the rest to
  // `stage`, and the owner work hidden behind transfers to whichever of the
  // two is the exchange.
  void finish_overlapped(Stage stage, Stage part, double part_ms, double hidden_ms,
                         Stopwatch* clock) {
    wait_for_device_transfers();
    b_.synchronize();
    stats_[part] += part_ms;
    stats_[stage] += clock->lap_ms() - part_ms;
    const Stage exchange = part == Stage::kExchangeGrads ? part : stage;
    stats_.hidden_ms[static_cast<int>(exchange)] += hidden_ms;
    mark_progress(stage_name(stage));  // for the watchdog (progress.hpp)
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
  // Whether gather_owned writes table t's served rows in their wire format
  // (packed for the peers, rounded for this rank), so that exchange_rows
  // sends them as they are: rows that travel through the wire buffers and
  // are not pooled at the owner first.
  bool packed_at_gather(int t) const {
    return cur().layout.has_wire() && !cur().layout.at_owner(t);
  }
  // Whether table t's gradients stay in their 16-bit wire format until
  // update reads them (the layout's self block on the served wire, there
  // for the 16-bit tables not pooled at the owner when the backend asks,
  // Backend::kUpdatesFromWire): the peers' where they arrived, the rank's
  // own packed beside them, so no pass unpacks them and none rounds the
  // self block. The others are unpacked into the rows buffer.
  bool grads_stay_packed(int t) const { return cur().layout.self_on_wire(t); }
  // Whether rows and gradients travel in overlap_chunks_ slices (the top).
  bool overlapped() const {
    return overlap_chunks_ > 1 && P_ > 1;
  }
  // The first element of slice k of a block of `count` cut in `slices`.
  int64_t slice_begin(int64_t count, int k, int slices) const { return count * k / slices; }
  int64_t slice_begin(int64_t count, int k) const { return slice_begin(count, k, overlap_chunks_); }
  // Slice k of `slices` of every peer's block of table t as the parts of an
  // all-to-all (the rank's own empty: its rows never travel): `side` gives
  // the blocks, in the rows buffer (floats) or on the wire (bytes).
  template <typename Side>
  std::vector<Communicator::Part> slice_parts(int k, int t, Side side, int slices) const {
    std::vector<Communicator::Part> parts(static_cast<size_t>(P_));
    const bool wire = cur().layout.has_wire();
    const int64_t unit = dims_[t] * (wire ? wire_bytes_[t] : 1);
    for (int p = 0; p < P_; ++p) {
      if (p == rank_) continue;
      const ExchangeLayout::Block& b = side(p);
      const int64_t lo = slice_begin(b.rows, k, slices), hi = slice_begin(b.rows, k + 1, slices);
      parts[p] = {(wire ? b.wire : b.row) + lo * unit, (hi - lo) * unit};
    }
    return parts;
  }
  // Table t's rows (or, `back`, gradients) from the sending blocks to the
  // receiving ones, sliced (slice k) or whole: a non-blocking all-to-all of
  // parts.
  std::unique_ptr<Communicator::Request> send_parts(int t, bool back, int k, int slices) {
    const ExchangeLayout& layout = cur().layout;
    auto served = [&](int p) { return layout.served(p, t); };
    auto requested = [&](int p) { return layout.requested(p, t); };
    const auto from = back ? slice_parts(k, t, requested, slices) : slice_parts(k, t, served, slices);
    const auto to = back ? slice_parts(k, t, served, slices) : slice_parts(k, t, requested, slices);
    Communicator& data = b_.data();
    if (!layout.has_wire())
      return data.ialltoallv(rows_.data(), from, rows_.data(), to, CommType::kFloat32);
    char* sent = back ? requested_wire_.data() : served_wire_.data();
    char* landed = back ? served_wire_.data() : requested_wire_.data();
    return data.ialltoallv(sent, from, landed, to, CommType::kByte);
  }
  // A device communicator's transfers are on its own stream, which the
  // backend's synchronize waits for through events only: waiting through
  // the communicator first ends with an error when a peer has failed
  // (NCCL) instead of waiting for good. It waits for requests still in
  // flight too (a prefetched ids exchange): their overlap ends there.
  void wait_for_device_transfers() {
    Communicator& data = b_.data();
    if (data.memory_space() == MemorySpace::kDevice) data.synchronize();
  }
  // Waits for the gradient slices still in flight (a backward whose step
  // never came) and forgets them.
  void wait_for_grads() {
    for (auto& request : grads_in_flight_) request->wait();
    grads_in_flight_.clear();
    grads_sliced_ = false;
  }
  // Lets the requests from `*first` on advance; moves `*first` past those
  // done (each call tests the oldest still pending, not all of them: MPI
  // advances every transfer in any test). Whether any still travels.
  static bool still_travelling(std::vector<std::unique_ptr<Communicator::Request>>& requests,
                               size_t* first) {
    while (*first < requests.size() && requests[*first]->progress()) ++*first;
    return *first < requests.size();
  }
  void exchange_rows_overlapped();
  void exchange_grads_overlapped();
  void send_grad_slice(int k);
  // Gradient slices in flight at once: each is posted when the one this
  // many before it has landed. MPI moves every posted message at once, so
  // with all posted the first lands with nearly all the others and the
  // owner's update has nothing left to hide behind. bench-A, 2 emulated
  // hosts at 1 Gbit/s, 8 slices: all at once, gradients exposed 56 ms and
  // 0.4 ms of update hidden; 2 ahead, 66 and 6.5 (fewer messages moving);
  // 4 ahead, 52-56 and 6.4-7.8: as fast as all at once, and it hides the
  // updates (bench/results/2026-12-02-overlapped-exchanges.md).
  static constexpr int kGradSlicesAhead = 4;
  void update_overlapped();
  void find_slice_ends();
  std::vector<StepScalars> advance_steps();
  // Rows from the owners' served blocks to the requesters' requested
  // blocks, or `back` the other way (the gradients): straight from the rows
  // buffer, or through the wire buffers when a table travels in 16 bits.
  void move_rows(Communicator& data, bool back) {
    if (cur().layout.has_wire()) return move_wire(data, back);
    float* served = rows_.data() + cur().layout.served_rows();
    float* requested = rows_.data() + cur().layout.requested_rows();
    if (back)
      data.alltoallv(requested, cur().layout.rows_from_owners(), served, cur().layout.rows_to_requesters(),
                     CommType::kFloat32);
    else
      data.alltoallv(served, cur().layout.rows_to_requesters(), requested, cur().layout.rows_from_owners(),
                     CommType::kFloat32);
  }
  void gather_served(int t, int r, int64_t lo, int64_t hi);
  void move_wire(Communicator& data, bool back);
  void pack_for_wire(bool back);
  void unpack_from_wire(bool back, int p, int t, int64_t lo, int64_t hi);
  // What table t's values are multiplied by on the wire (gradients in fp16).
  float wire_scale(int t, bool gradients) const {
    return gradients && b_.spec(t).comm_precision == CommPrecision::kFp16 ? kFp16GradScale : 1.f;
  }

  void bucket_by_owner(Input* in, const std::vector<IdSpan>& ids);
  void start_exchange_ids(Input* in);
  void finish_exchange_ids();
  void gather_owned();
  void exchange_rows();
  void expand(const std::vector<float*>& out);
  void reduce_requested(const std::vector<const float*>& grad_out);
  void exchange_grads();
  void combine_at_owner();
  void update();
  // The stages' parts for tables pooled at the owners (see the top).
  void list_entries(int t, const StepBags& bags);
  void exchange_bags();
  void pool_at_owner();
  void expand_at_owner(int t, float* out);
  void reduce_at_owner(int t, const float* grad_out);
  void unpool_at_owner();
  OwnerBlock owner_block(int r, int t);
  RequesterPartials requester_partials(int t, std::vector<float*>* rows,
                                       std::vector<const int32_t*>* args);

  Backend& b_;
  Communicator& control_;
  StepStats& stats_;
  const int P_, T_, rank_;
  bool any_scaled_ = false;  // a table scales by frequency: counts travel with the gradients
  bool measure_skew_ = false;
  int overlap_chunks_ = 1, next_overlap_chunks_ = 1;
  std::vector<int64_t> dims_;
  std::vector<ShardPlan> plans_;
  std::vector<int64_t> skip_row_;  // per table: the padding row if it is here (local), or -1
  std::vector<int> wire_bytes_;    // per table, when any travels in 16 bits; else empty
  std::vector<Buffer<int64_t>> bounds_;  // per table: num_bounds(), see above
  Input inputs_[2];
  int current_ = 0;  // inputs_[current_]: the step forward() last took up
  std::vector<Served> served_;
  Buffer<float> rows_;  // see ExchangeLayout
  Buffer<int32_t> counts_send_, counts_recv_;
  Buffer<char> served_wire_, requested_wire_;  // see ExchangeLayout
  Buffer<int64_t> slice_bounds_;               // find_slice_ends' work
  // Pooled at the owners: per table whether, and how this step (the same
  // on every rank); the entries' buffers (ExchangeLayout); for max, the
  // winning entry per column of each partial row, laid out as rows_.
  std::vector<char> at_owner_;
  bool any_at_owner_ = false;
  std::vector<PoolMode> owner_mode_;
  std::vector<const StepBags*> bags_;  // the last forward's, per table (null: none)
  bool weights_travel_ = false, any_max_ = false;
  std::vector<Pooling> pooling_;
  Buffer<int32_t> idx_send_, idx_recv_, slot_send_, slot_recv_, args_;
  Buffer<float> weight_send_, weight_recv_;
  // Overlapped: the gradients' slices posted so far, slice-major (k * T +
  // t), until update; whether the last backward sliced them. Declared last:
  // destroyed first, so a request still in flight is waited for while the
  // buffers it writes are alive.
  std::vector<std::unique_ptr<Communicator::Request>> grads_in_flight_;
  bool grads_sliced_ = false;
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
      bounds_(static_cast<size_t>(T_)),
      served_(static_cast<size_t>(T_)),
      owner_mode_(static_cast<size_t>(T_), PoolMode::kSum),
      pooling_(static_cast<size_t>(T_)) {
  for (Input& in : inputs_) in.tables.resize(static_cast<size_t>(T_));
  for (int t = 0; t < T_; ++t) {
    const TableSpec& spec = b_.spec(t);
    const ShardPlan& plan = plans_[t];
    EMBTRAIN_ASSERT(plan.layout() == ShardPlan::Layout::kCyclic && plan.num_ranks() == P_);
    any_scaled_ |= spec.scale_grad_by_freq;
    at_owner_.push_back(spec.pool_at == PoolAt::kOwner);
    any_at_owner_ |= spec.pool_at == PoolAt::kOwner;
    dims_.push_back(spec.dim);
    std::vector<int64_t> bounds(static_cast<size_t>(num_bounds()));
    for (int d = 0; d <= P_; ++d) bounds[d] = plan.key_begin(d);
    const int64_t pad = spec.padding_row();
    bounds[P_ + 1] = pad >= 0 ? plan.key(pad) : plan.key_bound();
    bounds[P_ + 2] = pad >= 0 ? plan.key(pad) + 1 : plan.key_bound();
    skip_row_.push_back(pad >= 0 && plan.owner(pad) == rank_ ? plan.local_row(pad) : -1);
    wire_bytes_.push_back(comm_bytes(spec.comm_precision));
    b_.upload(bounds_[t].reserve(num_bounds()), bounds.data(), num_bounds());
  }
  // All fp32: rows travel straight from the rows buffer, with no wire.
  if (std::all_of(wire_bytes_.begin(), wire_bytes_.end(), [](int b) { return b == 4; }))
    wire_bytes_.clear();
  if (!any_at_owner_) at_owner_.clear();
  b_.synchronize();
}

template <typename Backend>
void ShardedStep<Backend>::bucket_by_owner(Input* in, const std::vector<IdSpan>& ids) {
  Stopwatch clock;
  const int nb = num_bounds();
  int64_t* begin_all = in->begin_all.reserve(int64_t{nb} * T_);
  for (int t = 0; t < T_; ++t) {
    Requested& r = in->tables[t];
    const ShardPlan& plan = plans_[t];
    int64_t* keys = r.keys.reserve(ids[t].n);
    b_.cyclic_keys(ids[t].data, ids[t].n, P_, plan.key_begin(1), keys);
    r.index = b_.unique_ids(keys, ids[t].n, plan.key_bound(), &r.ws);
    b_.bucketize(r.index, bounds_[t].data(), nb, begin_all + int64_t{nb} * t);
  }
  // The one wait of forward before the exchange: the counts go to the host.
  in->h_begin_all.resize(static_cast<size_t>(nb) * T_);
  b_.download(in->h_begin_all.data(), begin_all, int64_t{nb} * T_);
  in->requested_counts.assign(static_cast<size_t>(P_) * T_, 0);
  for (int t = 0; t < T_; ++t) {
    Requested& r = in->tables[t];
    r.begin.assign(in->h_begin_all.begin() + nb * t, in->h_begin_all.begin() + nb * (t + 1));
    r.pad_slot = r.begin[P_ + 2] - r.begin[P_ + 1] == 1 ? r.begin[P_ + 1] : -1;
    for (int d = 0; d < P_; ++d) in->requested_counts[d * T_ + t] = r.begin[d + 1] - r.begin[d];
  }
  finish(Stage::kBucketByOwner, &clock);
}

// Counts, then the layout, then the ids, which may still be moving when it
// returns: finish_exchange_ids waits for them.
template <typename Backend>
void ShardedStep<Backend>::start_exchange_ids(Input* in) {
  Stopwatch clock;
  wait_for_ranks(Stage::kExchangeIds);
  in->served_counts.assign(static_cast<size_t>(P_) * T_, 0);
  control_.alltoall(in->requested_counts.data(), in->served_counts.data(), T_, CommType::kInt64);
  const ExchangeLayout& layout = in->layout;
  in->layout.assign(rank_, dims_, Backend::kRowAlign, in->requested_counts, in->served_counts,
                    wire_bytes_, {}, Backend::kUpdatesFromWire);
  int64_t* send = in->ids_send.reserve(layout.num_requested());
  int64_t* recv = in->ids_recv.reserve(layout.num_served());
  // Owner d's keys less its first key: the rows it holds them at.
  for (int d = 0; d < P_; ++d)
    for (int t = 0; t < T_; ++t) {
      const ExchangeLayout::Block& block = layout.requested(d, t);
      b_.shift_ids(in->tables[t].index.unique + in->tables[t].begin[d], block.count,
                   -plans_[t].key_begin(d), send + block.id);
    }
  Communicator& data = b_.data();
  const int64_t before = data.traffic().bytes_sent;
  in->ids_in_flight = data.ialltoallv(send, layout.ids_to_owners(), recv,
                                      layout.ids_from_requesters(), CommType::kInt64);
  stats_.ids_bytes_sent += data.traffic().bytes_sent - before;
  // On a device communicator too the ids travel while the step goes on
  // (its backend's synchronize in finish does not wait for them);
  // finish_exchange_ids waits, through the communicator.
  finish(Stage::kExchangeIds, &clock);
}

template <typename Backend>
void ShardedStep<Backend>::finish_exchange_ids() {
  Stopwatch clock;
  Input& in = cur();
  EMBTRAIN_ASSERT(in.ids_in_flight);  // forward() takes up a prepared step
  in.ids_in_flight->wait();
  in.ids_in_flight.reset();
  b_.data().synchronize();
  finish(Stage::kExchangeIds, &clock);
}

template <typename Backend>
void ShardedStep<Backend>::gather_owned() {
  Stopwatch clock;
  const ExchangeLayout& layout = cur().layout;
  // The step's buffers grow here, once the step before is done with them
  // (growing drops the contents, and on a GPU waits for all work using them).
  rows_.reserve(layout.rows_floats());
  if (layout.has_wire()) {
    served_wire_.reserve(layout.served_wire_bytes());
    requested_wire_.reserve(layout.requested_wire_bytes());
  }
  if (any_scaled_) {
    counts_send_.reserve(layout.num_requested());
    counts_recv_.reserve(layout.num_served());
  }
  if (any_max_) args_.reserve(layout.rows_floats());
  for (int t = 0; t < T_; ++t) {
    Served& s = served_[t];
    const int64_t dim = dims_[t];
    // Table t's requested ids, one block per requester, in rank order.
    s.starts.assign(static_cast<size_t>(P_) + 1, 0);
    std::vector<int64_t> grad_base(static_cast<size_t>(P_));
    // A table pooled here keeps its rows (pool_at_owner pools them).
    const bool kept = layout.at_owner(t);
    for (int r = 0; r < P_; ++r) {
      s.starts[r + 1] = s.starts[r] + layout.served(r, t).count;
      grad_base[r] = grads_stay_packed(t) ? layout.served(r, t).wire / wire_bytes_[t]
                     : kept               ? layout.served(r, t).kept
                                          : layout.served(r, t).row;
    }
    const int64_t m = s.starts[P_];
    int64_t* ids = s.ids.reserve(m);
    for (int r = 0; r < P_; ++r)
      b_.copy(ids + s.starts[r], cur().ids_recv.data() + layout.served(r, t).id,
              layout.served(r, t).count);
    s.index = b_.unique_ids(ids, m, plans_[t].shard_rows(rank_), &s.ws);
    b_.renorm_rows(t, s.index.unique, s.index.num_unique);
    // Overlapped, exchange_rows gathers the tables not pooled here.
    for (int r = 0; r < P_ && (kept || !overlapped()); ++r)
      gather_served(t, r, 0, layout.served(r, t).count);
    // Where the gradients of these rows will come back: the same places
    // (or their places on the wire).
    b_.block_offsets(s.starts, grad_base, dim, m, s.src_rows.reserve(m));
  }
  finish(Stage::kGatherOwned, &clock);
}

// Rows [lo, hi) of requester r's block of table t, gathered where they go:
// the kept region (a table pooled here), the rows buffer, or packed on the
// wire (this rank's own rounded in the rows buffer: it never travels, but
// is rounded as if it had).
template <typename Backend>
void ShardedStep<Backend>::gather_served(int t, int r, int64_t lo, int64_t hi) {
  const ExchangeLayout::Block& b = cur().layout.served(r, t);
  const int64_t* ids = served_[t].ids.data() + served_[t].starts[r] + lo;
  const int64_t dim = dims_[t];
  float* rows = rows_.data() + (cur().layout.at_owner(t) ? b.kept : b.row) + lo * dim;
  if (!packed_at_gather(t))
    b_.gather_rows(t, ids, hi - lo, rows);
  else if (r == rank_)
    b_.gather_rows_rounded(t, ids, hi - lo, rows);
  else
    b_.gather_rows_packed(t, ids, hi - lo, served_wire_.data() + b.wire + lo * dim * wire_bytes_[t]);
}

template <typename Backend>
void ShardedStep<Backend>::exchange_rows() {
  if (overlapped()) return exchange_rows_overlapped();
  Stopwatch clock;
  wait_for_ranks(Stage::kExchangeRows);
  exchange(Stage::kExchangeRows, &stats_.rows_bytes_sent, &clock, [&](Communicator& data) {
    move_rows(data, /*back=*/false);
    if (any_max_)
      data.alltoallv(args_.data() + cur().layout.served_rows(), cur().layout.rows_to_requesters(),
                     args_.data() + cur().layout.requested_rows(), cur().layout.rows_from_owners(),
                     CommType::kInt32);
  });
}

// The rows (or, `back`, the gradients) through the wire buffers: packed
// from the sending blocks (unless gather_owned packed them), moved,
// unpacked into the receiving ones (unless grads_stay_packed); the self
// blocks rounded in place (or, grads_stay_packed, packed beside the peers').
template <typename Backend>
void ShardedStep<Backend>::move_wire(Communicator& data, bool back) {
  pack_for_wire(back);
  if (back)
    data.alltoallv(requested_wire_.data(), cur().layout.wire_from_owners(), served_wire_.data(),
                   cur().layout.wire_to_requesters(), CommType::kByte);
  else
    data.alltoallv(served_wire_.data(), cur().layout.wire_to_requesters(), requested_wire_.data(),
                   cur().layout.wire_from_owners(), CommType::kByte);
  for (int p = 0; p < P_; ++p)
    for (int t = 0; t < T_; ++t) {
      if (p == rank_ || (back && grads_stay_packed(t))) continue;
      const ExchangeLayout::Block& b = back ? cur().layout.served(p, t) : cur().layout.requested(p, t);
      unpack_from_wire(back, p, t, 0, b.rows);
    }
}

// move_wire's first half: the sending blocks packed (the self blocks
// rounded, or packed beside the peers').
template <typename Backend>
void ShardedStep<Backend>::pack_for_wire(bool back) {
  float* rows = rows_.data();
  char* from = back ? requested_wire_.data() : served_wire_.data();
  for (int p = 0; p < P_; ++p)
    for (int t = 0; t < T_; ++t) {
      if (!back && packed_at_gather(t)) continue;  // gather_owned wrote them so
      const ExchangeLayout::Block& b = back ? cur().layout.requested(p, t) : cur().layout.served(p, t);
      const CommPrecision precision = b_.spec(t).comm_precision;
      const int64_t n = b.rows * dims_[t];
      if (p != rank_)
        b_.pack_wire(rows + b.row, n, precision, wire_scale(t, back), from + b.wire);
      else if (back && grads_stay_packed(t))  // beside the peers' (as owner)
        b_.pack_wire(rows + b.row, n, precision, wire_scale(t, back),
                     served_wire_.data() + cur().layout.served(rank_, t).wire);
      else
        b_.round_wire(rows + b.row, n, precision, wire_scale(t, back));
    }
}

// Rows [lo, hi) of peer p's receiving block of table t from the wire into
// the rows buffer.
template <typename Backend>
void ShardedStep<Backend>::unpack_from_wire(bool back, int p, int t, int64_t lo, int64_t hi) {
  const ExchangeLayout::Block& b = back ? cur().layout.served(p, t) : cur().layout.requested(p, t);
  const char* wire = back ? served_wire_.data() : requested_wire_.data();
  const int64_t dim = dims_[t];
  b_.unpack_wire(wire + b.wire + lo * dim * wire_bytes_[t], (hi - lo) * dim,
                 b_.spec(t).comm_precision, 1.f / wire_scale(t, back), rows_.data() + b.row + lo * dim);
}

// Overlapped (see the top): slice k of every served block gathered, then
// sent while slice k + 1 is gathered; the rows that came through the wire
// unpacked once all have arrived. The gathers' time is gather_owned's (on
// the CPU; see the top).
template <typename Backend>
void ShardedStep<Backend>::exchange_rows_overlapped() {
  Stopwatch clock;
  wait_for_ranks(Stage::kExchangeRows);
  const ExchangeLayout& layout = cur().layout;
  const bool wire = layout.has_wire();
  Communicator& data = b_.data();
  const int64_t before = data.traffic().bytes_sent;
  std::vector<std::unique_ptr<Communicator::Request>> in_flight;
  // Tables pooled here: their partial rows are whole already
  // (pool_at_owner), and go first, whole (packed first if they travel in
  // 16 bits; the others' rows are gathered packed).
  if (wire) pack_for_wire(/*back=*/false);
  for (int t = 0; t < T_; ++t)
    if (layout.at_owner(t)) in_flight.push_back(send_parts(t, /*back=*/false, 0, 1));
  if (any_max_)
    data.alltoallv(args_.data() + layout.served_rows(), layout.rows_to_requesters(),
                   args_.data() + layout.requested_rows(), layout.rows_from_owners(),
                   CommType::kInt32);
  double gather_ms = 0, hidden_ms = 0;
  bool travelling = false;
  size_t first_pending = 0;
  for (int k = 0; k < overlap_chunks_; ++k)
    for (int t = 0; t < T_; ++t) {
      if (layout.at_owner(t)) continue;
      Stopwatch gather;
      for (int r = 0; r < P_; ++r) {
        const int64_t count = layout.served(r, t).count;
        gather_served(t, r, slice_begin(count, k), slice_begin(count, k + 1));
      }
      const double ms = Backend::kAsynchronous ? 0 : gather.lap_ms();
      gather_ms += ms;
      if (travelling) hidden_ms += ms;
      in_flight.push_back(send_parts(t, /*back=*/false, k, overlap_chunks_));
      travelling = still_travelling(in_flight, &first_pending);  // during the next gather
    }
  for (auto& request : in_flight) request->wait();
  for (int p = 0; p < P_ && wire; ++p)
    for (int t = 0; t < T_; ++t)
      if (p != rank_) unpack_from_wire(/*back=*/false, p, t, 0, layout.requested(p, t).rows);
  stats_.rows_bytes_sent += data.traffic().bytes_sent - before;
  finish_overlapped(Stage::kExchangeRows, Stage::kGatherOwned, gather_ms, hidden_ms, &clock);
}

template <typename Backend>
void ShardedStep<Backend>::expand(const std::vector<float*>& out) {
  Stopwatch clock;
  for (int t = 0; t < T_; ++t) {
    if (cur().layout.at_owner(t)) {
      expand_at_owner(t, out[t]);
      continue;
    }
    Requested& r = cur().tables[t];
    // Owner d's rows of table t arrived as one block.
    std::vector<int64_t> starts(r.begin.begin(), r.begin.begin() + P_ + 1), base(P_);
    for (int d = 0; d < P_; ++d) base[d] = cur().layout.requested(d, t).row;
    int64_t* slot_rows = r.slot_rows.reserve(r.index.num_unique);
    b_.block_offsets(starts, base, dims_[t], r.index.num_unique, slot_rows);
    if (const StepBags* bags = bags_[t]) {
      const PositionRows rows{rows_.data(), r.index.inverse, slot_rows, /*stride=*/1};
      b_.pool_bags(bags->pooling, rows, bags->ids, b_.spec(t).padding_row(), out[t]);
    } else {
      b_.expand_rows(rows_.data(), slot_rows, r.index, dims_[t], out[t]);
    }
  }
  finish(Stage::kExpand, &clock);
}

template <typename Backend>
void ShardedStep<Backend>::reduce_requested(const std::vector<const float*>& grad_out) {
  Stopwatch clock;
  static const int64_t kSkip = -1;
  for (int t = 0; t < T_; ++t) {
    Requested& r = cur().tables[t];
    if (cur().layout.at_owner(t)) {
      reduce_at_owner(t, grad_out[t]);
    } else {
      // The padding id's sum is never used (its owner drops it): skip it.
      if (r.pad_slot >= 0) b_.upload(r.slot_rows.data() + r.pad_slot, &kSkip, 1);
      SegmentLayout layout;
      layout.dst_offsets = r.slot_rows.data();
      const float* src = grad_out[t];
      if (const StepBags* bags = bags_[t]) {
        const auto grads = r.bag_grads.from_bags(b_, *bags, grad_out[t], r.index.n);
        src = grads.src;
        layout.src_offsets = grads.src_offsets;
      }
      b_.segment_sum(src, dims_[t], r.index, layout, rows_.data());
    }
    if (!any_scaled_) continue;
    for (int d = 0; d < P_; ++d) {
      const ExchangeLayout::Block& block = cur().layout.requested(d, t);
      if (block.count > 0)
        b_.segment_counts(r.index.offsets + r.begin[d], block.count,
                          counts_send_.data() + block.id);
    }
  }
  finish(Stage::kReduceRequested, &clock);
}

template <typename Backend>
void ShardedStep<Backend>::exchange_grads() {
  if (overlapped()) return exchange_grads_overlapped();
  Stopwatch clock;
  wait_for_ranks(Stage::kExchangeGrads);
  exchange(Stage::kExchangeGrads, &stats_.grads_bytes_sent, &clock, [&](Communicator& data) {
    move_rows(data, /*back=*/true);
    if (any_scaled_)
      data.alltoallv(counts_send_.data(), cur().layout.ids_to_owners(), counts_recv_.data(),
                     cur().layout.ids_from_requesters(), CommType::kInt32);
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
    args.src_offsets = s.src_rows.data();
    if (grads_stay_packed(t)) {
      args.wire = served_wire_.data();
      args.wire_format = spec.comm_precision;
      args.wire_scale = 1.f / wire_scale(t, /*gradients=*/true);
    } else {
      args.src = rows_.data();
    }
    args.scale_by_count = spec.scale_grad_by_freq;
    args.skip_row = skip_row_[t];
    if (spec.scale_grad_by_freq) {
      // Each requester's count of each id it sent, in the order of s.ids.
      int32_t* weights = s.weights.reserve(s.starts[P_]);
      for (int r = 0; r < P_; ++r)
        b_.copy(weights + s.starts[r], counts_recv_.data() + cur().layout.served(r, t).id,
                cur().layout.served(r, t).count);
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
      {Stage::kExchangeIds, bytes(cur().layout.ids_to_owners(), 8),
       bytes(cur().layout.ids_from_requesters(), 8)},
      {Stage::kExchangeRows, bytes(cur().layout.rows_to_requesters(), 4),
       bytes(cur().layout.rows_from_owners(), 4)},
      {Stage::kExchangeGrads, bytes(cur().layout.rows_from_owners(), 4),
       bytes(cur().layout.rows_to_requesters(), 4)}};
  if (cur().layout.has_wire()) {
    t[2] = {Stage::kExchangeRows, cur().layout.wire_to_requesters(), cur().layout.wire_from_owners()};
    t[3] = {Stage::kExchangeGrads, cur().layout.wire_from_owners(), cur().layout.wire_to_requesters()};
  }
  if (any_scaled_)
    t.push_back({Stage::kExchangeGrads, bytes(cur().layout.ids_to_owners(), 4),
                 bytes(cur().layout.ids_from_requesters(), 4)});
  if (any_at_owner_) {  // the entries (and max's winning entries)
    const TransferShape entries = {Stage::kExchangeIds, bytes(cur().layout.entries_to_owners(), 4),
                                   bytes(cur().layout.entries_from_requesters(), 4)};
    for (int i = 0; i < (weights_travel_ ? 3 : 2); ++i) t.push_back(entries);
    if (any_max_)
      t.push_back({Stage::kExchangeRows, bytes(cur().layout.rows_to_requesters(), 4),
                   bytes(cur().layout.rows_from_owners(), 4)});
  }
  return t;
}

// Every table's step counter advances, also when no row of it was asked
// for (PyTorch's optimizers count steps per parameter).
template <typename Backend>
void ShardedStep<Backend>::update() {
  if (grads_sliced_) return update_overlapped();
  Stopwatch clock;
  const std::vector<StepScalars> scalars = advance_steps();
  for (int t = 0; t < T_; ++t)
    if (!b_.spec(t).freeze) b_.update(t, scalars[t], served_[t].grads);
  finish(Stage::kUpdate, &clock);
}

// Every table's step counter one on, and each table's optimizer scalars
// for the step it reached.
template <typename Backend>
std::vector<StepScalars> ShardedStep<Backend>::advance_steps() {
  std::vector<StepScalars> scalars;
  for (int t = 0; t < T_; ++t) {
    EmbeddingTable& host = b_.host(t);
    host.set_step(host.step() + 1);
    scalars.push_back(step_scalars(host.spec().optimizer, host.step()));
  }
  return scalars;
}

// Overlapped (see the top): the gradient sums packed if they travel in 16
// bits, the counts sent (whole, blocking: combine_at_owner reads them),
// then the first kGradSlicesAhead slices posted; update posts the others
// as slices land.
template <typename Backend>
void ShardedStep<Backend>::exchange_grads_overlapped() {
  Stopwatch clock;
  wait_for_ranks(Stage::kExchangeGrads);
  const ExchangeLayout& layout = cur().layout;
  const bool wire = layout.has_wire();
  Communicator& data = b_.data();
  const int64_t before = data.traffic().bytes_sent;
  wait_for_grads();  // a second backward before the step: the first's are dropped
  if (wire) pack_for_wire(/*back=*/true);
  if (any_scaled_)
    data.alltoallv(counts_send_.data(), layout.ids_to_owners(), counts_recv_.data(),
                   layout.ids_from_requesters(), CommType::kInt32);
  // Tables pooled here: whole, and landed now (unpool_at_owner reads them
  // next; their gradients are unpacked, never kept on the wire).
  for (int t = 0; t < T_; ++t) {
    if (!layout.at_owner(t)) continue;
    send_parts(t, /*back=*/true, 0, 1)->wait();
    for (int p = 0; p < P_ && wire; ++p)
      if (p != rank_) unpack_from_wire(/*back=*/true, p, t, 0, layout.served(p, t).rows);
  }
  wait_for_device_transfers();  // the counts and whole tables, before the slices go
  grads_sliced_ = true;
  for (int k = 0; k < std::min(overlap_chunks_, kGradSlicesAhead); ++k) send_grad_slice(k);
  stats_.grads_bytes_sent += data.traffic().bytes_sent - before;
  finish(Stage::kExchangeGrads, &clock);
}

// Posts slice k of the gradients of every sliced table (grads_in_flight_[k
// * S + i] for the i-th of the S tables not pooled at the owners).
template <typename Backend>
void ShardedStep<Backend>::send_grad_slice(int k) {
  for (int t = 0; t < T_; ++t)
    if (!cur().layout.at_owner(t))
      grads_in_flight_.push_back(send_parts(t, /*back=*/true, k, overlap_chunks_));
}

// Overlapped: slice by slice, the wait for it (and its unpacking, when the
// update does not read the wire), then the update of every row whose
// gradients have all arrived (find_slice_ends); the others' slices travel
// meanwhile. Waits and unpacking count as exchange_grads. On a GPU the
// updates are kernels enqueued behind the slices' copies, so the time a
// stage reports is the host's (enqueueing, and waiting for the transfers
// and the copies, which wait for the kernels before them).
template <typename Backend>
void ShardedStep<Backend>::update_overlapped() {
  Stopwatch clock;
  double exchange_ms = 0, hidden_ms = 0;
  const ExchangeLayout& layout = cur().layout;
  const std::vector<StepScalars> scalars = advance_steps();
  find_slice_ends();
  std::vector<int64_t> done(static_cast<size_t>(T_), 0);  // slots updated so far
  int S = 0;  // tables sliced: those not pooled at the owners
  for (int t = 0; t < T_; ++t) S += layout.at_owner(t) ? 0 : 1;
  EMBTRAIN_ASSERT(grads_in_flight_.size() == static_cast<size_t>(std::min(
                                                 overlap_chunks_, kGradSlicesAhead) * S));
  size_t first_pending = 0;
  for (int k = 0; k < overlap_chunks_; ++k) {
    Stopwatch exchange;
    for (int i = 0; i < S; ++i) grads_in_flight_[k * S + i]->wait();
    first_pending = std::max(first_pending, static_cast<size_t>((k + 1) * S));
    mark_progress(stage_name(Stage::kExchangeGrads));  // for the watchdog, per slice
    const int64_t before = b_.data().traffic().bytes_sent;
    if (k + kGradSlicesAhead < overlap_chunks_) send_grad_slice(k + kGradSlicesAhead);
    stats_.grads_bytes_sent += b_.data().traffic().bytes_sent - before;
    for (int t = 0; t < T_ && layout.has_wire(); ++t)
      for (int p = 0; p < P_ && !grads_stay_packed(t) && !layout.at_owner(t); ++p) {
        if (p == rank_) continue;
        const int64_t count = layout.served(p, t).rows;
        unpack_from_wire(/*back=*/true, p, t, slice_begin(count, k), slice_begin(count, k + 1));
      }
    exchange_ms += exchange.lap_ms();
    for (int t = 0; t < T_; ++t) {
      if (b_.spec(t).freeze) continue;
      const Served& s = served_[t];
      // (A table pooled here has all its gradients: updated at once.)
      const int64_t end =
          layout.at_owner(t) ? s.index.num_unique : std::max(done[t], s.slice_end[k]);
      // The later slices move on; whether they still travel meanwhile.
      const bool travelling = still_travelling(grads_in_flight_, &first_pending);
      if (end > done[t]) {
        Stopwatch work;
        UniqueIndex slots;
        b_.update(t, scalars[t], slots_of(s.grads, done[t], end, &slots));
        if (travelling && !Backend::kAsynchronous) hidden_ms += work.lap_ms();
      }
      done[t] = end;
    }
  }
  grads_in_flight_.clear();
  grads_sliced_ = false;
  ++stats_.sliced_steps;
  finish_overlapped(Stage::kUpdate, Stage::kExchangeGrads, exchange_ms, hidden_ms, &clock);
}

// Overlapped: for each sliced table, slice_end[k], the distinct rows whose
// gradients have all arrived once slices 0..k have. Peer p's ids are
// ascending, so after its slices 0..k every row below the first id of its
// slice k + 1 has all of p's gradients (the rank's own never travel):
// slice_end[k] is the lower bound in the distinct rows of the least such
// first id over the peers, or all of them when every peer's block is done.
// The ids are in the backend's memory: picked out and bounded there, and
// the bounds brought to the host in one wait for all tables.
template <typename Backend>
void ShardedStep<Backend>::find_slice_ends() {
  const ExchangeLayout& layout = cur().layout;
  const int K = overlap_chunks_;
  std::vector<int64_t> positions, first(static_cast<size_t>(T_) + 1, 0);
  std::vector<int> slice_of;  // per position: the slice it bounds
  for (int t = 0; t < T_; ++t) {
    first[t] = static_cast<int64_t>(positions.size());
    for (int k = 0; k < K && !layout.at_owner(t); ++k)
      for (int p = 0; p < P_; ++p) {
        const int64_t count = layout.served(p, t).count, next = slice_begin(count, k + 1);
        if (p == rank_ || next >= count) continue;
        positions.push_back(served_[t].starts[p] + next);
        slice_of.push_back(k);
      }
  }
  const int64_t n = static_cast<int64_t>(positions.size());
  first[T_] = n;
  std::vector<int64_t> slots(static_cast<size_t>(n));
  if (n > 0) {
    int64_t* d = slice_bounds_.reserve(3 * n);  // positions, their ids, their slots
    b_.upload(d, positions.data(), n);
    for (int t = 0; t < T_; ++t) {
      const int64_t lo = first[t], m = first[t + 1] - lo;
      if (m == 0) continue;
      b_.take_ids(served_[t].ids.data(), d + lo, m, d + n + lo);
      b_.bucketize(served_[t].index, d + n + lo, m, d + 2 * n + lo);
    }
    b_.download(slots.data(), d + 2 * n, n);
  }
  for (int t = 0; t < T_; ++t) {
    Served& s = served_[t];
    s.slice_end.assign(static_cast<size_t>(K), s.index.num_unique);
    for (int64_t i = first[t]; i < first[t + 1]; ++i)
      s.slice_end[slice_of[i]] = std::min(s.slice_end[slice_of[i]], slots[i]);
  }
}

// Pooled at the owners.

// Table t's entries, and each bag's pooled count (into bags.pooling.counts).
template <typename Backend>
void ShardedStep<Backend>::list_entries(int t, const StepBags& bags) {
  Pooling& pl = pooling_[t];
  const Requested& r = cur().tables[t];
  const int64_t n = r.index.n;  // at most one entry and one partial row per position
  pl.entries = BagEntries{pl.idx.reserve(n), pl.slot.reserve(n), pl.pos.reserve(n),
                          pl.weight.reserve(n), pl.partial_bag.reserve(n)};
  pl.entry_begin.assign(static_cast<size_t>(P_) + 1, 0);
  pl.partial_begin.assign(static_cast<size_t>(P_) + 1, 0);
  // r.begin's first P + 1 bounds: each owner's first distinct key.
  b_.list_bag_entries(bags.pooling, bags.ids, b_.spec(t).padding_row(), r.index.inverse,
                      r.begin.data(), P_, &pl.entries, pl.entry_begin.data(),
                      pl.partial_begin.data());
}

// The second half of exchange_ids: the counts of partial rows and entries
// with each table's pooling (whose mode must be the same on every rank),
// the layout with them, then the entries.
template <typename Backend>
void ShardedStep<Backend>::exchange_bags() {
  Stopwatch clock;
  Input& in = cur();
  // Per table: 0 not pooled here, else 2 * (1 + mode) + (weights given);
  // the ranks must agree on the mode, not on the weights (a rank without
  // them sends weights of 1).
  std::vector<int64_t> code(static_cast<size_t>(T_), 0);
  for (int t = 0; t < T_; ++t) {
    if (!at_owner_[t]) continue;
    EMBTRAIN_ASSERT(bags_[t] != nullptr);
    const BagPooling& bp = bags_[t]->pooling;
    code[t] = 2 * (1 + static_cast<int64_t>(bp.mode)) + (bp.weights ? 1 : 0);
    owner_mode_[t] = bp.mode;
    list_entries(t, *bags_[t]);
  }
  const int64_t fields = 3 * int64_t{T_};
  std::vector<int64_t> send(static_cast<size_t>(P_ * fields)), recv(send.size());
  for (int d = 0; d < P_; ++d)
    for (int t = 0; t < T_; ++t) {
      const Pooling& pl = pooling_[t];
      const bool pooled = at_owner_[t];
      send[d * fields + t] = pooled ? pl.partial_begin[d + 1] - pl.partial_begin[d] : 0;
      send[d * fields + T_ + t] = pooled ? pl.entry_begin[d + 1] - pl.entry_begin[d] : 0;
      send[d * fields + 2 * T_ + t] = code[t];
    }
  control_.alltoall(send.data(), recv.data(), fields, CommType::kInt64);
  // Every rank sees every rank's codes: they all find the same table.
  weights_travel_ = any_max_ = false;
  for (int t = 0; t < T_; ++t)
    for (int p = 0; p < P_; ++p) {
      const int64_t theirs = recv[p * fields + 2 * T_ + t];
      if (theirs / 2 != recv[2 * T_ + t] / 2)
        throw AgreedError("table '" + b_.spec(t).name +
                          "' is pooled at the owners (pool_at = owner), and the ranks pool its "
                          "bags in different modes; every rank must give the same mode");
      weights_travel_ |= theirs % 2 == 1;
    }
  ExchangeLayout::Pooled pooled;
  pooled.at_owner = at_owner_;
  for (auto* v : {&pooled.requested_rows, &pooled.served_rows, &pooled.requested_entries,
                  &pooled.served_entries})
    v->assign(static_cast<size_t>(P_) * T_, 0);
  for (int p = 0; p < P_; ++p)
    for (int t = 0; t < T_; ++t) {
      pooled.requested_rows[p * T_ + t] = send[p * fields + t];
      pooled.requested_entries[p * T_ + t] = send[p * fields + T_ + t];
      pooled.served_rows[p * T_ + t] = recv[p * fields + t];
      pooled.served_entries[p * T_ + t] = recv[p * fields + T_ + t];
    }
  for (int t = 0; t < T_; ++t) any_max_ |= at_owner_[t] && owner_mode_[t] == PoolMode::kMax;
  in.layout.assign(rank_, dims_, Backend::kRowAlign, in.requested_counts, in.served_counts,
                   wire_bytes_, pooled, Backend::kUpdatesFromWire);
  const ExchangeLayout& layout = in.layout;
  int32_t* idx = idx_send_.reserve(layout.num_requested_entries());
  int32_t* slot = slot_send_.reserve(layout.num_requested_entries());
  float* weight = weights_travel_ ? weight_send_.reserve(layout.num_requested_entries()) : nullptr;
  idx_recv_.reserve(layout.num_served_entries());
  slot_recv_.reserve(layout.num_served_entries());
  if (weights_travel_) weight_recv_.reserve(layout.num_served_entries());
  for (int d = 0; d < P_; ++d)
    for (int t = 0; t < T_; ++t) {
      if (!at_owner_[t]) continue;
      const ExchangeLayout::Block& block = layout.requested(d, t);
      const BagEntries& e = pooling_[t].entries;
      const int64_t from = pooling_[t].entry_begin[d];
      b_.copy(idx + block.entry, e.idx + from, block.entries);
      b_.copy(slot + block.entry, e.slot + from, block.entries);
      if (weight) b_.copy(weight + block.entry, e.weight + from, block.entries);
    }
  exchange(Stage::kExchangeIds, &stats_.ids_bytes_sent, &clock, [&](Communicator& data) {
    data.alltoallv(idx, layout.entries_to_owners(), idx_recv_.data(),
                   layout.entries_from_requesters(), CommType::kInt32);
    data.alltoallv(slot, layout.entries_to_owners(), slot_recv_.data(),
                   layout.entries_from_requesters(), CommType::kInt32);
    if (weight)
      data.alltoallv(weight, layout.entries_to_owners(), weight_recv_.data(),
                     layout.entries_from_requesters(), CommType::kFloat32);
  });
}

// Requester r's block of table t at this owner.
template <typename Backend>
OwnerBlock ShardedStep<Backend>::owner_block(int r, int t) {
  const ExchangeLayout::Block& block = cur().layout.served(r, t);
  OwnerBlock ob;
  ob.mode = owner_mode_[t];
  ob.dim = dims_[t];
  ob.idx = idx_recv_.data() + block.entry;
  ob.slot = slot_recv_.data() + block.entry;
  ob.weight = weights_travel_ ? weight_recv_.data() + block.entry : nullptr;
  ob.entries = block.entries;
  ob.rows = block.rows;
  ob.num_ids = block.count;
  ob.kept = rows_.data() + block.kept;
  ob.partial = rows_.data() + block.row;
  ob.arg = ob.mode == PoolMode::kMax ? args_.data() + block.row : nullptr;
  return ob;
}

// Owner: each requester's partial rows from its entries.
template <typename Backend>
void ShardedStep<Backend>::pool_at_owner() {
  Stopwatch clock;
  for (int t = 0; t < T_; ++t)
    if (cur().layout.at_owner(t))
      for (int r = 0; r < P_; ++r) b_.pool_partials(owner_block(r, t));
  finish(Stage::kGatherOwned, &clock);
}

// Table t's partial rows at this requester; `rows` and `args` hold the
// per-owner pointers it points at.
template <typename Backend>
RequesterPartials ShardedStep<Backend>::requester_partials(int t, std::vector<float*>* rows,
                                                           std::vector<const int32_t*>* args) {
  Pooling& pl = pooling_[t];
  const BagPooling& bp = bags_[t]->pooling;
  RequesterPartials p;
  p.mode = owner_mode_[t];
  p.dim = dims_[t];
  p.num_bags = bp.num_bags;
  p.counts = bp.counts;
  p.num_owners = P_;
  p.partial_begin = pl.partial_begin.data();
  p.entry_begin = pl.entry_begin.data();
  p.partial_bag = pl.entries.partial_bag;
  p.pos = pl.entries.pos;
  rows->clear();
  args->clear();
  for (int d = 0; d < P_; ++d) {
    const int64_t at = cur().layout.requested(d, t).row;
    rows->push_back(rows_.data() + at);
    args->push_back(p.mode == PoolMode::kMax ? args_.data() + at : nullptr);
  }
  p.rows = rows->data();
  p.args = args->data();
  p.winner = p.mode == PoolMode::kMax ? pl.winner.data() : nullptr;
  return p;
}

// Requester: each bag's partial rows combined in owner rank order.
template <typename Backend>
void ShardedStep<Backend>::expand_at_owner(int t, float* out) {
  Pooling& pl = pooling_[t];
  if (owner_mode_[t] == PoolMode::kMax) pl.winner.reserve(bags_[t]->pooling.num_bags * dims_[t]);
  std::vector<float*> rows;
  std::vector<const int32_t*> args;
  b_.combine_partials(requester_partials(t, &rows, &args), out);
}

// Requester: one gradient row per partial row sent.
template <typename Backend>
void ShardedStep<Backend>::reduce_at_owner(int t, const float* grad_out) {
  std::vector<float*> rows;
  std::vector<const int32_t*> args;
  b_.split_bag_grads(requester_partials(t, &rows, &args), grad_out);
}

// Owner: each partial's gradient back to its entries, summed per id in
// entry order into the kept rows (combine_at_owner reads them there).
template <typename Backend>
void ShardedStep<Backend>::unpool_at_owner() {
  Stopwatch clock;
  for (int t = 0; t < T_; ++t)
    if (cur().layout.at_owner(t))
      for (int r = 0; r < P_; ++r) b_.unpool_partials(owner_block(r, t));
  finish(Stage::kCombineAtOwner, &clock);
}

}  // namespace embtrain
