// What a backend gives the step's stages (local_step.hpp, sharded_step.hpp),
// which are written once as templates over it: CpuBackend (cpu_backend.hpp)
// and CudaBackend (cuda_backend.hpp) have the same members.
//
//   kRowAlign                 floats each block of rows starts on (ExchangeLayout)
//   kUpdatesFromWire          whether update reads 16-bit gradients where they
//                             came off the wire (OwnerGrads::wire)
//   kAsynchronous             whether work returns before it is done (a GPU
//                             stream): a host clock around a call times
//                             its enqueueing only
//   Buffer<T>, UniqueWorkspace, Grads
//                             grow-only arrays in the backend's memory, the
//                             arrays of a UniqueIndex, what combine leaves update
//   num_tables, host(t), spec(t), weights(t), state(t)
//                             the tables: host(t) is the EmbeddingTable with the
//                             spec and step counter; weights and state are in
//                             the backend's memory
//   data()                    the communicator that moves the backend's buffers
//   abandon_transfers()       gives up the data communicator's enqueued
//                             transfers (a rank ending on an error)
//   synchronize()             waits for the work enqueued so far
//   read_rows, write_rows     a row range of a shard's weights or state,
//                             out to and in from the host
//   stage_ids, stage_output, finish_output, stage_grad
//                             the host batch in the backend's memory and back
//   copy, upload, download    within its memory, and from and to the host
//   unique_ids, cyclic_keys, bucketize, shift_ids, take_ids, block_offsets,
//   segment_counts, renorm_rows, gather_rows, expand_rows, segment_sum,
//   find_bad_id               the kernels of src/kernels/{cpu,cuda}; rows are
//                             the shard's local rows (a rank's ids once
//                             they reach their owner)
//   pool_bags, unpool_bags, share_bag_grads
//                             bags (torch.nn.EmbeddingBag) pooled on the
//                             requester straight from the rows, and their
//                             gradient back to positions (share_bag_grads:
//                             one row per bag where its positions share it)
//   list_bag_entries, pool_partials, unpool_partials, combine_partials,
//   split_bag_grads           bags pooled at the owners (pool_at = owner)
//   pack_wire, unpack_wire, round_wire, gather_rows_packed, gather_rows_rounded
//                             rows and gradients to and from their wire format
//                             (the owner's rows gathered straight into it)
//   combine, update           the owner's last two stages, which the GPU fuses
//                             into one kernel (combine only records its input);
//                             with overlapped exchanges combine runs while
//                             gradient slices are still landing, so it must
//                             not read them, and update may be given a range
//                             of the rows (slots_of)
#pragma once

#include <cstddef>
#include <cstdint>

#include "embtrain/comm_precision.hpp"
#include "embtrain/errors.hpp"
#include "kernels/bag_pooling.hpp"
#include "kernels/unique_index.hpp"

namespace embtrain {

// A grow-only array of T in a backend's memory, over its grow-only bytes
// (`Bytes`: reserve(bytes), as<T>()): reserve(n) makes room for n elements
// and keeps the contents only while n stays within the largest size asked
// for so far, so a step allocates nothing once its sizes stop growing.
template <typename T, typename Bytes>
class GrowArray {
 public:
  T* reserve(int64_t n) {
    bytes_.reserve(static_cast<size_t>(n > 1 ? n : 1) * sizeof(T));
    return data();
  }
  T* data() const { return bytes_.template as<T>(); }

 private:
  Bytes bytes_;
};

// A table's bags as a step takes them (pooled on the requester, or at the
// owners for pool_at = owner): its bags (pooling.counts is filled with each
// bag's pooled positions), its batch's ids, in the backend's memory, and
// where the bags end (offsets[num_bags], on the host).
struct StepBags {
  BagPooling pooling;
  const int64_t* ids = nullptr;
  int64_t end = 0;
};

// The gradient rows of a batch's n positions from its bags' output
// gradient, for the segment sum of a step's backward to read: one row per
// bag where the bag's positions share it (mean, unweighted sum), else one
// per position. Valid until the next call.
template <typename Backend>
class BagGrads {
 public:
  struct Rows {
    const float* src;
    const int64_t* src_offsets;  // per position, or null: p * dim
  };
  Rows from_bags(Backend& b, const StepBags& bags, const float* grad, int64_t n) {
    const BagPooling& pooling = bags.pooling;
    if (bag_grads_shared(pooling)) {
      float* rows = rows_.reserve((pooling.num_bags + 1) * pooling.dim);
      int64_t* offsets = offsets_.reserve(n);
      b.share_bag_grads(pooling, grad, n, bags.end, rows, offsets);
      return {rows, offsets};
    }
    float* rows = rows_.reserve(n * pooling.dim);
    b.unpool_bags(pooling, grad, n, bags.end, rows);
    return {rows, nullptr};
  }

 private:
  typename Backend::template Buffer<float> rows_;
  typename Backend::template Buffer<int64_t> offsets_;
};

// The input of combine_at_owner: for each distinct row the owner was asked
// for, the gradient rows of its positions, to be summed (and divided by the
// id's global count for scale_grad_by_freq) into the gradient its update
// takes. With one rank the positions are the batch's and the rows those of
// the output gradient; sharded, they are the rows the requesters sent.
struct OwnerGrads {
  const UniqueIndex* index = nullptr;    // the distinct rows and their positions
  const float* src = nullptr;            // the positions' gradient rows ...
  const int64_t* src_offsets = nullptr;  // ... at these float offsets (null: p * dim)
  // Or, where the backend reads them so (Backend::kUpdatesFromWire), the
  // rows as they came off the wire: in format `wire_format` in `wire`, at
  // src_offsets counting its elements, each value times `wire_scale`.
  const void* wire = nullptr;
  CommPrecision wire_format = CommPrecision::kFp32;
  float wire_scale = 1.f;
  const int32_t* weights = nullptr;      // occurrences each position stands for (null: 1)
  bool scale_by_count = false;           // divide by the id's count
  int64_t skip_row = -1;                 // the padding row: no update (-1: none)
};

// The distinct rows [begin, end) of `grads` alone, for an update of part of
// them (each row's update reads its own gradients only: the same bits as
// the whole update). `view` receives the index of those rows; its CSR
// offsets stay absolute into the positions, which an update reads through
// them only.
inline OwnerGrads slots_of(const OwnerGrads& grads, int64_t begin, int64_t end,
                           UniqueIndex* view) {
  EMBTRAIN_ASSERT(grads.index && 0 <= begin && begin <= end && end <= grads.index->num_unique);
  *view = *grads.index;
  view->unique += begin;
  view->offsets += begin;
  view->num_unique = end - begin;
  view->inverse = nullptr;
  OwnerGrads part = grads;
  part.index = view;
  return part;
}

}  // namespace embtrain
