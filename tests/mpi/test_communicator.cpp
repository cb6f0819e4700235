// The MPI communicator under mpiexec. Data are made from (seed, source rank,
// destination rank, element index), as nccl-tests' verifiable data are, so
// every rank computes what it must receive and checks it exactly, with no
// gather. Per-pair counts come from the seed too, so every rank knows the
// whole count matrix. Each collective runs on the default communicator and
// on one that splits messages into pieces of a few elements, so the
// large-message path is covered without gigabytes of memory.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "device_comm_checks.hpp"
#include "embtrain/communicator.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/random.hpp"
#include "mpi_test_util.hpp"

namespace {

using embtrain::CommType;
using embtrain::Communicator;
using embtrain::random_bits;
using embtrain_mpi_test::MpiTest;
using embtrain_mpi_test::seed_trace;
using embtrain_mpi_test::test_seed;
using embtrain_mpi_test::world;

const CommType kAllTypes[] = {CommType::kByte, CommType::kInt32, CommType::kInt64,
                              CommType::kFloat32, CommType::kFloat64};
const CommType kArithmeticTypes[] = {CommType::kInt32, CommType::kInt64, CommType::kFloat32,
                                     CommType::kFloat64};

// Element i of a buffer of `type`, written from 64 random bits. Floats get
// exactly representable finite values of both signs, so byte comparison
// is exact and no NaN pattern can sneak through.
void put_value(CommType type, void* base, int64_t i, uint64_t bits) {
  switch (type) {
    case CommType::kByte:
      static_cast<uint8_t*>(base)[i] = static_cast<uint8_t>(bits);
      break;
    case CommType::kInt32:
      static_cast<int32_t*>(base)[i] = static_cast<int32_t>(bits >> 32);
      break;
    case CommType::kInt64:
      static_cast<int64_t*>(base)[i] = static_cast<int64_t>(bits);
      break;
    case CommType::kFloat32:
      static_cast<float*>(base)[i] =
          static_cast<float>(static_cast<int64_t>(bits >> 40) - (int64_t{1} << 23)) * 0x1p-10f;
      break;
    case CommType::kFloat64:
      static_cast<double*>(base)[i] =
          static_cast<double>(static_cast<int64_t>(bits >> 11) - (int64_t{1} << 52)) * 0x1p-20;
      break;
  }
}

// The bits of element i that `src` sends to `dst` in round `round`.
uint64_t pair_bits(uint64_t seed, int src, int dst, int64_t i) {
  return random_bits(seed, (static_cast<uint64_t>(src) << 32) | static_cast<uint32_t>(dst),
                     static_cast<uint64_t>(i));
}

// A buffer of n elements of `type` plus a guard tail, filled with a pattern
// that no real element uses by chance in every byte.
struct Buffer {
  Buffer(CommType type, int64_t n, int64_t guard = 16)
      : type(type),
        elem(embtrain::comm_type_size(type)),
        n(n),
        guard(guard),
        bytes(static_cast<size_t>((n + guard) * elem), kFill) {}
  void* data() { return bytes.data(); }
  char* at(int64_t i) { return bytes.data() + i * elem; }
  bool guard_intact() const {
    return std::all_of(bytes.begin() + n * elem, bytes.end(), [](char c) { return c == kFill; });
  }

