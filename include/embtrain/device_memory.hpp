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

namespace embtrain {
namespace cuda {

// cudaMalloc and cudaMallocHost calls made so far by DeviceBuffer and
// PinnedBuffer in this process.
int64_t allocation_count();

// Grow-only device bytes.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;

  // Makes room for `bytes`. Reallocates, dropping the contents, only when
  // that is more than the capacity; cudaFree waits for work still using the
  // old memory.
  void reserve(size_t bytes);
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

// Grow-only page-locked host bytes (cudaMallocHost): the host side of
// asynchronous copies.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer();
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& other) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;

  void reserve(size_t bytes);  // as DeviceBuffer::reserve
  size_t capacity() const { return capacity_; }
  void* data() const { return data_; }
  template <typename T>
  T* as(size_t byte_offset = 0) const {
    return reinterpret_cast<T*>(static_cast<char*>(data_) + byte_offset);
  }

 private:
  void* data_ = nullptr;
  size_t capacity_ = 0;
};

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
