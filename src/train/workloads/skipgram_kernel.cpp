// skipgram's model math: the logistic loss of a batch of pairs over the
// rows the engine looked up, and its gradients, by hand.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "embtrain/errors.hpp"
#include "embtrain/workloads/skipgram.hpp"

namespace embtrain {

namespace {

// The helpers must inline into each clone of pair_range below to be built
// for its instruction set.
#if defined(__GNUC__)
#define SKIPGRAM_INLINE inline __attribute__((always_inline))
#else
#define SKIPGRAM_INLINE inline
#endif

// `omp simd` lets the compiler vectorise the float reductions without
// -ffast-math. The summation order is fixed by the build and by the path
// the CPU takes (AVX2 or baseline), so a run repeats bitwise on one
// machine, and agrees with another machine up to float rounding.
SKIPGRAM_INLINE float dot(const float* a, const float* b, int64_t n) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

SKIPGRAM_INLINE void axpy(float* y, float a, const float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// Pairs per thread below which splitting a batch costs more (zeroing and
// reducing the extra gradient buffers) than it saves.
constexpr int64_t kPairsPerThread = 512;

// The loss of one pair; with grads, adds its gradients to gin (the center's
// row) and gout (the targets' rows), using gh (dim floats) as scratch.
SKIPGRAM_INLINE float pair_loss(const float* h, const float* out_rows, int64_t dim,
                                const int32_t* targets, int64_t per_pair, float* gin, float* gout,
                                float* gh) {
  // sum_j log(1 + exp(-z_j)), z = s for the context and -s for a negative,
  // as log(prod_j (1 + e_j)) + sum_j max(-z_j, 0) with e_j = exp(-|z_j|):
  // one exp per target and one log per pair. Each factor is in (1, 2], so
  // the product is folded into the sum before it could overflow.
  float prod = 1, linear = 0, loss = 0;
  if (gin) std::fill_n(gh, dim, 0.f);
  for (int64_t j = 0; j < per_pair; ++j) {
    const int32_t o = targets[j];
    if (o < 0) continue;
    const float* v = out_rows + static_cast<int64_t>(o) * dim;
    const float s = dot(h, v, dim);
    const float z = j == 0 ? s : -s;
    const float e = std::exp(-std::fabs(z));
    prod *= 1 + e;
    if (z < 0) linear -= z;
    if (prod > 1e30f) {
      loss += std::log(prod);
      prod = 1;
    }
    if (gin) {
      // d/dz log(1 + exp(-z)) = -(1 - sigmoid(z)); 1 - sigmoid(z) computed
      // without cancellation on either side of 0.
      const float one_minus = z >= 0 ? e / (1 + e) : 1 / (1 + e);
      const float g = j == 0 ? -one_minus : one_minus;  // d loss / d s
      axpy(gh, g, v, dim);
      axpy(gout + static_cast<int64_t>(o) * dim, g, h, dim);
    }
  }
  if (gin) axpy(gin, 1.f, gh, dim);
  return loss + std::log(prod) + linear;
}

// The pairs [begin, end): the hot loop.
SKIPGRAM_INLINE double pair_range(const float* in_rows, const float* out_rows, int64_t dim,
                                  const int32_t* centers, const int32_t* targets, int64_t per_pair,
                                  int64_t begin, int64_t end, float* gin, float* gout, float* gh) {
  double loss = 0;
  for (int64_t p = begin; p < end; ++p) {
    const int64_t c = centers[p];
    loss += pair_loss(in_rows + c * dim, out_rows, dim, targets + p * per_pair, per_pair,
                      gin ? gin + c * dim : nullptr, gout, gh);
  }
  return loss;
}

double pair_range_baseline(const float* in_rows, const float* out_rows, int64_t dim,
                           const int32_t* centers, const int32_t* targets, int64_t per_pair,
                           int64_t begin, int64_t end, float* gin, float* gout, float* gh) {
  return pair_range(in_rows, out_rows, dim, centers, targets, per_pair, begin, end, gin, gout, gh);
}

// The same loop built for AVX2 and FMA too, chosen at run time, so a
// generic build (no -march=native) still gets 8-wide float math where the
// CPU has it. (target_clones("arch=haswell") would pick by CPU model, not
// by feature, and miss every later CPU.)
#if defined(__x86_64__) && defined(__GNUC__)
#define SKIPGRAM_HAVE_AVX2_PATH 1
__attribute__((target("avx2,fma"))) double pair_range_avx2(const float* in_rows,
                                                           const float* out_rows, int64_t dim,
                                                           const int32_t* centers,
                                                           const int32_t* targets, int64_t per_pair,
                                                           int64_t begin, int64_t end, float* gin,
                                                           float* gout, float* gh) {
  return pair_range(in_rows, out_rows, dim, centers, targets, per_pair, begin, end, gin, gout, gh);
}
#endif

using PairRangeFn = double (*)(const float*, const float*, int64_t, const int32_t*, const int32_t*,
                               int64_t, int64_t, int64_t, float*, float*, float*);

PairRangeFn pick_pair_range() {
#ifdef SKIPGRAM_HAVE_AVX2_PATH
  __builtin_cpu_init();  // in case this runs before the constructors that would
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return pair_range_avx2;
#endif
  return pair_range_baseline;
}

}  // namespace

double SkipgramKernel::run(const float* in_rows, int64_t num_in, const float* out_rows,
                           int64_t num_out, int64_t dim, const int32_t* centers,
                           const int32_t* targets, int64_t pairs, int64_t per_pair, float* grad_in,
                           float* grad_out) {
  static const PairRangeFn pair_range_fn = pick_pair_range();
  const bool grads = grad_in != nullptr;
  EMBTRAIN_ASSERT(grads == (grad_out != nullptr));
  const int threads = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), pairs / kPairsPerThread)));
  // Thread 0 sums straight into grad_in / grad_out; thread t > 0 into its
  // own pair of buffers in scratch_. Every thread has a row of scratch.
  const int64_t grad_floats = grads ? (num_in + num_out) * dim : 0;
  const size_t need = static_cast<size_t>((threads - 1) * grad_floats + threads * dim);
  if (scratch_.size() < need) scratch_.resize(need);

  // Per-thread losses, added in thread order (an OpenMP reduction may
  // combine them in any order).
  thread_loss_.assign(static_cast<size_t>(threads), 0.0);
