// The NCCL data communicator: collectives on device buffers, enqueued on a
// CUDA stream, with MPI (the control communicator) for the bootstrap and
// the barrier. See nccl_communicator.hpp for the contract.
#include "comm/nccl_communicator.hpp"

#include <cuda_runtime.h>
#include <nccl.h>
#include <unistd.h>

#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/checks.hpp"
#include "embtrain/errors.hpp"

namespace embtrain {

namespace {

ncclDataType_t nccl_type(CommType type) {
  switch (type) {
    case CommType::kByte:
      return ncclUint8;
    case CommType::kInt32:
      return ncclInt32;
    case CommType::kInt64:
      return ncclInt64;
    case CommType::kFloat32:
      return ncclFloat32;
    case CommType::kFloat64:
      return ncclFloat64;
  }
  return ncclUint8;
}

// What each rank tells the others about its GPU, to find ranks that share
// one before NCCL refuses them with a less helpful message.
struct GpuRecord {
  unsigned char uuid[16];
  int32_t device;
  char host[64];
};

// Runs `work`, turning any exception into its message ("" when none), so
// the ranks can agree on it over the control communicator.
std::string error_of(const std::function<void()>& work) {
  try {
    work();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// A CUDA stream or event of the communicator's own, destroyed with it (also
// when its constructor throws).
using Stream = std::unique_ptr<std::remove_pointer_t<cudaStream_t>, cudaError_t (*)(cudaStream_t)>;
using Event = std::unique_ptr<std::remove_pointer_t<cudaEvent_t>, cudaError_t (*)(cudaEvent_t)>;

Stream make_stream() {
  cudaStream_t s = nullptr;
  EMBTRAIN_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return Stream(s, &cudaStreamDestroy);
}

Event make_event() {
  cudaEvent_t e = nullptr;
  EMBTRAIN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return Event(e, &cudaEventDestroy);
}

class NcclCommunicator final : public Communicator {
 public:
  // The bootstrap, every step agreed over `control` so that a failure on
  // one rank ends the construction on every rank instead of a hang:
  //  1. each rank reads its GPU's UUID; the ranks exchange them (alltoall
  //     on control) and all refuse together when two ranks share a GPU;
  //  2. rank 0 calls ncclGetUniqueId and control.broadcast sends the id;
  //  3. each rank calls ncclCommInitRank (NCCL's own collective).
  NcclCommunicator(Communicator& control, void* stream)
      : control_(control),
        stream_(static_cast<cudaStream_t>(stream)),
        rank_(control.rank()),
        size_(control.size()) {
    EMBTRAIN_ASSERT(control.memory_space() == MemorySpace::kHost);
    GpuRecord mine{};
    agree(error_of([&] {
      EMBTRAIN_CUDA_CHECK(cudaGetDevice(&mine.device));
      cudaDeviceProp prop{};
      EMBTRAIN_CUDA_CHECK(cudaGetDeviceProperties(&prop, mine.device));
      std::memcpy(mine.uuid, prop.uuid.bytes, sizeof(mine.uuid));
      gethostname(mine.host, sizeof(mine.host) - 1);
    }));
    check_one_rank_per_gpu(mine);

    ncclUniqueId id{};
    agree(rank_ == 0 ? error_of([&] { EMBTRAIN_NCCL_CHECK(ncclGetUniqueId(&id)); }) : "");
    control_.broadcast(&id, static_cast<int64_t>(sizeof(id)), CommType::kByte, 0);
    // Every rank has the id before any enters ncclCommInitRank, which
    // blocks: an MPI that defers the broadcast's progress (as HCOLL can)
    // would otherwise leave a rank without it while rank 0 waits in NCCL.
    control_.barrier();
    // The side stream and its events before NCCL's init, which every rank
    // must enter, so that a rank failing here stops them all before it.
    agree(error_of([&] {
      side_ = make_stream();
      to_side_ = make_event();
      to_main_ = make_event();
    }));
    agree(error_of([&] { EMBTRAIN_NCCL_CHECK(ncclCommInitRank(&comm_, size_, id, rank_)); }));
  }

  // Destroy completes the operations still enqueued, and waits for every
  // rank to get there too: right for an orderly end. While an exception
  // unwinds, this rank may have failed alone (a cudaMalloc of its own), and
  // the others, still in the step, would never join it: abandon, which
  // waits for no one (the job ends with exit status 1 anyway). Neither
  // result has anyone to go to from a destructor.
  ~NcclCommunicator() override {
    if (std::uncaught_exceptions() > 0) abandon();
    if (comm_) ncclCommDestroy(comm_);
  }

  void abandon() override {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MemorySpace memory_space() const override { return MemorySpace::kDevice; }

  void alltoallv(const void* d_send, const std::vector<int64_t>& send_counts, void* d_recv,
                 const std::vector<int64_t>& recv_counts, CommType type) override {
    const Displacements displ = prepare_alltoallv(send_counts, recv_counts, type);
    std::vector<Part> send_parts(size_), recv_parts(size_);
    for (int r = 0; r < size_; ++r) {
      send_parts[r] = {displ.send[r], send_counts[r]};
      recv_parts[r] = {displ.recv[r], recv_counts[r]};
    }
    on_side([&] { enqueue_parts(d_send, send_parts, d_recv, recv_parts, type); });
  }

  // The counts form (Communicator's): these parts, contiguous.
  using Communicator::ialltoallv;

  // On the side stream like every transfer here, but the stream does not
  // wait for it until the request's wait(): kernels enqueued on the stream
  // meanwhile run beside the transfer. progress() asks whether it is done.
  std::unique_ptr<Request> ialltoallv(const void* d_send, const std::vector<Part>& send_parts,
                                      void* d_recv, const std::vector<Part>& recv_parts,
                                      CommType type) override {
    prepare_parts(send_parts, recv_parts, type);
    follow_stream();
    Event done = take_event();
    try {
      enqueue_parts(d_send, send_parts, d_recv, recv_parts, type);
      EMBTRAIN_CUDA_CHECK(cudaEventRecord(done.get(), side_.get()));
    } catch (...) {
      // What was enqueued stays ahead of the stream's later work.
      join_stream();
      free_events_.push_back(std::move(done));
      throw;
    }
    return std::make_unique<NcclRequest>(this, std::move(done));
  }

  void allreduce(void* d_data, int64_t count, CommType type, ReduceOp op) override {
    if (count == 0) return;
    const ncclRedOp_t nccl_op = op == ReduceOp::kSum ? ncclSum : op == ReduceOp::kMax ? ncclMax
                                                                                      : ncclMin;
    on_side([&] {
      EMBTRAIN_NCCL_CHECK(ncclAllReduce(d_data, d_data, static_cast<size_t>(count),
                                        nccl_type(type), nccl_op, comm_, side_.get()));
    });
  }

  void broadcast(void* d_data, int64_t count, CommType type, int root) override {
    if (count == 0) return;
    on_side([&] {
      EMBTRAIN_NCCL_CHECK(ncclBroadcast(d_data, d_data, static_cast<size_t>(count),
                                        nccl_type(type), root, comm_, side_.get()));
    });
  }

  void gatherv(const void* d_send, int64_t send_count, void* d_recv,
               const std::vector<int64_t>& counts, CommType type, int root) override {
    const int64_t elem = comm_type_size(type);
    if (rank_ != root) {
      on_side([&] {
        grouped([&] {
          if (send_count > 0)
            EMBTRAIN_NCCL_CHECK(ncclSend(d_send, static_cast<size_t>(send_count),
                                         nccl_type(type), root, comm_, side_.get()));
        });
      });
      return;
    }
    EMBTRAIN_ASSERT(static_cast<int>(counts.size()) == size_ && counts[root] == send_count);
    char* recv = static_cast<char*>(d_recv);
    std::vector<int64_t> displ(size_ + 1, 0);
    for (int r = 0; r < size_; ++r) displ[r + 1] = displ[r] + counts[r];
    on_side([&] {
      copy_on_side(recv + displ[root] * elem, d_send, send_count * elem);
      grouped([&] {
        for (int r = 0; r < size_; ++r)
          if (r != root && counts[r] > 0)
            EMBTRAIN_NCCL_CHECK(ncclRecv(recv + displ[r] * elem, static_cast<size_t>(counts[r]),
                                         nccl_type(type), r, comm_, side_.get()));
      });
    });
  }

  // NCCL's grouped sends and receives (this alltoallv) on device scratch
  // (`caches`, the host's, do not hold them).
  double native_alltoallv_ms(const std::vector<int64_t>& send_bytes,
                             const std::vector<int64_t>& recv_bytes, Caches) override {
    const Displacements displ = displacements_of(send_bytes, recv_bytes);
    // Freed however this ends (cudaFree's result is of no use then).
    auto scratch = [](size_t bytes) {
      void* p = nullptr;
      EMBTRAIN_CUDA_CHECK(cudaMalloc(&p, bytes));
      return std::unique_ptr<void, cudaError_t (*)(void*)>(p, &cudaFree);
    };
    const size_t send_size = static_cast<size_t>(displ.send.back()) + 1;
    const auto d_send = scratch(send_size);
    const auto d_recv = scratch(static_cast<size_t>(displ.recv.back()) + 1);
    EMBTRAIN_CUDA_CHECK(cudaMemset(d_send.get(), 1, send_size));
    return time_collective(*this, [&] {
      alltoallv(d_send.get(), send_bytes, d_recv.get(), recv_bytes, CommType::kByte);
      synchronize();
    });
  }

  // Every rank's enqueued communication is complete and every rank is here.
  void barrier() override {
    synchronize();
    control_.barrier();
  }

  // Waits for the stream and the side stream (the transfers of requests
  // not yet waited for) while watching NCCL's asynchronous error, as NCCL
  // recommends: a failed peer makes the wait end with an error instead of
  // hanging in cudaStreamSynchronize.
  // After an asynchronous error NCCL's kernels only stop once the
  // communicator is aborted (NCCL's documentation says to abort then): left
  // running, they would keep every later cudaFree and stream wait of the
  // error path waiting for good.
  void synchronize() override {
    for (cudaStream_t s : {side_.get(), stream_})
      for (;;) {
        const cudaError_t state = cudaStreamQuery(s);
        if (state == cudaSuccess) break;
        if (state != cudaErrorNotReady) EMBTRAIN_CUDA_CHECK(state);
        check_async_error();
        std::this_thread::yield();
      }
    check_async_error();
  }

 private:
  // ialltoallv's request: an event recorded on the side stream behind the
  // transfer, which wait() makes the stream wait for (the host does not).
  // Must not outlive its communicator.
  class NcclRequest final : public Request {
   public:
    NcclRequest(NcclCommunicator* comm, Event done) : comm_(*comm), done_(std::move(done)) {}
    // Never waited for: the stream waits all the same, so work enqueued on
    // it later (the buffers' reuse) stays behind the transfer.
    ~NcclRequest() override {
      if (!waited_) cudaStreamWaitEvent(comm_.stream_, done_.get(), 0);
      comm_.free_events_.push_back(std::move(done_));
    }
    void wait() override {
      if (waited_) return;
      EMBTRAIN_CUDA_CHECK(cudaStreamWaitEvent(comm_.stream_, done_.get(), 0));
      waited_ = true;
    }
    bool progress() override {
      const cudaError_t state = cudaEventQuery(done_.get());
      if (state == cudaErrorNotReady) return false;
      EMBTRAIN_CUDA_CHECK(state);
      return true;
    }

   private:
    NcclCommunicator& comm_;
    Event done_;
    bool waited_ = false;
  };

  Event take_event() {
    if (free_events_.empty()) return make_event();
    Event e = std::move(free_events_.back());
    free_events_.pop_back();
    return e;
  }

  // The side stream waits for the work enqueued on the stream so far (the
  // buffers a transfer reads are written there).
  void follow_stream() {
    EMBTRAIN_CUDA_CHECK(cudaEventRecord(to_side_.get(), stream_));
    EMBTRAIN_CUDA_CHECK(cudaStreamWaitEvent(side_.get(), to_side_.get(), 0));
  }
  // The stream waits for what the side stream has been given so far.
  void join_stream() {
    EMBTRAIN_CUDA_CHECK(cudaEventRecord(to_main_.get(), side_.get()));
    EMBTRAIN_CUDA_CHECK(cudaStreamWaitEvent(stream_, to_main_.get(), 0));
  }
  // `enqueue` on the side stream behind the stream's work, and the stream
  // behind it: what the stream runs next sees its result. Every NCCL call
  // goes to the one side stream, so they run in the order they were issued
  // (the same on every rank), the transfers of ialltoallv included.
  template <typename Enqueue>
  void on_side(Enqueue enqueue) {
    follow_stream();
    enqueue();
    join_stream();
  }

  void enqueue_parts(const void* d_send, const std::vector<Part>& send_parts, void* d_recv,
                     const std::vector<Part>& recv_parts, CommType type) {
    EMBTRAIN_ASSERT(send_parts[rank_].count == recv_parts[rank_].count);
    const int64_t elem = comm_type_size(type);
    const char* send = static_cast<const char*>(d_send);
    char* recv = static_cast<char*>(d_recv);
    // The self part is a device copy on the side stream, not a message.
    copy_on_side(recv + recv_parts[rank_].at * elem, send + send_parts[rank_].at * elem,
                 send_parts[rank_].count * elem);
    // One group: NCCL schedules all pairs together, so no order of sends
    // and receives can deadlock. NCCL counts are size_t: no 2^31 split.
    grouped([&] {
      for (int r = 0; r < size_; ++r) {
        if (r == rank_) continue;
        if (send_parts[r].count > 0)
          EMBTRAIN_NCCL_CHECK(ncclSend(send + send_parts[r].at * elem,
                                       static_cast<size_t>(send_parts[r].count), nccl_type(type),
                                       r, comm_, side_.get()));
        if (recv_parts[r].count > 0)
          EMBTRAIN_NCCL_CHECK(ncclRecv(recv + recv_parts[r].at * elem,
                                       static_cast<size_t>(recv_parts[r].count), nccl_type(type),
                                       r, comm_, side_.get()));
      }
    });
  }

  // Throws NCCL's asynchronous error, if any, once the communicator is
  // aborted (see synchronize).
  void check_async_error() {
    if (!comm_)
      throw SystemError("the NCCL communicator was aborted after an earlier error of this job");
    ncclResult_t async = ncclSuccess;
    EMBTRAIN_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
    if (async == ncclSuccess || async == ncclInProgress) return;
    abandon();
    EMBTRAIN_NCCL_CHECK(async);
  }

  // ncclGroupStart/End around `body`; the group is closed even when the
  // body throws, so the communicator stays usable for the error path.
  static void grouped(const std::function<void()>& body) {
    EMBTRAIN_NCCL_CHECK(ncclGroupStart());
    try {
      body();
    } catch (...) {
      ncclGroupEnd();
      throw;
    }
    EMBTRAIN_NCCL_CHECK(ncclGroupEnd());
  }

  void copy_on_side(void* d_dst, const void* d_src, int64_t bytes) {
    if (bytes > 0)
      EMBTRAIN_CUDA_CHECK(cudaMemcpyAsync(d_dst, d_src, static_cast<size_t>(bytes),
                                          cudaMemcpyDeviceToDevice, side_.get()));
  }

  // Throws SystemError on every rank when any rank failed (the lowest
  // failing rank's message).
  void agree(const std::string& local_error) {
    const std::string error = control_.agree_on_error(local_error);
    if (!error.empty()) throw SystemError("creating the NCCL communicator: " + error);
  }

  // The same verdict on every rank, from the same exchanged records.
  void check_one_rank_per_gpu(const GpuRecord& mine) {
    const int64_t record = static_cast<int64_t>(sizeof(GpuRecord));
    std::vector<GpuRecord> send(static_cast<size_t>(size_), mine), all(static_cast<size_t>(size_));
    control_.alltoall(send.data(), all.data(), record, CommType::kByte);
    for (int a = 0; a < size_; ++a)
      for (int b = a + 1; b < size_; ++b)
        if (std::memcmp(all[a].uuid, all[b].uuid, sizeof(all[a].uuid)) == 0)
          throw SystemError(detail::concat(
              "NCCL cannot run two ranks on one GPU: ranks ", a, " and ", b,
              " both use CUDA device ", all[a].device, " on host '", all[a].host,
              "'. Start at most one rank per GPU, or use the MPI-staged data communicator "
              "(make_staged_communicator; choose_data_communicator picks it when a node has "
              "more ranks than GPUs)"));
  }

  Communicator& control_;
  cudaStream_t stream_;  // the caller's: what its kernels run on
  int rank_, size_;
  // Every NCCL call runs here (on_side), behind the stream's work.
  Stream side_{nullptr, &cudaStreamDestroy};
  Event to_side_{nullptr, &cudaEventDestroy}, to_main_{nullptr, &cudaEventDestroy};
  std::vector<Event> free_events_;  // ialltoallv's, not in flight
  ncclComm_t comm_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& control, void* stream) {
  return std::make_unique<NcclCommunicator>(control, stream);
}

}  // namespace embtrain
