// The sharded step. Every rank is both a requester (it has a batch of ids)
// and an owner (it holds a block of each table's rows).
//
// Forward:
//  1. Requester: validate the ids (ranks agree on any error first), take the
//     distinct ids in ascending order and split them by owner; since owners
//     hold contiguous row blocks, each owner's ids form one contiguous range.
//  2. Exchange counts (per peer, per table), then the ids themselves. Every
//     buffer is laid out peer-major, table-minor, so one all-to-all carries
//     all tables.
//  3. Owner: take the distinct rows that all ranks asked for together, renorm
//     them once if max_norm (as one process renorms the global batch's
//     rows), then gather each requester's rows into the send buffer. Rows a
//     rank asks of itself are gathered straight to where it reads them.
//  4. Exchange rows back. Requester: its rows arrive in the layout its ids
//     left in; expand them through the inverse map to (*, dim).
// Backward runs the same route in reverse:
//  5. Requester: sum the output gradient per distinct id into that same
//     layout (padding left as zeros), with per-id counts if any table scales
//     by frequency.
//  6. Exchange gradient sums (and counts) back to the owners.
//  7. Owner: add the senders' sums per row in rank order, divide by the
//     global count if scale_grad_by_freq, drop the padding row. step() then
//     applies the optimizer to exactly these rows.
#include "embtrain/sharded_embedding.hpp"

#include <algorithm>
#include <cstring>

#include "embtrain/embedding.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/random.hpp"
#include "embtrain/timer.hpp"

