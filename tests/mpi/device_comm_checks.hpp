// Checks of a data communicator (buffers in "device" memory) against the
// plain MPI communicator on host memory: the same random inputs go through
// both and the results must match byte for byte, with no write past the
// end of a receive buffer. Shared by the staged communicator's tests here
// (memcpy "device" = host memory) and the CUDA tests (real device memory,
// NCCL or staged with the CUDA copier); TestMemory says how to reach it.
//
// Inputs are made from (seed, rank, index), so every rank builds its own
// part without any exchange; counts come from the seed alone, so every
// rank knows all of them. Reduction inputs are small integers, exact in
// every type, so the order of addition cannot matter.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "embtrain/communicator.hpp"
#include "embtrain/random.hpp"

namespace embtrain_comm_check {

using embtrain::CommType;
using embtrain::Communicator;

// Allocation and copies for the memory the data communicator works on.
class TestMemory {
 public:
  virtual ~TestMemory() = default;
  virtual void* alloc(size_t bytes) = 0;
  virtual void release(void* ptr) = 0;
  virtual void upload(void* d_dst, const void* h_src, size_t bytes) = 0;
  virtual void download(void* h_dst, const void* d_src, size_t bytes) = 0;
};

// Ordinary host memory standing in for the device (the memcpy copier).
class HostMemory final : public TestMemory {
 public:
  void* alloc(size_t bytes) override { return new char[bytes + 1]; }
  void release(void* ptr) override { delete[] static_cast<char*>(ptr); }
  void upload(void* d, const void* h, size_t n) override { std::memcpy(d, h, n); }
  void download(void* h, const void* d, size_t n) override { std::memcpy(h, d, n); }
};

inline const CommType kAllTypes[] = {CommType::kByte, CommType::kInt32, CommType::kInt64,
                                     CommType::kFloat32, CommType::kFloat64};
inline const CommType kArithmeticTypes[] = {CommType::kInt32, CommType::kInt64, CommType::kFloat32,
                                            CommType::kFloat64};
constexpr int64_t kGuardBytes = 32;
constexpr char kFill = static_cast<char>(0xA5);

// `bytes` of a buffer in test memory plus a guard tail of kFill bytes, set
// from and read back into host vectors.
class DeviceBytes {
 public:
  DeviceBytes(TestMemory& memory, size_t bytes) : memory_(memory), bytes_(bytes) {
    ptr_ = memory_.alloc(bytes_ + kGuardBytes);
    const std::vector<char> fill(bytes_ + kGuardBytes, kFill);
    memory_.upload(ptr_, fill.data(), fill.size());
  }
  ~DeviceBytes() { memory_.release(ptr_); }
  DeviceBytes(const DeviceBytes&) = delete;
  DeviceBytes& operator=(const DeviceBytes&) = delete;

  void* get() { return ptr_; }
  void set(const std::vector<char>& h) {
    if (!h.empty()) memory_.upload(ptr_, h.data(), h.size());
  }
  // The contents, guard included.
  std::vector<char> read() {
    std::vector<char> h(bytes_ + kGuardBytes);
    memory_.download(h.data(), ptr_, h.size());
    return h;
  }

 private:
  TestMemory& memory_;
  size_t bytes_;
  void* ptr_ = nullptr;
};

// What `reference` gives on host memory, plus the guard tail untouched.
inline std::vector<char> with_guard(std::vector<char> h) {
  h.insert(h.end(), kGuardBytes, kFill);
  return h;
}

inline ::testing::AssertionResult same_bytes(const std::vector<char>& got,
                                             const std::vector<char>& want) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i])
      return ::testing::AssertionFailure()
             << "byte " << i << " of " << got.size() - kGuardBytes << " (+" << kGuardBytes
             << " guard) differs from the MPI result"
             << (i >= got.size() - kGuardBytes ? ": written past the end" : "");
  return ::testing::AssertionSuccess();
}

