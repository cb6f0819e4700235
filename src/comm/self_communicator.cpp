// The communicator of a job of one process, without MPI: every collective
// is a copy or nothing. Lets any rank run a one-process reference of a
// distributed step by itself (tests), and tools run without MPI.
#include <cstring>

#include "embtrain/communicator.hpp"
#include "embtrain/errors.hpp"

namespace embtrain {

namespace {

class SelfCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void alltoallv(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                 const std::vector<int64_t>& recv_counts, CommType type) override {
    EMBTRAIN_ASSERT(send_counts.size() == 1 && recv_counts.size() == 1 &&
                    send_counts[0] == recv_counts[0]);
    copy(send, recv, send_counts[0], type);
  }
  void allreduce(void*, int64_t, CommType, ReduceOp) override {}
  void broadcast(void*, int64_t, CommType, int) override {}
  void gatherv(const void* send, int64_t send_count, void* recv, const std::vector<int64_t>&,
               CommType type, int) override {
    copy(send, recv, send_count, type);
  }
  void barrier() override {}

 private:
  static void copy(const void* from, void* to, int64_t count, CommType type) {
    if (count > 0) std::memcpy(to, from, static_cast<size_t>(count * comm_type_size(type)));
  }
};

}  // namespace

std::unique_ptr<Communicator> make_self_communicator() {
  return std::make_unique<SelfCommunicator>();
}

}  // namespace embtrain