  static constexpr char kFill = static_cast<char>(0xA5);
  CommType type;
  int64_t elem, n, guard;
  std::vector<char> bytes;
};

// Compares `count` received elements at `got` with what `src` sends to
// `dst`; reports the first mismatch by source and index.
::testing::AssertionResult check_pair(CommType type, const char* got, uint64_t seed, int src,
                                      int dst, int64_t count, int64_t first_index = 0) {
  const int64_t elem = embtrain::comm_type_size(type);
  std::vector<char> want(static_cast<size_t>(elem));
  for (int64_t i = 0; i < count; ++i) {
    put_value(type, want.data(), 0, pair_bits(seed, src, dst, first_index + i));
    if (std::memcmp(got + i * elem, want.data(), static_cast<size_t>(elem)) != 0)
      return ::testing::AssertionFailure()
             << embtrain::comm_type_name(type) << " element " << i << " of " << count
             << " from rank " << src << " to rank " << dst << " is wrong";
  }
  return ::testing::AssertionSuccess();
}

// The count matrix of one round: counts[s][d] elements from s to d, zero
// with probability 1/4 (self pairs included), else in [1, max_count].
std::vector<std::vector<int64_t>> random_counts(uint64_t seed, int P, int64_t max_count) {
  std::vector<std::vector<int64_t>> c(P, std::vector<int64_t>(P));
  for (int s = 0; s < P; ++s)
    for (int d = 0; d < P; ++d) {
      const uint64_t bits = random_bits(seed, 0xc0c0, static_cast<uint64_t>(s * P + d));
      c[s][d] = (bits & 3) == 0 ? 0 : 1 + static_cast<int64_t>((bits >> 8) % max_count);
    }
  return c;
}

// One alltoallv round with the count matrix `c`, verified on this rank.
void alltoallv_round(Communicator& comm, CommType type, uint64_t seed,
                     const std::vector<std::vector<int64_t>>& c) {
  const int P = comm.size(), me = comm.rank();
  std::vector<int64_t> send_counts(P), recv_counts(P);
  int64_t send_total = 0, recv_total = 0;
  for (int r = 0; r < P; ++r) {
    send_counts[r] = c[me][r];
    recv_counts[r] = c[r][me];
    send_total += send_counts[r];
    recv_total += recv_counts[r];
  }
  Buffer send(type, send_total), recv(type, recv_total);
  for (int d = 0, at = 0; d < P; at += static_cast<int>(send_counts[d]), ++d)
    for (int64_t i = 0; i < send_counts[d]; ++i)
      put_value(type, send.data(), at + i, pair_bits(seed, me, d, i));
  const std::vector<char> send_copy = send.bytes;

  comm.alltoallv(send.data(), send_counts, recv.data(), recv_counts, type);

  EXPECT_EQ(send.bytes, send_copy) << "alltoallv changed its send buffer";
  EXPECT_TRUE(recv.guard_intact()) << "alltoallv wrote past the receive buffer";
  int64_t at = 0;
  for (int s = 0; s < P; ++s) {
    EXPECT_TRUE(check_pair(type, recv.at(at), seed, s, me, recv_counts[s]))
        << "rank " << me << " receiving " << embtrain::comm_type_name(type);
    at += recv_counts[s];
  }
}

std::string matrix_string(const std::vector<std::vector<int64_t>>& c) {
  std::ostringstream os;
  os << "counts[src][dst] =";
  for (const auto& row : c) {
    os << " [";
    for (size_t d = 0; d < row.size(); ++d) os << (d ? " " : "") << row[d];
    os << "]";
  }
  return os.str();
}

// Agreed on every rank: stop a test after a failed round, all ranks together
// (a rank leaving a loop alone would leave the others in a collective).
bool keep_going() { return embtrain_mpi_test::all_ranks(!::testing::Test::HasFailure()); }

class CommunicatorTest : public MpiTest {};

TEST_F(CommunicatorTest, RankAndSize) {
  Communicator& comm = world();
  EXPECT_GE(comm.size(), 1);
  EXPECT_GE(comm.rank(), 0);
  EXPECT_LT(comm.rank(), comm.size());
  // Ranks are distinct and cover [0, P): their sum and their squares' sum.
  int64_t sums[2] = {comm.rank(), int64_t{comm.rank()} * comm.rank()};
  comm.allreduce_sum(sums, 2, CommType::kInt64);
  const int64_t P = comm.size();
  EXPECT_EQ(sums[0], P * (P - 1) / 2);
  EXPECT_EQ(sums[1], (P - 1) * P * (2 * P - 1) / 6);
}

TEST_F(CommunicatorTest, AlltoallvRandomCountsEveryType) {
  const uint64_t seed = test_seed(1);
  SCOPED_TRACE(seed_trace(seed));
  Communicator& comm = world();
  for (int round = 0; round < 12; ++round)
    for (CommType type : kAllTypes) {
      const uint64_t round_seed = random_bits(seed, 1, static_cast<uint64_t>(round));
      const auto c = random_counts(round_seed, comm.size(), round < 6 ? 5 : 300);
      SCOPED_TRACE(matrix_string(c));
      alltoallv_round(comm, type, round_seed, c);
      if (!keep_going()) return;
    }
}

TEST_F(CommunicatorTest, AlltoallvSplitIntoSmallMessages) {
  // Messages of at most 7 elements: every transfer above that goes in
  // pieces (AlltoallvMixedPaths covers ranks whose totals differ in size).
  const uint64_t seed = test_seed(2);
  SCOPED_TRACE(seed_trace(seed));
  auto comm = embtrain::make_mpi_communicator(7);
  const int P = comm->size();
  for (int round = 0; round < 10; ++round)
    for (CommType type : kAllTypes) {
      const uint64_t round_seed = random_bits(seed, 2, static_cast<uint64_t>(round));
      auto c = random_counts(round_seed, P, 40);
      // Every rank sends at least 8 elements to itself: its totals exceed 7.
      for (int r = 0; r < P; ++r) c[r][r] = std::max<int64_t>(c[r][r], 8);
      SCOPED_TRACE(matrix_string(c));
      alltoallv_round(*comm, type, round_seed, c);
      if (!keep_going()) return;
    }
}

TEST_F(CommunicatorTest, AlltoallvSmallTotalsWithSplitCommunicator) {
  // Every rank's totals within 7 elements: all ranks take the one-call path
  // of the splitting communicator.
  const uint64_t seed = test_seed(3);
  SCOPED_TRACE(seed_trace(seed));
  auto comm = embtrain::make_mpi_communicator(7);
  const int P = comm->size();
  for (int round = 0; round < 6; ++round)
    for (CommType type : kAllTypes) {
      const uint64_t round_seed = random_bits(seed, 3, static_cast<uint64_t>(round));
      std::vector<std::vector<int64_t>> c(P, std::vector<int64_t>(P, 0));
      // One element from each s to (s + k) % P for a random shift k, so
      // each rank sends one and receives one.
      const int k = static_cast<int>(round_seed % static_cast<uint64_t>(P));
      for (int s = 0; s < P; ++s) c[s][(s + k) % P] = 1 + static_cast<int64_t>(round % 3);
      SCOPED_TRACE(matrix_string(c));
      alltoallv_round(*comm, type, round_seed, c);
      if (!keep_going()) return;
    }
}

TEST_F(CommunicatorTest, AlltoallvLargeCountsSplit) {
  // Tens of thousands of elements per pair through pieces of 4099.
  const uint64_t seed = test_seed(4);
  SCOPED_TRACE(seed_trace(seed));
  auto comm = embtrain::make_mpi_communicator(4099);
  const int P = comm->size();
  for (CommType type : {CommType::kByte, CommType::kFloat64}) {
    auto c = random_counts(seed, P, 30000);
    for (int r = 0; r < P; ++r) c[r][r] = std::max<int64_t>(c[r][r], 5000);
    SCOPED_TRACE(matrix_string(c));
    alltoallv_round(*comm, type, seed, c);
  }
}

TEST_F(CommunicatorTest, AlltoallvAllZeroCounts) {
  // Nothing to move: null buffers are fine (the engine passes empty
  // vectors' data()).
  Communicator& comm = world();
  const std::vector<int64_t> zeros(static_cast<size_t>(comm.size()), 0);
  comm.reset_traffic();
  comm.alltoallv(nullptr, zeros, nullptr, zeros, CommType::kFloat32);
  auto split = embtrain::make_mpi_communicator(7);
  split->alltoallv(nullptr, zeros, nullptr, zeros, CommType::kInt64);
  EXPECT_EQ(comm.traffic().bytes_sent, 0);
  EXPECT_EQ(comm.traffic().bytes_received, 0);
}

TEST_F(CommunicatorTest, AlltoallEveryType) {
  const uint64_t seed = test_seed(5);
  SCOPED_TRACE(seed_trace(seed));
  auto split = embtrain::make_mpi_communicator(7);
  for (Communicator* comm : {&world(), split.get()}) {
    const int P = comm->size(), me = comm->rank();
    for (int64_t count : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{17}})
      for (CommType type : kAllTypes) {
        SCOPED_TRACE(std::string(embtrain::comm_type_name(type)) + ", count " +
                     std::to_string(count));
        const uint64_t s = random_bits(seed, 5, static_cast<uint64_t>(count));
        Buffer send(type, count * P), recv(type, count * P);
        for (int d = 0; d < P; ++d)
          for (int64_t i = 0; i < count; ++i)
            put_value(type, send.data(), d * count + i, pair_bits(s, me, d, i));
        comm->alltoall(send.data(), recv.data(), count, type);
        EXPECT_TRUE(recv.guard_intact());
        for (int src = 0; src < P; ++src)
          EXPECT_TRUE(check_pair(type, recv.at(src * count), s, src, me, count));
      }
  }
}

