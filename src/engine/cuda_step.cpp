// The sharded step on a GPU: sharded_embedding.cpp's protocol with the rows
// in device memory. Read that file first; the numbered stages are the same.
//
// What differs from the CPU engine:
//  - Buffers are device memory, grow-only (cuda::DeviceBuffer), so a step
//    allocates nothing once the sizes stop growing.
//  - Every exchange buffer is laid out peer-major, table-minor as on the
//    CPU, but rows a rank asks of itself go through the data communicator
//    like the others (NCCL and the staged path copy them locally).
//  - Each (peer, table) block of the row buffers is padded to a multiple of
//    4 floats (block_floats), so every block starts on 16 bytes: the
//    kernels take their float4 path when dim % 4 == 0, and a row of such a
//    table behind a block of a dim-3 table would otherwise be misaligned.
//  - Where the CPU engine builds per-id offset arrays in loops, the GPU one
//    uses block_offsets: within a (peer, table) block the items and their
//    rows are consecutive, so an item's row is its block's base plus its
//    index in the block times dim.
//  - The owner's reduce is fused into step() (segment_sum_update): the
//    senders' gradient rows wait in the rows-sent buffer until then.
//  - With one rank nothing is exchanged: forward gathers straight from the
//    table and step() reduces straight from the output gradient (which must
//    stay valid until then), as the CPU's one-rank LocalStep does.
// The host waits on the device only where it needs a count: the number of
// distinct ids, and the split of them by owner.
#include <algorithm>
#include <cstring>

#include "embtrain/device_selection.hpp"
#include "embtrain/device_step.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/kernels_cuda.hpp"
#include "embtrain/nccl_communicator.hpp"
#include "embtrain/sharded_embedding.hpp"
#include "embtrain/staged_communicator.hpp"
#include "embtrain/timer.hpp"

namespace embtrain {

namespace {

using cuda::DeviceBuffer;
using cuda::PinnedBuffer;

// Grows `buffer` to hold n elements of T and returns it as T*.
template <typename T>
T* reserve(DeviceBuffer& buffer, int64_t n) {
  buffer.reserve(static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(T));
  return buffer.as<T>();
}
template <typename T>
T* reserve(PinnedBuffer& buffer, int64_t n) {
  buffer.reserve(static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(T));
  return buffer.as<T>();
}

// Floats that a (peer, table) block of n rows of `dim` takes in the row
// buffers, rounded up to a multiple of 4: the kernels' float4 path needs
// row offsets that are multiples of 4 floats (kernels_cuda.hpp). Sender and
// receiver pad alike, from the same counts; the padding is sent, never read.
int64_t block_floats(int64_t n, int64_t dim) { return (n * dim + 3) / 4 * 4; }

class CudaStep final : public DeviceStep {
 public:
  CudaStep(const std::vector<EmbeddingTable>& shards, const std::vector<ShardPlan>& plans,
           Communicator* control, const CudaOptions& options)
      : control_(control), stats_(&own_stats_), plans_(plans) {
    // Every rank must fail together, or the others would wait in the
    // collectives below.
    const int devices = cuda::device_count();
    std::string error;
    if (devices == 0)
      error = detail::concat("device cuda: no CUDA device is visible to rank ", control->rank(),
                             " (check the driver and CUDA_VISIBLE_DEVICES), or use device cpu");
    error = control->agree_on_error(error);
    if (!error.empty()) throw AgreedError(error);
    const LocalRankInfo local = local_rank_info(*control);
    device_ = pick_device(local.local_rank, devices);
    cuda::set_device(device_);
    stream_ = std::make_unique<cuda::Stream>();

    EMBTRAIN_REQUIRE(options.data_comm == "auto" || options.data_comm == "nccl" ||
                         options.data_comm == "mpi-staged",
                     "data communicator '", options.data_comm,
                     "' is not one of auto, nccl, mpi-staged");
    const DataCommChoice choice = choose_data_communicator(*control, local, devices,
                                                           options.data_comm != "mpi-staged");
    if (options.data_comm == "nccl" && choice.kind != DataCommKind::kNccl)
      throw AgreedError(detail::concat("data communicator nccl cannot be used: ", choice.reason));
    if (choice.kind == DataCommKind::kNccl)
      data_ = make_nccl_communicator(*control, stream_->get());
    else
      data_ = make_staged_communicator(make_mpi_communicator(), make_cuda_copier(stream_->get()));
    comm_description_ = detail::concat(data_comm_name(choice.kind), " (", choice.reason, ")");

    tables_.resize(shards.size());
    for (size_t t = 0; t < shards.size(); ++t) {
      Table& tab = tables_[t];
      tab.spec = shards[t].spec();
      tab.row_begin = shards[t].row_begin();
      tab.num_rows = shards[t].num_rows();
      tab.width = shards[t].state_width();
      // Bounds for bucketize: each rank's first row, the table's end, then
      // the padding row and the one after it, whose slots say whether and
      // where the padding id is among a batch's distinct ids.
      const int P = plans[t].num_ranks();
      std::vector<int64_t> bounds(static_cast<size_t>(P) + 3);
      for (int d = 0; d < P; ++d) bounds[d] = plans[t].row_begin(d);
      bounds[P] = tab.spec.num_embeddings;
      const int64_t pad = tab.spec.padding_row();
      bounds[P + 1] = pad >= 0 ? pad : tab.spec.num_embeddings;
      bounds[P + 2] = pad >= 0 ? pad + 1 : tab.spec.num_embeddings;
      int64_t* d_bounds = reserve<int64_t>(tab.bounds, P + 3);
      cuda::copy_to_device(d_bounds, bounds.data(), bounds.size() * sizeof(int64_t),
                           stream_->get());
      upload(static_cast<int>(t), shards[t]);
    }
    *reserve<int64_t>(minus_one_, 1) = -1;
    stream_->synchronize();
  }

