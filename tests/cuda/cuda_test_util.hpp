// Helpers of the CUDA tests: the skip-or-fail guard for machines without a
// GPU, and a device copy of a host vector on the project's DeviceBuffer.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/cuda/device_memory.hpp"
#include "kernels/cuda/cuda_kernels.hpp"

// Skips the test where no GPU is present, unless EMBTRAIN_REQUIRE_GPU=1
// (as on the lent GPU machine) makes that a failure.
#define SKIP_WITHOUT_GPU()                                                               \
  do {                                                                                   \
    if (::embtrain::cuda::device_count() == 0) {                                         \
      const char* req = std::getenv("EMBTRAIN_REQUIRE_GPU");                             \
      if (req && std::string(req) == "1") FAIL() << "EMBTRAIN_REQUIRE_GPU=1 but no GPU"; \
      GTEST_SKIP() << "no CUDA device (set EMBTRAIN_REQUIRE_GPU=1 to fail instead)";     \
    }                                                                                    \
  } while (0)

namespace embtrain_test {

// A device copy of a host vector (never a null pointer, even when empty).
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(const std::vector<T>& h) : size_(h.size()) {
    buffer_.reserve(std::max<size_t>(1, size_) * sizeof(T));
    embtrain::cuda::copy_to_device(buffer_.data(), h.data(), size_ * sizeof(T), nullptr);
  }
  explicit DeviceArray(size_t size, T value = T()) : DeviceArray(std::vector<T>(size, value)) {}

  T* get() const { return buffer_.as<T>(); }
  size_t size() const { return size_; }
  std::vector<T> host() const {
    std::vector<T> h(size_);
    embtrain::cuda::copy_to_host(h.data(), buffer_.data(), size_ * sizeof(T), nullptr);
    embtrain::cuda::synchronize(nullptr);
    return h;
  }

 private:
  embtrain::cuda::DeviceBuffer buffer_;
  size_t size_ = 0;
};

// The first `count` elements of a device array, on the host.
template <typename T>
std::vector<T> download(const T* d, int64_t count) {
  std::vector<T> h(static_cast<size_t>(count));
  embtrain::cuda::copy_to_host(h.data(), d, h.size() * sizeof(T), nullptr);
  embtrain::cuda::synchronize(nullptr);
  return h;
}

}  // namespace embtrain_test