// Reductions: each rank contributes value(seed, rank, i); every rank
// computes the expected result from all ranks' contributions. Sums use
// small integers (exact in float) so the order of addition cannot matter.
template <typename T>
T contribution(uint64_t seed, int rank, int64_t i, bool small) {
  const uint64_t bits = random_bits(seed, static_cast<uint64_t>(rank), static_cast<uint64_t>(i));
  if (small) return static_cast<T>(static_cast<int64_t>(bits % 2001) - 1000);
  T v;
  put_value(std::is_same<T, float>::value     ? CommType::kFloat32
            : std::is_same<T, double>::value  ? CommType::kFloat64
            : std::is_same<T, int32_t>::value ? CommType::kInt32
                                              : CommType::kInt64,
            &v, 0, bits);
  return v;
}

enum class Op { kSum, kMax, kMin };

template <typename T>
void check_allreduce(Communicator& comm, CommType type, Op op, int64_t count, uint64_t seed) {
  const int P = comm.size(), me = comm.rank();
  const bool small = op == Op::kSum;
  std::vector<T> data(static_cast<size_t>(count)), want(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    data[i] = contribution<T>(seed, me, i, small);
    T acc = contribution<T>(seed, 0, i, small);
    for (int r = 1; r < P; ++r) {
      const T v = contribution<T>(seed, r, i, small);
      acc = op == Op::kSum   ? static_cast<T>(acc + v)
            : op == Op::kMax ? std::max(acc, v)
                             : std::min(acc, v);
    }
    want[i] = acc;
  }
  switch (op) {
    case Op::kSum:
      comm.allreduce_sum(data.data(), count, type);
      break;
    case Op::kMax:
      comm.allreduce_max(data.data(), count, type);
      break;
    case Op::kMin:
      comm.allreduce_min(data.data(), count, type);
      break;
  }
  int64_t wrong = 0, first = -1;
  for (int64_t i = 0; i < count; ++i)
    if (data[i] != want[i] && wrong++ == 0) first = i;
  EXPECT_EQ(wrong, 0) << embtrain::comm_type_name(type) << " op " << static_cast<int>(op)
                      << ", count " << count << ": first wrong element " << first;
}