  void forward(const std::vector<IdsView>& ids, const std::vector<float*>& out) override {
    const int T = num_tables();
    EMBTRAIN_ASSERT(static_cast<int>(ids.size()) == T && static_cast<int>(out.size()) == T);
    // Validate on the host, where the error can name the position in the
    // caller's shape, then move the ids over as int64.
    std::string error;
    for (int t = 0; t < T && error.empty(); ++t) error = check_ids(ids[t], tables_[t].spec);
    agree(error);
    std::vector<DeviceIds> d_ids(T);
    std::vector<float*> d_out(T);
    for (int t = 0; t < T; ++t) {
      Table& tab = tables_[t];
      const int64_t n = ids[t].numel();
      int64_t* d = reserve<int64_t>(tab.host_ids, n);
      if (ids[t].dtype == DType::kInt64) {
        cuda::copy_to_device(d, ids[t].data, static_cast<size_t>(n) * sizeof(int64_t),
                             stream_->get());
      } else {  // int32 ids cross as they are and widen on the device
        int32_t* narrow = reserve<int32_t>(tab.host_ids32, n);
        cuda::copy_to_device(narrow, ids[t].data, static_cast<size_t>(n) * sizeof(int32_t),
                             stream_->get());
        cuda::widen_ids(narrow, n, d, stream_->get());
      }
      d_ids[t] = DeviceIds{d, n};
      d_out[t] = reserve<float>(tab.host_out, n * tab.spec.dim);
    }
    forward_impl(d_ids, d_out, /*validated=*/true);
    for (int t = 0; t < T; ++t)
      cuda::copy_to_host(out[t], d_out[t],
                         static_cast<size_t>(d_ids[t].n * tables_[t].spec.dim) * sizeof(float),
                         stream_->get());
    stream_->synchronize();
  }

