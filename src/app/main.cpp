// embtrain: the command-line entry point. Starts MPI when a launcher
// started the process (a plain run is a job of one rank, without MPI),
// dispatches to a subcommand and turns every error into one message on
// stderr and exit status 1 on every rank.
#include <mpi.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "commands.hpp"
#include "embtrain/communicator.hpp"
#include "embtrain/errors.hpp"

namespace {

const char kUsage[] =
    "usage: embtrain <command> [options]        (or: mpirun -np P embtrain <command> ...)\n"
    "\n"
    "commands:\n"
    "  train    train a workload from a config file (tables row-sharded over ranks)\n"
    "  export   write a checkpoint's table as .npy or word2vec text\n"
    "  corpus   write a synthetic text with planted topics (for skipgram)\n"
    "  replay   replay recorded steps (ids, output gradients) on a table and\n"
    "           write the outputs and final weights: the PyTorch parity tool\n"
    "  bench    time training steps on a synthetic Zipf workload\n"
    "  plan     a run's memory per rank and predicted step time, before it starts\n"
    "\n"
    "'embtrain <command> --help' lists a command's options; 'embtrain --version' names the\n"
    "build.\n";

// Without a launcher MPI is not started (MpiSession): a job of one rank.
bool mpi_running() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  return initialized != 0;
}

int world_rank() {
  int rank = 0;
  if (mpi_running()) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int world_size() {
  int size = 1;
  if (mpi_running()) MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

// An error raised on some ranks only: the others may be waiting in a
// collective, so end the whole job rather than hang.
[[noreturn]] void abort_job() {
  std::fflush(stderr);
  if (world_size() > 1) MPI_Abort(MPI_COMM_WORLD, 1);
  if (mpi_running()) MPI_Finalize();
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 1 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::printf("embtrain %s\n", embtrain::app::build_id());
    return 0;
  }
  embtrain::MpiSession mpi(&argc, &argv);
  const std::string command = argv[1];
  const std::string rank_tag =
      world_size() > 1 ? " [rank " + std::to_string(world_rank()) + "]" : "";
  try {
    // Ranks running different commands would meet in collectives of
    // different sizes (MPI_ERR_TRUNCATE, an abort): they agree first.
    if (world_size() > 1) {
      const std::string differ = embtrain::find_disagreement(
          *embtrain::make_world_communicator(), {{"command", command}}, "the embtrain");
      if (!differ.empty())
        throw embtrain::AgreedError(differ + "; every rank of a job runs the same command");
    }
    if (command == "replay") return embtrain::app::run_replay(argc - 1, argv + 1);
    if (command == "bench") return embtrain::app::run_bench(argc - 1, argv + 1);
    if (command == "train") return embtrain::app::run_train(argc - 1, argv + 1);
    if (command == "export") return embtrain::app::run_export(argc - 1, argv + 1);
    if (command == "corpus") return embtrain::app::run_corpus(argc - 1, argv + 1);
    if (command == "plan") return embtrain::app::run_plan(argc - 1, argv + 1);
    if (world_rank() == 0)
      std::fprintf(
          stderr,
          "embtrain: unknown command '%s' (valid: train, export, corpus, replay, bench, plan)\n%s",
          command.c_str(), kUsage);
    return 1;
  } catch (const embtrain::AgreedError& e) {
    // Every rank has this error: one rank reports it, all exit cleanly.
    if (world_rank() == 0) std::fprintf(stderr, "embtrain %s: error: %s\n", command.c_str(), e.what());
    return 1;
  } catch (const embtrain::Error& e) {
    std::fprintf(stderr, "embtrain %s%s: error: %s\n", command.c_str(), rank_tag.c_str(),
                 e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "embtrain %s%s: internal error: %s\n", command.c_str(), rank_tag.c_str(),
                 e.what());
  }
  abort_job();
}