TEST_F(CommunicatorTest, AllreduceSumMaxMin) {
  const uint64_t seed = test_seed(6);
  SCOPED_TRACE(seed_trace(seed));
  auto split = embtrain::make_mpi_communicator(7);
  for (Communicator* comm : {&world(), split.get()})
    for (Op op : {Op::kSum, Op::kMax, Op::kMin})
      for (int64_t count : {int64_t{1}, int64_t{7}, int64_t{8}, int64_t{50}, int64_t{1000}})
        for (CommType type : kArithmeticTypes) {
          const uint64_t s = random_bits(seed, static_cast<uint64_t>(op), count);
          switch (type) {
            case CommType::kInt32:
              check_allreduce<int32_t>(*comm, type, op, count, s);
              break;
            case CommType::kInt64:
              check_allreduce<int64_t>(*comm, type, op, count, s);
              break;
            case CommType::kFloat32:
              check_allreduce<float>(*comm, type, op, count, s);
              break;
            case CommType::kFloat64:
              check_allreduce<double>(*comm, type, op, count, s);
              break;
            case CommType::kByte:
              break;
          }
        }
}

TEST_F(CommunicatorTest, BroadcastFromEveryRoot) {
  const uint64_t seed = test_seed(7);
  SCOPED_TRACE(seed_trace(seed));
  auto split = embtrain::make_mpi_communicator(7);
  for (Communicator* comm : {&world(), split.get()}) {
    const int P = comm->size(), me = comm->rank();
    for (int root = 0; root < P; ++root)
      for (int64_t count : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{8}, int64_t{333}})
        for (CommType type : kAllTypes) {
          SCOPED_TRACE("root " + std::to_string(root) + ", " + embtrain::comm_type_name(type) +
                       ", count " + std::to_string(count));
          Buffer buf(type, count);
          // Only the root's data are set; the others hold the fill pattern.
          if (me == root)
            for (int64_t i = 0; i < count; ++i)
              put_value(type, buf.data(), i, pair_bits(seed, root, -1, i));
          comm->broadcast(buf.data(), count, type, root);
          EXPECT_TRUE(buf.guard_intact());
          EXPECT_TRUE(check_pair(type, buf.at(0), seed, root, -1, count));
        }
  }
}