  void backward(const std::vector<const float*>& grad_out) override {
    const int T = num_tables();
    EMBTRAIN_ASSERT(static_cast<int>(grad_out.size()) == T);
    std::vector<const float*> d_grad(T);
    for (int t = 0; t < T; ++t) {
      Table& tab = tables_[t];
      const int64_t floats = tab.n * tab.spec.dim;
      float* d = reserve<float>(tab.host_grad, floats);
      cuda::copy_to_device(d, grad_out[t], static_cast<size_t>(floats) * sizeof(float),
                           stream_->get());
      d_grad[t] = d;
    }
    backward_device(d_grad);
    stream_->synchronize();  // the caller may reuse grad_out
  }

  void forward_device(const std::vector<DeviceIds>& ids, const std::vector<float*>& out) override {
    EMBTRAIN_ASSERT(static_cast<int>(ids.size()) == num_tables() &&
                    static_cast<int>(out.size()) == num_tables());
    forward_impl(ids, out, /*validated=*/false);
  }

  void backward_device(const std::vector<const float*>& grad_out) override;
  void step(std::vector<EmbeddingTable>& shards) override;
  void synchronize() override {
    data_->synchronize();
    stream_->synchronize();
  }

  void download(int t, EmbeddingTable* shard) override {
    const Table& tab = tables_[t];
    cuda::copy_to_host(shard->weights().data(), tab.weights.data(),
                       static_cast<size_t>(tab.num_rows * tab.spec.dim) * sizeof(float),
                       stream_->get());
    if (tab.width > 0)
      cuda::copy_to_host(shard->state().data(), tab.state.data(),
                         static_cast<size_t>(tab.num_rows * tab.width) * sizeof(float),
                         stream_->get());
    stream_->synchronize();
  }

  void upload(int t, const EmbeddingTable& shard) override {
    Table& tab = tables_[t];
    float* w = reserve<float>(tab.weights, tab.num_rows * tab.spec.dim);
    cuda::copy_to_device(w, shard.weights().data(),
                         static_cast<size_t>(tab.num_rows * tab.spec.dim) * sizeof(float),
                         stream_->get());
    if (tab.width > 0) {
      float* s = reserve<float>(tab.state, tab.num_rows * tab.width);
      cuda::copy_to_device(s, shard.state().data(),
                           static_cast<size_t>(tab.num_rows * tab.width) * sizeof(float),
                           stream_->get());
    }
    stream_->synchronize();
  }

  ShardedStepStats& stats() override { return own_stats_; }
  const ShardedStepStats& stats() const override { return own_stats_; }

  std::string description() const override {
    return detail::concat("cuda:", device_, " ", cuda::device_description(device_), ", data over ",
                          comm_description_);
  }

 private:
  // One table: its device rows and what a step leaves for the next stage.
  struct Table {
    TableSpec spec;
    int64_t row_begin = 0, num_rows = 0, width = 0;
    DeviceBuffer weights, state, bounds;
    // Requester side.
    int64_t n = 0;                       // this rank's ids this step
    cuda::UniqueWorkspace local_ws;      // their distinct ids
    cuda::DeviceUniqueIndex local;
    std::vector<int64_t> begin;          // P + 3: bucketize's answer (see the constructor)
    int64_t pad_slot = -1;               // the padding id's slot in local, or -1
    DeviceBuffer slot_offsets;           // per local slot: its row in rows_recv_
    DeviceBuffer counts;                 // per local slot: occurrences (int32)
    // Owner side.
    int64_t m = 0;                       // ids other ranks asked for (self included)
    DeviceBuffer owned_ids;              // those ids, table t's blocks in rank order
    cuda::UniqueWorkspace owned_ws;
    cuda::DeviceUniqueIndex owned;
    DeviceBuffer src_offsets;            // per owned position: its row in rows_send_
    DeviceBuffer weights_of;             // per owned position: the sender's count (int32)
    // One rank: the output gradient, read by step().
    const float* grad_out = nullptr;
    // Host-path staging.
    DeviceBuffer host_ids, host_ids32, host_out, host_grad;
  };

