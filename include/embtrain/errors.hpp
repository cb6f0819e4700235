// Errors: one exception type for the project's own errors (bad input, bad
// config, bad file), and one checking macro per foreign API that records the
// file, line and failing expression.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace embtrain {

// A problem with what the user gave us: an index out of range, a malformed
// file, an invalid option. The message names the thing, the place and the
// valid range; the app prints it and exits with status 1.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An Error that every rank of the job raised together after agreeing on
// it, so one rank may report it for all and every rank can exit cleanly.
class AgreedError : public Error {
 public:
  using Error::Error;
};

// A failure inside a library we call (MPI, CUDA, NCCL) or a broken invariant.
class SystemError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

// Builds an Error from any streamable pieces: throw make_error("x is ", x).
template <typename... Args>
Error make_error(Args&&... args) {
  return Error(detail::concat(std::forward<Args>(args)...));
}

}  // namespace embtrain

// Throws embtrain::Error with the streamed message when cond is false.
#define EMBTRAIN_REQUIRE(cond, ...)                                   \
  do {                                                                \
    if (!(cond)) throw ::embtrain::make_error(__VA_ARGS__);           \
  } while (0)

// Internal invariant: a failure is our bug, reported with its location.
#define EMBTRAIN_ASSERT(cond)                                                 \
  do {                                                                        \
    if (!(cond))                                                              \
      throw ::embtrain::SystemError(::embtrain::detail::concat(               \
          __FILE__, ":", __LINE__, ": internal check failed: ", #cond));      \
  } while (0)
