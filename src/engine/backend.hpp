// What a backend gives the step's stages (local_step.hpp, sharded_step.hpp),
// which are written once as templates over it: CpuBackend (cpu_backend.hpp)
// and CudaBackend (cuda_backend.hpp) have the same members.
//
//   kRowAlign                 floats each block of rows starts on (ExchangeLayout)
//   kPoolsAtOwner             whether bags can be pooled at the owners here
//   Buffer<T>, UniqueWorkspace, Grads
//                             grow-only arrays in the backend's memory, the
//                             arrays of a UniqueIndex, what combine leaves update
//   num_tables, host(t), spec(t), weights(t), state(t)
//                             the tables: host(t) is the EmbeddingTable with the
//                             spec and step counter; weights and state are in
//                             the backend's memory
//   data()                    the communicator that moves the backend's buffers
//   synchronize()             waits for the work enqueued so far
//   read_rows, write_rows     a row range of a shard's weights or state,
//                             out to and in from the host
//   stage_ids, stage_output, finish_output, stage_grad
//                             the host batch in the backend's memory and back
//   copy, upload, download    within its memory, and from and to the host
//   unique_ids, cyclic_keys, bucketize, shift_ids, block_offsets,
//   segment_counts, renorm_rows, gather_rows, expand_rows, segment_sum,
//   find_bad_id               the kernels of src/kernels/{cpu,cuda}; rows are
//                             the shard's local rows (a rank's ids once
//                             they reach their owner)
//   pool_bags, unpool_bags    bags (torch.nn.EmbeddingBag) pooled on the
//                             requester, and their gradient back to positions
//   list_bag_entries, pool_partials, unpool_partials, combine_partials,
//   split_bag_grads           bags pooled at the owners (pool_at = owner)
//   pack_wire, unpack_wire, round_wire
//                             rows and gradients to and from their wire format
//   combine, update           the owner's last two stages, which the GPU fuses
//                             into one kernel (combine only records its input)
#pragma once

#include <cstddef>
#include <cstdint>

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

// A table whose bags are pooled at the owners (pool_at = owner), as the
// sharded step's forward takes it: its bags (pooling.counts is filled with
// each bag's pooled positions) and its batch's ids, in the backend's memory.
struct OwnerBags {
  BagPooling pooling;
  const int64_t* ids = nullptr;
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
  const int32_t* weights = nullptr;      // occurrences each position stands for (null: 1)
  bool scale_by_count = false;           // divide by the id's count
  int64_t skip_row = -1;                 // the padding row: no update (-1: none)
};

}  // namespace embtrain
