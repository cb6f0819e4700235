// The click model's math on looked-up rows, and the AUC metric.
//
// With p = mean of the non-padding history rows (m of them; pooled by the
// items table when its bags do it, ClickRows::pooled_history) and
// s = <u, c> + <p, c> + b, the loss l = log(1 + e^s) - y s has
// dl/ds = sigmoid(s) - y, and so, scaled by g = grad_scale (sigmoid(s) - y):
//   dl/du = g c,   dl/dc = g (u + p),   dl/dh_j = g c / m (non-padding j),
//   dl/db = g; with the table pooling, dl/dp = g c, which it takes to the h_j.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "embtrain/errors.hpp"
#include "embtrain/workloads/recsys.hpp"

namespace embtrain {
namespace recsys {

double sigmoid(double s) {
  if (s >= 0) return 1.0 / (1.0 + std::exp(-s));
  const double e = std::exp(s);
  return e / (1.0 + e);
}

double logistic_loss(double score, double label) {
  // log(1 + e^s) = max(s, 0) + log(1 + e^-|s|).
  return std::max(score, 0.0) - label * score + std::log1p(std::exp(-std::fabs(score)));
}

template <typename T>
double click_model(const Clicks& batch, int64_t dim, const ClickRows<T>& rows, T bias,
                   double grad_scale, double* scores, ClickGrads<T>* grads) {
  const int64_t n = batch.size(), H = batch.history_len;
  // Per-sample results, summed in order afterwards: a reduction across
  // threads would make the bias and the loss depend on the thread count.
  std::vector<double> loss(static_cast<size_t>(n)), dscore(static_cast<size_t>(n));
#pragma omp parallel
  {
    std::vector<double> pooled(static_cast<size_t>(dim));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const T* u = rows.users + i * dim;
      const T* c = rows.candidates + i * dim;
      const int64_t* hist = batch.history.data() + i * H;
      std::fill(pooled.begin(), pooled.end(), 0.0);
      int64_t m = 0;
      double inv_m = 1.0;  // pooled by the table: already the mean
      if (rows.pooled_history) {
        const T* p = rows.pooled_history + i * dim;
        for (int64_t d = 0; d < dim; ++d) pooled[d] = p[d];
      } else {
        for (int64_t j = 0; j < H; ++j) {
          if (hist[j] == kPaddingItem) continue;
          ++m;
          const T* h = rows.history + (i * H + j) * dim;
          for (int64_t d = 0; d < dim; ++d) pooled[d] += h[d];
        }
        inv_m = m > 0 ? 1.0 / static_cast<double>(m) : 0.0;
        for (int64_t d = 0; d < dim; ++d) pooled[d] *= inv_m;
      }
      double s = bias;
      for (int64_t d = 0; d < dim; ++d) s += (static_cast<double>(u[d]) + pooled[d]) * c[d];
      if (scores) scores[i] = s;
      const double y = batch.labels[i];
      loss[i] = logistic_loss(s, y);
      if (!grads) continue;

      const double g = (sigmoid(s) - y) * grad_scale;
      dscore[i] = g;
      T* gu = grads->users + i * dim;
      T* gc = grads->candidates + i * dim;
      for (int64_t d = 0; d < dim; ++d) {
        gu[d] = static_cast<T>(g * c[d]);
        gc[d] = static_cast<T>(g * (u[d] + pooled[d]));
      }
      if (grads->pooled_history) {  // the table takes it back to the history's rows
        T* gp = grads->pooled_history + i * dim;
        for (int64_t d = 0; d < dim; ++d) gp[d] = static_cast<T>(g * c[d]);
        continue;
      }
      const double gh_scale = g * inv_m;
      for (int64_t j = 0; j < H; ++j) {
        T* gh = grads->history + (i * H + j) * dim;
        if (hist[j] == kPaddingItem) {
          std::fill(gh, gh + dim, T(0));
          continue;
        }
        for (int64_t d = 0; d < dim; ++d) gh[d] = static_cast<T>(gh_scale * c[d]);
      }
    }
  }
  if (grads) grads->bias = std::accumulate(dscore.begin(), dscore.end(), 0.0);
  return std::accumulate(loss.begin(), loss.end(), 0.0);
}

template double click_model<float>(const Clicks&, int64_t, const ClickRows<float>&, float, double,
                                   double*, ClickGrads<float>*);
template double click_model<double>(const Clicks&, int64_t, const ClickRows<double>&, double,
                                    double, double*, ClickGrads<double>*);

double roc_auc(const double* scores, const float* labels, int64_t n) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (int64_t i = 0; i < n; ++i)
    if (std::isnan(scores[i])) return nan;
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::sort(order.begin(), order.end(),
            [&](int64_t a, int64_t b) { return scores[a] < scores[b]; });
  // Mann-Whitney: walk the scores upwards a group of equal scores at a time;
  // each positive in a group beats the negatives below it and ties with the
  // group's negatives. Counting twice the pairs keeps the sum an exact
  // integer (the half pairs of ties included).
  int64_t positives = 0, negatives_below = 0, twice_pairs = 0;
  for (int64_t begin = 0; begin < n;) {
    int64_t end = begin, pos = 0;
    while (end < n && scores[order[end]] == scores[order[begin]])
      pos += labels[order[end++]] > 0.5f;
    const int64_t neg = (end - begin) - pos;
    twice_pairs += pos * (2 * negatives_below + neg);
    positives += pos;
    negatives_below += neg;
    begin = end;
  }
  if (positives == 0 || negatives_below == 0) return nan;
  return static_cast<double>(twice_pairs) /
         (2.0 * static_cast<double>(positives) * static_cast<double>(negatives_below));
}

}  // namespace recsys
}  // namespace embtrain
