// The MPI-staged data communicator: device buffers are copied into pinned
// host staging buffers, the collective runs on a host communicator, and the
// result is copied back to the device. Lets several ranks share one GPU,
// which NCCL refuses. See staged_communicator.hpp for the contract.
#include "comm/staged_communicator.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <utility>
#include <vector>

#include "embtrain/errors.hpp"

namespace embtrain {

namespace {

class MemcpyCopier final : public DeviceCopier {
 public:
  // Empty copies may come with null pointers, which memcpy must not see.
  void to_host(void* h_dst, const void* d_src, size_t bytes) override {
    if (bytes > 0) std::memcpy(h_dst, d_src, bytes);
  }
  void to_device(void* d_dst, const void* h_src, size_t bytes) override {
    if (bytes > 0) std::memcpy(d_dst, h_src, bytes);
  }
  void wait() override {}  // every copy is done when it returns
  void* alloc_pinned(size_t bytes) override {
    void* p = std::malloc(std::max<size_t>(bytes, 1));
    if (!p) throw std::bad_alloc();
    return p;
  }
  void free_pinned(void* h_ptr) noexcept override { std::free(h_ptr); }
};

// A grow-only pinned buffer: reserve() reallocates only when asked for more
// than it holds, and then at least doubles, so a run whose sizes creep up
// reallocates a few times and then never. Contents are not kept across a
// reallocation (every call stages afresh).
class StagingBuffer {
 public:
  explicit StagingBuffer(DeviceCopier& copier) : copier_(copier) {}
  ~StagingBuffer() {
    if (h_data_) copier_.free_pinned(h_data_);
  }
  StagingBuffer(const StagingBuffer&) = delete;
  StagingBuffer& operator=(const StagingBuffer&) = delete;

  char* reserve(size_t bytes) {
    if (bytes > capacity_) {
      const size_t grown = std::max(bytes, 2 * capacity_);
      if (h_data_) copier_.free_pinned(h_data_);
      h_data_ = nullptr;
      capacity_ = 0;
      h_data_ = static_cast<char*>(copier_.alloc_pinned(grown));
      capacity_ = grown;
    }
    return h_data_;
  }
  char* data() const { return h_data_; }
  bool fits(size_t bytes) const { return bytes <= capacity_; }

 private:
  DeviceCopier& copier_;
  char* h_data_ = nullptr;
  size_t capacity_ = 0;
};

class StagedCommunicator final : public Communicator {
 public:
  StagedCommunicator(std::unique_ptr<Communicator> host, std::unique_ptr<DeviceCopier> copier)
      : host_(std::move(host)), copier_(std::move(copier)), h_send_(*copier_), h_recv_(*copier_) {
    EMBTRAIN_ASSERT(host_ && copier_);
    EMBTRAIN_ASSERT(host_->memory_space() == MemorySpace::kHost);
  }
  // The staging buffers are freed next: not under a copy still running.
  ~StagedCommunicator() override {
    try {
      synchronize();
    } catch (...) {  // a failing device has no one to tell from here
    }
  }

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  MemorySpace memory_space() const override { return MemorySpace::kDevice; }

  void alltoallv(const void* d_send, const std::vector<int64_t>& send_counts, void* d_recv,
                 const std::vector<int64_t>& recv_counts, CommType type) override {
    const Displacements displ = prepare_alltoallv(send_counts, recv_counts, type);
    const int64_t send_total = displ.send.back(), recv_total = displ.recv.back();
    const int64_t elem = comm_type_size(type);
    // The whole send buffer goes through the host, the self part included:
    // one copy each way, with the host communicator's offsets unchanged.
    char* h_send = h_send_.reserve(bytes(send_total, elem));
    char* h_recv = h_recv_.reserve(bytes(recv_total, elem));
    to_host(h_send, d_send, bytes(send_total, elem));
    wait_for_copies();
    host_->alltoallv(h_send, send_counts, h_recv, recv_counts, type);
    to_device(d_recv, h_recv, bytes(recv_total, elem));
    wait_for_copies();
  }

  // The counts form (Communicator's): these parts, contiguous.
  using Communicator::ialltoallv;

