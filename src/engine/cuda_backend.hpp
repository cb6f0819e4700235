// The CUDA backend of the step (LocalStep, ShardedStep): the shards' rows
// and optimizer state in device memory, every local stage a CUDA kernel on
// one stream, the exchanges over a data communicator (NCCL, or MPI staged
// through pinned memory) that takes device buffers. The same members as
// CpuBackend (backend.hpp), so the stages are the CPU's.
//
// What differs from the CPU:
//  - Buffers are device memory, grow-only (cuda::DeviceBuffer), so a step
//    allocates nothing once the sizes stop growing.
//  - Blocks of rows start on 4 floats (kRowAlign): the kernels take their
//    float4 path when dim % 4 == 0.
//  - combine_at_owner only records its input: update sums and applies the
//    gradients in one kernel (segment_sum_update), with no gradient buffer
//    in between. With one rank that input is the caller's output gradient,
//    which must stay valid until step().
//  - The rows and optimizer state live in device memory only: the
//    EmbeddingTables keep the spec, plan and step counter, no rows.
//    Checkpoints, from_pretrained and gather_table reach the rows through
//    read_rows and write_rows, a chunk of at most transfer_chunk_bytes()
//    at a time through one pinned buffer. Fresh shards are drawn on the
//    device (init.cu), with the host's values.
// The host waits on the device only where it needs a count (the number of
// distinct ids, their split by owner) and at the end of each stage, so that
// every stage is timed alone.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "embtrain/communicator.hpp"
#include "embtrain/embedding_table.hpp"
#include "embtrain/ids.hpp"
#include "engine/backend.hpp"
#include "kernels/cuda/cuda_kernels.hpp"

namespace embtrain {

class CudaBackend {
 public:
  static constexpr int64_t kRowAlign = 4;
  // update takes fp32 gradients: the step unpacks 16-bit ones first (a
  // kernel reading them in place is for a GPU to measure).
  static constexpr bool kUpdatesFromWire = false;
  // Kernels run on the stream after their calls return (the sharded
  // step's overlapped exchanges enqueue them while the data communicator
  // moves earlier slices).
  static constexpr bool kAsynchronous = true;

  template <typename T>
  using Buffer = GrowArray<T, cuda::DeviceBuffer>;
  using UniqueWorkspace = cuda::UniqueWorkspace;
  using Grads = OwnerGrads;  // combine records it; update runs it

  // Draws the unplaced shards (which outlive the backend) on the device and
  // uploads the others, then frees their host rows: on failure (device
  // memory) they are left as they were. Work runs on `stream` (this rank's
  // device is current); `data` moves device buffers and may enqueue on that
  // stream.
  CudaBackend(std::vector<EmbeddingTable>* shards, std::unique_ptr<cuda::Stream> stream,
              std::unique_ptr<Communicator> data, std::string description);

  int num_tables() const { return static_cast<int>(shards_->size()); }
  EmbeddingTable& host(int t) { return (*shards_)[t]; }
  const TableSpec& spec(int t) const { return (*shards_)[t].spec(); }
  float* weights(int t) { return tables_[t].weights.data(); }
  float* state(int t) { return tables_[t].state.data(); }
  Communicator& data() { return *data_; }
  void abandon_transfers() {
    if (data_) data_->abandon();
  }
  const std::string& description() const { return description_; }

  void synchronize();
  // Local rows [first, first + count) of table t's weights or state, out to
  // the host and in from it, through the pinned buffer a chunk at a time;
  // done when they return.
  void read_rows(int t, TablePart part, int64_t first, int64_t count, float* out);
  void write_rows(int t, TablePart part, int64_t first, int64_t count, const float* in);

  IdSpan stage_ids(int t, const IdsView& ids);
  float* stage_output(int t, float* out, int64_t floats);
  void finish_output(int t, float* out, const float* d_out, int64_t floats);
  const float* stage_grad(int t, const float* grad, int64_t floats);
  std::pair<int64_t, int64_t> find_bad_id(const IdSpan& ids, int64_t bound);

  template <typename T>
  void copy(T* d_dst, const T* d_src, int64_t n) {
    if (n > 0) cuda::copy_on_device(d_dst, d_src, static_cast<size_t>(n) * sizeof(T), stream_);
  }
  // From pageable host memory, which the copy has read when it returns.
  template <typename T>
  void upload(T* d_dst, const T* host, int64_t n) {
    if (n > 0) cuda::copy_to_device(d_dst, host, static_cast<size_t>(n) * sizeof(T), stream_);
  }
  // Through pinned memory; done when it returns.
  template <typename T>
  void download(T* host, const T* d_src, int64_t n) {
    download_bytes(host, d_src, static_cast<size_t>(n) * sizeof(T));
  }

