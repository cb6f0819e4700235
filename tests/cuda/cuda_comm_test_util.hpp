// Device memory and a stream for the device-communicator tests (one process
// and under mpiexec): the checks in tests/mpi/device_comm_checks.hpp run on
// cudaMalloc'd buffers through this TestMemory.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "../mpi/device_comm_checks.hpp"

namespace embtrain_comm_check {

// cudaMalloc'd test buffers; copies complete before returning.
class CudaMemory final : public TestMemory {
 public:
  void* alloc(size_t bytes) override {
    void* d = nullptr;
    EXPECT_EQ(cudaMalloc(&d, bytes + 1), cudaSuccess);
    return d;
  }
  void release(void* d) override { EXPECT_EQ(cudaFree(d), cudaSuccess); }
  void upload(void* d, const void* h, size_t n) override {
    EXPECT_EQ(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  }
  void download(void* h, const void* d, size_t n) override {
    EXPECT_EQ(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost), cudaSuccess);
  }
};

// A stream of the test's own, destroyed after the communicator using it.
struct Stream {
  Stream() { EXPECT_EQ(cudaStreamCreate(&stream), cudaSuccess); }
  ~Stream() { cudaStreamDestroy(stream); }
  cudaStream_t stream = nullptr;
};

}  // namespace embtrain_comm_check
