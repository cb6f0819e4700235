#include "comm/watchdog.hpp"

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/progress.hpp"
#include "embtrain/errors.hpp"

namespace embtrain {

namespace {

constexpr int kTag = 7077;

// What one rank tells the others of itself.
struct Heartbeat {
  int64_t step = -1;
  double idle_s = 0;  // seconds since its last progress mark
  char phase[48] = {};
};

Heartbeat heartbeat_now() {
  const ProgressMark mark = last_progress();
  Heartbeat h;
  h.step = mark.step;
  h.idle_s = mark.since_ns ? (steady_now_ns() - mark.since_ns) / 1e9 : 0;
  std::snprintf(h.phase, sizeof(h.phase), "%s", mark.phase);
  return h;
}

double now_s() { return steady_now_ns() / 1e9; }

}  // namespace

struct Watchdog::State {
  double timeout_s = 0, tick_s = 1;
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0, size = 1;
  bool threads_ok = false;  // MPI_THREAD_MULTIPLE: the thread may use MPI
  // Set (under `stop_mutex`) to end the thread, which waits on `wake`
  // between ticks: a job's end need not wait out a tick of up to a second.
  std::atomic<bool> stop{false};
  std::mutex stop_mutex;
  std::condition_variable wake;
  std::thread thread;
  // Rank 0: what each rank said last and when (its own clock); others: rank 0's.
  std::vector<Heartbeat> last;
  std::vector<double> heard_at;
  std::vector<Heartbeat> outbox;  // per peer: the message being sent
  std::vector<MPI_Request> sending;

