// Micro-benchmark of the CPU kernels whose order of adds issue 10 fixed
// (embtrain/sum_order.hpp), on bench-A's shape: 81,920 positions x 128,
// Zipf 1.05 ids over 1M rows, 10% padding (slot of id 0 skipped).
//   segment_sum       the backward reduce (chunked order for ids > 64 positions)
//   segment_sum/count the same with scale_by_count
//   rowwise_update    update_rows, row-wise Adagrad (lane-tree squared norm)
//   renorm_p2         renorm_rows, max_norm 0.5, p = 2 (lane-tree norm)
// Prints the minimum and the median over the repeats (the minimum is the
// least disturbed by other load on a shared machine). Build it once against
// each tree to compare, from the repository root:
//   g++ -O3 -fopenmp -fno-math-errno -ffp-contract=off -std=c++17 -Iinclude -Isrc \
//     bench/micro/segment_sum_order.cpp BUILD/libembtrain_kernels.a \
//     BUILD/libembtrain_train.a BUILD/libembtrain_common.a -o /tmp/sso
//   OMP_NUM_THREADS=1 /tmp/sso; OMP_NUM_THREADS=2 /tmp/sso
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "embtrain/optimizer.hpp"
#include "embtrain/zipf.hpp"
#include "kernels/cpu/cpu_kernels.hpp"

using namespace embtrain;

template <typename F>
void time_it(const char* name, int repeats, F f) {
  std::vector<double> ms;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    f();
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count());
  }
  std::sort(ms.begin(), ms.end());
  std::printf("%-18s threads %d  min %7.3f ms  median %7.3f ms\n", name, omp_get_max_threads(),
              ms.front(), ms[ms.size() / 2]);
}

int main() {
  const int64_t n = 81920, dim = 128, rows = 1000000;
  const ZipfSampler zipf(rows, 1.05);
  const std::vector<int64_t> ids = sample_ids(zipf, n, 0.1, 1, 5);
  cpu::UniqueWorkspace ws;
  const UniqueIndex index = cpu::unique_ids(ids.data(), n, rows, &ws);
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> grad(static_cast<size_t>(n * dim));
  for (float& x : grad) x = normal(rng);
  std::vector<float> sums(static_cast<size_t>(index.num_unique * dim));
  const int64_t skip = ws.unique[0] == 0 ? 0 : -1;
  int64_t longest = 0;
  for (int64_t u = 0; u < index.num_unique; ++u) longest = std::max<int64_t>(longest, ws.count(u));
  std::printf("# %lld positions, %lld distinct ids, longest %lld positions, dim %lld\n",
              static_cast<long long>(n), static_cast<long long>(index.num_unique),
              static_cast<long long>(longest), static_cast<long long>(dim));
  const int repeats = 40;
  time_it("segment_sum", repeats,
          [&] { cpu::segment_sum(grad.data(), dim, index, false, skip, sums.data()); });
  time_it("segment_sum/count", repeats,
          [&] { cpu::segment_sum(grad.data(), dim, index, true, skip, sums.data()); });

  // The update and renorm of the distinct rows of a 1M-row table.
  std::vector<float> table(static_cast<size_t>(rows * dim));
  for (float& x : table) x = normal(rng);
  std::vector<float> acc(static_cast<size_t>(rows), 0.1f);
  std::vector<int64_t> touched(ws.unique.begin(), ws.unique.end());
  OptimizerConfig config;
  config.kind = OptimizerKind::kRowwiseAdagrad;
  config.lr = 0.01;
  const StepScalars s = step_scalars(config, 1);
  time_it("rowwise_update", repeats, [&] {
    cpu::update_rows(OptimizerKind::kRowwiseAdagrad, s, table.data(), acc.data(), dim,
                     touched.data(), sums.data(), index.num_unique, 0);
  });
  time_it("renorm_p2", repeats, [&] {
    cpu::renorm_rows(table.data(), dim, touched.data(), index.num_unique, 0, 0.5f, 2.f);
  });
  return 0;
}