// n random bytes of this rank's part of one operation.
inline std::vector<char> random_bytes(uint64_t seed, int rank, size_t n) {
  std::vector<char> h(n);
  for (size_t i = 0; i < n; ++i)
    h[i] = static_cast<char>(embtrain::random_bits(seed, static_cast<uint64_t>(rank), i) >> 56);
  return h;
}

// count small integers (in [-1000, 1000]) of `type`, as bytes.
inline std::vector<char> small_values(CommType type, uint64_t seed, int rank, int64_t count) {
  std::vector<char> h(static_cast<size_t>(count * embtrain::comm_type_size(type)));
  for (int64_t i = 0; i < count; ++i) {
    const int64_t v =
        static_cast<int64_t>(embtrain::random_bits(seed, static_cast<uint64_t>(rank), i) % 2001) -
        1000;
    char* at = h.data() + i * embtrain::comm_type_size(type);
    switch (type) {
      case CommType::kInt32: {
        const int32_t x = static_cast<int32_t>(v);
        std::memcpy(at, &x, 4);
        break;
      }
      case CommType::kInt64:
        std::memcpy(at, &v, 8);
        break;
      case CommType::kFloat32: {
        const float x = static_cast<float>(v);
        std::memcpy(at, &x, 4);
        break;
      }
      case CommType::kFloat64: {
        const double x = static_cast<double>(v);
        std::memcpy(at, &x, 8);
        break;
      }
      case CommType::kByte:
        at[0] = static_cast<char>(v);
        break;
    }
  }
  return h;
}

// counts[s][d]: zero with probability 1/4 (self pairs too), else [1, max].
inline std::vector<std::vector<int64_t>> random_counts(uint64_t seed, int P, int64_t max_count) {
  std::vector<std::vector<int64_t>> c(P, std::vector<int64_t>(P));
  for (int s = 0; s < P; ++s)
    for (int d = 0; d < P; ++d) {
      const uint64_t bits = embtrain::random_bits(seed, 0xc0c0, static_cast<uint64_t>(s * P + d));
      c[s][d] = (bits & 3) == 0 ? 0 : 1 + static_cast<int64_t>((bits >> 8) % max_count);
    }
  return c;
}

inline void check_alltoallv(Communicator& data, Communicator& reference, TestMemory& memory,
                            CommType type, const std::vector<std::vector<int64_t>>& c,
                            uint64_t seed) {
  const int P = data.size(), me = data.rank();
  const int64_t elem = embtrain::comm_type_size(type);
  std::vector<int64_t> send_counts(P), recv_counts(P);
  int64_t send_total = 0, recv_total = 0;
  for (int r = 0; r < P; ++r) {
    send_counts[r] = c[me][r];
    recv_counts[r] = c[r][me];
    send_total += send_counts[r];
    recv_total += recv_counts[r];
  }
  const std::vector<char> h_send = random_bytes(seed, me, static_cast<size_t>(send_total * elem));
  std::vector<char> want(static_cast<size_t>(recv_total * elem));
  reference.alltoallv(h_send.data(), send_counts, want.data(), recv_counts, type);

  DeviceBytes d_send(memory, h_send.size()), d_recv(memory, want.size());
  d_send.set(h_send);
  data.alltoallv(d_send.get(), send_counts, d_recv.get(), recv_counts, type);
  data.synchronize();
  EXPECT_TRUE(same_bytes(d_recv.read(), with_guard(want)))
      << "alltoallv " << embtrain::comm_type_name(type) << " on rank " << me;
  EXPECT_TRUE(same_bytes(d_send.read(), with_guard(h_send))) << "alltoallv changed its input";
}