  // Each part through the host, packed there in rank order (the copies
  // enqueued, then one wait for them all), then posted on the host
  // communicator without waiting: the request enqueues the copies of what
  // landed to the device once the transfer is done (progress() or wait()).
  // Each request in flight has its own staging buffers, from a pool that
  // grows to the most requests in flight at once and then stays.
  std::unique_ptr<Request> ialltoallv(const void* d_send, const std::vector<Part>& send_parts,
                                      void* d_recv, const std::vector<Part>& recv_parts,
                                      CommType type) override {
    const auto counts = prepare_parts(send_parts, recv_parts, type);
    const int64_t elem = comm_type_size(type);
    int64_t send_total = 0, recv_total = 0;
    for (int r = 0; r < size(); ++r) {
      send_total += counts.first[r];
      recv_total += counts.second[r];
    }
    std::unique_ptr<Staging> staging = take_staging();
    // The pair's last request may have left copies to the device from its
    // receive buffer running: a pair that grows frees that buffer, so only
    // after them; one that does not is written by MPI only after the wait
    // below, which comes after them in the stream's order.
    if (!staging->send.fits(bytes(send_total, elem)) || !staging->recv.fits(bytes(recv_total, elem)))
      synchronize();
    char* h_send = staging->send.reserve(bytes(send_total, elem));
    char* h_recv = staging->recv.reserve(bytes(recv_total, elem));
    std::vector<Part> h_send_parts(send_parts.size()), h_recv_parts(recv_parts.size());
    int64_t at = 0;
    for (size_t r = 0; r < send_parts.size(); ++r) {
      const Part& part = send_parts[r];
      to_host(h_send + at * elem, static_cast<const char*>(d_send) + part.at * elem,
              bytes(part.count, elem));
      h_send_parts[r] = {at, part.count};
      at += part.count;
    }
    wait_for_copies();
    at = 0;
    for (size_t r = 0; r < recv_parts.size(); ++r) {
      h_recv_parts[r] = {at, recv_parts[r].count};
      at += recv_parts[r].count;
    }
    auto request = std::make_unique<StagedRequest>(this, std::move(staging), d_recv, recv_parts,
                                                   h_recv_parts, elem);
    request->host = host_->ialltoallv(h_send, h_send_parts, h_recv, h_recv_parts, type);
    return request;
  }

  // In place on the device, so in place on the host too: one staging buffer.
  void allreduce(void* d_data, int64_t count, CommType type, ReduceOp op) override {
    const size_t n = bytes(count, comm_type_size(type));
    char* h_data = h_send_.reserve(n);
    to_host(h_data, d_data, n);
    wait_for_copies();
    host_->allreduce(h_data, count, type, op);
    to_device(d_data, h_data, n);
    wait_for_copies();
  }

  void broadcast(void* d_data, int64_t count, CommType type, int root) override {
    // Only the root's data go to the host; only the others' come back.
    const size_t n = bytes(count, comm_type_size(type));
    char* h_data = h_send_.reserve(n);
    if (rank() == root) to_host(h_data, d_data, n);
    wait_for_copies();
    host_->broadcast(h_data, count, type, root);
    if (rank() != root) to_device(d_data, h_data, n);
    wait_for_copies();
  }

  void gatherv(const void* d_send, int64_t send_count, void* d_recv,
               const std::vector<int64_t>& counts, CommType type, int root) override {
    // counts (and d_recv) matter on the root only, as for the MPI
    // communicator.
    const int64_t elem = comm_type_size(type);
    const bool is_root = rank() == root;
    int64_t recv_total = 0;
    if (is_root) {
      EMBTRAIN_ASSERT(static_cast<int>(counts.size()) == size());
      for (int64_t c : counts) recv_total += c;
    }
    char* h_send = h_send_.reserve(bytes(send_count, elem));
    char* h_recv = is_root ? h_recv_.reserve(bytes(recv_total, elem)) : nullptr;
    to_host(h_send, d_send, bytes(send_count, elem));
    wait_for_copies();
    host_->gatherv(h_send, send_count, h_recv, counts, type, root);
    if (is_root) to_device(d_recv, h_recv, bytes(recv_total, elem));
    wait_for_copies();
  }

  void barrier() override { host_->barrier(); }

  // The copies to the device that requests enqueued and no one waited for.
  void synchronize() override {
    if (copies_pending_) wait_for_copies();
  }

