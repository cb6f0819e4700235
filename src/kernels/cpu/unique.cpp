// unique_ids: the distinct ids of a batch with their positions (the first
// half of bucket_by_owner, and the owner's index of what it was asked for).
#include <algorithm>
#include <cstring>

#include "embtrain/errors.hpp"
#include "kernels/cpu/cpu_kernels.hpp"

namespace embtrain {
namespace cpu {

namespace {
constexpr int kDigitBits = 11;
constexpr int kBuckets = 1 << kDigitBits;

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
  for (int pass = 0; pass < passes; ++pass) {
    const int shift = pass * kDigitBits;
    int32_t hist[kBuckets] = {};
    for (int32_t i = 0; i < count; ++i) ++hist[(keys[i] >> shift) & (kBuckets - 1)];
    int32_t sum = 0;
    for (int b = 0; b < kBuckets; ++b) {
      const int32_t c = hist[b];
      hist[b] = sum;
      sum += c;
    }
    for (int32_t i = 0; i < count; ++i) {
      const int32_t dst = hist[(keys[i] >> shift) & (kBuckets - 1)]++;
      keys_tmp[dst] = keys[i];
      pos_tmp[dst] = pos[i];
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