// One all-to-all of parts: each rank's part at a place of its own in
// buffers with gaps between the parts, in an order drawn from the seed, and
// what the reference's contiguous alltoallv says must land where (the
// gaps keeping their fill).
struct PartsCase {
  std::vector<Communicator::Part> send_parts, recv_parts;
  std::vector<char> h_send, want;
};
inline PartsCase parts_case(Communicator& reference, CommType type,
                            const std::vector<std::vector<int64_t>>& c, uint64_t seed) {
  using Part = Communicator::Part;
  const int P = reference.size(), me = reference.rank();
  const int64_t elem = embtrain::comm_type_size(type);
  std::vector<int64_t> send_counts(P), recv_counts(P);
  for (int r = 0; r < P; ++r) {
    send_counts[r] = c[me][r];
    recv_counts[r] = c[r][me];
  }
  // Parts in a shuffled rank order, 0-3 elements apart. Returns the size.
  auto place = [&](const std::vector<int64_t>& counts, uint64_t stream, std::vector<Part>* parts) {
    std::vector<int> order(P);
    for (int r = 0; r < P; ++r) order[r] = r;
    for (int i = P - 1; i > 0; --i)
      std::swap(order[i], order[embtrain::random_bits(seed, stream, static_cast<uint64_t>(i)) %
                               static_cast<uint64_t>(i + 1)]);
    parts->assign(P, Part{});
    int64_t at = 0;
    for (int i = 0; i < P; ++i) {
      at += static_cast<int64_t>(embtrain::random_bits(seed, stream + 1, static_cast<uint64_t>(i)) % 4);
      (*parts)[order[i]] = {at, counts[order[i]]};
      at += counts[order[i]];
    }
    return at;
  };
  PartsCase pc;
  const int64_t send_size = place(send_counts, 10 + static_cast<uint64_t>(me) * 4, &pc.send_parts);
  const int64_t recv_size = place(recv_counts, 12 + static_cast<uint64_t>(me) * 4, &pc.recv_parts);
  // The reference: the same elements, contiguous.
  int64_t send_total = 0, recv_total = 0;
  for (int r = 0; r < P; ++r) {
    send_total += send_counts[r];
    recv_total += recv_counts[r];
  }
  const std::vector<char> packed = random_bytes(seed, me, static_cast<size_t>(send_total * elem));
  std::vector<char> landed(static_cast<size_t>(recv_total * elem));
  reference.alltoallv(packed.data(), send_counts, landed.data(), recv_counts, type);
  pc.h_send.assign(static_cast<size_t>(send_size * elem), kFill);
  pc.want.assign(static_cast<size_t>(recv_size * elem), kFill);
  for (int64_t r = 0, from = 0, to = 0; r < P; ++r) {
    std::copy_n(packed.begin() + from, send_counts[r] * elem,
                pc.h_send.begin() + pc.send_parts[r].at * elem);
    std::copy_n(landed.begin() + to, recv_counts[r] * elem,
                pc.want.begin() + pc.recv_parts[r].at * elem);
    from += send_counts[r] * elem;
    to += recv_counts[r] * elem;
  }
  return pc;
}

// The parts form of ialltoallv against the reference (parts_case).
inline void check_alltoallv_parts(Communicator& data, Communicator& reference,
                                  TestMemory& memory, CommType type,
                                  const std::vector<std::vector<int64_t>>& c, uint64_t seed) {
  const PartsCase pc = parts_case(reference, type, c, seed);
  DeviceBytes d_send(memory, pc.h_send.size()), d_recv(memory, pc.want.size());
  d_send.set(pc.h_send);
  data.ialltoallv(d_send.get(), pc.send_parts, d_recv.get(), pc.recv_parts, type)->wait();
  data.synchronize();
  EXPECT_TRUE(same_bytes(d_recv.read(), with_guard(pc.want)))
      << "ialltoallv of parts " << embtrain::comm_type_name(type) << " on rank " << data.rank();
  EXPECT_TRUE(same_bytes(d_send.read(), with_guard(pc.h_send))) << "ialltoallv changed its input";
}

