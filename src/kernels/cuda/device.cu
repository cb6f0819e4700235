#include <cstdio>

#include "cuda_check.hpp"
#include "embtrain/kernels_cuda.hpp"

namespace embtrain {
namespace cuda {

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device / no driver" error
    return 0;
  }
  return count;
}

std::string device_description(int device) {
  cudaDeviceProp prop{};
  EMBTRAIN_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  char text[512];
  std::snprintf(text, sizeof(text), "%s (sm_%d%d, %.1f GiB)", prop.name, prop.major, prop.minor,
                static_cast<double>(prop.totalGlobalMem) / (1 << 30));
  return text;
}

}  // namespace cuda
}  // namespace embtrain
