// The parts of Communicator shared by every implementation: element sizes
// and the agreement on errors, built from allreduce and broadcast.
#include "embtrain/communicator.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "common/fingerprint.hpp"
#include "common/timer.hpp"
#include "embtrain/errors.hpp"

namespace embtrain {

int comm_type_size(CommType type) {
  switch (type) {
    case CommType::kByte: return 1;
    case CommType::kInt32: return 4;
    case CommType::kInt64: return 8;
    case CommType::kFloat32: return 4;
    case CommType::kFloat64: return 8;
  }
  return 1;
}

const char* comm_type_name(CommType type) {
  switch (type) {
    case CommType::kByte: return "byte";
    case CommType::kInt32: return "int32";
    case CommType::kInt64: return "int64";
    case CommType::kFloat32: return "float32";
    case CommType::kFloat64: return "float64";
  }
  return "?";
}

namespace {

// Writes a buffer of twice the last-level cache, 64 to 128 MiB (a VM may
// report the whole socket's L3, 256 MiB on this project's EPYC, of which a
// core sees 32), a byte per cache line, so that what a collective touches
// next comes from memory: about 7 ms for 64 MiB here.
void push_out_host_caches() {
  static std::vector<char> sweep = [] {
    const long l3 = std::max(sysconf(_SC_LEVEL3_CACHE_SIZE), 0L);
    const size_t bytes = std::clamp(2 * static_cast<size_t>(l3), size_t{64} << 20, size_t{128} << 20);
    return std::vector<char>(bytes, 0);
  }();
  for (size_t i = 0; i < sweep.size(); i += 64) sweep[i] = static_cast<char>(sweep[i] + 1);
}

}  // namespace

double time_collective(Communicator& comm, const std::function<void()>& run,
                       Communicator::Caches caches) {
  comm.barrier();
  run();  // warm-up: connections, caches, first touch of the buffers
  if (caches == Communicator::Caches::kCold) push_out_host_caches();
  comm.barrier();
  Stopwatch clock;
  run();
  return clock.lap_ms();
}

namespace {
// A request with nothing left to do.
class DoneRequest final : public Communicator::Request {
 public:
  void wait() override {}
};
}  // namespace

std::unique_ptr<Communicator::Request> Communicator::done_request() {
  return std::make_unique<DoneRequest>();
}

std::pair<std::vector<Communicator::Part>, std::vector<Communicator::Part>>
Communicator::contiguous_parts(const std::vector<int64_t>& send_counts,
                               const std::vector<int64_t>& recv_counts) const {
  const Displacements displ = displacements_of(send_counts, recv_counts);
  std::pair<std::vector<Part>, std::vector<Part>> parts;
  for (size_t r = 0; r < send_counts.size(); ++r) {
    parts.first.push_back({displ.send[r], send_counts[r]});
    parts.second.push_back({displ.recv[r], recv_counts[r]});
  }
  return parts;
}

std::unique_ptr<Communicator::Request> Communicator::ialltoallv(
    const void* send, const std::vector<int64_t>& send_counts, void* recv,
    const std::vector<int64_t>& recv_counts, CommType type) {
  const auto parts = contiguous_parts(send_counts, recv_counts);
  return ialltoallv(send, parts.first, recv, parts.second, type);
}

std::unique_ptr<Communicator::Request> Communicator::ialltoallv(const void* send,
                                                              const std::vector<Part>& send_parts,
                                                              void* recv,
                                                              const std::vector<Part>& recv_parts,
                                                              CommType type) {
  if (memory_space() != MemorySpace::kHost)
    throw SystemError("this device communicator has no all-to-all of parts");
  const int P = size();
  EMBTRAIN_ASSERT(static_cast<int>(send_parts.size()) == P &&
                  static_cast<int>(recv_parts.size()) == P);
  const size_t elem = static_cast<size_t>(comm_type_size(type));
  std::vector<int64_t> send_counts(P), recv_counts(P);
  int64_t send_total = 0, recv_total = 0;
  for (int r = 0; r < P; ++r) {
    send_counts[r] = send_parts[r].count;
    recv_counts[r] = recv_parts[r].count;
    send_total += send_counts[r];
    recv_total += recv_counts[r];
  }
  // Parts already where alltoallv puts them (the counts form): no copies.
  if (std::make_pair(send_parts, recv_parts) == contiguous_parts(send_counts, recv_counts)) {
    alltoallv(send, send_counts, recv, recv_counts, type);
    return std::make_unique<DoneRequest>();
  }
  std::vector<char> packed(static_cast<size_t>(send_total) * elem + 1);
  std::vector<char> landed(static_cast<size_t>(recv_total) * elem + 1);
  size_t at = 0;
  for (const Part& part : send_parts) {
    const size_t n = static_cast<size_t>(part.count) * elem;
    if (n > 0) std::memcpy(packed.data() + at, static_cast<const char*>(send) + part.at * elem, n);
    at += n;
  }
  alltoallv(packed.data(), send_counts, landed.data(), recv_counts, type);
  at = 0;
  for (const Part& part : recv_parts) {
    const size_t n = static_cast<size_t>(part.count) * elem;
    if (n > 0) std::memcpy(static_cast<char*>(recv) + part.at * elem, landed.data() + at, n);
    at += n;
  }
  return std::make_unique<DoneRequest>();
}

void Communicator::alltoall(const void* send, void* recv, int64_t count, CommType type) {
  const std::vector<int64_t> counts(static_cast<size_t>(size()), count);
  alltoallv(send, counts, recv, counts, type);
}

Communicator::Displacements Communicator::displacements_of(
    const std::vector<int64_t>& send_counts, const std::vector<int64_t>& recv_counts) const {
  const int P = size();
  EMBTRAIN_ASSERT(static_cast<int>(send_counts.size()) == P &&
                  static_cast<int>(recv_counts.size()) == P);
  Displacements displ{std::vector<int64_t>(P + 1, 0), std::vector<int64_t>(P + 1, 0)};
  for (int r = 0; r < P; ++r) {
    EMBTRAIN_ASSERT(send_counts[r] >= 0 && recv_counts[r] >= 0);
    displ.send[r + 1] = displ.send[r] + send_counts[r];
    displ.recv[r + 1] = displ.recv[r] + recv_counts[r];
  }
  return displ;
}

Communicator::Displacements Communicator::prepare_alltoallv(
    const std::vector<int64_t>& send_counts, const std::vector<int64_t>& recv_counts,
    CommType type) {
  const int64_t elem = comm_type_size(type);
  for (int r = 0; r < size(); ++r) {
    if (r == rank()) continue;
    traffic_.bytes_sent += send_counts[r] * elem;
    traffic_.bytes_received += recv_counts[r] * elem;
  }
  return displacements_of(send_counts, recv_counts);
}

std::pair<std::vector<int64_t>, std::vector<int64_t>> Communicator::prepare_parts(
    const std::vector<Part>& send_parts, const std::vector<Part>& recv_parts, CommType type) {
  const int P = size();
  EMBTRAIN_ASSERT(static_cast<int>(send_parts.size()) == P &&
                  static_cast<int>(recv_parts.size()) == P);
  std::vector<int64_t> send_counts(P), recv_counts(P);
  for (int r = 0; r < P; ++r) {
    EMBTRAIN_ASSERT(send_parts[r].at >= 0 && recv_parts[r].at >= 0);
    send_counts[r] = send_parts[r].count;
    recv_counts[r] = recv_parts[r].count;
  }
  prepare_alltoallv(send_counts, recv_counts, type);  // checks the counts, counts the traffic
  return {std::move(send_counts), std::move(recv_counts)};
}

double Communicator::native_alltoallv_ms(const std::vector<int64_t>& send_bytes,
                                         const std::vector<int64_t>& recv_bytes, Caches caches) {
  const Displacements displ = displacements_of(send_bytes, recv_bytes);
  std::vector<char> send(static_cast<size_t>(displ.send.back()) + 1, 1);
  std::vector<char> recv(static_cast<size_t>(displ.recv.back()) + 1, 0);
  return time_collective(
      *this, [&] { alltoallv(send.data(), send_bytes, recv.data(), recv_bytes, CommType::kByte); },
      caches);
}

std::string Communicator::agree_on_error(const std::string& local_error) {
  // The flag and message below are host variables.
  if (memory_space() != MemorySpace::kHost)
    throw SystemError(
        "agree_on_error needs a host-memory communicator: call it on the control (MPI) "
        "communicator, not on the device data communicator");
  // The lowest failing rank speaks for everyone: its message goes to all.
  int first = local_error.empty() ? size() : rank();
  allreduce_min(&first, 1, CommType::kInt32);
  if (first == size()) return "";
  int64_t length = first == rank() ? static_cast<int64_t>(local_error.size()) : 0;
  broadcast(&length, 1, CommType::kInt64, first);
  std::string message = first == rank() ? local_error : std::string(length, '\0');
  broadcast(message.data(), length, CommType::kByte, first);
  return message;
}

void run_agreed(Communicator& comm, const std::function<void()>& work) {
  std::string error;
  try {
    work();
  } catch (const Error& e) {
    error = e.what();
  }
  error = comm.agree_on_error(error);
  if (!error.empty()) throw AgreedError(error);
}

namespace {

// The values as one string, each name and value followed by a 0 byte.
std::string serialize(const AgreedValues& values) {
  std::string text;
  for (const auto& [name, value] : values) {
    text.append(name).push_back('\0');
    text.append(value).push_back('\0');
  }
  return text;
}

AgreedValues deserialize(const std::string& text) {
  AgreedValues values;
  for (size_t at = 0; at < text.size();) {
    const size_t name_end = text.find('\0', at);
    const size_t value_end = text.find('\0', name_end + 1);
    values.emplace_back(text.substr(at, name_end - at),
                        text.substr(name_end + 1, value_end - name_end - 1));
    at = value_end + 1;
  }
  return values;
}

// This rank's first difference from rank 0's values, or "".
std::string first_difference(const AgreedValues& mine, const AgreedValues& root, int rank,
                             const std::string& what) {
  const size_t n = std::max(mine.size(), root.size());
  for (size_t i = 0; i < n; ++i) {
    const std::string name = i < mine.size() ? mine[i].first : root[i].first;
    const std::string a = i < mine.size() && mine[i].first == name ? mine[i].second : "(none)";
    const std::string b = i < root.size() && root[i].first == name ? root[i].second : "(none)";
    if (a != b)
      return detail::concat(what, " '", name, "' is '", a, "' on rank ", rank, " but '", b,
                            "' on rank 0");
  }
  return "";
}

}  // namespace

std::string find_disagreement(Communicator& comm, const AgreedValues& values,
                              const std::string& what) {
  const std::string text = serialize(values);
  int64_t root_hash = static_cast<int64_t>(fnv1a(text));
  comm.broadcast(&root_hash, 1, CommType::kInt64, 0);
  int differs = root_hash != static_cast<int64_t>(fnv1a(text)) ? 1 : 0;
  comm.allreduce_max(&differs, 1, CommType::kInt32);
  if (!differs) return "";
  // Someone differs: every rank compares its values with rank 0's.
  int64_t length = static_cast<int64_t>(text.size());
  comm.broadcast(&length, 1, CommType::kInt64, 0);
  std::string root_text = comm.rank() == 0 ? text : std::string(length, '\0');
  comm.broadcast(root_text.data(), length, CommType::kByte, 0);
  const std::string mine =
      first_difference(values, deserialize(root_text), comm.rank(), what);
  std::vector<int32_t> ranks(static_cast<size_t>(comm.size()), 0);
  ranks[comm.rank()] = mine.empty() ? 0 : 1;
  comm.allreduce_sum(ranks.data(), comm.size(), CommType::kInt32);
  std::string list;
  for (int r = 0; r < comm.size(); ++r)
    if (ranks[r]) list += (list.empty() ? "" : ", ") + std::to_string(r);
  const std::string first = comm.agree_on_error(mine);
  return first.empty() ? "" : first + " (ranks that differ from rank 0: " + list + ")";
}

}  // namespace embtrain