  void run();
  void exchange();
  void receive_all();
  [[noreturn]] void expire(const Heartbeat& mine);
  std::string describe_ranks(const Heartbeat& mine) const;
};

void Watchdog::State::exchange() {
  if (!threads_ok || size == 1) return;
  const Heartbeat mine = heartbeat_now();
  auto send = [&](int to) {
    // One message in flight per peer: a peer that does not take them
    // (stopped) gets no more until it has.
    int done = 1;
    if (sending[to] != MPI_REQUEST_NULL) MPI_Test(&sending[to], &done, MPI_STATUS_IGNORE);
    if (!done) return;
    outbox[to] = mine;
    MPI_Isend(&outbox[to], sizeof(Heartbeat), MPI_BYTE, to, kTag, comm, &sending[to]);
  };
  if (rank == 0)
    for (int r = 1; r < size; ++r) send(r);
  else
    send(0);
  receive_all();
}

void Watchdog::State::receive_all() {
  for (;;) {
    int ready = 0;
    MPI_Status status;
    MPI_Iprobe(MPI_ANY_SOURCE, kTag, comm, &ready, &status);
    if (!ready) return;
    Heartbeat h;
    MPI_Recv(&h, sizeof(h), MPI_BYTE, status.MPI_SOURCE, kTag, comm, MPI_STATUS_IGNORE);
    last[status.MPI_SOURCE] = h;
    heard_at[status.MPI_SOURCE] = now_s();
  }
}

// The ranks that did not arrive where this rank waits: those not heard from
// lately (stopped, dead, cut off) and those still busy (made progress less
// than half a timeout ago), e.g. "rank 1: not heard from for 31 s (last at
// step 12 after 'gather_owned')". Ranks idle as long as this one wait too.
std::string Watchdog::State::describe_ranks(const Heartbeat& mine) const {
  const double now = now_s();
  const double silent_limit = std::min(5.0, std::max(3 * tick_s, timeout_s / 2));
  std::string behind, everyone;
  for (int r = 0; r < size; ++r) {
    const Heartbeat& h = r == rank ? mine : last[r];
    const double silent = r == rank ? 0 : now - heard_at[r];
    const double idle = h.idle_s + silent;
    const std::string where = detail::concat("step ", h.step, " after '", h.phase, "'");
    everyone += detail::concat(r ? ", " : "", r, " at ", where);
    if (r == rank) continue;
    std::string state;
    if (heard_at[r] == 0)
      state = "never heard from";
    else if (silent > silent_limit)
      state = detail::concat("not heard from for ", int(silent), " s (last at ", where, ")");
    else if (idle < timeout_s / 2)
      state = detail::concat("busy at ", where);
    if (!state.empty()) behind += detail::concat(behind.empty() ? "" : "; ", "rank ", r, ": ", state);
  }
  return behind.empty() ? "none: every rank waits (a deadlock?); ranks " + everyone : behind;
}

void Watchdog::State::expire(const Heartbeat& mine) {
  const std::string where =
      detail::concat("no progress for ", int(mine.idle_s), " s at step ", mine.step, " after '",
                     mine.phase, "' (train.collective_timeout = ", timeout_s, " s)");
  std::string text;
  if (!threads_ok)
    text = detail::concat("rank ", rank, ": ", where,
                          "; the ranks that did not arrive are unknown (MPI without "
                          "MPI_THREAD_MULTIPLE)");
  else
    text = detail::concat(where, "; ranks that did not arrive: ", describe_ranks(mine));
  std::fprintf(stderr, "embtrain: watchdog [rank %d]: %s; ending the job\n", rank, text.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

void Watchdog::State::run() {
  const double tick = tick_s;
  double expired_at = 0;  // a non-root rank's own timeout, left to rank 0 first
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(stop_mutex);
      wake.wait_for(lock, std::chrono::duration<double>(tick), [this] { return stop.load(); });
    }
    if (stop.load()) break;
    exchange();
    const Heartbeat mine = heartbeat_now();
    if (mine.idle_s < timeout_s) {
      expired_at = 0;
      continue;
    }
    // Rank 0 knows every rank: it speaks. Another rank gives rank 0 a few
    // ticks to do so while rank 0 is still heard from.
    const bool root_alive = threads_ok && now_s() - heard_at[0] < 5;
    if (rank == 0 || !root_alive) expire(mine);
    if (expired_at == 0) expired_at = now_s();
    if (now_s() - expired_at > 10) expire(mine);
  }
}

Watchdog::Watchdog(double timeout_s) {
  // A job of one process without MPI (MpiSession) has no peer to wait for.
  int mpi_running = 0;
  MPI_Initialized(&mpi_running);
  if (timeout_s <= 0 || !mpi_running) return;
  state_ = std::make_unique<State>();
  State& s = *state_;
  s.timeout_s = timeout_s;
  s.tick_s = std::clamp(timeout_s / 10, 0.05, 1.0);
  int provided = 0;
  MPI_Query_thread(&provided);
  s.threads_ok = provided == MPI_THREAD_MULTIPLE;
  MPI_Comm_dup(MPI_COMM_WORLD, &s.comm);
  MPI_Comm_rank(s.comm, &s.rank);
  MPI_Comm_size(s.comm, &s.size);
  s.last.assign(s.size, Heartbeat{});
  s.heard_at.assign(s.size, 0.0);
  s.heard_at[s.rank] = now_s();
  s.outbox.assign(s.size, Heartbeat{});
  s.sending.assign(s.size, MPI_REQUEST_NULL);
  s.thread = std::thread([&s] { s.run(); });
}

Watchdog::~Watchdog() {
  if (!state_) return;
  State& s = *state_;
  {
    std::lock_guard<std::mutex> lock(s.stop_mutex);
    s.stop.store(true);
  }
  s.wake.notify_all();
  s.thread.join();
  // Unwinding an error of this rank alone: the others may be in a
  // collective, so no barrier (the job is about to be aborted).
  if (std::uncaught_exceptions() > 0) return;
  // Each rank's own sends are done (64 bytes go eagerly), then the second
  // barrier means every heartbeat has arrived: drain them and free.
  MPI_Barrier(s.comm);
  for (MPI_Request& r : s.sending)
    if (r != MPI_REQUEST_NULL) MPI_Wait(&r, MPI_STATUS_IGNORE);
  MPI_Barrier(s.comm);
  if (s.threads_ok) s.receive_all();
  MPI_Comm_free(&s.comm);
}

}  // namespace embtrain
