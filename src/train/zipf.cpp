#include "embtrain/zipf.hpp"

#include <algorithm>
#include <cmath>

#include "embtrain/errors.hpp"
#include "embtrain/random.hpp"

namespace embtrain {

ZipfSampler::ZipfSampler(int64_t rows, double alpha) {
  EMBTRAIN_REQUIRE(rows >= 2, "zipf workload needs rows >= 2 (row 0 is padding), got ", rows);
  EMBTRAIN_REQUIRE(std::isfinite(alpha) && alpha >= 0, "zipf exponent ", alpha,
                   " is invalid (valid: a finite value >= 0)");
  // Walker's alias table (Vose's construction): every slot holds the
  // probability of keeping its own id and the id it passes the rest to, so
  // a draw is one lookup instead of a binary search over the CDF.
  const int64_t n = rows - 1;
  std::vector<double> scaled(static_cast<size_t>(n));
  double sum = 0;
  for (int64_t k = 1; k <= n; ++k) sum += std::pow(static_cast<double>(k), -alpha);
  for (int64_t k = 1; k <= n; ++k)
    scaled[k - 1] = std::pow(static_cast<double>(k), -alpha) * static_cast<double>(n) / sum;
  keep_.assign(static_cast<size_t>(n), 1.0);
  alias_.resize(static_cast<size_t>(n));
  std::vector<int64_t> small, large;
  for (int64_t i = 0; i < n; ++i) {
    alias_[i] = i;
    (scaled[i] < 1.0 ? small : large).push_back(i);
  }
  while (!small.empty() && !large.empty()) {
    const int64_t s = small.back(), l = large.back();
    small.pop_back();
    keep_[s] = scaled[s];
    alias_[s] = l;
    scaled[l] -= 1.0 - scaled[s];
    if (scaled[l] < 1.0) {
      large.pop_back();
      small.push_back(l);
    }
  }
  // What is left holds probability 1 up to rounding: keep_ stays 1.
}

int64_t ZipfSampler::id_for(double u) const {
  // u in (0, 1] picks a slot and, from its fractional part, the slot's own
  // id or its alias.
  const double x = (1.0 - u) * static_cast<double>(keep_.size());
  const int64_t slot = std::min<int64_t>(static_cast<int64_t>(x), keep_.size() - 1);
  const double frac = x - static_cast<double>(slot);
  return (frac < keep_[slot] ? slot : alias_[slot]) + 1;
}

std::vector<int64_t> sample_ids(const ZipfSampler& zipf, int64_t n, double pad_frac,
                                uint64_t seed, uint64_t stream) {
  std::vector<int64_t> ids(static_cast<size_t>(n));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const bool pad = random_uniform(seed, stream, 2 * i) <= pad_frac;
    ids[i] = pad ? 0 : zipf.id_for(random_uniform(seed, stream, 2 * i + 1));
  }
  return ids;
}

}  // namespace embtrain