  // The host transport's own: what the staging copies are measured against.
  double native_alltoallv_ms(const std::vector<int64_t>& send_bytes,
                             const std::vector<int64_t>& recv_bytes, Caches caches) override {
    return host_->native_alltoallv_ms(send_bytes, recv_bytes, caches);
  }

 private:
  static size_t bytes(int64_t count, int64_t elem) {
    EMBTRAIN_ASSERT(count >= 0);
    return static_cast<size_t>(count * elem);
  }
  // The host waits for every copy enqueued so far, a request's too.
  void wait_for_copies() {
    copier_->wait();
    copies_pending_ = false;
  }
  // Empty transfers may come with null pointers: no copy at all.
  void to_host(void* h_dst, const void* d_src, size_t n) {
    if (n > 0) copier_->to_host(h_dst, d_src, n);
  }
  void to_device(void* d_dst, const void* h_src, size_t n) {
    if (n > 0) copier_->to_device(d_dst, h_src, n);
  }

  // A send and a receive buffer for one non-blocking all-to-all.
  struct Staging {
    explicit Staging(DeviceCopier& copier) : send(copier), recv(copier) {}
    StagingBuffer send, recv;
  };
  std::unique_ptr<Staging> take_staging() {
    if (free_staging_.empty()) return std::make_unique<Staging>(*copier_);
    std::unique_ptr<Staging> s = std::move(free_staging_.back());
    free_staging_.pop_back();
    return s;
  }

  // ialltoallv's request: the host transfer, then the copies of the
  // received parts to the device, enqueued once (the communicator's
  // synchronize waits for them). Must not outlive its communicator.
  class StagedRequest final : public Request {
   public:
    StagedRequest(StagedCommunicator* comm, std::unique_ptr<Staging> staging, void* d_recv,
                  std::vector<Part> recv_parts, std::vector<Part> h_recv_parts, int64_t elem)
        : comm_(*comm),
          staging_(std::move(staging)),
          d_recv_(d_recv),
          recv_parts_(std::move(recv_parts)),
          h_recv_parts_(std::move(h_recv_parts)),
          elem_(elem) {}
    // Never waited for: waits for it (Request's contract), the landed
    // parts copied to the device too, unless an exception is unwinding (a
    // step torn down by an error), when the host transfer ends (its request
    // waits as it goes) and nothing is copied. A failing copy has no one to
    // go to from here.
    ~StagedRequest() override {
      if (!done_ && std::uncaught_exceptions() == 0) {
        try {
          finish();
        } catch (...) {
        }
      }
      host.reset();
      comm_.free_staging_.push_back(std::move(staging_));
    }
    void wait() override { finish(); }
    bool progress() override {
      if (!done_ && !host->progress()) return false;
      finish();
      return true;
    }

    std::unique_ptr<Request> host;

   private:
    void finish() {
      if (done_) return;
      host->wait();
      const char* h_recv = staging_->recv.data();
      for (size_t r = 0; r < recv_parts_.size(); ++r)
        comm_.to_device(static_cast<char*>(d_recv_) + recv_parts_[r].at * elem_,
                        h_recv + h_recv_parts_[r].at * elem_,
                        bytes(recv_parts_[r].count, elem_));
      comm_.copies_pending_ = true;
      done_ = true;
    }

    StagedCommunicator& comm_;
    std::unique_ptr<Staging> staging_;
    void* d_recv_;
    std::vector<Part> recv_parts_, h_recv_parts_;
    int64_t elem_;
    bool done_ = false;
  };

  std::unique_ptr<Communicator> host_;
  std::unique_ptr<DeviceCopier> copier_;
  // Declared after copier_: destroyed first, while the copier that frees
  // them is still alive.
  StagingBuffer h_send_, h_recv_;
  std::vector<std::unique_ptr<Staging>> free_staging_;  // ialltoallv's, not in flight
  bool copies_pending_ = false;  // a request's copies to the device, not waited for
};

}  // namespace

std::unique_ptr<DeviceCopier> make_memcpy_copier() { return std::make_unique<MemcpyCopier>(); }

std::unique_ptr<Communicator> make_staged_communicator(std::unique_ptr<Communicator> host,
                                                       std::unique_ptr<DeviceCopier> copier) {
  return std::make_unique<StagedCommunicator>(std::move(host), std::move(copier));
}

}  // namespace embtrain