// Several all-to-alls of parts in flight at once, as the sharded step's
// overlapped exchanges keep them: all posted, then the first driven by
// progress() alone until it says done (then waited, which must change
// nothing), the others waited for last to first; then the same again, so a
// communicator that pools its buffers per request reuses them. Each
// against the reference. Counts per pair random up to max_count, or
// (`full`) all max_count.
inline void check_parts_in_flight(Communicator& data, Communicator& reference,
                                  TestMemory& memory, CommType type, int requests,
                                  int64_t max_count, uint64_t seed, bool full = false) {
  const int P = data.size();
  for (int round = 0; round < 2; ++round) {
    std::vector<PartsCase> cases;
    std::vector<std::unique_ptr<DeviceBytes>> d_send, d_recv;
    std::vector<std::unique_ptr<Communicator::Request>> in_flight;
    for (int i = 0; i < requests; ++i) {
      const uint64_t s = embtrain::random_bits(seed, 0x1f1, static_cast<uint64_t>(round * 64 + i));
      const auto counts = full ? std::vector<std::vector<int64_t>>(P, std::vector<int64_t>(P, max_count))
                               : random_counts(s, P, max_count);
      cases.push_back(parts_case(reference, type, counts, s));
      d_send.push_back(std::make_unique<DeviceBytes>(memory, cases[i].h_send.size()));
      d_recv.push_back(std::make_unique<DeviceBytes>(memory, cases[i].want.size()));
      d_send[i]->set(cases[i].h_send);
    }
    for (int i = 0; i < requests; ++i)
      in_flight.push_back(data.ialltoallv(d_send[i]->get(), cases[i].send_parts, d_recv[i]->get(),
                                          cases[i].recv_parts, type));
    while (!in_flight[0]->progress()) {
    }
    in_flight[0]->wait();
    for (int i = requests - 1; i >= 1; --i) in_flight[i]->wait();
    data.synchronize();
    for (int i = 0; i < requests; ++i)
      EXPECT_TRUE(same_bytes(d_recv[i]->read(), with_guard(cases[i].want)))
          << "request " << i << " of " << requests << " in flight, round " << round << ", "
          << embtrain::comm_type_name(type) << " on rank " << data.rank();
  }
}

inline void check_alltoall(Communicator& data, Communicator& reference, TestMemory& memory,
                           CommType type, int64_t count, uint64_t seed) {
  const int P = data.size(), me = data.rank();
  const size_t n = static_cast<size_t>(count * P * embtrain::comm_type_size(type));
  const std::vector<char> h_send = random_bytes(seed, me, n);
  std::vector<char> want(n);
  reference.alltoall(h_send.data(), want.data(), count, type);
  DeviceBytes d_send(memory, n), d_recv(memory, n);
  d_send.set(h_send);
  data.alltoall(d_send.get(), d_recv.get(), count, type);
  data.synchronize();
  EXPECT_TRUE(same_bytes(d_recv.read(), with_guard(want)))
      << "alltoall " << embtrain::comm_type_name(type) << ", count " << count;
}

enum class Op { kSum, kMax, kMin };

inline void reduce(Communicator& comm, Op op, void* data, int64_t count, CommType type) {
  switch (op) {
    case Op::kSum:
      comm.allreduce_sum(data, count, type);
      break;
    case Op::kMax:
      comm.allreduce_max(data, count, type);
      break;
    case Op::kMin:
      comm.allreduce_min(data, count, type);
      break;
  }
}

inline void check_allreduce(Communicator& data, Communicator& reference, TestMemory& memory,
                            CommType type, Op op, int64_t count, uint64_t seed) {
  const std::vector<char> h_in = small_values(type, seed, data.rank(), count);
  std::vector<char> want = h_in;
  reduce(reference, op, want.data(), count, type);
  DeviceBytes d_data(memory, h_in.size());
  d_data.set(h_in);
  reduce(data, op, d_data.get(), count, type);
  data.synchronize();
  EXPECT_TRUE(same_bytes(d_data.read(), with_guard(want)))
      << "allreduce " << embtrain::comm_type_name(type) << " op " << static_cast<int>(op)
      << ", count " << count;
}

