// Synthetic ids for benchmarks and workloads: a Zipf law over rows
// 1..rows-1, P(id = k) ~ k^-alpha (alpha 0 is uniform), with a fraction of
// positions set to the padding id 0.
#pragma once

#include <cstdint>
#include <vector>

namespace embtrain {

class ZipfSampler {
 public:
  ZipfSampler(int64_t rows, double alpha);
  // The id drawn from uniform u in (0, 1], in O(1) (alias method; the map
  // from u to id is not monotone).
  int64_t id_for(double u) const;

 private:
  // Alias table over ids 1..rows-1 (slot i is id i + 1): keep slot i's id
  // with probability keep_[i], else take alias_[i] + 1.
  std::vector<double> keep_;
  std::vector<int64_t> alias_;
};

// n ids from stream `stream` of `seed`: each position is padding (0) with
// probability pad_frac, else a Zipf draw. Deterministic in (seed, stream).
std::vector<int64_t> sample_ids(const ZipfSampler& zipf, int64_t n, double pad_frac,
                                uint64_t seed, uint64_t stream);

}  // namespace embtrain
