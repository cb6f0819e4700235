// Device queries, grow-only device and pinned buffers, streams and the
// asynchronous copies (device_memory.hpp). Buffers count their allocations
// in one process-wide counter so tests can check that a steady-state step
// allocates nothing.
#include <atomic>
#include <cstdio>
#include <utility>

#include <cuda_runtime.h>

#include "common/checks.hpp"
#include "kernels/cuda/cuda_kernels.hpp"
#include "kernels/cuda/device_memory.hpp"

namespace embtrain {
namespace cuda {

namespace {
std::atomic<int64_t> g_allocations{0};
}  // namespace

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

std::string device_uuid(int device) {
  cudaDeviceProp prop{};
  EMBTRAIN_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  std::string hex;
  for (char byte : prop.uuid.bytes) {
    char two[3];
    std::snprintf(two, sizeof(two), "%02x", static_cast<unsigned char>(byte));
    hex += two;
  }
  return hex;
}

void memory_info(size_t* free_bytes, size_t* total_bytes) {
  EMBTRAIN_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

double copy_bandwidth_gbps(size_t bytes) {
  void *a = nullptr, *b = nullptr;
  EMBTRAIN_CUDA_CHECK(cudaMalloc(&a, bytes));
  EMBTRAIN_CUDA_CHECK(cudaMalloc(&b, bytes));
  cudaEvent_t start, stop;
  EMBTRAIN_CUDA_CHECK(cudaEventCreate(&start));
  EMBTRAIN_CUDA_CHECK(cudaEventCreate(&stop));
  EMBTRAIN_CUDA_CHECK(cudaMemset(a, 1, bytes));
  EMBTRAIN_CUDA_CHECK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));  // warm-up
  constexpr int kRepeats = 10;
  EMBTRAIN_CUDA_CHECK(cudaEventRecord(start));
  for (int i = 0; i < kRepeats; ++i)
    EMBTRAIN_CUDA_CHECK(cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes,
                                        cudaMemcpyDeviceToDevice));
  EMBTRAIN_CUDA_CHECK(cudaEventRecord(stop));
  EMBTRAIN_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0.f;
  EMBTRAIN_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(a);
  cudaFree(b);
  // Each copy reads and writes `bytes`.
  return 2.0 * static_cast<double>(bytes) * kRepeats / (static_cast<double>(ms) * 1e6);
}

int64_t allocation_count() { return g_allocations.load(); }

// --- Buffers -----------------------------------------------------------------

void* allocate_memory(MemoryKind kind, size_t bytes) {
  void* p = nullptr;
  if (kind == MemoryKind::kDevice)
    EMBTRAIN_CUDA_CHECK(cudaMalloc(&p, bytes));
  else
    EMBTRAIN_CUDA_CHECK(cudaMallocHost(&p, bytes));
  ++g_allocations;
  return p;
}

void free_memory(MemoryKind kind, void* p) noexcept {
  if (!p) return;
  if (kind == MemoryKind::kDevice)
    cudaFree(p);
  else
    cudaFreeHost(p);
}

// --- Stream and copies ------------------------------------------------------

Stream::Stream() {
  cudaStream_t s = nullptr;
  EMBTRAIN_CUDA_CHECK(cudaStreamCreate(&s));
  stream_ = s;
}

Stream::~Stream() {
  if (stream_) cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
}

void Stream::synchronize() const { cuda::synchronize(stream_); }

void copy_to_device(void* d_dst, const void* h_src, size_t bytes, void* stream) {
  if (bytes == 0) return;
  EMBTRAIN_CUDA_CHECK(cudaMemcpyAsync(d_dst, h_src, bytes, cudaMemcpyHostToDevice,
                                      static_cast<cudaStream_t>(stream)));
}

void copy_to_host(void* h_dst, const void* d_src, size_t bytes, void* stream) {
  if (bytes == 0) return;
  EMBTRAIN_CUDA_CHECK(cudaMemcpyAsync(h_dst, d_src, bytes, cudaMemcpyDeviceToHost,
                                      static_cast<cudaStream_t>(stream)));
}

void copy_on_device(void* d_dst, const void* d_src, size_t bytes, void* stream) {
  if (bytes == 0) return;
  EMBTRAIN_CUDA_CHECK(cudaMemcpyAsync(d_dst, d_src, bytes, cudaMemcpyDeviceToDevice,
                                      static_cast<cudaStream_t>(stream)));
}

void memset_device(void* d_dst, int byte_value, size_t bytes, void* stream) {
  if (bytes == 0) return;
  EMBTRAIN_CUDA_CHECK(cudaMemsetAsync(d_dst, byte_value, bytes, static_cast<cudaStream_t>(stream)));
}

void synchronize(void* stream) {
  EMBTRAIN_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}

void set_device(int device) { EMBTRAIN_CUDA_CHECK(cudaSetDevice(device)); }

}  // namespace cuda
}  // namespace embtrain