  int num_tables() const { return static_cast<int>(tables_.size()); }
  int64_t id_block(const std::vector<int64_t>& counts, int r, int t) const {
    return counts[static_cast<size_t>(r) * num_tables() + t];
  }

  void agree(std::string error) {
    if (!error.empty() && control_->size() > 1)
      error += detail::concat(" (in rank ", control_->rank(), "'s batch)");
    error = control_->agree_on_error(error);
    if (!error.empty()) throw AgreedError(error);
  }

  // Block offsets of table t's items: `starts` (P + 1) and `base` (P) are
  // copied to the device through this table's slice of the pinned buffer.
  void offsets_of_blocks(const std::vector<int64_t>& starts, const std::vector<int64_t>& base,
                         int64_t dim, int64_t n, DeviceBuffer& small, int64_t* d_out) {
    const int64_t P = static_cast<int64_t>(base.size());
    int64_t* d_small = reserve<int64_t>(small, 2 * P + 1);
    std::vector<int64_t> packed(starts.begin(), starts.end());
    packed.insert(packed.end(), base.begin(), base.end());
    int64_t* h = reserve<int64_t>(pinned_small_, static_cast<int64_t>(packed.size()));
    std::copy(packed.begin(), packed.end(), h);
    cuda::copy_to_device(d_small, h, packed.size() * sizeof(int64_t), stream_->get());
    cuda::block_offsets(d_small, d_small + P + 1, P, dim, n, d_out, stream_->get());
    // The pinned slice is reused by the next call: wait for the copy.
    stream_->synchronize();
  }

  void forward_impl(const std::vector<DeviceIds>& ids, const std::vector<float*>& out,
                    bool validated);

