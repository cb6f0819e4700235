// The options of one embedding table that every command takes:
// torch.nn.Embedding's (padding_idx, max_norm, norm_type, scale_grad_by_freq,
// freeze) and its optimizer's (optimizer, lr, betas, eps, lr_decay,
// initial_accumulator_value), declared once. `embtrain train` reads them as
// the keys table.NAME.KEY, `replay` and `bench` as the flags --KEY; each
// command brings its own defaults (optimizer and lr have no common one).
// Also the device options, and the command-line parser of replay, bench
// and export.
#pragma once

#include <string>

#include "embtrain/embedding_table.hpp"
#include "embtrain/sharded_embedding.hpp"
#include "options.hpp"

namespace embtrain {
namespace app {

// Everything but rows and dim, which each command gets its own way.
const OptionList<TableSpec>& table_options();

// Adds the flags --padding-idx, --max-norm, ..., `defaults` over the declared ones.
void add_table_options(po::options_description* options, const OptionDefaults& defaults);

// Fills spec's options and optimizer from parsed flags (rows and dim are
// the caller's) and validates the result.
void read_table_options(const po::variables_map& vm, TableSpec* spec);

// Where a command's tables live and run, and how device buffers travel
// between ranks: the keys train.device and train.data_comm, or the flags
// --device and --data-comm.
struct DeviceChoice {
  std::string device = "cpu";  // cpu | cuda
  CudaOptions cuda;            // with device cuda
};
const OptionList<DeviceChoice>& device_options();

void add_device_options(po::options_description* options);
DeviceChoice read_device_options(const po::variables_map& vm);

// Parses argv with `options`; unknown options and bad values throw
// embtrain::Error naming the option and the subcommand.
po::variables_map parse_command_line(int argc, char** argv, const po::options_description& options,
                                     const std::string& command);

// An output file's folder must exist or be possible to make (see
// output_folder_problem): checked before the work that ends in writing it,
// which makes it (make_output_folder). `option` names it ("--out").
void require_output_folder(const std::string& option, const std::string& path);

}  // namespace app
}  // namespace embtrain
