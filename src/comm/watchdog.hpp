// Watchdog: ends a job whose ranks stopped making progress (a rank stopped,
// swapped out, deadlocked or partitioned off) instead of letting the others
// wait in a collective forever.
//
// A thread per rank reads the rank's progress marks (progress.hpp) and, on
// a duplicate of MPI_COMM_WORLD, sends them to rank 0 once a second; rank 0
// sends its own to every rank. When a rank has made no progress for
// `timeout_s`, rank 0 names the ranks that did not arrive (those behind the
// others, or not heard from) and aborts the job with exit status 1; another
// rank that times out waits a few seconds for rank 0 to do so, then aborts
// itself, naming rank 0 when rank 0 is the one not heard from.
//
// Needs MPI_THREAD_MULTIPLE (MpiSession asks for it); without it, each
// rank's watchdog can only report its own state.
#pragma once

#include <memory>

namespace embtrain {

class Watchdog {
 public:
  // timeout_s <= 0, or MPI not running (a job of one process started
  // alone): no watchdog. A collective (duplicates MPI_COMM_WORLD).
  explicit Watchdog(double timeout_s);
  // A collective too: every rank stops its thread, then the duplicate is freed.
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace embtrain
