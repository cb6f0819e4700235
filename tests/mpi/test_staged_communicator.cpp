// The staged communicator under mpiexec, with a deferring memcpy copier
// standing in for the GPU: every operation against the plain MPI communicator on the
// same random inputs (device_comm_checks.hpp), what it copies to and from
// the "device", and that its staging buffers stop allocating once the sizes
// stop growing. The staging logic is all there is to it besides the copies,
// so this covers it without a GPU (tests/cuda repeat a pass with CUDA).
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <numeric>
#include <utility>
#include <vector>

#include "device_comm_checks.hpp"
#include "embtrain/communicator.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/random.hpp"
#include "comm/staged_communicator.hpp"
#include "mpi_test_util.hpp"

namespace {

using embtrain::CommType;
using embtrain::Communicator;
using embtrain::DeviceCopier;
using embtrain::MemorySpace;
using embtrain::random_bits;
using embtrain_comm_check::HostMemory;
using embtrain_mpi_test::MpiTest;
using embtrain_mpi_test::seed_trace;
using embtrain_mpi_test::test_seed;
using embtrain_mpi_test::world;

// What the staged communicator asked of its copier; outlives the copier.
struct CopyStats {
  int64_t allocations = 0, frees = 0;
  int64_t bytes_to_host = 0, bytes_to_device = 0;
  int64_t waits = 0;
  void reset_bytes() { bytes_to_host = bytes_to_device = 0; }
};

// A copier with a GPU's timing on host memory, counting: copies are queued
// and run, in order, only when wait() is called (as a stream's run when the
// host synchronizes), reading their source then. So data staged to the
// host before a wait, or a staging buffer written before the copies out of
// it ran, give wrong results here, as they may on a GPU.
class DeferringCopier final : public DeviceCopier {
 public:
  explicit DeferringCopier(std::shared_ptr<CopyStats> stats)
      : inner_(embtrain::make_memcpy_copier()), stats_(std::move(stats)) {}
  ~DeferringCopier() override { EXPECT_TRUE(queue_.empty()) << "copies never waited for"; }
  void to_host(void* h, const void* d, size_t n) override {
    stats_->bytes_to_host += static_cast<int64_t>(n);
    queue_.push_back([=] { inner_->to_host(h, d, n); });
  }
  void to_device(void* d, const void* h, size_t n) override {
    stats_->bytes_to_device += static_cast<int64_t>(n);
    queue_.push_back([=] { inner_->to_device(d, h, n); });
  }
  void wait() override {
    ++stats_->waits;
    for (auto& copy : queue_) copy();
    queue_.clear();
  }
  void* alloc_pinned(size_t n) override {
    ++stats_->allocations;
    return inner_->alloc_pinned(n);
  }
  void free_pinned(void* h) noexcept override {
    ++stats_->frees;
    inner_->free_pinned(h);
  }

