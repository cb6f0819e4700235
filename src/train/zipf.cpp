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
  cdf_.resize(static_cast<size_t>(rows - 1));
  double sum = 0;
  for (int64_t k = 1; k < rows; ++k) {
    sum += std::pow(static_cast<double>(k), -alpha);
    cdf_[k - 1] = sum;
  }
  for (double& c : cdf_) c /= sum;
  cdf_.back() = 1.0;
}

int64_t ZipfSampler::id_for(double u) const {
  return (std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin()) + 1;
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
