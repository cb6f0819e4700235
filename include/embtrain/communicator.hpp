// Communicator: the collectives a sharded step needs, behind one interface
// so that the data can move over MPI or NCCL while control (counts, error
// agreement) stays on MPI.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace embtrain {

enum class CommType { kByte, kInt32, kInt64, kFloat32, kFloat64 };
enum class ReduceOp { kSum, kMax, kMin };
int comm_type_size(CommType type);
const char* comm_type_name(CommType type);  // "byte", "int32", ...

// Where a communicator's buffer arguments live. A host communicator (MPI,
// self) takes host pointers; a data communicator for the GPU engine
// (NCCL, MPI-staged; see nccl_communicator.hpp, staged_communicator.hpp)
// takes device pointers in alltoallv, alltoall, allreduce, broadcast and
// gatherv. Counts and other arguments are on the host either way.
enum class MemorySpace { kHost, kDevice };

// Bytes a communicator has moved, for logs and benchmarks.
struct TrafficCounters {
  int64_t bytes_sent = 0;      // to other ranks (self-copies excluded)
  int64_t bytes_received = 0;  // from other ranks
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Variable all-to-all: rank r sends send_counts[d] elements to rank d,
  // taken from `send` at the prefix sum of send_counts; it receives
  // recv_counts[s] elements from rank s, stored in `recv` in rank order.
  // Counts are in elements and may exceed 2^31.
  virtual void alltoallv(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                         const std::vector<int64_t>& recv_counts, CommType type) = 0;
  // A collective started and not yet finished: wait() finishes it (the
  // buffers it was given stay in use until then). Destroying a request
  // waits for it.
  class Request {
   public:
    virtual ~Request() = default;
    virtual void wait() = 0;
    // Lets the transfer advance without waiting for it (MPI moves a large
    // message only while the process is inside MPI calls, so a caller that
    // computes between transfers calls this now and then); true once it is
    // done. By default: done.
    virtual bool progress() { return true; }
  };
  // alltoallv that may return before the data has moved: the transfer
  // proceeds while the caller does other work (on MPI, as the process makes
  // other MPI calls) and is done when the request's wait() returns. Every
  // rank must start its non-blocking collectives in the same order. By
  // default it is the parts form below on contiguous parts (for a host
  // communicator that keeps that form's default, alltoallv, done at once).
  virtual std::unique_ptr<Request> ialltoallv(const void* send,
                                              const std::vector<int64_t>& send_counts, void* recv,
                                              const std::vector<int64_t>& recv_counts,
                                              CommType type);

  // Where one rank's part of an all-to-all lies in a buffer: `count`
  // elements from element `at`.
  struct Part {
    int64_t at = 0;
    int64_t count = 0;
    bool operator==(const Part& o) const { return at == o.at && count == o.count; }
  };
  // ialltoallv with each rank's part anywhere in the buffers (one Part per
  // rank): this rank sends send_parts[d] of `send` to rank d and receives
  // rank s's part into recv_parts[s] of `recv`, which must not overlap. Lets
  // a caller move a slice of every peer's block without copying the slices
  // together (ShardedStep's overlapped exchanges). The host default copies
  // the parts through contiguous buffers and calls alltoallv; the MPI
  // communicator posts them where they lie; a device communicator must
  // override it.
  virtual std::unique_ptr<Request> ialltoallv(const void* send, const std::vector<Part>& send_parts,
                                              void* recv, const std::vector<Part>& recv_parts,
                                              CommType type);

  // Fixed all-to-all of `count` elements per peer (alltoallv).
  void alltoall(const void* send, void* recv, int64_t count, CommType type);
  // In-place reduction over ranks, and its three spellings.
  virtual void allreduce(void* data, int64_t count, CommType type, ReduceOp op) = 0;
  void allreduce_sum(void* data, int64_t count, CommType type) {
    allreduce(data, count, type, ReduceOp::kSum);
  }
  void allreduce_max(void* data, int64_t count, CommType type) {
    allreduce(data, count, type, ReduceOp::kMax);
  }
  void allreduce_min(void* data, int64_t count, CommType type) {
    allreduce(data, count, type, ReduceOp::kMin);
  }
  virtual void broadcast(void* data, int64_t count, CommType type, int root) = 0;
  // Rank 0 receives counts[s] elements from each rank s, in rank order.
  virtual void gatherv(const void* send, int64_t send_count, void* recv,
                       const std::vector<int64_t>& counts, CommType type, int root) = 0;
  virtual void barrier() = 0;

  // How a timed collective finds the host's caches: kWarm right after an
  // untimed run of itself (its buffers in the caches: the best case);
  // kCold after each rank has written a buffer larger than its last-level
  // cache, as a training step leaves them (its gathers and updates stream
  // through the tables), which is where an exchange inside a step starts.
  enum class Caches { kWarm, kCold };

  // Milliseconds of this transport's own all-to-all (MPI_Alltoallv; NCCL's
  // grouped sends; the host transport's for a staged one) of these bytes per
  // peer, on scratch buffers, once every rank is there: the raw collective
  // that an exchange of the same shape is measured against. A collective.
  // By default this communicator's alltoallv on host buffers. `caches`
  // concerns host memory (a device transport's buffers are not in them).
  virtual double native_alltoallv_ms(const std::vector<int64_t>& send_bytes,
                                     const std::vector<int64_t>& recv_bytes,
                                     Caches caches = Caches::kWarm);

