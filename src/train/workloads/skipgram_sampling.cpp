// skipgram's random choices: subsampling, windows, pairs and negatives.
#include <algorithm>
#include <cmath>

#include "embtrain/errors.hpp"
#include "embtrain/random.hpp"
#include "embtrain/workloads/skipgram.hpp"

namespace embtrain {

namespace {

// Streams of SkipgramPass's draws, one per kind of choice.
constexpr uint64_t kKeepStream = 0x5b5a3b1e0c1d0001ull;
constexpr uint64_t kWindowStream = 0x5b5a3b1e0c1d0002ull;
constexpr uint64_t kNegativeStream = 0x5b5a3b1e0c1d0003ull;

}  // namespace

double keep_probability(int64_t count, int64_t total, double subsample) {
  if (subsample <= 0 || count <= 0) return 1.0;
  const double threshold = subsample * static_cast<double>(total);
  const double f = static_cast<double>(count);
  return std::min(1.0, (std::sqrt(f / threshold) + 1.0) * threshold / f);
}

UnigramSampler::UnigramSampler(const std::vector<int64_t>& counts, double power) {
  const size_t n = counts.size();
  EMBTRAIN_REQUIRE(n > 0, "negative sampler: the vocabulary is empty");
  probability_.resize(n);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) {
    EMBTRAIN_ASSERT(counts[i] > 0);
    probability_[i] = std::pow(static_cast<double>(counts[i]), power);
    sum += probability_[i];
  }
  for (double& p : probability_) p /= sum;

  // Vose's alias method: split the columns into those under and over the
  // mean mass, then let each small column borrow the rest of its height
  // from a large one.
  columns_.resize(n);
  std::vector<double> scaled(n);
  std::vector<int32_t> small, large;
  for (size_t i = 0; i < n; ++i) {
    scaled[i] = probability_[i] * static_cast<double>(n);
    columns_[i] = Column{0, static_cast<int32_t>(i)};
    (scaled[i] < 1.0 ? small : large).push_back(static_cast<int32_t>(i));
  }
  while (!small.empty() && !large.empty()) {
    const int32_t s = small.back(), l = large.back();
    small.pop_back();
    // scaled[s] < 1, so the threshold fits 32 bits.
    columns_[s] = Column{static_cast<uint32_t>(scaled[s] * 4294967296.0), l};
    scaled[l] -= 1.0 - scaled[s];
    if (scaled[l] < 1.0) {
      large.pop_back();
      small.push_back(l);
    }
  }
  // What is left is full up to rounding: its own alias, either way.
}

bool SkipgramPass::kept(int64_t pos, double keep_prob) const {
  return keep_prob >= 1.0 ||
         random_uniform(seed, kKeepStream ^ mix64(pass), static_cast<uint64_t>(pos)) <= keep_prob;
}

int64_t SkipgramPass::window_at(int64_t pos, int64_t window) const {
  return 1 + static_cast<int64_t>(
                 random_bits(seed, kWindowStream ^ mix64(pass), static_cast<uint64_t>(pos)) %
                 static_cast<uint64_t>(window));
}

uint64_t SkipgramPass::pair_key(int64_t pos, int64_t ordinal) const {
  // The position goes into the stream, so the ordinal can take the index
  // without any bound on the corpus's length.
  return random_bits(seed, kNegativeStream ^ mix64(pass) ^ mix64(static_cast<uint64_t>(pos)),
                     static_cast<uint64_t>(ordinal));
}

bool PairGenerator::kept(const SkipgramPass& pass, int64_t pos) const {
  const int64_t at = pos - mask_begin_;
  if (at >= 0 && at < static_cast<int64_t>(mask_.size())) return mask_[at] != 0;
  return pass.kept(pos, (*keep_prob_)[stream_->tokens[pos]]);
}

void PairGenerator::generate(const SkipgramPass& pass, int64_t begin, int64_t end,
                             std::vector<SkipgramPair>* out) {
  out->clear();
  const TokenStream& s = *stream_;
  begin = std::max<int64_t>(begin, 0);
  end = std::min(end, s.size());
  if (begin >= end) return;

  // Decide subsampling once for the centers and the usual reach of their
  // windows; a window that must skip further (a run of discarded words)
  // decides the rest on demand.
  mask_begin_ = std::max<int64_t>(0, begin - 2 * window_);
  const int64_t mask_end = std::min(s.size(), end + 2 * window_);
  mask_.resize(static_cast<size_t>(mask_end - mask_begin_));
  for (int64_t q = mask_begin_; q < mask_end; ++q)
    mask_[q - mask_begin_] = pass.kept(q, (*keep_prob_)[s.tokens[q]]) ? 1 : 0;

  int64_t line = s.line_of(begin);
  for (int64_t p = begin; p < end; ++p) {
    while (p >= s.line_begin[line + 1]) ++line;
    if (!mask_[p - mask_begin_]) continue;
    const int64_t b = pass.window_at(p, window_);
    const int64_t lo = s.line_begin[line], hi = s.line_begin[line + 1];
    int32_t ordinal = 0;
    int64_t found = 0;
    for (int64_t q = p - 1; q >= lo && found < b; --q)
      if (kept(pass, q)) {
        out->push_back(SkipgramPair{p, q, ordinal++});
        ++found;
      }
    found = 0;
    for (int64_t q = p + 1; q < hi && found < b; ++q)
      if (kept(pass, q)) {
        out->push_back(SkipgramPair{p, q, ordinal++});
        ++found;
      }
  }
}

}  // namespace embtrain