 private:
  std::unique_ptr<DeviceCopier> inner_;
  std::shared_ptr<CopyStats> stats_;
  std::vector<std::function<void()>> queue_;
};

// A staged communicator over its own MPI communicator (max_message > 0:
// messages split into pieces of that many elements).
std::unique_ptr<Communicator> make_staged(const std::shared_ptr<CopyStats>& stats,
                                          int64_t max_message = 0) {
  return embtrain::make_staged_communicator(embtrain::make_mpi_communicator(max_message),
                                            std::make_unique<DeferringCopier>(stats));
}

class StagedCommunicatorTest : public MpiTest {};

TEST_F(StagedCommunicatorTest, DeviceMemorySpaceAndHostOnlyAgreement) {
  auto stats = std::make_shared<CopyStats>();
  auto staged = make_staged(stats);
  EXPECT_EQ(world().memory_space(), MemorySpace::kHost);
  EXPECT_EQ(staged->memory_space(), MemorySpace::kDevice);
  EXPECT_EQ(staged->rank(), world().rank());
  EXPECT_EQ(staged->size(), world().size());
  staged->synchronize();  // nothing pending: returns at once
  staged->barrier();
  // Its flag would be a host variable passed as a device pointer: refused
  // before any collective starts, so every rank throws alone safely.
  EXPECT_THROW(staged->agree_on_error(""), embtrain::SystemError);
}

TEST_F(StagedCommunicatorTest, EveryOperationMatchesMpi) {
  const uint64_t seed = test_seed(101);
  SCOPED_TRACE(seed_trace(seed));
  auto stats = std::make_shared<CopyStats>();
  auto staged = make_staged(stats);
  HostMemory memory;
  embtrain_comm_check::check_every_operation(*staged, world(), memory, seed, 300);
}

TEST_F(StagedCommunicatorTest, EveryOperationMatchesMpiWithSplitMessages) {
  // The host communicator splits messages into pieces of 7 elements.
  const uint64_t seed = test_seed(102);
  SCOPED_TRACE(seed_trace(seed));
  auto stats = std::make_shared<CopyStats>();
  auto staged = make_staged(stats, 7);
  HostMemory memory;
  embtrain_comm_check::check_every_operation(*staged, world(), memory, seed, 40);
}

TEST_F(StagedCommunicatorTest, CopiesOnlyWhatEachRankNeeds) {
  const uint64_t seed = test_seed(103);
  SCOPED_TRACE(seed_trace(seed));
  auto stats = std::make_shared<CopyStats>();
  auto staged = make_staged(stats);
  const int P = staged->size(), me = staged->rank();
  HostMemory memory;

  // alltoallv: the send buffer to the host, the receive buffer back.
  const auto c = embtrain_comm_check::random_counts(seed, P, 100);
  int64_t send_total = 0, recv_total = 0;
  for (int r = 0; r < P; ++r) send_total += c[me][r], recv_total += c[r][me];
  stats->reset_bytes();
  embtrain_comm_check::check_alltoallv(*staged, world(), memory, CommType::kInt64, c, seed);
  EXPECT_EQ(stats->bytes_to_host, 8 * send_total);
  EXPECT_EQ(stats->bytes_to_device, 8 * recv_total);

  // allreduce in place: the buffer there and back.
  stats->reset_bytes();
  embtrain_comm_check::check_allreduce(*staged, world(), memory, CommType::kFloat32,
                                       embtrain_comm_check::Op::kSum, 50, seed);
  EXPECT_EQ(stats->bytes_to_host, 200);
  EXPECT_EQ(stats->bytes_to_device, 200);

  // broadcast: only the root copies to the host, only the others back.
  for (int root = 0; root < P; ++root) {
    stats->reset_bytes();
    embtrain_comm_check::check_broadcast(*staged, world(), memory, CommType::kInt32, 10, root,
                                         seed);
    EXPECT_EQ(stats->bytes_to_host, me == root ? 40 : 0) << "root " << root;
    EXPECT_EQ(stats->bytes_to_device, me == root ? 0 : 40) << "root " << root;
  }

  // gatherv: every rank's part to the host, only the root's result back.
  const auto counts = embtrain_comm_check::random_gather_counts(seed, P, 30);
  int64_t total = 0;
  for (int64_t n : counts) total += n;
  for (int root = 0; root < P; ++root) {
    stats->reset_bytes();
    embtrain_comm_check::check_gatherv(*staged, world(), memory, CommType::kFloat64, counts, root,
                                       seed);
    EXPECT_EQ(stats->bytes_to_host, 8 * counts[me]);
    EXPECT_EQ(stats->bytes_to_device, me == root ? 8 * total : 0) << "root " << root;
  }
}

TEST_F(StagedCommunicatorTest, ZeroCountsWithNullPointersCopyNothing) {
  auto stats = std::make_shared<CopyStats>();
  auto staged = make_staged(stats);
  const std::vector<int64_t> zeros(static_cast<size_t>(staged->size()), 0);
  staged->alltoallv(nullptr, zeros, nullptr, zeros, CommType::kFloat32);
  staged->alltoall(nullptr, nullptr, 0, CommType::kInt64);
  staged->allreduce_sum(nullptr, 0, CommType::kFloat32);
  staged->broadcast(nullptr, 0, CommType::kInt32, 0);
  staged->gatherv(nullptr, 0, nullptr, zeros, CommType::kByte, 0);
  EXPECT_EQ(stats->bytes_to_host, 0);
  EXPECT_EQ(stats->bytes_to_device, 0);
  EXPECT_EQ(staged->traffic().bytes_sent, 0);
  EXPECT_EQ(staged->traffic().bytes_received, 0);
}

TEST_F(StagedCommunicatorTest, TrafficMatchesMpi) {
  const uint64_t seed = test_seed(104);
  SCOPED_TRACE(seed_trace(seed));
  auto stats = std::make_shared<CopyStats>();
  auto staged = make_staged(stats);
  auto mpi = embtrain::make_mpi_communicator();
  HostMemory memory;
  for (int round = 0; round < 4; ++round) {
    const uint64_t s = random_bits(seed, 104, static_cast<uint64_t>(round));
    const auto c = embtrain_comm_check::random_counts(s, staged->size(), 200);
    embtrain_comm_check::check_alltoallv(*staged, *mpi, memory, CommType::kFloat32, c, s);
    embtrain_comm_check::check_alltoall(*staged, *mpi, memory, CommType::kInt32, round, s);
  }
  EXPECT_EQ(staged->traffic().bytes_sent, mpi->traffic().bytes_sent);
  EXPECT_EQ(staged->traffic().bytes_received, mpi->traffic().bytes_received);
  staged->reset_traffic();
  EXPECT_EQ(staged->traffic().bytes_sent, 0);
}

TEST_F(StagedCommunicatorTest, StagingBuffersStopGrowing) {
  // Growing sizes reallocate (each time at least doubling); then rounds of
  // every operation at or below the largest size allocate nothing, and
  // destruction frees every buffer.
  const uint64_t seed = test_seed(105);
  SCOPED_TRACE(seed_trace(seed));
  auto stats = std::make_shared<CopyStats>();
  {
    auto staged = make_staged(stats);
    const int P = staged->size();
    HostMemory memory;
    // Growth: up to 20000 elements per pair, exercising reallocation.
    for (int64_t m : {int64_t{4}, int64_t{64}, int64_t{1000}, int64_t{20000}}) {
      // Every pair at m, so the last step reaches the largest size below.
      const std::vector<std::vector<int64_t>> c(P, std::vector<int64_t>(P, m));
      embtrain_comm_check::check_alltoallv(*staged, world(), memory, CommType::kFloat64, c, seed);
      embtrain_comm_check::check_gatherv(*staged, world(), memory, CommType::kFloat64,
                                         std::vector<int64_t>(P, m), 0, seed);
      embtrain_comm_check::check_allreduce(*staged, world(), memory, CommType::kFloat64,
                                           embtrain_comm_check::Op::kMax, m * P, seed);
    }
    const int64_t grown = stats->allocations;
    EXPECT_GE(grown, 2);   // one send and one receive buffer at least
    EXPECT_LE(grown, 16);  // at most a few reallocations per buffer
    // Steady state: the same and smaller sizes, every operation.
    for (int round = 0; round < 6; ++round) {
      const uint64_t s = random_bits(seed, 2, static_cast<uint64_t>(round));
      embtrain_comm_check::check_alltoallv(*staged, world(), memory, CommType::kFloat64,
                                           embtrain_comm_check::random_counts(s, P, 20000), s);
      embtrain_comm_check::check_alltoall(*staged, world(), memory, CommType::kFloat32, 5000, s);
      embtrain_comm_check::check_broadcast(*staged, world(), memory, CommType::kFloat64, 20000 * P,
                                           round % P, s);
      embtrain_comm_check::check_gatherv(*staged, world(), memory, CommType::kFloat64,
                                         embtrain_comm_check::random_gather_counts(s, P, 20000),
                                         round % P, s);
      embtrain_comm_check::check_allreduce(*staged, world(), memory, CommType::kFloat64,
                                           embtrain_comm_check::Op::kSum, 20000 * P, s);
    }
    EXPECT_EQ(stats->allocations, grown) << "steady-state calls reallocated staging buffers";
  }
  EXPECT_EQ(stats->frees, stats->allocations) << "staging buffers leaked";
}

TEST_F(StagedCommunicatorTest, StagingOfRequestsInFlightIsPooled) {
  // ialltoallv's requests in flight each hold a pair of staging buffers,
  // taken from a pool and given back: four in flight at the largest size
  // allocate a few pairs, and then rounds at that size or below (random
  // counts, several in flight, driven by progress() and wait()) allocate
  // nothing; destruction frees every buffer.
  const uint64_t seed = test_seed(106);
  SCOPED_TRACE(seed_trace(seed));
  auto stats = std::make_shared<CopyStats>();
  {
    auto staged = make_staged(stats);
    HostMemory memory;
    embtrain_comm_check::check_parts_in_flight(*staged, world(), memory, CommType::kFloat32, 4,
                                               5000, seed, /*full=*/true);
    const int64_t grown = stats->allocations;
    EXPECT_GE(grown, 8);  // a send and a receive buffer per request in flight
    EXPECT_LE(grown, 10);  // and the blocking calls' pair, if any
    for (int round = 0; round < 4; ++round)
      embtrain_comm_check::check_parts_in_flight(
          *staged, world(), memory, CommType::kFloat32, 1 + round % 4, 5000,
          random_bits(seed, 3, static_cast<uint64_t>(round)));
    EXPECT_EQ(stats->allocations, grown) << "requests in flight reallocated staging buffers";
  }
  EXPECT_EQ(stats->frees, stats->allocations) << "staging buffers leaked";
}

// Element i of what rank `from` sends rank `to` in round `round`.
float sent_value(uint64_t seed, int round, int from, int to, int64_t i) {
  const uint64_t key = (static_cast<uint64_t>(round) << 48) ^ (static_cast<uint64_t>(from) << 40) ^
                       (static_cast<uint64_t>(to) << 32) ^ static_cast<uint64_t>(i);
  return static_cast<float>(random_bits(seed, 7, key) % 100000) - 50000.f;
}

TEST_F(StagedCommunicatorTest, RequestsWaitOnceForTheirPartsAndLeaveTheCopiesBackEnqueued) {
  // An ialltoallv waits once for the copies of all its parts to the host;
  // its received parts' copies to the device are enqueued when it ends,
  // not waited for (the host goes on; synchronize() waits). The next
  // request on the same staging pair lets MPI write it only after its own
  // wait, which runs those copies first; a pair that must grow waits for
  // them before it frees its buffers. Two rounds of two requests, the
  // second of each on the first's pair while its copies back are queued:
  // in round 0 it is smaller (no growth), in round 1 larger (growth).
  const uint64_t seed = test_seed(107);
  SCOPED_TRACE(seed_trace(seed));
  auto stats = std::make_shared<CopyStats>();
  auto staged = make_staged(stats);
  const int P = staged->size(), me = staged->rank();
  // Elements per pair: 300-599 (round 0, first), 0-299 (round 0 second,
  // round 1 first), 600-899 (round 1 second, beyond every earlier size).
  auto count = [&](int from, int to, int round, int j) {
    const int64_t base = round == 0 ? (j == 0 ? 300 : 0) : (j == 0 ? 0 : 600);
    return base + static_cast<int64_t>(
                      random_bits(seed, 8, static_cast<uint64_t>(round * 128 + j * 64 + from * 8 + to)) %
                      300);
  };
  for (int round = 0; round < 2; ++round) {
    std::vector<std::vector<float>> sent(2), received(2);
    std::vector<std::vector<int64_t>> send_counts(2), recv_counts(2);
    for (int j = 0; j < 2; ++j) {
      for (int r = 0; r < P; ++r) {
        send_counts[j].push_back(count(me, r, round, j));
        recv_counts[j].push_back(count(r, me, round, j));
        for (int64_t i = 0; i < send_counts[j].back(); ++i)
          sent[j].push_back(sent_value(seed, 2 * round + j, me, r, i));
      }
      received[j].assign(static_cast<size_t>(std::accumulate(recv_counts[j].begin(),
                                                             recv_counts[j].end(), int64_t{0})),
                         -1.f);
    }
    const int64_t waits = stats->waits;
    auto first = staged->ialltoallv(sent[0].data(), send_counts[0], received[0].data(),
                                    recv_counts[0], CommType::kFloat32);
    EXPECT_EQ(stats->waits, waits + 1) << "one wait for the parts going out";
    first->wait();
    first.reset();  // its pair back in the pool, its copies to the device queued
    EXPECT_EQ(stats->waits, waits + 1) << "the host waited for the copies back";
    auto second = staged->ialltoallv(sent[1].data(), send_counts[1], received[1].data(),
                                     recv_counts[1], CommType::kFloat32);
    const int growth = round == 1 ? 1 : 0;
    EXPECT_EQ(stats->waits, waits + 2 + growth) << "round " << round;
    second->wait();
    second.reset();
    staged->synchronize();
    EXPECT_EQ(stats->waits, waits + 3 + growth);
    for (int j = 0; j < 2; ++j) {
      int64_t at = 0;
      for (int r = 0; r < P; ++r)
        for (int64_t i = 0; i < recv_counts[j][r]; ++i, ++at)
          ASSERT_EQ(received[j][at], sent_value(seed, 2 * round + j, r, me, i))
              << "request " << j << " of round " << round << ", from rank " << r << ", element " << i;
    }
  }
}

}  // namespace
