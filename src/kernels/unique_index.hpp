// What the kernels of both backends pass between stages, as plain views
// (pointers into memory the backend owns: host memory on the CPU, device
// memory on the GPU), so that the engine's stages are written once.
#pragma once

#include <cstdint>

namespace embtrain {

// The distinct ids of a batch of n ids in ascending order, with the inverse
// map and, for each distinct id, the positions where it occurs (CSR,
// ascending positions). Ascending order makes "bucket by owner" a split
// into contiguous ranges, since owners hold contiguous row blocks.
struct UniqueIndex {
  const int64_t* unique = nullptr;     // num_unique ascending distinct ids
  const int32_t* inverse = nullptr;    // n: position -> index into unique
  const int32_t* offsets = nullptr;    // num_unique + 1 CSR offsets into positions
  const int32_t* positions = nullptr;  // n positions grouped by id, ascending within an id
  int64_t num_unique = 0;              // on the host
  int64_t n = 0;                       // positions

  // Occurrences of unique slot u (host memory only).
  int32_t count(int64_t u) const { return offsets[u + 1] - offsets[u]; }
};

// Where a segment sum reads and writes rows, as float offsets. A null array
// means the plain layout: position p's row at p * dim, unique u's at u * dim.
struct SegmentLayout {
  const int64_t* src_offsets = nullptr;  // per position: its row in src
  const int32_t* weights = nullptr;      // per position: occurrences it stands for (null: 1)
  const int64_t* dst_offsets = nullptr;  // per unique id: its row in dst, or -1 to skip it
};

}  // namespace embtrain
