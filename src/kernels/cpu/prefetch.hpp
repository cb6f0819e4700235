// Software prefetch of whole rows: the step's loops jump between rows that
// sit far apart in tables of gigabytes, so the hardware prefetchers see no
// stream; asking for the row a few iterations ahead overlaps the misses.
#pragma once

#include <cstdint>

namespace embtrain {

// How many iterations ahead the row loops prefetch.
constexpr int64_t kPrefetchDistance = 16;

inline void prefetch_row(const float* row, int64_t dim, bool for_write) {
#if defined(__GNUC__)
  const char* p = reinterpret_cast<const char*>(row);
  const int64_t bytes = dim * static_cast<int64_t>(sizeof(float));
  for (int64_t b = 0; b < bytes; b += 64) {
    if (for_write)
      __builtin_prefetch(p + b, 1, 3);
    else
      __builtin_prefetch(p + b, 0, 3);
  }
#else
  (void)row, (void)dim, (void)for_write;
#endif
}

}  // namespace embtrain
