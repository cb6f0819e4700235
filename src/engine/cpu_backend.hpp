// The CPU backend of the step (LocalStep, ShardedStep): host memory, the
// CPU kernels, and the tables' rows in the EmbeddingTable shards
// themselves. cuda_backend.hpp is the same interface on a GPU; the stages
// are written once, over either (see sharded_step.hpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "embtrain/communicator.hpp"
#include "embtrain/embedding_table.hpp"
#include "embtrain/ids.hpp"
#include "engine/backend.hpp"
#include "kernels/cpu/cpu_kernels.hpp"

namespace embtrain {

// Grow-only host bytes, 64-byte aligned; growing drops the contents (as
// cuda::DeviceBuffer does on the GPU).
class HostBytes {
 public:
  void reserve(size_t bytes);
  template <typename T>
  T* as() const { return static_cast<T*>(data_.get()); }

 private:
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> data_;
  size_t capacity_ = 0;
};

class CpuBackend {
 public:
  // Rows of a block start on any float (the CPU kernels take any offset).
  static constexpr int64_t kRowAlign = 1;
  // update reads 16-bit gradients where they came off the wire (OwnerGrads).
  static constexpr bool kUpdatesFromWire = true;
  // Work is done when its call returns.
  static constexpr bool kAsynchronous = false;

  template <typename T>
  using Buffer = GrowArray<T, HostBytes>;
  using UniqueWorkspace = cpu::UniqueWorkspace;

  // What a table's combine_at_owner hands to its update: its input, as
  // recorded; update sums and applies the gradients in one pass
  // (cpu::segment_sum_update), as the CUDA backend does.
  using Grads = OwnerGrads;

  // `shards` (this rank's block of each table) and `data` outlive the backend.
  CpuBackend(std::vector<EmbeddingTable>* shards, Communicator* data)
      : shards_(shards), data_(data), ids_(shards->size()) {}

  int num_tables() const { return static_cast<int>(shards_->size()); }
  EmbeddingTable& host(int t) { return (*shards_)[t]; }
  const TableSpec& spec(int t) const { return (*shards_)[t].spec(); }
  float* weights(int t) { return host(t).weights().data(); }
  float* state(int t) { return host(t).state().data(); }
  Communicator& data() { return *data_; }
  void abandon_transfers() {}  // host communicators finish each call
  std::string description() const { return ""; }

  // Host memory is the step's memory: nothing to stage or wait for.
  void synchronize() {}
  void read_rows(int t, TablePart part, int64_t first, int64_t count, float* out) {
    const float* rows = part == TablePart::kWeights ? weights(t) : state(t);
    const int64_t width = part_width(spec(t), part);
    copy(out, rows + first * width, count * width);
  }
  void write_rows(int t, TablePart part, int64_t first, int64_t count, const float* in) {
    float* rows = part == TablePart::kWeights ? weights(t) : state(t);
    const int64_t width = part_width(spec(t), part);
    copy(rows + first * width, in, count * width);
  }

  IdSpan stage_ids(int t, const IdsView& ids) {
    ids_to_int64(ids, &ids_[t]);
    return IdSpan{ids_[t].data(), static_cast<int64_t>(ids_[t].size())};
  }
  float* stage_output(int, float* out, int64_t) { return out; }
  void finish_output(int, float*, const float*, int64_t) {}
  const float* stage_grad(int, const float* grad, int64_t) { return grad; }
  // The first id of ids[0..n) outside [0, bound) as {position, id}, or {-1, 0}.
  std::pair<int64_t, int64_t> find_bad_id(const IdSpan& ids, int64_t bound);

  template <typename T>
  void copy(T* dst, const T* src, int64_t n) {
    if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(T));
  }
  template <typename T>
  void upload(T* dst, const T* host, int64_t n) { copy(dst, host, n); }
  template <typename T>
  void download(T* host, const T* src, int64_t n) { copy(host, src, n); }