  // Where the buffers passed to the collectives above must live.
  virtual MemorySpace memory_space() const { return MemorySpace::kHost; }
  // Waits until every collective this rank has called has completed on its
  // side. Host communicators complete each call before returning, so this
  // does nothing; a device communicator may only enqueue the work on a
  // stream (see make_nccl_communicator).
  virtual void synchronize() {}

  // Gives up on the communication still enqueued, for a rank that is
  // ending on an error its peers may not share: afterwards nothing may wait
  // on it (a device communicator's transfers that no peer will complete
  // would otherwise keep every later device wait, cudaFree too, waiting).
  // The communicator is unusable after. Host communicators, whose calls
  // complete before returning, have nothing to give up.
  virtual void abandon() {}

  // Every rank passes its own error message ("" when it has none) and gets
  // back the message of the lowest failing rank, or "" when all are fine.
  // A collective: ranks agree on failure before anyone throws, so a bad
  // input on one rank ends the step on every rank without a hang.
  // Host communicators only (its buffers are on the host): on a device
  // communicator it throws SystemError; call it on the control communicator.
  std::string agree_on_error(const std::string& local_error);

  const TrafficCounters& traffic() const { return traffic_; }
  void reset_traffic() { traffic_ = TrafficCounters{}; }

 protected:
  // Where each rank's part of an alltoallv lies in the send and the receive
  // buffer, in elements (size() + 1 entries each, the last the total).
  struct Displacements {
    std::vector<int64_t> send, recv;
  };
  // Checks an alltoallv's counts (one per rank) and returns the
  // displacements; prepare_alltoallv also adds what goes to and comes from
  // other ranks to the traffic counters.
  Displacements displacements_of(const std::vector<int64_t>& send_counts,
                                 const std::vector<int64_t>& recv_counts) const;
  Displacements prepare_alltoallv(const std::vector<int64_t>& send_counts,
                                  const std::vector<int64_t>& recv_counts, CommType type);
  // A request with nothing left to do (a transfer done when it was started).
  static std::unique_ptr<Request> done_request();
  // An alltoallv's parts as ialltoallv of parts takes them: each rank's
  // part at its prefix sum, in rank order (counts checked).
  std::pair<std::vector<Part>, std::vector<Part>> contiguous_parts(
      const std::vector<int64_t>& send_counts, const std::vector<int64_t>& recv_counts) const;
  // The parts' counts (one per rank, checked), after adding what goes to
  // and comes from other ranks to the traffic counters.
  std::pair<std::vector<int64_t>, std::vector<int64_t>> prepare_parts(
      const std::vector<Part>& send_parts, const std::vector<Part>& recv_parts, CommType type);

  TrafficCounters traffic_;
};

// Milliseconds of `run` (a collective over `comm`, done when it returns)
// once every rank is there, after one untimed run and, for kCold, a pass
// that pushes the host's caches out: native_alltoallv_ms's clock. A
// collective.
double time_collective(Communicator& comm, const std::function<void()>& run,
                       Communicator::Caches caches = Communicator::Caches::kWarm);

// Runs `work` on every rank; if it throws embtrain::Error on any rank, every
// rank throws AgreedError with the lowest failing rank's message. For work
// whose inputs may fail on some ranks only (reading a file, writing output).
void run_agreed(Communicator& comm, const std::function<void()>& work);

// What every rank of a job must hold the same: named values (config keys,
// table specs, a data fingerprint), in the same order on every rank.
using AgreedValues = std::vector<std::pair<std::string, std::string>>;

// "" when every rank's `values` equal rank 0's; else, the same on every
// rank, the first name whose value differs on the lowest differing rank,
// with both values and the list of ranks that differ, as "`what` 'NAME' is
// 'A' on rank r but 'B' on rank 0 (ranks that differ from rank 0: r, ...)".
// Costs two tiny collectives when the ranks agree. A collective.
std::string find_disagreement(Communicator& comm, const AgreedValues& values,
                              const std::string& what);

// Creates the MPI communicator over MPI_COMM_WORLD (MPI must be initialised;
// see MpiSession). `max_message_elements` caps one MPI message (default
// INT32_MAX): larger transfers are split, and tests lower it to exercise
// the split path without gigabytes of memory.
std::unique_ptr<Communicator> make_mpi_communicator(int64_t max_message_elements = 0);

// The communicator of a job of one process, without MPI (rank 0 of 1).
std::unique_ptr<Communicator> make_self_communicator();

// The job's communicator: MPI_COMM_WORLD's when MPI runs, else (a process
// started alone, see MpiSession) the self communicator.
std::unique_ptr<Communicator> make_world_communicator();

// MPI_Init / MPI_Finalize for the lifetime of the object; a no-op when MPI
// is already initialised by someone else. With kWhenLaunched, also when no
// launcher started the process (no OMPI_*, PMIX_* or PMI_* environment from
// mpirun, mpiexec or srun): a job of one rank then runs without MPI at
// all (Open MPI's singleton MPI_Init forks a daemon and takes about 0.3 s,
// which every `embtrain plan`, `export` or one-process `replay` would pay).
class MpiSession {
 public:
  enum class Start { kWhenLaunched, kAlways };
  MpiSession(int* argc, char*** argv, Start start = Start::kWhenLaunched);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

 private:
  bool owns_ = false;
};

}  // namespace embtrain
