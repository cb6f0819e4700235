#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "embtrain/communicator.hpp"
#include "common/checks.hpp"

namespace embtrain {

namespace {

MPI_Datatype mpi_type(CommType type) {
  switch (type) {
    case CommType::kByte: return MPI_BYTE;
    case CommType::kInt32: return MPI_INT32_T;
    case CommType::kInt64: return MPI_INT64_T;
    case CommType::kFloat32: return MPI_FLOAT;
    case CommType::kFloat64: return MPI_DOUBLE;
  }
  return MPI_BYTE;
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(int64_t max_message_elements)
      : max_message_(max_message_elements > 0 ? max_message_elements : INT_MAX) {
    EMBTRAIN_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
    EMBTRAIN_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    EMBTRAIN_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void alltoallv(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                 const std::vector<int64_t>& recv_counts, CommType type) override {
    std::vector<MPI_Request> requests =
        post_alltoallv(send, send_counts, recv, recv_counts, type, kTag);
    EMBTRAIN_MPI_CHECK(
        MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE));
  }

  // The counts form (Communicator's): these parts, contiguous.
  using Communicator::ialltoallv;

  // The same messages as alltoallv's, posted where the parts lie, under a
  // tag of their own (a blocking alltoallv started while this one is in
  // flight never takes its messages; the parts of one pair match in the
  // order they are posted, as any message's).
  std::unique_ptr<Request> ialltoallv(const void* send, const std::vector<Part>& send_parts,
                                      void* recv, const std::vector<Part>& recv_parts,
                                      CommType type) override {
    prepare_parts(send_parts, recv_parts, type);
    return std::make_unique<MpiRequest>(
        post_parts(send, send_parts, recv, recv_parts, type, kNonBlockingTag));
  }

  void allreduce(void* data, int64_t count, CommType type, ReduceOp op) override {
    const MPI_Op mpi_op = op == ReduceOp::kSum ? MPI_SUM : op == ReduceOp::kMax ? MPI_MAX : MPI_MIN;
    for (int64_t done = 0; done < count;) {
      const int64_t piece = std::min(count - done, max_message_);
      EMBTRAIN_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE,
                                       static_cast<char*>(data) + done * comm_type_size(type),
                                       static_cast<int>(piece), mpi_type(type), mpi_op, comm_));
      done += piece;
    }
  }

  void broadcast(void* data, int64_t count, CommType type, int root) override {
    for (int64_t done = 0; done < count;) {
      const int64_t piece = std::min(count - done, max_message_);
      EMBTRAIN_MPI_CHECK(MPI_Bcast(static_cast<char*>(data) + done * comm_type_size(type),
                                   static_cast<int>(piece), mpi_type(type), root, comm_));
      done += piece;
    }
  }