  UniqueIndex unique_ids(const int64_t* ids, int64_t n, int64_t bound, UniqueWorkspace* ws) {
    return cpu::unique_ids(ids, n, bound, ws);
  }
  void cyclic_keys(const int64_t* ids, int64_t n, int64_t ranks, int64_t stride, int64_t* keys) {
    cpu::cyclic_keys(ids, n, ranks, stride, keys);
  }
  void shift_ids(const int64_t* src, int64_t n, int64_t delta, int64_t* dst) {
    cpu::shift_ids(src, n, delta, dst);
  }
  void take_ids(const int64_t* src, const int64_t* positions, int64_t n, int64_t* dst) {
    cpu::take_ids(src, positions, n, dst);
  }
  void bucketize(const UniqueIndex& index, const int64_t* bounds, int64_t num_bounds,
                 int64_t* begin) {
    cpu::bucketize(index.unique, index.num_unique, bounds, num_bounds, begin);
  }
  void block_offsets(const std::vector<int64_t>& starts, const std::vector<int64_t>& base,
                     int64_t dim, int64_t n, int64_t* out) {
    cpu::block_offsets(starts.data(), base.data(), static_cast<int64_t>(base.size()), dim, n, out);
  }
  void segment_counts(const int32_t* offsets, int64_t n, int32_t* counts) {
    cpu::segment_counts(offsets, n, counts);
  }
  void renorm_rows(int t, const int64_t* rows, int64_t n);
  void gather_rows(int t, const int64_t* ids, int64_t n, float* out) {
    if (n > 0) cpu::gather_rows(weights(t), spec(t).dim, ids, n, /*row_offset=*/0, out);
  }
  void gather_rows_packed(int t, const int64_t* ids, int64_t n, void* wire) {
    cpu::gather_rows_packed(weights(t), spec(t).dim, ids, n, /*row_offset=*/0,
                            spec(t).comm_precision, wire);
  }
  void gather_rows_rounded(int t, const int64_t* ids, int64_t n, float* out) {
    cpu::gather_rows_rounded(weights(t), spec(t).dim, ids, n, /*row_offset=*/0,
                             spec(t).comm_precision, out);
  }
  void expand_rows(const float* base, const int64_t* offsets, const UniqueIndex& index,
                   int64_t dim, float* out) {
    if (index.n > 0) cpu::expand_rows(base, offsets, index.inverse, index.n, dim, out);
  }
  void pool_bags(const BagPooling& bags, const PositionRows& rows, const int64_t* ids,
                 int64_t skip_id, float* out) {
    cpu::pool_bags(bags, rows, ids, skip_id, out);
  }
  void unpool_bags(const BagPooling& bags, const float* grad, int64_t n, int64_t,
                   float* grad_rows) {
    cpu::unpool_bags(bags, grad, n, grad_rows);
  }
  void share_bag_grads(const BagPooling& bags, const float* grad, int64_t n, int64_t,
                       float* grad_rows, int64_t* src_offsets) {
    cpu::share_bag_grads(bags, grad, n, grad_rows, src_offsets);
  }
  void list_bag_entries(const BagPooling& bags, const int64_t* ids, int64_t skip_id,
                        const int32_t* inverse, const int64_t* owner_slots, int owners,
                        BagEntries* out, int64_t* entry_begin, int64_t* partial_begin) {
    cpu::list_bag_entries(bags, ids, skip_id, inverse, owner_slots, owners, out, entry_begin,
                          partial_begin);
  }
  void pool_partials(const OwnerBlock& block) { cpu::pool_partials(block); }
  void unpool_partials(const OwnerBlock& block) { cpu::unpool_partials(block); }
  void combine_partials(const RequesterPartials& p, float* out) { cpu::combine_partials(p, out); }
  void split_bag_grads(const RequesterPartials& p, const float* grad) {
    cpu::split_bag_grads(p, grad);
  }
  void segment_sum(const float* src, int64_t dim, const UniqueIndex& index,
                   const SegmentLayout& layout, float* dst) {
    cpu::segment_sum(src, dim, index, layout, /*scale_by_count=*/false, dst);
  }
  void pack_wire(const float* src, int64_t n, CommPrecision p, float scale, void* wire) {
    cpu::pack_wire(src, n, p, scale, wire);
  }
  void unpack_wire(const void* wire, int64_t n, CommPrecision p, float scale, float* dst) {
    cpu::unpack_wire(wire, n, p, scale, dst);
  }
  void round_wire(float* data, int64_t n, CommPrecision p, float scale) {
    cpu::round_wire(data, n, p, scale);
  }
  void combine(int, const OwnerGrads& args, Grads* grads) { *grads = args; }
  void update(int t, const StepScalars& scalars, const Grads& grads);

 private:
  std::vector<EmbeddingTable>* shards_;
  Communicator* data_;
  std::vector<std::vector<int64_t>> ids_;  // stage_ids' copies
};

}  // namespace embtrain