  Communicator* control_;
  ShardedStepStats own_stats_;
  ShardedStepStats* stats_;
  std::vector<ShardPlan> plans_;
  int device_ = 0;
  std::unique_ptr<cuda::Stream> stream_;
  std::unique_ptr<Communicator> data_;
  std::string comm_description_;
  std::vector<Table> tables_;
  // Exchange buffers, peer-major and table-minor as on the CPU.
  std::vector<int64_t> send_ids_count_, recv_ids_count_;  // per (peer, table)
  std::vector<int64_t> ids_to_peer_, ids_from_peer_;      // per peer, elements
  std::vector<int64_t> rows_to_peer_, rows_from_peer_;    // per peer, floats
  DeviceBuffer ids_send_, ids_recv_;
  DeviceBuffer rows_send_;  // owner: rows to requesters; later their gradients
  DeviceBuffer rows_recv_;  // requester: rows from owners; later gradients to them
  DeviceBuffer counts_send_, counts_recv_, bad_, begin_all_, small_offsets_;
  PinnedBuffer pinned_small_, pinned_begin_, minus_one_;
  cuda::SegmentWorkspace segment_ws_;  // the requester's reduce, then the owner's
  bool any_scaled_ = false;
};

void CudaStep::forward_impl(const std::vector<DeviceIds>& ids, const std::vector<float*>& out,
                            bool validated) {
  const int T = num_tables(), P = control_->size();
  void* s = stream_->get();
  Stopwatch clock;

  // 1. Validate (device batches only: the host path checked already),
  // index the distinct ids, split them by owner.
  {
    // The kernels index a batch with int32 (as the CPU kernels do).
    std::string error;
    for (int t = 0; t < T && error.empty(); ++t)
      if (ids[t].n >= (int64_t{1} << 31))
        error = detail::concat("table '", tables_[t].spec.name, "': a batch holds ", ids[t].n,
                               " ids; one table's batch per rank is limited to 2^31 - 1");
    agree(error);
  }
  if (!validated) {
    int64_t* d_bad = reserve<int64_t>(bad_, 2 * T);
    for (int t = 0; t < T; ++t)
      cuda::find_bad_id(ids[t].data, ids[t].n, tables_[t].spec.num_embeddings, d_bad + 2 * t, s);
    std::vector<int64_t> bad(2 * static_cast<size_t>(T));
    cuda::copy_to_host(bad.data(), d_bad, bad.size() * sizeof(int64_t), s);
    stream_->synchronize();
    std::string error;
    for (int t = 0; t < T && error.empty(); ++t)
      if (bad[2 * t] >= 0)
        error = detail::concat("table '", tables_[t].spec.name, "': index ", bad[2 * t + 1],
                               " at position ", bad[2 * t], " of ", ids[t].n,
                               " ids is out of range [0, ", tables_[t].spec.num_embeddings, ")");
    agree(error);
  }
  if (P == 1) {  // one rank owns every row: the single-process step, no exchange
    for (int t = 0; t < T; ++t) {
      Table& tab = tables_[t];
      tab.n = ids[t].n;
      tab.local = cuda::unique_ids(ids[t].data, tab.n, tab.spec.num_embeddings, &tab.local_ws, s);
    }
    stats_->unique_ms += clock.lap_ms();
    for (int t = 0; t < T; ++t) {
      Table& tab = tables_[t];
      // max_norm visits each distinct row once before any lookup, as on the CPU.
      if (tab.spec.max_norm)
        cuda::renorm_rows(tab.weights.as<float>(), tab.spec.dim, tab.local.unique,
                          tab.local.num_unique, 0, static_cast<float>(*tab.spec.max_norm),
                          static_cast<float>(tab.spec.norm_type), s);
      cuda::gather_rows(tab.weights.as<float>(), tab.spec.dim, ids[t].data, tab.n, 0, out[t], s);
    }
    stream_->synchronize();
    stats_->gather_ms += clock.lap_ms();
    ++stats_->steps;
    return;
  }
  const int64_t nb = P + 3;
  int64_t* d_begin = reserve<int64_t>(begin_all_, nb * T);
  for (int t = 0; t < T; ++t) {
    Table& tab = tables_[t];
    tab.n = ids[t].n;
    tab.local = cuda::unique_ids(ids[t].data, tab.n, tab.spec.num_embeddings, &tab.local_ws, s);
    cuda::bucketize(tab.local.unique, tab.local.num_unique, tab.bounds.as<int64_t>(), nb,
                    d_begin + nb * t, s);
  }
  int64_t* h_begin = reserve<int64_t>(pinned_begin_, nb * T);
  cuda::copy_to_host(h_begin, d_begin, static_cast<size_t>(nb * T) * sizeof(int64_t), s);
  stream_->synchronize();
  send_ids_count_.assign(static_cast<size_t>(P) * T, 0);
  for (int t = 0; t < T; ++t) {
    Table& tab = tables_[t];
    tab.begin.assign(h_begin + nb * t, h_begin + nb * (t + 1));
    tab.pad_slot = tab.begin[P + 2] - tab.begin[P + 1] == 1 ? tab.begin[P + 1] : -1;
    for (int d = 0; d < P; ++d) send_ids_count_[d * T + t] = tab.begin[d + 1] - tab.begin[d];
  }
  stats_->unique_ms += clock.lap_ms();

  // 2. Counts over the control communicator, then the ids.
  int64_t traffic = data_->traffic().bytes_sent;
  recv_ids_count_.assign(static_cast<size_t>(P) * T, 0);
  control_->alltoall(send_ids_count_.data(), recv_ids_count_.data(), T, CommType::kInt64);
  ids_to_peer_.assign(P, 0);
  ids_from_peer_.assign(P, 0);
  rows_to_peer_.assign(P, 0);
  rows_from_peer_.assign(P, 0);
  for (int r = 0; r < P; ++r)
    for (int t = 0; t < T; ++t) {
      ids_to_peer_[r] += id_block(send_ids_count_, r, t);
      ids_from_peer_[r] += id_block(recv_ids_count_, r, t);
      rows_to_peer_[r] += block_floats(id_block(recv_ids_count_, r, t), tables_[t].spec.dim);
      rows_from_peer_[r] += block_floats(id_block(send_ids_count_, r, t), tables_[t].spec.dim);
    }
  int64_t ids_out = 0, ids_in = 0, rows_out = 0, rows_in = 0;
  for (int r = 0; r < P; ++r) {
    ids_out += ids_to_peer_[r], ids_in += ids_from_peer_[r];
    rows_out += rows_to_peer_[r], rows_in += rows_from_peer_[r];
  }
  int64_t* d_ids_send = reserve<int64_t>(ids_send_, ids_out);
  int64_t* d_ids_recv = reserve<int64_t>(ids_recv_, ids_in);
  {
    int64_t at = 0;
    for (int d = 0; d < P; ++d)
      for (int t = 0; t < T; ++t) {
        const int64_t n = id_block(send_ids_count_, d, t);
        if (n > 0)
          cuda::copy_on_device(d_ids_send + at, tables_[t].local.unique + tables_[t].begin[d],
                               static_cast<size_t>(n) * sizeof(int64_t), s);
        at += n;
      }
  }
  data_->alltoallv(d_ids_send, ids_to_peer_, d_ids_recv, ids_from_peer_, CommType::kInt64);
  data_->synchronize();
  stats_->ids_bytes_sent += data_->traffic().bytes_sent - traffic;
  stats_->alltoall_ids_ms += clock.lap_ms();

  // 3. Owner: table t's requested ids in rank order, their distinct rows
  // renormed once, then each requester's rows gathered into its block.
  float* d_rows_send = reserve<float>(rows_send_, rows_out);
  for (int t = 0; t < T; ++t) {
    Table& tab = tables_[t];
    tab.m = 0;
    for (int r = 0; r < P; ++r) tab.m += id_block(recv_ids_count_, r, t);
    int64_t* owned_ids = reserve<int64_t>(tab.owned_ids, tab.m);
    // Where each sender's block starts among table t's ids, in ids_recv_
    // and in rows_send_.
    std::vector<int64_t> starts(P + 1, 0), id_at(P), row_at(P);
    int64_t id_pos = 0, row_pos = 0;
    for (int r = 0; r < P; ++r)
      for (int t2 = 0; t2 < T; ++t2) {
        const int64_t n = id_block(recv_ids_count_, r, t2);
        if (t2 == t) id_at[r] = id_pos, row_at[r] = row_pos;
        id_pos += n;
        row_pos += block_floats(n, tables_[t2].spec.dim);
      }
    for (int r = 0; r < P; ++r) {
      const int64_t n = id_block(recv_ids_count_, r, t);
      starts[r + 1] = starts[r] + n;
      if (n > 0)
        cuda::copy_on_device(owned_ids + starts[r], d_ids_recv + id_at[r],
                             static_cast<size_t>(n) * sizeof(int64_t), s);
    }
    tab.owned = cuda::unique_ids(owned_ids, tab.m, tab.spec.num_embeddings, &tab.owned_ws, s);
    if (tab.spec.max_norm)
      cuda::renorm_rows(tab.weights.as<float>(), tab.spec.dim, tab.owned.unique,
                        tab.owned.num_unique, tab.row_begin,
                        static_cast<float>(*tab.spec.max_norm),
                        static_cast<float>(tab.spec.norm_type), s);
    for (int r = 0; r < P; ++r) {
      const int64_t n = id_block(recv_ids_count_, r, t);
      if (n > 0)
        cuda::gather_rows(tab.weights.as<float>(), tab.spec.dim, owned_ids + starts[r], n,
                          tab.row_begin, d_rows_send + row_at[r], s);
    }
    // Where the gradients of these rows will come back: the same places.
    offsets_of_blocks(starts, row_at, tab.spec.dim, tab.m, small_offsets_,
                      reserve<int64_t>(tab.src_offsets, tab.m));
  }
  stats_->gather_ms += clock.lap_ms();

  // 4. Rows back, then expand through the inverse map.
  traffic = data_->traffic().bytes_sent;
  float* d_rows_recv = reserve<float>(rows_recv_, rows_in);
  data_->alltoallv(d_rows_send, rows_to_peer_, d_rows_recv, rows_from_peer_, CommType::kFloat32);
  data_->synchronize();
  stats_->rows_bytes_sent += data_->traffic().bytes_sent - traffic;
  stats_->alltoall_rows_ms += clock.lap_ms();

  for (int t = 0; t < T; ++t) {
    Table& tab = tables_[t];
    // Owner d's rows of table t arrive as one block of rows_recv_.
    std::vector<int64_t> starts(tab.begin.begin(), tab.begin.begin() + P + 1), base(P);
    int64_t row_pos = 0;
    for (int d = 0; d < P; ++d)
      for (int t2 = 0; t2 < T; ++t2) {
        if (t2 == t) base[d] = row_pos;
        row_pos += block_floats(id_block(send_ids_count_, d, t2), tables_[t2].spec.dim);
      }
    int64_t* slot_offsets = reserve<int64_t>(tab.slot_offsets, tab.local.num_unique);
    offsets_of_blocks(starts, base, tab.spec.dim, tab.local.num_unique, small_offsets_,
                      slot_offsets);
    cuda::gather_rows_at(d_rows_recv, slot_offsets, tab.local.inverse, tab.n, tab.spec.dim,
                         out[t], s);
  }
  stream_->synchronize();
  stats_->gather_ms += clock.lap_ms();
  ++stats_->steps;
}

void CudaStep::backward_device(const std::vector<const float*>& grad_out) {
  const int T = num_tables(), P = control_->size();
  EMBTRAIN_ASSERT(static_cast<int>(grad_out.size()) == T);
  void* s = stream_->get();
  Stopwatch clock;
  if (P == 1) {  // step() reduces straight from the output gradient
    for (int t = 0; t < T; ++t) tables_[t].grad_out = grad_out[t];
    return;
  }

  // 5. Requester: per distinct id, the summed gradient into the place its
  // row arrived at (rows_recv_ becomes the send buffer); the padding id's
  // slot is skipped (its owner drops it anyway).
  float* d_grads_send = rows_recv_.as<float>();
  any_scaled_ = false;
  for (int t = 0; t < T; ++t) any_scaled_ |= tables_[t].spec.scale_grad_by_freq;
  int64_t ids_out = 0;
  for (int64_t c : ids_to_peer_) ids_out += c;
  int32_t* d_counts_send = any_scaled_ ? reserve<int32_t>(counts_send_, ids_out) : nullptr;
  for (int t = 0; t < T; ++t) {
    Table& tab = tables_[t];
    int64_t* dst = tab.slot_offsets.as<int64_t>();
    if (tab.pad_slot >= 0)
      cuda::copy_to_device(dst + tab.pad_slot, minus_one_.data(), sizeof(int64_t), s);
    cuda::SegmentLayout layout;
    layout.dst_offsets = dst;
    cuda::segment_sum(grad_out[t], tab.spec.dim, tab.local, layout, /*scale_by_count=*/false,
                      d_grads_send, &segment_ws_, s);
    if (any_scaled_) {
      int32_t* counts = reserve<int32_t>(tab.counts, tab.local.num_unique);
      cuda::segment_counts(tab.local.offsets, tab.local.num_unique, counts, s);
      int64_t at = 0;
      for (int d = 0; d < P; ++d)
        for (int t2 = 0; t2 < T; ++t2) {
          const int64_t n = id_block(send_ids_count_, d, t2);
          if (t2 == t && n > 0)
            cuda::copy_on_device(d_counts_send + at, counts + tab.begin[d],
                                 static_cast<size_t>(n) * sizeof(int32_t), s);
          at += n;
        }
    }
  }
  stream_->synchronize();
  stats_->reduce_ms += clock.lap_ms();

  // 6. Gradients (and counts) to the owners, into rows_send_. Buffers grow
  // before the first exchange is enqueued: growing frees the old buffer,
  // which waits for the whole device.
  int32_t* d_counts_recv = nullptr;
  if (any_scaled_) {
    int64_t ids_in = 0;
    for (int64_t c : ids_from_peer_) ids_in += c;
    d_counts_recv = reserve<int32_t>(counts_recv_, ids_in);
    for (Table& tab : tables_)
      if (tab.spec.scale_grad_by_freq) reserve<int32_t>(tab.weights_of, tab.m);
  }
  const int64_t traffic = data_->traffic().bytes_sent;
  data_->alltoallv(d_grads_send, rows_from_peer_, rows_send_.as<float>(), rows_to_peer_,
                   CommType::kFloat32);
  if (any_scaled_) {
    data_->alltoallv(d_counts_send, ids_to_peer_, d_counts_recv, ids_from_peer_,
                     CommType::kInt32);
    // Each table's counts in its owned-id order (rank order), for the reduce.
    for (int t = 0; t < T; ++t) {
      Table& tab = tables_[t];
      if (!tab.spec.scale_grad_by_freq) continue;
      int32_t* weights = tab.weights_of.as<int32_t>();
      int64_t id_pos = 0, k = 0;
      for (int r = 0; r < P; ++r)
        for (int t2 = 0; t2 < T; ++t2) {
          const int64_t n = id_block(recv_ids_count_, r, t2);
          if (t2 == t && n > 0) {
            cuda::copy_on_device(weights + k, d_counts_recv + id_pos,
                                 static_cast<size_t>(n) * sizeof(int32_t), s);
            k += n;
          }
          id_pos += n;
        }
    }
  }
  data_->synchronize();
  stats_->grads_bytes_sent += data_->traffic().bytes_sent - traffic;
  stats_->alltoall_grads_ms += clock.lap_ms();
}

void CudaStep::step(std::vector<EmbeddingTable>& shards) {
  void* s = stream_->get();
  Stopwatch clock;
  // 7. Owner: combine the senders per row in rank order, scale, drop the
  // padding row, and update, in one pass (segment_sum_update).
  for (int t = 0; t < num_tables(); ++t) {
    Table& tab = tables_[t];
    EmbeddingTable& shard = shards[t];
    shard.set_step(shard.step() + 1);
    // One rank: this rank's own positions, summed from the output gradient.
    const bool single = control_->size() == 1;
    const cuda::DeviceUniqueIndex& index = single ? tab.local : tab.owned;
    if (tab.spec.freeze || index.num_unique == 0) continue;
    cuda::SegmentLayout layout;
    if (!single) {
      layout.src_offsets = tab.src_offsets.as<int64_t>();
      if (tab.spec.scale_grad_by_freq) layout.weights = tab.weights_of.as<int32_t>();
    }
    cuda::segment_sum_update(tab.spec.optimizer.kind, step_scalars(tab.spec.optimizer, shard.step()),
                             tab.weights.as<float>(), tab.width > 0 ? tab.state.as<float>() : nullptr,
                             tab.spec.dim, tab.row_begin, single ? tab.grad_out : rows_send_.as<float>(),
                             index, layout, tab.spec.scale_grad_by_freq, tab.spec.padding_row(),
                             &segment_ws_, s);
  }
  stream_->synchronize();
  stats_->update_ms += clock.lap_ms();
}

}  // namespace

std::unique_ptr<DeviceStep> make_cuda_step(const std::vector<EmbeddingTable>& shards,
                                           const std::vector<ShardPlan>& plans,
                                           Communicator* control, const CudaOptions& options) {
  return std::make_unique<CudaStep>(shards, plans, control, options);
}

}  // namespace embtrain
