// CUDA kernels against their CPU references on random rows. Without a GPU
// every test skips with the reason, unless EMBTRAIN_REQUIRE_GPU=1 makes a
// missing GPU a failure (as on the lent GPU machine).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <random>
#include <vector>

#include "cuda_test_util.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cuda/cuda_kernels.hpp"
#include "embtrain/optimizer.hpp"

namespace embtrain {
namespace {

uint64_t test_seed() {
  const char* env = std::getenv("EMBTRAIN_TEST_SEED");
  return env ? std::strtoull(env, nullptr, 10)
             : static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
}

template <typename T>
T* to_device(const std::vector<T>& h) {
  T* d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, h.size() * sizeof(T) + 1), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}

template <typename T>
std::vector<T> to_host(const T* d, size_t n) {
  std::vector<T> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, uint64_t seed) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], 1e-5f * std::max(1.f, std::abs(want[i])))
        << "element " << i << ", seed " << seed;
}

TEST(CudaKernels, GatherMatchesCpu) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  for (int64_t dim : {1, 3, 4, 33, 128}) {
    const int64_t rows = 257, n = 1000, offset = 40;
    std::vector<float> table(rows * dim);
    std::normal_distribution<float> normal;
    for (float& x : table) x = normal(rng);
    std::vector<int64_t> index(n);
    for (int64_t& i : index) i = offset + static_cast<int64_t>(rng() % rows);
    std::vector<float> want(n * dim);
    cpu::gather_rows(table.data(), dim, index.data(), n, offset, want.data());
    float* d_table = to_device(table);
    int64_t* d_index = to_device(index);
    float* d_out = to_device(std::vector<float>(n * dim));
    cuda::gather_rows(d_table, dim, d_index, n, offset, d_out, nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    expect_close(to_host(d_out, n * dim), want, seed);
    cudaFree(d_table);
    cudaFree(d_index);
    cudaFree(d_out);
  }
}

TEST(CudaKernels, UpdateMatchesCpuForEveryOptimizer) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  for (OptimizerKind kind : {OptimizerKind::kSgd, OptimizerKind::kAdagrad, OptimizerKind::kAdam,
                             OptimizerKind::kRowwiseAdagrad}) {
    for (int64_t dim : {1, 7, 64, 130}) {
      const int64_t rows = 500, n = 200;
      const int64_t width = optimizer_state_width(kind, dim);
      std::vector<float> table(rows * dim), state(rows * width), grads(n * dim);
      for (float& x : table) x = normal(rng);
      for (float& x : state) x = std::abs(normal(rng));
      for (float& x : grads) x = normal(rng);
      std::vector<int64_t> all(rows);
      for (int64_t r = 0; r < rows; ++r) all[r] = r;
      std::shuffle(all.begin(), all.end(), rng);
      std::vector<int64_t> picked(all.begin(), all.begin() + n);  // distinct rows
      OptimizerConfig config;
      config.kind = kind;
      config.lr = 0.05;
      config.lr_decay = 0.01;
      const StepScalars s = step_scalars(config, 3);

      float* d_table = to_device(table);
      float* d_state = to_device(state);
      float* d_grads = to_device(grads);
      int64_t* d_rows = to_device(picked);
      cuda::update_rows(kind, s, d_table, d_state, dim, d_rows, d_grads, n, 0, nullptr);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      cpu::update_rows(kind, s, table.data(), state.data(), dim, picked.data(), grads.data(), n,
                       0);
      SCOPED_TRACE(std::string(optimizer_name(kind)) + " dim " + std::to_string(dim));
      expect_close(to_host(d_table, table.size()), table, seed);
      expect_close(to_host(d_state, state.size()), state, seed);
      cudaFree(d_table);
      cudaFree(d_state);
      cudaFree(d_grads);
      cudaFree(d_rows);
    }
  }
}

}  // namespace
}  // namespace embtrain