TEST_F(CommunicatorTest, GathervUnevenCountsEveryRoot) {
  const uint64_t seed = test_seed(8);
  SCOPED_TRACE(seed_trace(seed));
  auto split = embtrain::make_mpi_communicator(7);
  for (Communicator* comm : {&world(), split.get()}) {
    const int P = comm->size(), me = comm->rank();
    for (int round = 0; round < 4; ++round)
      for (int root = 0; root < P; ++root)
        for (CommType type : kAllTypes) {
          const uint64_t s = random_bits(seed, 8, static_cast<uint64_t>(round * 64 + root));
          std::vector<int64_t> counts(P);
          int64_t total = 0;
          for (int r = 0; r < P; ++r) {
            // Uneven counts, zero with probability 1/4 (the root's too).
            const uint64_t bits = random_bits(s, 0xa, static_cast<uint64_t>(r));
            counts[r] = (bits & 3) == 0 ? 0 : static_cast<int64_t>((bits >> 4) % 50) + 1;
            total += counts[r];
          }
          SCOPED_TRACE("root " + std::to_string(root) + ", " + embtrain::comm_type_name(type));
          Buffer send(type, counts[me]);
          for (int64_t i = 0; i < counts[me]; ++i)
            put_value(type, send.data(), i, pair_bits(s, me, root, i));
          Buffer recv(type, me == root ? total : 0);
          comm->gatherv(send.data(), counts[me], me == root ? recv.data() : nullptr, counts, type,
                        root);
          if (me != root) continue;
          EXPECT_TRUE(recv.guard_intact());
          int64_t at = 0;
          for (int r = 0; r < P; ++r) {
            EXPECT_TRUE(check_pair(type, recv.at(at), s, r, root, counts[r]));
            at += counts[r];
          }
        }
  }
}

// Every part empty and every buffer null, as an empty std::vector's data()
// is (replay of an empty batch): nothing is copied, and under UBSan no
// memcpy sees a null pointer (issue 14).
TEST_F(CommunicatorTest, GathervOfNothingWithNullBuffers) {
  auto split = embtrain::make_mpi_communicator(7);
  for (Communicator* comm : {&world(), split.get()}) {
    const std::vector<int64_t> zeros(static_cast<size_t>(comm->size()), 0);
    for (int root = 0; root < comm->size(); ++root)
      comm->gatherv(nullptr, 0, nullptr, zeros, CommType::kFloat32, root);
  }
}

