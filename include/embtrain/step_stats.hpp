// The stages of a step and what a step reports about them. The names are
// the same in the CPU and the CUDA engine, in the kernel files and in the
// bench's phase report (shared/DESIGN.md, "One step, as data").
#pragma once

#include <cstdint>
#include <vector>

namespace embtrain {

enum class Stage : int {
  kBucketByOwner,    // requester: distinct ids of the batch, split by owner
  kExchangeIds,      // counts, then the ids, to their owners
  kGatherOwned,      // owner: renorm (max_norm), then the requested rows
  kExchangeRows,     // rows back to the requesters
  kExpand,           // requester: rows to every position of the batch
  kReduceRequested,  // requester: output gradient summed per distinct id
  kExchangeGrads,    // the sums (and counts) to the owners
  kCombineAtOwner,   // owner: senders' sums per row, scaled by the global count
  kUpdate,           // owner: the optimizer on the rows that got a gradient
};
constexpr int kNumStages = 9;

// "bucket_by_owner", "exchange_ids", ... (the enumerator's name).
const char* stage_name(Stage stage);

// Milliseconds per stage and bytes each exchange sent to other ranks,
// summed over steps until reset. With one rank there is nothing to
// exchange: the exchanges and expand stay 0 (gather_owned gathers the
// batch's rows straight from the table).
struct StepStats {
  double ms[kNumStages] = {};
  // Of ms, the time an exchange waited for the slowest rank before its
  // transfers began (the skew between ranks): only with
  // ShardedEmbedding::measure_skew, else 0.
  double wait_ms[kNumStages] = {};
  // Per exchange stage, with overlapped exchanges
  // (ShardedEmbedding::overlap_exchanges): the owner's work (gathers for
  // exchange_rows, updates for exchange_grads) that ran while some of the
  // stage's slices were still in flight, hidden behind their transfer.
  // On the CPU only: a GPU's kernels run after the host has enqueued them,
  // so the host cannot time them (their time is the stages' where the host
  // waits for them); 0 there.
  double hidden_ms[kNumStages] = {};
  int64_t ids_bytes_sent = 0, rows_bytes_sent = 0, grads_bytes_sent = 0;
  int64_t steps = 0;
  int64_t prefetched_steps = 0;  // forwards that took up their prefetch()
  int64_t sliced_steps = 0;      // steps whose rows and gradients moved in slices

  double& operator[](Stage stage) { return ms[static_cast<int>(stage)]; }
  double operator[](Stage stage) const { return ms[static_cast<int>(stage)]; }
};

// One all-to-all of an exchange stage of the last step, as bytes per peer:
// what a plain collective of the same shape would move (an exchange stage
// may be several: exchange_grads sends gradients, then counts).
struct TransferShape {
  Stage stage = Stage::kExchangeIds;
  std::vector<int64_t> send_bytes, recv_bytes;  // per peer, this rank's
};

}  // namespace embtrain
