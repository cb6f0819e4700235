// Progress marks: the main thread of a rank records where it is (a step and
// the name of the last phase it finished) so that a watchdog thread can
// tell how long it has made no progress, and where. Lock-free; a mark costs
// a clock read and three relaxed stores.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace embtrain {

struct ProgressMark {
  int64_t step = -1;           // the step in progress (1-based; -1 before any)
  const char* phase = "start";  // a string literal: the last phase finished
  int64_t since_ns = 0;         // steady clock at the mark
};

namespace detail {
struct ProgressState {
  std::atomic<int64_t> step{-1};
  std::atomic<const char*> phase{"start"};
  std::atomic<int64_t> since_ns{0};
};
inline ProgressState& progress_state() {
  static ProgressState state;
  return state;
}
}  // namespace detail

inline int64_t steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// `phase` must outlive the process (a string literal).
inline void mark_progress(const char* phase) {
  detail::ProgressState& s = detail::progress_state();
  s.phase.store(phase, std::memory_order_relaxed);
  s.since_ns.store(steady_now_ns(), std::memory_order_relaxed);
}

inline void mark_step(int64_t step, const char* phase) {
  detail::progress_state().step.store(step, std::memory_order_relaxed);
  mark_progress(phase);
}

inline ProgressMark last_progress() {
  const detail::ProgressState& s = detail::progress_state();
  return {s.step.load(std::memory_order_relaxed), s.phase.load(std::memory_order_relaxed),
          s.since_ns.load(std::memory_order_relaxed)};
}

}  // namespace embtrain