TEST_F(CommunicatorTest, AgreeOnErrorNoError) {
  auto split = embtrain::make_mpi_communicator(7);
  for (Communicator* comm : {&world(), split.get()}) EXPECT_EQ(comm->agree_on_error(""), "");
}

TEST_F(CommunicatorTest, AgreeOnErrorOneRank) {
  const uint64_t seed = test_seed(9);
  auto split = embtrain::make_mpi_communicator(7);
  for (Communicator* comm : {&world(), split.get()}) {
    const int P = comm->size(), me = comm->rank();
    for (int bad = 0; bad < P; ++bad) {
      // A message long enough to need many pieces on the split communicator.
      const std::string message = "rank " + std::to_string(bad) + " failed: seed " +
                                  std::to_string(seed) + " " + std::string(100 + bad, 'x');
      const std::string got = comm->agree_on_error(me == bad ? message : "");
      EXPECT_EQ(got, message) << "failing rank " << bad;
    }
  }
}

TEST_F(CommunicatorTest, AgreeOnErrorLowestRankWins) {
  EMBTRAIN_REQUIRE_RANKS(2);
  auto split = embtrain::make_mpi_communicator(7);
  for (Communicator* comm : {&world(), split.get()}) {
    const int P = comm->size(), me = comm->rank();
    for (int first = 0; first < P; ++first)
      for (int second = first + 1; second < P; ++second) {
        // Different lengths, so a mix-up of the length broadcast shows.
        const std::string m1 = "error on rank " + std::to_string(first);
        const std::string m2 = "a longer error on rank " + std::to_string(second) + "!!";
        const std::string local = me == first ? m1 : me == second ? m2 : "";
        EXPECT_EQ(comm->agree_on_error(local), m1) << "ranks " << first << " and " << second;
      }
    // Every rank failing: rank 0's message.
    EXPECT_EQ(comm->agree_on_error("all fail, this is rank " + std::to_string(me)),
              "all fail, this is rank 0");
  }
}

TEST_F(CommunicatorTest, RunAgreedThrowsOnEveryRank) {
  Communicator& comm = world();
  const int P = comm.size(), me = comm.rank();
  for (int bad = 0; bad < P; ++bad) {
    const std::string message = "cannot read file part-" + std::to_string(bad) + ".npy";
    int ran = 0;
    try {
      embtrain::run_agreed(comm, [&] {
        ++ran;
        if (me == bad) throw embtrain::Error(message);
      });
      ADD_FAILURE() << "run_agreed did not throw; rank " << bad << " failed";
    } catch (const embtrain::AgreedError& e) {
      EXPECT_EQ(std::string(e.what()), message);
    }
    EXPECT_EQ(ran, 1);
  }
  // No failure anywhere: no throw, the work ran once.
  int ran = 0;
  EXPECT_NO_THROW(embtrain::run_agreed(comm, [&] { ++ran; }));
  EXPECT_EQ(ran, 1);
  // AgreedError is an Error, so callers that catch Error see it.
  try {
    embtrain::run_agreed(comm, [&] {
      if (me == P - 1) throw embtrain::make_error("value ", 42, " out of range");
    });
    ADD_FAILURE() << "run_agreed did not throw";
  } catch (const embtrain::Error& e) {
    EXPECT_NE(dynamic_cast<const embtrain::AgreedError*>(&e), nullptr);
    EXPECT_EQ(std::string(e.what()), "value 42 out of range");
  }
}

