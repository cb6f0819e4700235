// Device memory, pinned host memory and streams for the CUDA backend, with
// no CUDA header in sight (plain pointers, streams as void*), so engine code
// that is built without nvcc can hold them. Buffers only grow: a step that
// reserves the sizes it needs allocates in its first iterations and then
// never again; allocation_count() lets tests check exactly that. Every
// failure throws SystemError (EMBTRAIN_CUDA_CHECK). Defined in
// src/kernels/cuda/device.cu, so only present when the CUDA backend is built.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

namespace embtrain {
namespace cuda {

// cudaMalloc and cudaMallocHost calls made so far by DeviceBuffer and
// PinnedBuffer in this process.
int64_t allocation_count();

// Where a GrowBuffer's bytes live.
enum class MemoryKind {
  kDevice,  // cudaMalloc
  kPinned,  // cudaMallocHost: page-locked host memory, the host side of async copies
};

// The allocation behind GrowBuffer (counted by allocation_count()); free
// of a null pointer does nothing and free never throws.
void* allocate_memory(MemoryKind kind, size_t bytes);
void free_memory(MemoryKind kind, void* p) noexcept;

// Grow-only bytes of one kind.
template <MemoryKind kKind>
class GrowBuffer {
 public:
  GrowBuffer() = default;
  ~GrowBuffer() { free_memory(kKind, data_); }
  GrowBuffer(const GrowBuffer&) = delete;
  GrowBuffer& operator=(const GrowBuffer&) = delete;
  GrowBuffer(GrowBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), capacity_(std::exchange(other.capacity_, 0)) {}
  GrowBuffer& operator=(GrowBuffer&& other) noexcept {
    if (this != &other) {
      free_memory(kKind, data_);
      data_ = std::exchange(other.data_, nullptr);
      capacity_ = std::exchange(other.capacity_, 0);
    }
    return *this;
  }

  // Makes room for `bytes`. Reallocates, dropping the contents, only when
  // that is more than the capacity; freeing device memory waits for work
  // still using it.
  void reserve(size_t bytes) {
    if (bytes <= capacity_) return;
    free_memory(kKind, std::exchange(data_, nullptr));
    capacity_ = 0;
    data_ = allocate_memory(kKind, bytes);
    capacity_ = bytes;
  }
  size_t capacity() const { return capacity_; }
  void* data() const { return data_; }
  // The buffer from `byte_offset` on, as T*.
  template <typename T>
  T* as(size_t byte_offset = 0) const {
    return reinterpret_cast<T*>(static_cast<char*>(data_) + byte_offset);
  }

 private:
  void* data_ = nullptr;
  size_t capacity_ = 0;
};

using DeviceBuffer = GrowBuffer<MemoryKind::kDevice>;
using PinnedBuffer = GrowBuffer<MemoryKind::kPinned>;

// An owned cudaStream_t. Created with default flags, so it orders itself
// with the legacy default stream (nullptr) as plain cudaMemcpy does.
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  void* get() const { return stream_; }  // a cudaStream_t
  void synchronize() const;

 private:
  void* stream_ = nullptr;
};

// Asynchronous copies and memset on `stream` (nullptr: the default stream).
// Host memory should be pinned for the copy to be truly asynchronous.
void copy_to_device(void* d_dst, const void* h_src, size_t bytes, void* stream);
void copy_to_host(void* h_dst, const void* d_src, size_t bytes, void* stream);
void copy_on_device(void* d_dst, const void* d_src, size_t bytes, void* stream);
void memset_device(void* d_dst, int byte_value, size_t bytes, void* stream);
void synchronize(void* stream);
void set_device(int device);

}  // namespace cuda
}  // namespace embtrain