  void gatherv(const void* send, int64_t send_count, void* recv,
               const std::vector<int64_t>& counts, CommType type, int root) override {
    // Point-to-point so that counts may exceed 2^31 in total.
    const int64_t elem = comm_type_size(type);
    std::vector<MPI_Request> requests;
    if (rank_ == root) {
      int64_t displ = 0;
      for (int r = 0; r < size_; ++r) {
        char* at = static_cast<char*>(recv) + displ * elem;
        if (r == rank_) {
          // An empty part may come with null buffers (an empty vector's
          // data()), which memcpy must not be given even for 0 bytes.
          if (send_count > 0) std::memcpy(at, send, static_cast<size_t>(send_count * elem));
        } else {
          post_pieces(at, counts[r], r, type, /*is_send=*/false, kTag, &requests);
        }
        displ += counts[r];
      }
    } else {
      post_pieces(const_cast<void*>(send), send_count, root, type, /*is_send=*/true, kTag,
                  &requests);
    }
    EMBTRAIN_MPI_CHECK(
        MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE));
  }

  void barrier() override { EMBTRAIN_MPI_CHECK(MPI_Barrier(comm_)); }

  // MPI_Alltoallv itself, which takes int counts and displacements:
  // beyond them, the point-to-point alltoallv above.
  double native_alltoallv_ms(const std::vector<int64_t>& send_bytes,
                             const std::vector<int64_t>& recv_bytes, Caches caches) override {
    const Displacements displ = displacements_of(send_bytes, recv_bytes);
    int fits = displ.send.back() < INT_MAX && displ.recv.back() < INT_MAX;
    EMBTRAIN_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &fits, 1, MPI_INT, MPI_MIN, comm_));
    if (!fits) return Communicator::native_alltoallv_ms(send_bytes, recv_bytes, caches);
    auto as_int = [](const std::vector<int64_t>& v) { return std::vector<int>(v.begin(), v.end()); };
    const std::vector<int> sc = as_int(send_bytes), rc = as_int(recv_bytes);
    const std::vector<int> sd = as_int(displ.send), rd = as_int(displ.recv);
    scratch_send_.assign(static_cast<size_t>(displ.send.back()) + 1, 1);
    scratch_recv_.assign(static_cast<size_t>(displ.recv.back()) + 1, 0);
    return time_collective(
        *this,
        [&] {
          EMBTRAIN_MPI_CHECK(MPI_Alltoallv(scratch_send_.data(), sc.data(), sd.data(), MPI_BYTE,
                                           scratch_recv_.data(), rc.data(), rd.data(), MPI_BYTE,
                                           comm_));
        },
        caches);
  }

 private:
  class MpiRequest final : public Request {
   public:
    explicit MpiRequest(std::vector<MPI_Request> requests) : requests_(std::move(requests)) {}
    ~MpiRequest() override {
      if (!requests_.empty())
        MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE);
    }
    void wait() override {
      std::vector<MPI_Request> pending = std::move(requests_);
      requests_.clear();
      EMBTRAIN_MPI_CHECK(
          MPI_Waitall(static_cast<int>(pending.size()), pending.data(), MPI_STATUSES_IGNORE));
    }
    bool progress() override {
      if (requests_.empty()) return true;
      int done = 0;
      EMBTRAIN_MPI_CHECK(MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &done,
                                     MPI_STATUSES_IGNORE));
      if (done) requests_.clear();
      return done != 0;
    }

   private:
    std::vector<MPI_Request> requests_;
  };

  // Copies the self part and posts the messages of an alltoallv: point to
  // point, at most max_message_ elements each, not MPI_Alltoallv, whose int
  // counts cannot carry 2^31 elements (and a choice between the two made
  // from this rank's own counts could differ between ranks and deadlock).
  // Pieces of one pair arrive in order (MPI's non-overtaking rule), so one
  // tag suffices.
  std::vector<MPI_Request> post_alltoallv(const void* send, const std::vector<int64_t>& send_counts,
                                          void* recv, const std::vector<int64_t>& recv_counts,
                                          CommType type, int tag) {
    const Displacements displ = prepare_alltoallv(send_counts, recv_counts, type);
    std::vector<Part> send_parts(size_), recv_parts(size_);
    for (int r = 0; r < size_; ++r) {
      send_parts[r] = {displ.send[r], send_counts[r]};
      recv_parts[r] = {displ.recv[r], recv_counts[r]};
    }
    return post_parts(send, send_parts, recv, recv_parts, type, tag);
  }
  // The same, with each rank's part where the Parts say (counts checked).
  std::vector<MPI_Request> post_parts(const void* send, const std::vector<Part>& send_parts,
                                      void* recv, const std::vector<Part>& recv_parts,
                                      CommType type, int tag) {
    const int64_t elem = comm_type_size(type);
    // The self part never leaves the process (buffers may be null when empty).
    const Part& self_send = send_parts[rank_];
    EMBTRAIN_ASSERT(self_send.count == recv_parts[rank_].count);
    if (self_send.count > 0)
      std::memcpy(static_cast<char*>(recv) + recv_parts[rank_].at * elem,
                  static_cast<const char*>(send) + self_send.at * elem,
                  static_cast<size_t>(self_send.count * elem));
    std::vector<MPI_Request> requests;
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      post_pieces(static_cast<char*>(recv) + recv_parts[r].at * elem, recv_parts[r].count, r,
                  type, /*is_send=*/false, tag, &requests);
      post_pieces(const_cast<char*>(static_cast<const char*>(send)) + send_parts[r].at * elem,
                  send_parts[r].count, r, type, /*is_send=*/true, tag, &requests);
    }
    return requests;
  }

  void post_pieces(void* base, int64_t count, int peer, CommType type, bool is_send, int tag,
                   std::vector<MPI_Request>* requests) {
    const int64_t elem = comm_type_size(type);
    for (int64_t done = 0; done < count;) {
      const int piece = static_cast<int>(std::min(count - done, max_message_));
      char* at = static_cast<char*>(base) + done * elem;
      requests->emplace_back();
      if (is_send)
        EMBTRAIN_MPI_CHECK(
            MPI_Isend(at, piece, mpi_type(type), peer, tag, comm_, &requests->back()));
      else
        EMBTRAIN_MPI_CHECK(
            MPI_Irecv(at, piece, mpi_type(type), peer, tag, comm_, &requests->back()));
      done += piece;
    }
  }

  static constexpr int kTag = 7301, kNonBlockingTag = 7302;
  std::vector<char> scratch_send_, scratch_recv_;  // native_alltoallv_ms's
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  int64_t max_message_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(int64_t max_message_elements) {
  return std::make_unique<MpiCommunicator>(max_message_elements);
}

std::unique_ptr<Communicator> make_world_communicator() {
  int initialized = 0;
  EMBTRAIN_MPI_CHECK(MPI_Initialized(&initialized));
  return initialized ? make_mpi_communicator() : make_self_communicator();
}

namespace {

// True when a launcher (mpirun, mpiexec, srun with PMI or PMIx) started this
// process: it left the environment MPI_Init reads to find the job's other
// processes. A process started alone has none of it.
bool started_by_mpi_launcher() {
  // Open MPI's mpirun (OMPI_*, and PMIx in Open MPI 4 and 5), MPICH's and
  // Intel MPI's Hydra (PMI_*), Slurm's srun --mpi=pmi2 / pmix.
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "PMI_FD"})
    if (std::getenv(name)) return true;
  return false;
}

}  // namespace

MpiSession::MpiSession(int* argc, char*** argv, Start start) {
  int initialized = 0;
  EMBTRAIN_MPI_CHECK(MPI_Initialized(&initialized));
  if (initialized || (start == Start::kWhenLaunched && !started_by_mpi_launcher())) return;
  int provided = 0;
  // MULTIPLE: the watchdog's thread (watchdog.hpp) exchanges heartbeats
  // while the main thread may be inside a collective.
  EMBTRAIN_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
  owns_ = true;
}

MpiSession::~MpiSession() {
  if (owns_) MPI_Finalize();
}

}  // namespace embtrain