TEST_F(CommunicatorTest, TrafficCountsOtherRanksOnly) {
  const uint64_t seed = test_seed(10);
  SCOPED_TRACE(seed_trace(seed));
  auto split = embtrain::make_mpi_communicator(7);
  for (Communicator* comm : {&world(), split.get()}) {
    const int P = comm->size(), me = comm->rank();
    comm->reset_traffic();
    EXPECT_EQ(comm->traffic().bytes_sent, 0);
    EXPECT_EQ(comm->traffic().bytes_received, 0);
    int64_t want_sent = 0, want_received = 0;
    for (int round = 0; round < 5; ++round) {
      const CommType type = kAllTypes[round];
      const uint64_t s = random_bits(seed, 10, static_cast<uint64_t>(round));
      auto c = random_counts(s, P, 30);
      // Self pairs always move something, to be sure they are not counted.
      for (int r = 0; r < P; ++r) c[r][r] = std::max<int64_t>(c[r][r], 8);
      for (int r = 0; r < P; ++r)
        if (r != me) {
          want_sent += c[me][r] * embtrain::comm_type_size(type);
          want_received += c[r][me] * embtrain::comm_type_size(type);
        }
      alltoallv_round(*comm, type, s, c);
    }
    // alltoall of 3 int64 per peer: 24 bytes to each other rank.
    std::vector<int64_t> a(static_cast<size_t>(3 * P), me), b(static_cast<size_t>(3 * P));
    comm->alltoall(a.data(), b.data(), 3, CommType::kInt64);
    want_sent += 24 * (P - 1);
    want_received += 24 * (P - 1);
    EXPECT_EQ(comm->traffic().bytes_sent, want_sent);
    EXPECT_EQ(comm->traffic().bytes_received, want_received);
    comm->reset_traffic();
    EXPECT_EQ(comm->traffic().bytes_sent, 0);
    EXPECT_EQ(comm->traffic().bytes_received, 0);
  }
}

// Regression: alltoallv once picked its path (one MPI_Alltoallv, or
// point-to-point pieces) from this rank's own totals, so a rank whose
// totals fit in a message and one whose totals did not waited in different
// calls and the job hung. Here rank 0 keeps 10 elements for itself (total
// 11 > 7) and every other rank moves 1 element in each direction.
TEST_F(CommunicatorTest, AlltoallvMixedPaths) {
  EMBTRAIN_REQUIRE_RANKS(2);
  const uint64_t seed = test_seed(11);
  SCOPED_TRACE(seed_trace(seed));
  auto comm = embtrain::make_mpi_communicator(7);
  const int P = comm->size();
  std::vector<std::vector<int64_t>> c(P, std::vector<int64_t>(P, 0));
  c[0][0] = 10;
  for (int r = 0; r < P; ++r) c[r][(r + 1) % P] = 1;
  SCOPED_TRACE(matrix_string(c));
  alltoallv_round(*comm, CommType::kFloat32, seed, c);
}

// A host communicator that forwards the collectives to another and keeps
// the base class's parts all-to-all (copies through contiguous buffers).
class Forwarding final : public Communicator {
 public:
  explicit Forwarding(Communicator& to) : to_(to) {}
  int rank() const override { return to_.rank(); }
  int size() const override { return to_.size(); }
  void alltoallv(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                 const std::vector<int64_t>& recv_counts, CommType type) override {
    to_.alltoallv(send, send_counts, recv, recv_counts, type);
  }
  void allreduce(void* data, int64_t count, CommType type, embtrain::ReduceOp op) override {
    to_.allreduce(data, count, type, op);
  }
  void broadcast(void* data, int64_t count, CommType type, int root) override {
    to_.broadcast(data, count, type, root);
  }
  void gatherv(const void* send, int64_t send_count, void* recv,
               const std::vector<int64_t>& counts, CommType type, int root) override {
    to_.gatherv(send, send_count, recv, counts, type, root);
  }
  void barrier() override { to_.barrier(); }

 private:
  Communicator& to_;
};

