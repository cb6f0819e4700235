#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/device_memory.hpp"
#include "kernels/cuda/cuda_kernels.hpp"

// Helpers of the CUDA kernel tests, which run on a GPU (cuda_tests) and on
// the emulated device of the CPU-only tree (emulated_kernel_tests): the
// skip-or-fail guard for machines without a GPU, device copies of host
// vectors, and the bit-for-bit comparison of floats.
//
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

// A large case's size: n, or n / 20 under EMBTRAIN_TEST_SMALL=1, which the
// compute-sanitizer runs set (racecheck and initcheck make kernels hundreds
// of times slower). The large cases stay large enough for what they are
// there for: segments longer than a 64-position chunk, several blocks.
inline int64_t large_case(int64_t n) {
  const char* small = std::getenv("EMBTRAIN_TEST_SMALL");
  return small && std::string(small) == "1" ? n / 20 : n;
}

// Whether the device is the emulated one of tests/emulated (its kernels run
// on the host, with the host's libm).
inline bool emulated_device() {
  return embtrain::cuda::device_description(0).find("emulated") != std::string::npos;
}

// got == want bit for bit (so -0 against +0 and NaN payloads count); else
// how many floats differ and the first of them, with their bits.
inline ::testing::AssertionResult same_bits(const float* got, const float* want, int64_t n) {
  int64_t differ = 0, first = -1;
  for (int64_t i = 0; i < n; ++i)
    if (std::memcmp(got + i, want + i, sizeof(float)) != 0) {
      if (first < 0) first = i;
      ++differ;
    }
  if (differ == 0) return ::testing::AssertionSuccess();
  char line[160];
  std::snprintf(line, sizeof line,
                "%lld of %lld floats differ; the first at %lld: got %.9g (%a), want %.9g (%a)",
                static_cast<long long>(differ), static_cast<long long>(n),
                static_cast<long long>(first), got[first], got[first], want[first], want[first]);
  return ::testing::AssertionFailure() << line;
}

inline ::testing::AssertionResult same_bits(const std::vector<float>& got,
                                            const std::vector<float>& want) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << got.size() << " floats, want " << want.size();
  return same_bits(got.data(), want.data(), static_cast<int64_t>(got.size()));
}

}  // namespace embtrain_test
