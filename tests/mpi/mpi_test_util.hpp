// Helpers shared by the MPI tests (run under mpiexec by mpi_test_main.cpp):
// the job's communicator, one seed for every rank, agreement on skips, a
// fixture that agrees on failures, and the unit tests' tolerance comparison.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

#include "embtrain/communicator.hpp"
#include "embtrain/random.hpp"
#include "../unit/test_util.hpp"

namespace embtrain_mpi_test {

// The communicator over MPI_COMM_WORLD that the test main creates (default
// message size, so the fast paths).
embtrain::Communicator& world();

// The run's seed: rank 0's EMBTRAIN_TEST_SEED when set (to replay a
// failure), else rank 0's clock; broadcast so every rank draws the same
// cases, and printed once by rank 0.
uint64_t base_seed();

// A seed for one test, derived from the run's seed and a per-test stream so
// that tests do not share their random inputs.
inline uint64_t test_seed(uint64_t stream) { return embtrain::random_bits(base_seed(), stream, 0); }

inline std::string seed_trace(uint64_t seed) {
  std::ostringstream os;
  os << "random inputs from EMBTRAIN_TEST_SEED=" << base_seed() << " (test seed " << seed << ")";
  return os.str();
}

// True on every rank when `local` holds on every rank (allreduce min), so
// ranks take the same branch before a collective.
bool all_ranks(bool local);

// Every test derives from this fixture. TearDown is a collective that tells
// every rank which ranks failed the test, so the test fails on every rank
// (and rank 0, the only rank that prints a full report, says where).
class MpiTest : public ::testing::Test {
 protected:
  void TearDown() override;
};

// The unit tests' tolerance comparison: |got - want| <= rtol * max(1, |want|).
using embtrain_test::all_close;

}  // namespace embtrain_mpi_test

// Skips the test on every rank (they agree first) unless the job has at
// least n ranks. Use at the top of a test body.
#define EMBTRAIN_REQUIRE_RANKS(n)                                                           \
  do {                                                                                      \
    const int embtrain_size_ = ::embtrain_mpi_test::world().size();                         \
    if (!::embtrain_mpi_test::all_ranks(embtrain_size_ >= (n)))                             \
      GTEST_SKIP() << "needs at least " << (n) << " ranks, the job has " << embtrain_size_; \
  } while (0)