namespace embtrain {

namespace {

// Seed of table t's initial rows.
uint64_t table_seed(uint64_t seed, int t) {
  return random_bits(seed, 0x7ab1e5eedull, static_cast<uint64_t>(t));
}

// Index of `row` in the ascending `unique`, or -1.
int64_t slot_of(const std::vector<int64_t>& unique, int64_t row) {
  if (row < 0) return -1;
  auto it = std::lower_bound(unique.begin(), unique.end(), row);
  return it != unique.end() && *it == row ? it - unique.begin() : -1;
}

}  // namespace

ShardedEmbedding::ShardedEmbedding(const std::vector<TableSpec>& specs, Communicator* comm,
                                   uint64_t seed)
    : comm_(comm) {
  for (size_t t = 0; t < specs.size(); ++t) {
    specs[t].validate();
    plans_.emplace_back(specs[t].num_embeddings, comm->size());
    const ShardPlan& plan = plans_.back();
    shards_.emplace_back(specs[t], plan.row_begin(comm->rank()), plan.shard_rows(comm->rank()),
                         table_seed(seed, static_cast<int>(t)));
  }
  steps_.resize(specs.size());
}

ShardedEmbedding::ShardedEmbedding(const std::vector<TableSpec>& specs, Communicator* comm,
                                   const std::vector<std::vector<float>>& local_rows)
    : comm_(comm) {
  EMBTRAIN_ASSERT(local_rows.size() == specs.size());
  for (size_t t = 0; t < specs.size(); ++t) {
    specs[t].validate();
    plans_.emplace_back(specs[t].num_embeddings, comm->size());
    const ShardPlan& plan = plans_.back();
    shards_.emplace_back(specs[t], plan.row_begin(comm->rank()), plan.shard_rows(comm->rank()),
                         local_rows[t]);
  }
  steps_.resize(specs.size());
}

ShardedEmbedding::~ShardedEmbedding() = default;
ShardedEmbedding::ShardedEmbedding(ShardedEmbedding&&) noexcept = default;
ShardedEmbedding& ShardedEmbedding::operator=(ShardedEmbedding&&) noexcept = default;

const EmbeddingTable& ShardedEmbedding::shard(int t) const {
  if (host_stale_) {
    for (int k = 0; k < num_tables(); ++k) device_->download(k, &shards_[k]);
    host_stale_ = false;
  }
  return shards_[t];
}

EmbeddingTable& ShardedEmbedding::shard(int t) {
  const ShardedEmbedding& self = *this;
  self.shard(t);
  if (device_) device_stale_ = true;
  return shards_[t];
}

void ShardedEmbedding::use_cuda(const CudaOptions& options) {
  if (device_) return;
  device_ = make_cuda_step(shards_, plans_, comm_, options);
}

void ShardedEmbedding::forward_device(const std::vector<DeviceIds>& ids,
                                      const std::vector<float*>& out) {
  EMBTRAIN_REQUIRE(device_, "forward_device needs the GPU step (use_cuda)");
  sync_device();
  device_->forward_device(ids, out);
}

void ShardedEmbedding::backward_device(const std::vector<const float*>& grad_out) {
  EMBTRAIN_REQUIRE(device_, "backward_device needs the GPU step (use_cuda)");
  device_->backward_device(grad_out);
}

void ShardedEmbedding::sync_device() {
  if (!device_stale_) return;
  for (int t = 0; t < num_tables(); ++t) device_->upload(t, shards_[t]);
  device_stale_ = false;
}

void ShardedEmbedding::forward(const std::vector<IdsView>& ids, const std::vector<float*>& out) {
  if (device_) {
    sync_device();
    device_->forward(ids, out);
    return;
  }
  const int T = num_tables(), P = comm_->size();
  EMBTRAIN_ASSERT(static_cast<int>(ids.size()) == T && static_cast<int>(out.size()) == T);
  Stopwatch clock;

  // 1. Validate on every rank, agree, then index the distinct ids.
  std::string error;
  for (int t = 0; t < T && error.empty(); ++t) error = check_ids(ids[t], shards_[t].spec());
  if (!error.empty() && P > 1) error += detail::concat(" (in rank ", comm_->rank(), "'s batch)");
  error = comm_->agree_on_error(error);
  if (!error.empty()) throw AgreedError(error);

  if (P == 1) {  // one rank owns every row: the single-process step, no exchange
    local_.resize(static_cast<size_t>(T));
    PhaseTimes times;
    for (int t = 0; t < T; ++t)
      local_[t].forward(shards_[t], ids[t], out[t], &times, /*checked=*/true);
    stats_.unique_ms += times.unique;
    stats_.gather_ms += times.gather;
    ++stats_.steps;
    return;
  }

  send_ids_count_.assign(static_cast<size_t>(P) * T, 0);
  for (int t = 0; t < T; ++t) {
    TableStep& st = steps_[t];
    ids_to_int64(ids[t], &st.ids);
    cpu::unique_ids(st.ids.data(), static_cast<int64_t>(st.ids.size()),
                    shards_[t].spec().num_embeddings, &st.local);
    st.unique_begin.resize(P + 1);
    for (int d = 0; d <= P; ++d)
      st.unique_begin[d] = d == P ? st.local.num_unique()
                                  : std::lower_bound(st.local.unique.begin(), st.local.unique.end(),
                                                     plans_[t].row_begin(d)) -
                                        st.local.unique.begin();
    for (int d = 0; d < P; ++d)
      send_ids_count_[d * T + t] = st.unique_begin[d + 1] - st.unique_begin[d];
  }
  stats_.unique_ms += clock.lap_ms();

  // 2. Counts, then ids.
  int64_t traffic = comm_->traffic().bytes_sent;
  recv_ids_count_.assign(static_cast<size_t>(P) * T, 0);
  comm_->alltoall(send_ids_count_.data(), recv_ids_count_.data(), T, CommType::kInt64);
  std::vector<int64_t> send_per_peer(P, 0), recv_per_peer(P, 0);
  for (int r = 0; r < P; ++r)
    for (int t = 0; t < T; ++t) {
      send_per_peer[r] += send_ids_count_[r * T + t];
      recv_per_peer[r] += recv_ids_count_[r * T + t];
    }
  ids_send_.clear();
  for (int d = 0; d < P; ++d)
    for (int t = 0; t < T; ++t) {
      const TableStep& st = steps_[t];
      ids_send_.insert(ids_send_.end(), st.local.unique.begin() + st.unique_begin[d],
                       st.local.unique.begin() + st.unique_begin[d + 1]);
    }
  int64_t total_recv = 0;
  for (int64_t c : recv_per_peer) total_recv += c;
  ids_recv_.resize(static_cast<size_t>(total_recv));
  comm_->alltoallv(ids_send_.data(), send_per_peer, ids_recv_.data(), recv_per_peer,
                   CommType::kInt64);
  stats_.ids_bytes_sent += comm_->traffic().bytes_sent - traffic;
  stats_.alltoall_ids_ms += clock.lap_ms();

  // 3. Owner. Rows travel in one buffer of three regions: rows this rank
  // sends to other ranks, rows it receives from them, and the rows it asks
  // of itself, which never leave the buffer. Within a region blocks are
  // peer-major, table-minor, as the ids were.
  rows_to_peer_.assign(P, 0);
  rows_from_peer_.assign(P, 0);
  for (int r = 0; r < P; ++r)
    for (int t = 0; t < T; ++t) {
      rows_to_peer_[r] += recv_ids_count_[r * T + t] * shards_[t].dim();
      rows_from_peer_[r] += send_ids_count_[r * T + t] * shards_[t].dim();
    }
  const int me = comm_->rank();
  const int64_t self_rows = rows_to_peer_[me];
  rows_to_peer_[me] = rows_from_peer_[me] = 0;
  int64_t send_total = 0, recv_total = 0;
  for (int r = 0; r < P; ++r) send_total += rows_to_peer_[r], recv_total += rows_from_peer_[r];
  recv_region_ = send_total;
  self_region_ = send_total + recv_total;
  rows_.resize(static_cast<size_t>(self_region_ + self_rows));

  for (int t = 0; t < T; ++t) steps_[t].recv_ids.clear(), steps_[t].recv_offset.clear();
  {
    int64_t id_at = 0, send_at = 0, self_at = self_region_;
    for (int s = 0; s < P; ++s)
      for (int t = 0; t < T; ++t) {
        TableStep& st = steps_[t];
        const int64_t n = recv_ids_count_[s * T + t], dim = shards_[t].dim();
        int64_t& at = s == me ? self_at : send_at;
        for (int64_t k = 0; k < n; ++k, at += dim) {
          st.recv_ids.push_back(ids_recv_[id_at + k]);
          st.recv_offset.push_back(at);
        }
        id_at += n;
      }
  }
  for (int t = 0; t < T; ++t) {
    TableStep& st = steps_[t];
    const int64_t n = static_cast<int64_t>(st.recv_ids.size());
    cpu::unique_ids(st.recv_ids.data(), n, shards_[t].spec().num_embeddings, &st.owned);
    shards_[t].renorm(st.owned.unique.data(), st.owned.num_unique());
    // Received ids of one (source, table) block are contiguous in both
    // recv_ids and rows_, so gather block by block.
    int64_t k = 0;
    for (int s = 0; s < P; ++s) {
      const int64_t block = recv_ids_count_[s * T + t];
      if (block > 0)
        shards_[t].gather(st.recv_ids.data() + k, block, rows_.data() + st.recv_offset[k]);
      k += block;
    }
  }
  stats_.gather_ms += clock.lap_ms();

  // 4. Rows back, then expand.
  traffic = comm_->traffic().bytes_sent;
  comm_->alltoallv(rows_.data(), rows_to_peer_, rows_.data() + recv_region_, rows_from_peer_,
                   CommType::kFloat32);
  stats_.rows_bytes_sent += comm_->traffic().bytes_sent - traffic;
  stats_.alltoall_rows_ms += clock.lap_ms();

  int64_t recv_at = recv_region_, self_at = self_region_;
  for (int t = 0; t < T; ++t) steps_[t].row_offset.resize(steps_[t].local.unique.size());
  for (int d = 0; d < P; ++d)
    for (int t = 0; t < T; ++t) {
      TableStep& st = steps_[t];
      const int64_t dim = shards_[t].dim();
      int64_t& at = d == me ? self_at : recv_at;
      for (int64_t u = st.unique_begin[d]; u < st.unique_begin[d + 1]; ++u, at += dim)
        st.row_offset[u] = at;
    }
  for (int t = 0; t < T; ++t) {
    const TableStep& st = steps_[t];
    cpu::gather_rows_at(rows_.data(), st.row_offset.data(), st.local.inverse.data(),
                        static_cast<int64_t>(st.ids.size()), shards_[t].dim(), out[t]);
  }
  stats_.gather_ms += clock.lap_ms();
  ++stats_.steps;
}

void ShardedEmbedding::backward(const std::vector<const float*>& grad_out) {
  if (device_) {
    device_->backward(grad_out);
    return;
  }
  const int T = num_tables(), P = comm_->size();
  EMBTRAIN_ASSERT(static_cast<int>(grad_out.size()) == T);
  if (P == 1) {
    PhaseTimes times;
    for (int t = 0; t < T; ++t) local_[t].backward(shards_[t], grad_out[t], &times);
    stats_.reduce_ms += times.reduce;
    return;
  }
  Stopwatch clock;

  // 5. Requester: per distinct id, the summed gradient in the place its row
  // arrived at (so the receive region becomes the send buffer), and its count.
  bool any_scaled = false;
  for (int t = 0; t < T; ++t) {
    TableStep& st = steps_[t];
    const TableSpec& spec = shards_[t].spec();
    any_scaled |= spec.scale_grad_by_freq;
    const int64_t pad = slot_of(st.local.unique, spec.padding_row());
    std::vector<int64_t> dst = st.row_offset;
    if (pad >= 0) {
      dst[pad] = -1;
      std::fill_n(rows_.begin() + st.row_offset[pad], spec.dim, 0.f);
    }
    cpu::SegmentLayout layout;
    layout.dst_offsets = dst.data();
    cpu::segment_sum(grad_out[t], spec.dim, st.local, layout, /*scale_by_count=*/false,
                     rows_.data());
  }
  if (any_scaled) {
    counts_send_.clear();
    for (int d = 0; d < P; ++d)
      for (int t = 0; t < T; ++t)
        for (int64_t u = steps_[t].unique_begin[d]; u < steps_[t].unique_begin[d + 1]; ++u)
          counts_send_.push_back(steps_[t].local.count(u));
  }
  stats_.reduce_ms += clock.lap_ms();

  // 6. Gradients (and counts) back to the owners: the forward's exchanges
  // with the roles of sender and receiver swapped.
  const int64_t traffic = comm_->traffic().bytes_sent;
  comm_->alltoallv(rows_.data() + recv_region_, rows_from_peer_, rows_.data(), rows_to_peer_,
                   CommType::kFloat32);
  if (any_scaled) {
    std::vector<int64_t> send_ids(P, 0), recv_ids(P, 0);
    for (int r = 0; r < P; ++r)
      for (int t = 0; t < T; ++t) {
        send_ids[r] += send_ids_count_[r * T + t];
        recv_ids[r] += recv_ids_count_[r * T + t];
      }
    counts_recv_.resize(ids_recv_.size());
    comm_->alltoallv(counts_send_.data(), send_ids, counts_recv_.data(), recv_ids,
                     CommType::kInt32);
  }
  stats_.grads_bytes_sent += comm_->traffic().bytes_sent - traffic;
  stats_.alltoall_grads_ms += clock.lap_ms();

  // 7. Owner: combine the senders per row, scale, drop padding.
  std::vector<int32_t> weights;
  for (int t = 0; t < T; ++t) {
    TableStep& st = steps_[t];
    const TableSpec& spec = shards_[t].spec();
    cpu::SegmentLayout layout;
    layout.src_offsets = st.recv_offset.data();
    if (spec.scale_grad_by_freq) {
      // counts_recv_ is in the id layout (peer-major); pick table t's.
      weights.clear();
      int64_t id_at = 0;
      for (int s = 0; s < P; ++s)
        for (int t2 = 0; t2 < T; ++t2) {
          const int64_t n = recv_ids_count_[s * T + t2];
          if (t2 == t)
            weights.insert(weights.end(), counts_recv_.begin() + id_at,
                           counts_recv_.begin() + id_at + n);
          id_at += n;
        }
      layout.weights = weights.data();
    }
    // A row that one sender sent for one occurrence (most of a Zipf tail)
    // has its gradient as it arrived: step() reads it in rows_, and only
    // the others are combined into update_grads (as Embedding does).
    const int64_t pad = slot_of(st.owned.unique, spec.padding_row());
    std::vector<int64_t> dst(st.owned.unique.size());
    st.update_rows.clear();
    int64_t combined = 0;
    for (int64_t u = 0; u < st.owned.num_unique(); ++u) {
      dst[u] = -1;
      if (u == pad) continue;
      st.update_rows.push_back(st.owned.unique[u]);
      const int32_t first = st.owned.positions[st.owned.offsets[u]];
      const bool as_arrived =
          st.owned.count(u) == 1 && (!layout.weights || layout.weights[first] == 1);
      if (!as_arrived) dst[u] = combined++ * spec.dim;
    }
    layout.dst_offsets = dst.data();
    st.update_grads.resize(static_cast<size_t>(combined * spec.dim));
    cpu::segment_sum(rows_.data(), spec.dim, st.owned, layout, spec.scale_grad_by_freq,
                     st.update_grads.data());
    st.grad_rows.clear();
    for (int64_t u = 0; u < st.owned.num_unique(); ++u) {
      if (u == pad) continue;
      st.grad_rows.push_back(
          dst[u] >= 0 ? st.update_grads.data() + dst[u]
                      : rows_.data() + st.recv_offset[st.owned.positions[st.owned.offsets[u]]]);
    }
  }
  stats_.reduce_ms += clock.lap_ms();
}

void ShardedEmbedding::step() {
  if (device_) {
    sync_device();
    device_->step(shards_);
    host_stale_ = true;
    return;
  }
  if (comm_->size() == 1) {
    PhaseTimes times;
    for (int t = 0; t < num_tables(); ++t) local_[t].step(shards_[t], &times);
    stats_.update_ms += times.update;
    return;
  }
  Stopwatch clock;
  for (int t = 0; t < num_tables(); ++t) {
    TableStep& st = steps_[t];
    shards_[t].apply_gradients(st.update_rows.data(), st.grad_rows.data(),
                               static_cast<int64_t>(st.update_rows.size()));
  }
  stats_.update_ms += clock.lap_ms();
}

std::vector<float> ShardedEmbedding::gather_table(int t, int root) {
  const ShardPlan& plan = plans_[t];
  const int64_t dim = shards_[t].dim();
  std::vector<int64_t> counts(comm_->size());
  for (int r = 0; r < comm_->size(); ++r) counts[r] = plan.shard_rows(r) * dim;
  std::vector<float> table;
  if (comm_->rank() == root) table.resize(static_cast<size_t>(plan.num_rows() * dim));
  comm_->gatherv(shard(t).weights().data(), counts[comm_->rank()], table.data(), counts,
                 CommType::kFloat32, root);
  return table;
}

}  // namespace embtrain
