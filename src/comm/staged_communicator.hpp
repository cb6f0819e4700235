// A data communicator over device buffers that stages them through pinned
// host memory and runs each collective on a host communicator (MPI).
//
// Why: NCCL refuses two ranks on one GPU, so a node with more ranks than
// GPUs (and a test of P = 2 on one GPU) needs another way to move device
// buffers. The copies go through DeviceCopier, injected, so the staging
// logic (offsets, counts, buffer growth, in-place reductions, the root of
// gatherv) runs and is tested without a GPU with the memcpy copier.
#pragma once

#include <cstddef>
#include <memory>

#include "embtrain/communicator.hpp"

namespace embtrain {

// Copies between device buffers and (pinned) host staging buffers. The
// copies are enqueued: each runs after the work already enqueued before it
// (for CUDA, on the copier's stream), in order, and wait() makes the host
// wait for every copy enqueued so far. Until then neither the data copied
// to the host may be read nor a staging buffer a copy uses be written.
class DeviceCopier {
 public:
  virtual ~DeviceCopier() = default;
  virtual void to_host(void* h_dst, const void* d_src, size_t bytes) = 0;
  virtual void to_device(void* d_dst, const void* h_src, size_t bytes) = 0;
  virtual void wait() = 0;
  // Host memory the device copies fast to and from (page-locked for CUDA).
  virtual void* alloc_pinned(size_t bytes) = 0;
  virtual void free_pinned(void* h_ptr) noexcept = 0;
};

// The copier of a "device" that is ordinary host memory: std::memcpy and
// malloc. For tests of the staging logic, and CPU-only runs.
std::unique_ptr<DeviceCopier> make_memcpy_copier();

// cudaMemcpyAsync on `stream` (a cudaStream_t; nullptr for the default
// stream), wait() a cudaStreamSynchronize; cudaMallocHost for staging.
// The caller has selected the device (cudaSetDevice) first.
std::unique_ptr<DeviceCopier> make_cuda_copier(void* stream);

// The staged data communicator. `host` runs the collectives on host memory
// and is owned: give it its own MPI communicator (make_mpi_communicator(),
// a duplicate of MPI_COMM_WORLD), so that data messages and control
// messages never mix and the traffic counters stay apart.
//
// memory_space() is kDevice: every buffer argument is a device pointer
// (counts stay on the host). Each call blocks until its result is on the
// device; except ialltoallv (either form), which copies the parts out
// (one wait for all of them), posts the transfer on the host communicator
// and returns: its request's progress() lets the transfer advance, and once
// it is done (progress() true, or wait()) the copies of the received parts
// to the device are enqueued, so work enqueued after them on the copier's
// stream sees them, and the host does not wait for them (nor for the
// kernels before them): synchronize() does. A request must end before its
// communicator. The staging buffers (a send and a receive buffer, and one
// pair per ialltoallv in flight) are grow-only: once the sizes and the
// requests in flight stop growing no call allocates; a pair whose copies
// to the device may still be running is written again or freed only after
// the host has waited for them.
// Traffic counters count what the all-to-alls move to and from other
// ranks, as the MPI communicator does. agree_on_error is not for this
// communicator; use the control communicator.
std::unique_ptr<Communicator> make_staged_communicator(std::unique_ptr<Communicator> host,
                                                       std::unique_ptr<DeviceCopier> copier);

}  // namespace embtrain
