#pragma once

namespace embtrain {
namespace app {

// Each subcommand gets argv with argv[0] = its own name and returns the
// process exit status; errors are thrown as embtrain::Error.
int run_replay(int argc, char** argv);
int run_bench(int argc, char** argv);
int run_train(int argc, char** argv);
int run_export(int argc, char** argv);
int run_corpus(int argc, char** argv);
int run_plan(int argc, char** argv);

// The build's name: version+commit, which every rank of a job must share.
const char* build_id();

}  // namespace app
}  // namespace embtrain
