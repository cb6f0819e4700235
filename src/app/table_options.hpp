// Command-line options shared by the subcommands that build a table:
// torch.nn.Embedding's options and the optimizer's.
#pragma once

#include <boost/program_options.hpp>
#include <string>

#include "embtrain/embedding_table.hpp"
#include "embtrain/sharded_embedding.hpp"

namespace embtrain {
namespace app {

namespace po = boost::program_options;

// Adds --padding-idx, --max-norm, --norm-type, --scale-grad-by-freq, --freeze,
// --optimizer, --lr, --betas, --eps, --lr-decay, --initial-accumulator-value.
void add_table_options(po::options_description* options, const std::string& default_optimizer,
                       double default_lr, bool default_scale_grad_by_freq = false);

// Fills spec's options and optimizer from parsed options (rows and dim are
// the caller's) and validates the result.
void read_table_options(const po::variables_map& vm, TableSpec* spec);

// Adds --device cpu|cuda and --data-comm auto|nccl|mpi-staged.
void add_device_options(po::options_description* options);

// Reads them: returns the device ("cpu" or "cuda") and fills `cuda`.
std::string read_device_options(const po::variables_map& vm, CudaOptions* cuda);

// Parses argv with `options`; unknown options and bad values throw
// embtrain::Error naming the option and the subcommand.
po::variables_map parse_command_line(int argc, char** argv, const po::options_description& options,
                                     const std::string& command);

}  // namespace app
}  // namespace embtrain