  UniqueIndex unique_ids(const int64_t* d_ids, int64_t n, int64_t bound, UniqueWorkspace* ws) {
    return cuda::unique_ids(d_ids, n, bound, ws, stream_);
  }
  void cyclic_keys(const int64_t* d_ids, int64_t n, int64_t ranks, int64_t stride,
                   int64_t* d_keys) {
    cuda::cyclic_keys(d_ids, n, ranks, stride, d_keys, stream_);
  }
  void shift_ids(const int64_t* d_src, int64_t n, int64_t delta, int64_t* d_dst) {
    cuda::shift_ids(d_src, n, delta, d_dst, stream_);
  }
  void take_ids(const int64_t* d_src, const int64_t* d_positions, int64_t n, int64_t* d_dst) {
    cuda::take_ids(d_src, d_positions, n, d_dst, stream_);
  }
  void bucketize(const UniqueIndex& index, const int64_t* d_bounds, int64_t num_bounds,
                 int64_t* d_begin) {
    cuda::bucketize(index.unique, index.num_unique, d_bounds, num_bounds, d_begin, stream_);
  }
  void block_offsets(const std::vector<int64_t>& starts, const std::vector<int64_t>& base,
                     int64_t dim, int64_t n, int64_t* d_out);
  void segment_counts(const int32_t* d_offsets, int64_t n, int32_t* d_counts) {
    cuda::segment_counts(d_offsets, n, d_counts, stream_);
  }
  void renorm_rows(int t, const int64_t* d_rows, int64_t n);
  void gather_rows(int t, const int64_t* d_ids, int64_t n, float* d_out) {
    cuda::gather_rows(weights(t), spec(t).dim, d_ids, n, /*row_offset=*/0, d_out, stream_);
  }
  void gather_rows_packed(int t, const int64_t* d_ids, int64_t n, void* d_wire) {
    cuda::gather_rows_packed(weights(t), spec(t).dim, d_ids, n, /*row_offset=*/0,
                             spec(t).comm_precision, d_wire, stream_);
  }
  void gather_rows_rounded(int t, const int64_t* d_ids, int64_t n, float* d_out) {
    cuda::gather_rows_rounded(weights(t), spec(t).dim, d_ids, n, /*row_offset=*/0,
                              spec(t).comm_precision, d_out, stream_);
  }
  void expand_rows(const float* d_base, const int64_t* d_offsets, const UniqueIndex& index,
                   int64_t dim, float* d_out) {
    cuda::expand_rows(d_base, d_offsets, index.inverse, index.n, dim, d_out, stream_);
  }
  void pool_bags(const BagPooling& bags, const PositionRows& d_rows, const int64_t* d_ids,
                 int64_t skip_id, float* d_out) {
    cuda::pool_bags(bags, d_rows, d_ids, skip_id, d_out, stream_);
  }
  void unpool_bags(const BagPooling& bags, const float* d_grad, int64_t n,
                   int64_t first_unbagged, float* d_grad_rows) {
    cuda::unpool_bags(bags, d_grad, n, first_unbagged, d_grad_rows, stream_);
  }
  void share_bag_grads(const BagPooling& bags, const float* d_grad, int64_t n,
                       int64_t first_unbagged, float* d_grad_rows, int64_t* d_src_offsets) {
    cuda::share_bag_grads(bags, d_grad, n, first_unbagged, d_grad_rows, d_src_offsets, stream_);
  }
  void list_bag_entries(const BagPooling& bags, const int64_t* d_ids, int64_t skip_id,
                        const int32_t* d_inverse, const int64_t* owner_slots, int owners,
                        BagEntries* out, int64_t* entry_begin, int64_t* partial_begin) {
    cuda::list_bag_entries(bags, d_ids, skip_id, d_inverse, owner_slots, owners, out, entry_begin,
                           partial_begin, &owner_ws_, stream_);
  }
  void pool_partials(const OwnerBlock& block) { cuda::pool_partials(block, &owner_ws_, stream_); }
  void unpool_partials(const OwnerBlock& block) {
    cuda::unpool_partials(block, &owner_ws_, stream_);
  }
  void combine_partials(const RequesterPartials& p, float* d_out) {
    cuda::combine_partials(p, d_out, &owner_ws_, stream_);
  }
  void split_bag_grads(const RequesterPartials& p, const float* d_grad) {
    cuda::split_bag_grads(p, d_grad, stream_);
  }
  void segment_sum(const float* d_src, int64_t dim, const UniqueIndex& index,
                   const SegmentLayout& layout, float* d_dst) {
    cuda::segment_sum(d_src, dim, index, layout, /*scale_by_count=*/false, d_dst, &segment_ws_,
                      stream_);
  }
  void pack_wire(const float* d_src, int64_t n, CommPrecision p, float scale, void* d_wire) {
    cuda::pack_wire(d_src, n, p, scale, d_wire, stream_);
  }
  void unpack_wire(const void* d_wire, int64_t n, CommPrecision p, float scale, float* d_dst) {
    cuda::unpack_wire(d_wire, n, p, scale, d_dst, stream_);
  }
  void round_wire(float* d_data, int64_t n, CommPrecision p, float scale) {
    cuda::round_wire(d_data, n, p, scale, stream_);
  }
  void combine(int, const OwnerGrads& args, Grads* grads) { *grads = args; }
  void update(int t, const StepScalars& scalars, const Grads& grads);

 private:
  // One table's rows and optimizer state, and the host batch staged for it.
  struct Table {
    Buffer<float> weights, state;
    Buffer<int64_t> ids;
    Buffer<int32_t> ids32;
    Buffer<float> out, grad;
  };

  void download_bytes(void* host, const void* d_src, size_t bytes);
  // Table t's weights (or state) and floats per row.
  float* part(int t, TablePart p) { return p == TablePart::kWeights ? weights(t) : state(t); }
  int64_t width(int t, TablePart p) { return part_width(spec(t), p); }
  // Table t's rows and state in device memory: drawn, or uploaded from its
  // host rows.
  void place(int t);

  std::vector<EmbeddingTable>* shards_;
  std::unique_ptr<cuda::Stream> owned_stream_;
  std::unique_ptr<Communicator> data_;  // destroyed before the stream it uses
  void* stream_;
  std::string description_;
  std::vector<Table> tables_;
  cuda::SegmentWorkspace segment_ws_;  // the requester's reduce, then the owner's
  cuda::OwnerPoolWorkspace owner_ws_;  // bags pooled at the owners
  Buffer<int64_t> small_;              // block_offsets' starts and bases
  Buffer<int64_t> bad_;                // find_bad_id's answer
  cuda::PinnedBuffer pinned_;          // rows on their way, at most a transfer chunk
};

}  // namespace embtrain
