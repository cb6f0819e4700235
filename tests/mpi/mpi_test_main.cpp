// The main of the MPI tests: MPI_Init (MpiSession) -> InitGoogleTest ->
// silence ranks != 0 -> RUN_ALL_TESTS -> agree on the result -> finalize.
//
// Every rank runs every test, in the same order, so each test's collectives
// match. Rank 0 prints gtest's usual report; the other ranks print only
// their own failed assertions, tagged with the rank, so a failure seen on
// rank 2 alone is not lost. Each test's TearDown (MpiTest) agrees on which
// ranks failed, so the test fails on every rank and rank 0's report names
// them; at the end the ranks agree on the result, so every rank exits
// non-zero if any rank failed and mpiexec reports failure.
//
// A hang (ranks disagreeing on a collective) would otherwise sit until
// ctest's timeout with no hint of where: a watchdog ends the job when one
// test runs longer than EMBTRAIN_TEST_TIMEOUT seconds (default 120) and
// names the test.
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "embtrain/communicator.hpp"
#include "mpi_test_util.hpp"

namespace embtrain_mpi_test {

namespace {

std::unique_ptr<embtrain::Communicator> g_world;
uint64_t g_seed = 0;

// The marker of the failure that TearDown adds on behalf of other ranks, so
// those ranks do not echo it back.
const char kAgreedMarker[] = "[other ranks] ";

// On ranks != 0, in place of gtest's printer: only failed assertions.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}

  // The test's name is kept here: gtest holds its lock while it reports a
  // result, so UnitTest::current_test_info() would deadlock in there.
  void OnTestStart(const ::testing::TestInfo& info) override {
    test_ = std::string(info.test_suite_name()) + "." + info.name();
  }
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    const std::string message = result.message();
    if (message.rfind(kAgreedMarker, 0) == 0) return;
    std::fprintf(stdout, "[rank %d] %s: %s:%d: Failure\n%s\n", rank_, test_.c_str(),
                 result.file_name() ? result.file_name() : "?", result.line_number(),
                 message.c_str());
    std::fflush(stdout);
  }

 private:
  int rank_;
  std::string test_;
};

// Ends the job when a test outlives its time limit.
class Watchdog : public ::testing::EmptyTestEventListener {
 public:
  Watchdog(int rank, double limit_s) : rank_(rank), limit_(limit_s) {
    thread_ = std::thread([this] { run(); });
  }
  ~Watchdog() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  void OnTestStart(const ::testing::TestInfo& info) override {
    std::lock_guard<std::mutex> lock(mutex_);
    current_ = std::string(info.test_suite_name()) + "." + info.name();
    deadline_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(limit_);
    armed_ = true;
    cv_.notify_all();
  }
  void OnTestEnd(const ::testing::TestInfo&) override {
    std::lock_guard<std::mutex> lock(mutex_);
    armed_ = false;
    cv_.notify_all();
  }

 private:
  using Clock = std::chrono::steady_clock;

  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stop_) {
      if (!armed_) {
        cv_.wait(lock);
        continue;
      }
      const Clock::time_point deadline = deadline_;
      cv_.wait_until(lock, deadline);
      if (armed_ && !stop_ && deadline_ == deadline && Clock::now() >= deadline) {
        std::fprintf(stderr,
                     "[rank %d] %s still running after %.0f s (EMBTRAIN_TEST_TIMEOUT): a hang? "
                     "ending the job\n",
                     rank_, current_.c_str(), limit_.count());
        std::fflush(stderr);
        std::fflush(stdout);
        // Not MPI_Abort: MPI was initialised FUNNELED, so only the main
        // thread may call it. A rank that exits makes mpiexec end the job.
        std::_Exit(124);
      }
    }
  }

  int rank_;
  std::chrono::duration<double> limit_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::string current_;
  Clock::time_point deadline_;
  bool armed_ = false, stop_ = false;
  std::thread thread_;
};

double timeout_from_env() {
  const char* env = std::getenv("EMBTRAIN_TEST_TIMEOUT");
  const double s = env && *env ? std::strtod(env, nullptr) : 0.0;
  return s > 0 ? s : 120.0;
}

}  // namespace

embtrain::Communicator& world() { return *g_world; }

uint64_t base_seed() { return g_seed; }

bool all_ranks(bool local) {
  int32_t flag = local ? 1 : 0;
  g_world->allreduce_min(&flag, 1, embtrain::CommType::kInt32);
  return flag == 1;
}

void MpiTest::TearDown() {
  const int P = g_world->size(), rank = g_world->rank();
  std::vector<int32_t> failed(static_cast<size_t>(P), 0);
  failed[rank] = HasFailure() ? 1 : 0;
  g_world->allreduce_sum(failed.data(), P, embtrain::CommType::kInt32);
  std::string others;
  for (int r = 0; r < P; ++r)
    if (failed[r] && r != rank) others += (others.empty() ? "" : ", ") + std::to_string(r);
  if (!others.empty())
    ADD_FAILURE() << kAgreedMarker << "this test failed on rank(s) " << others
                  << " (their assertions are printed tagged [rank r])";
}

}  // namespace embtrain_mpi_test

int main(int argc, char** argv) {
  // Always: the tests make MPI communicators, also in a binary run alone.
  embtrain::MpiSession mpi(&argc, &argv, embtrain::MpiSession::Start::kAlways);
  ::testing::InitGoogleTest(&argc, argv);

  using embtrain_mpi_test::g_seed;
  using embtrain_mpi_test::g_world;
  g_world = embtrain::make_mpi_communicator();
  const int rank = g_world->rank(), size = g_world->size();

  if (rank == 0) {
    const char* env = std::getenv("EMBTRAIN_TEST_SEED");
    g_seed =
        env && *env
            ? std::strtoull(env, nullptr, 0)
            : static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
  }
  g_world->broadcast(&g_seed, 1, embtrain::CommType::kInt64, 0);
  if (rank == 0) {
    std::printf("[   seed   ] EMBTRAIN_TEST_SEED=%llu (%d ranks)\n",
                static_cast<unsigned long long>(g_seed), size);
    std::fflush(stdout);
  }
  // --gtest_shuffle must shuffle the same way on every rank.
  int32_t shuffle_seed = static_cast<int32_t>(g_seed % 99991) + 1;
  g_world->broadcast(&shuffle_seed, 1, embtrain::CommType::kInt32, 0);
  GTEST_FLAG_SET(random_seed, shuffle_seed);

  ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (rank != 0) {
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new embtrain_mpi_test::RankFailurePrinter(rank));
  }
  auto* watchdog = new embtrain_mpi_test::Watchdog(rank, embtrain_mpi_test::timeout_from_env());
  listeners.Append(watchdog);

  int32_t failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  delete listeners.Release(watchdog);

  int32_t any_failed = failed;
  g_world->allreduce_max(&any_failed, 1, embtrain::CommType::kInt32);
  if (rank == 0 && any_failed)
    std::printf(
        "[  FAILED  ] the MPI tests failed on at least one of %d ranks "
        "(replay with EMBTRAIN_TEST_SEED=%llu)\n",
        size, static_cast<unsigned long long>(g_seed));
  std::fflush(stdout);
  g_world.reset();
  return any_failed ? 1 : 0;
}