inline void check_broadcast(Communicator& data, Communicator& reference, TestMemory& memory,
                            CommType type, int64_t count, int root, uint64_t seed) {
  const int me = data.rank();
  const size_t n = static_cast<size_t>(count * embtrain::comm_type_size(type));
  // Only the root holds the data; the others hold the fill pattern.
  const std::vector<char> h_in =
      me == root ? random_bytes(seed, root, n) : std::vector<char>(n, kFill);
  std::vector<char> want = h_in;
  reference.broadcast(want.data(), count, type, root);
  DeviceBytes d_data(memory, n);
  d_data.set(h_in);
  data.broadcast(d_data.get(), count, type, root);
  data.synchronize();
  EXPECT_TRUE(same_bytes(d_data.read(), with_guard(want)))
      << "broadcast " << embtrain::comm_type_name(type) << ", count " << count << ", root " << root;
}

// counts[r] elements from each rank r to `root`; the others pass a null
// receive buffer, as the engine may.
inline void check_gatherv(Communicator& data, Communicator& reference, TestMemory& memory,
                          CommType type, const std::vector<int64_t>& counts, int root,
                          uint64_t seed) {
  const int me = data.rank();
  const int64_t elem = embtrain::comm_type_size(type);
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  const std::vector<char> h_send = random_bytes(seed, me, static_cast<size_t>(counts[me] * elem));
  std::vector<char> want(me == root ? static_cast<size_t>(total * elem) : 0);
  reference.gatherv(h_send.data(), counts[me], me == root ? want.data() : nullptr, counts, type,
                    root);
  DeviceBytes d_send(memory, h_send.size()), d_recv(memory, want.size());
  d_send.set(h_send);
  data.gatherv(d_send.get(), counts[me], me == root ? d_recv.get() : nullptr, counts, type, root);
  data.synchronize();
  if (me == root) {
    EXPECT_TRUE(same_bytes(d_recv.read(), with_guard(want)))
        << "gatherv " << embtrain::comm_type_name(type) << " to root " << root;
  }
}

// Uneven gatherv counts, zero with probability 1/4, from the seed.
inline std::vector<int64_t> random_gather_counts(uint64_t seed, int P, int64_t max_count) {
  std::vector<int64_t> counts(P);
  for (int r = 0; r < P; ++r) {
    const uint64_t bits = embtrain::random_bits(seed, 0xa, static_cast<uint64_t>(r));
    counts[r] = (bits & 3) == 0 ? 0 : static_cast<int64_t>((bits >> 4) % max_count) + 1;
  }
  return counts;
}

// Every operation, every type, a few sizes up to `max_count` elements per
// pair: one pass of the comparison.
inline void check_every_operation(Communicator& data, Communicator& reference, TestMemory& memory,
                                  uint64_t seed, int64_t max_count) {
  const int P = data.size();
  uint64_t stream = 0;
  auto next = [&] { return embtrain::random_bits(seed, 0x5eed, stream++); };
  for (CommType type : kAllTypes) {
    SCOPED_TRACE(embtrain::comm_type_name(type));
    for (int64_t m : {int64_t{3}, max_count}) {
      const uint64_t s = next();
      check_alltoallv(data, reference, memory, type, random_counts(s, P, m), s);
      check_alltoallv_parts(data, reference, memory, type, random_counts(s + 1, P, m), s + 1);
      check_parts_in_flight(data, reference, memory, type, 4, m, s + 2);
      check_alltoall(data, reference, memory, type, static_cast<int64_t>(s % 4) * m / 3, next());
      for (int root = 0; root < P; ++root) {
        const uint64_t r = next();
        check_broadcast(data, reference, memory, type,
                        1 + static_cast<int64_t>(r % static_cast<uint64_t>(m)), root, r);
        check_gatherv(data, reference, memory, type, random_gather_counts(r, P, m), root, r);
      }
    }
  }
  for (CommType type : kArithmeticTypes)
    for (Op op : {Op::kSum, Op::kMax, Op::kMin})
      for (int64_t count : {int64_t{1}, int64_t{7}, max_count}) {
        SCOPED_TRACE(embtrain::comm_type_name(type));
        check_allreduce(data, reference, memory, type, op, count, next());
      }
}

}  // namespace embtrain_comm_check
