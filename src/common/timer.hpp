#pragma once

#include <chrono>

namespace embtrain {

// Wall-clock milliseconds since construction or the last lap().
class Stopwatch {
 public:
  Stopwatch() : start_(Clock::now()) {}
  double lap_ms() {
    const auto now = Clock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - start_).count();
    start_ = now;
    return ms;
  }
  // Seconds since construction or the last lap_ms()/reset(), without a lap.
  double seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  void reset() { start_ = Clock::now(); }

 private:
  using Clock = std::chrono::steady_clock;
  Clock::time_point start_;
};

}  // namespace embtrain