#pragma omp parallel num_threads(threads)
  {
    // The runtime may grant fewer threads than asked for.
    const int t = omp_get_thread_num(), team = omp_get_num_threads();
    float* gin = nullptr;
    float* gout = nullptr;
    if (grads) {
      gin = t == 0 ? grad_in : scratch_.data() + (t - 1) * grad_floats;
      gout = t == 0 ? grad_out : gin + num_in * dim;
      std::fill_n(gin, num_in * dim, 0.f);
      std::fill_n(gout, num_out * dim, 0.f);
    }
    float* gh = scratch_.data() + (threads - 1) * grad_floats + t * dim;
    // Static, contiguous shares: the same split for the same thread count.
    thread_loss_[t] = pair_range_fn(in_rows, out_rows, dim, centers, targets, per_pair,
                                    pairs * t / team, pairs * (t + 1) / team, gin, gout, gh);
    // Once every thread's sums are done, add the other threads' buffers
    // into thread 0's, in thread order.
    if (grads && team > 1) {
#pragma omp barrier
      const int64_t n = num_in * dim, m = num_out * dim;
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n + m; ++i) {
        float* dst = i < n ? grad_in + i : grad_out + (i - n);
        for (int u = 1; u < team; ++u) *dst += scratch_[(u - 1) * grad_floats + i];
      }
    }
  }
  double loss = 0;
  for (double l : thread_loss_) loss += l;
  return loss;
}

}  // namespace embtrain