// Parts anywhere in the buffers, against the contiguous alltoallv: the MPI
// communicator's own path (whole messages and pieces of 5 elements) and the
// base class's default.
TEST_F(CommunicatorTest, AlltoallvOfPartsMatchesContiguous) {
  const uint64_t seed = test_seed(12);
  SCOPED_TRACE(seed_trace(seed));
  auto split = embtrain::make_mpi_communicator(5);
  Forwarding forwarding(world());
  embtrain_comm_check::HostMemory memory;
  const int P = world().size();
  for (int round = 0; round < 6; ++round)
    for (Communicator* comm : {&world(), split.get(), static_cast<Communicator*>(&forwarding)})
      for (CommType type : kAllTypes) {
        const uint64_t s = random_bits(seed, 12, static_cast<uint64_t>(round));
        embtrain_comm_check::check_alltoallv_parts(*comm, world(), memory, type,
                                                    random_counts(s, P, round < 3 ? 4 : 200), s);
        if (!keep_going()) return;
      }
}

// Several parts all-to-alls in flight at once, each moving a slice of
// every pair's block from one region of a buffer to another region of the
// same buffer (as the sharded step does), with a non-blocking counts
// all-to-all posted between them (the same tag: messages of a pair match
// in the order they were posted) and a blocking one after, pushed along by
// progress(): each lands where its parts say.
TEST_F(CommunicatorTest, PartsInFlightTogether) {
  const uint64_t seed = test_seed(13);
  SCOPED_TRACE(seed_trace(seed));
  Communicator& comm = world();
  const int P = comm.size(), me = comm.rank();
  constexpr int kSlices = 4;
  constexpr int64_t kPerPair = 1000;  // slices of 250
  // [ what this rank sends | what it receives ] in one buffer.
  const int64_t recv_at = P * kPerPair;
  std::vector<float> buffer(static_cast<size_t>(2 * P * kPerPair), -1.f);
  for (int d = 0; d < P; ++d)
    for (int64_t i = 0; i < kPerPair; ++i)
      put_value(CommType::kFloat32, buffer.data(), d * kPerPair + i, pair_bits(seed, me, d, i));
  std::vector<std::unique_ptr<Communicator::Request>> requests;
  auto post_slice = [&](int k) {
    std::vector<Communicator::Part> send(static_cast<size_t>(P)), recv(send.size());
    for (int r = 0; r < P; ++r) {
      send[r] = {r * kPerPair + k * kPerPair / kSlices, kPerPair / kSlices};
      recv[r] = {recv_at + r * kPerPair + k * kPerPair / kSlices, kPerPair / kSlices};
    }
    requests.push_back(comm.ialltoallv(buffer.data(), send, buffer.data(), recv, CommType::kFloat32));
    requests.back()->progress();
  };
  post_slice(0);
  post_slice(1);
  // Counts-form, same tag, between the slices: 2 + r elements from each r.
  std::vector<int64_t> send_counts(static_cast<size_t>(P), 2 + me), recv_counts(send_counts);
  for (int r = 0; r < P; ++r) recv_counts[r] = 2 + r;
  std::vector<int64_t> mine(static_cast<size_t>(P * (2 + me)), me), theirs;
  for (int r = 0; r < P; ++r) theirs.insert(theirs.end(), static_cast<size_t>(2 + r), -1);
  auto counts = comm.ialltoallv(mine.data(), send_counts, theirs.data(), recv_counts,
                                CommType::kInt64);
  post_slice(2);
  post_slice(3);
  const std::vector<int64_t> ones(static_cast<size_t>(P), 1);
  std::vector<int64_t> one_each(static_cast<size_t>(P), me), got(static_cast<size_t>(P), -1);
  comm.alltoallv(one_each.data(), ones, got.data(), ones, CommType::kInt64);
  for (int r = 0; r < P; ++r) EXPECT_EQ(got[r], r);
  counts->wait();
  for (int r = 0, at = 0; r < P; at += 2 + r, ++r)
    for (int i = 0; i < 2 + r; ++i) EXPECT_EQ(theirs[at + i], r) << "counts-form from rank " << r;
  for (auto& request : requests) request->wait();
  EXPECT_TRUE(requests.front()->progress()) << "a finished request is done";
  for (int s = 0; s < P; ++s)
    EXPECT_TRUE(check_pair(CommType::kFloat32,
                           reinterpret_cast<const char*>(buffer.data() + recv_at + s * kPerPair),
                           seed, s, me, kPerPair));
}

}  // namespace

