// unique_ids: the distinct ids of a batch with their positions (the first
// half of bucket_by_owner, and the owner's index of what it was asked for).
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "embtrain/errors.hpp"
#include "kernels/cpu/cpu_kernels.hpp"

namespace embtrain {
namespace cpu {

namespace {
constexpr int kDigitBits = 11;
constexpr int kBuckets = 1 << kDigitBits;
// Ids per thread below which a second thread costs more than it sorts.
constexpr int64_t kMinPartIds = 16384;

int bits_needed(int64_t bound) {
  int bits = 0;
  while (bits < 63 && (int64_t{1} << bits) < bound) ++bits;
  return bits;
}
}  // namespace

UniqueIndex UniqueWorkspace::view() const {
  UniqueIndex index;
  index.unique = unique.data();
  index.inverse = inverse.data();
  index.offsets = offsets.data();
  index.positions = positions.data();
  index.num_unique = num_unique();
  index.n = static_cast<int64_t>(inverse.size());
  return index;
}

UniqueIndex unique_ids(const int64_t* ids, int64_t n, int64_t id_bound, UniqueWorkspace* out) {
  EMBTRAIN_REQUIRE(n < (int64_t{1} << 31), "a batch holds ", n,
                   " ids; one table's batch per rank is limited to 2^31 - 1");
  const int32_t count = static_cast<int32_t>(n);
  out->inverse.resize(count);
  out->positions.resize(count);

  // Sort positions by id: stable LSD radix over the id's digits. `keys`
  // travel with the positions so each pass reads them sequentially.
  std::vector<int64_t>& keys = out->scratch_keys[0];
  std::vector<int64_t>& keys_tmp = out->scratch_keys[1];
  std::vector<int32_t>& pos = out->positions;
  std::vector<int32_t>& pos_tmp = out->scratch_positions;
  keys.assign(ids, ids + n);
  keys_tmp.resize(count);
  pos_tmp.resize(count);
  for (int32_t i = 0; i < count; ++i) pos[i] = i;
  const int passes = (bits_needed(id_bound) + kDigitBits - 1) / kDigitBits;
  // Each thread sorts a contiguous part of the input into its own ranges
  // of every bucket, after those of the parts before it: the same stable
  // order as one thread's, so the index does not depend on the threads.
  const int parts = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), n / kMinPartIds)));
  std::vector<int32_t> hist(static_cast<size_t>(parts) * kBuckets);
  for (int pass = 0; pass < passes; ++pass) {
    const int shift = pass * kDigitBits;
    auto digit = [&](int64_t key) { return (key >> shift) & (kBuckets - 1); };
#pragma omp parallel num_threads(parts)
    {
      const int me = omp_get_thread_num();
      const int32_t begin = static_cast<int32_t>(int64_t{count} * me / parts);
      const int32_t end = static_cast<int32_t>(int64_t{count} * (me + 1) / parts);
      int32_t* h = hist.data() + static_cast<size_t>(me) * kBuckets;
      std::fill(h, h + kBuckets, 0);
      for (int32_t i = begin; i < end; ++i) ++h[digit(keys[i])];
#pragma omp barrier
#pragma omp single
      {
        int32_t sum = 0;  // bucket-major, then part: the start of each part's range
        for (int b = 0; b < kBuckets; ++b)
          for (int t = 0; t < parts; ++t) {
            const int32_t c = hist[static_cast<size_t>(t) * kBuckets + b];
            hist[static_cast<size_t>(t) * kBuckets + b] = sum;
            sum += c;
          }
      }
      for (int32_t i = begin; i < end; ++i) {
        const int32_t dst = h[digit(keys[i])]++;
        keys_tmp[dst] = keys[i];
        pos_tmp[dst] = pos[i];
      }
    }
    keys.swap(keys_tmp);
    pos.swap(pos_tmp);
  }

  // Runs of equal keys are the unique ids; their starts are the CSR offsets.
  out->unique.clear();
  out->offsets.clear();
  for (int32_t i = 0; i < count; ++i) {
    if (i == 0 || keys[i] != keys[i - 1]) {
      out->unique.push_back(keys[i]);
      out->offsets.push_back(i);
    }
    out->inverse[pos[i]] = static_cast<int32_t>(out->unique.size() - 1);
  }
  out->offsets.push_back(count);
  return out->view();
}

void segment_counts(const int32_t* offsets, int64_t n, int32_t* counts) {
  for (int64_t u = 0; u < n; ++u) counts[u] = offsets[u + 1] - offsets[u];
}

}  // namespace cpu
}  // namespace embtrain
