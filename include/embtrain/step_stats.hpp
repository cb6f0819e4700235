// What a sharded step reports about itself, on the CPU and on the GPU.
#pragma once

#include <cstdint>

namespace embtrain {

// Milliseconds per phase and bytes each exchange sent to other ranks,
// summed over steps until reset.
struct ShardedStepStats {
  double unique_ms = 0, alltoall_ids_ms = 0, gather_ms = 0, alltoall_rows_ms = 0;
  double reduce_ms = 0, alltoall_grads_ms = 0, update_ms = 0;
  int64_t ids_bytes_sent = 0, rows_bytes_sent = 0, grads_bytes_sent = 0;
  int64_t steps = 0;
};

}  // namespace embtrain
