#include "table_options.hpp"

#include <filesystem>
#include <limits>

#include "embtrain/errors.hpp"
#include "train/durable_file.hpp"

namespace embtrain {
namespace app {

namespace {

// "B1,B2": Adam's two decay rates, both given, each in [0, 1).
void read_betas(TableSpec& spec, const std::string& text) {
  const size_t comma = text.find(',');
  if (comma == std::string::npos) throw ValueError("not of the form B1,B2");
  const auto beta = [&](const std::string& part, const char* which) {
    try {
      return parse_real(trim(part), Range::half_open(0, 1));
    } catch (const ValueError& e) {
      throw ValueError(std::string(which) + ": " + e.what());
    }
  };
  spec.optimizer.beta1 = beta(text.substr(0, comma), "B1");
  spec.optimizer.beta2 = beta(text.substr(comma + 1), "B2");
}

}  // namespace

const OptionList<TableSpec>& table_options() {
  using R = Rules<TableSpec>;
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  // Wide, but narrow enough that every value is finite and, where it must
  // be, nonzero as the float the kernels compute in.
  const Range kRate = Range::closed(0, 1e6);
  static const OptionList<TableSpec> options = {
      // Any row, counted from either end; TableSpec::validate checks it
      // against the rows, which only the command knows.
      {"padding_idx", "row that gets no gradient; negative counts from the end",
       R::optional_integer(-kMax, kMax, &TableSpec::padding_idx)},
      {"max_norm", "renorm looked-up rows whose norm exceeds this",
       R::optional_real(Range::closed(1e-30, 1e30), &TableSpec::max_norm)},
      {"norm_type", "p of the max_norm p-norm (inf allowed)",
       R::real(Range::closed(1e-6, 1e6).or_infinity(), &TableSpec::norm_type)},
      {"scale_grad_by_freq", "divide a row's gradient by its count in the global batch",
       R::boolean(&TableSpec::scale_grad_by_freq)},
      {"freeze", "no optimizer updates (from_pretrained(freeze=True))",
       R::boolean(&TableSpec::freeze)},
      // Each command has its own optimizer and lr.
      {"optimizer", "sgd | adagrad | adam | rowwise_adagrad",
       R::choice(
           {"sgd", "adagrad", "adam", "rowwise_adagrad"},
           [](TableSpec& s, const std::string& v) { s.optimizer.kind = parse_optimizer_kind(v); })},
      {"lr", "learning rate", R::real(kRate, [](TableSpec& s, double v) { s.optimizer.lr = v; })},
      {"betas", "adam: B1,B2", R::text("B1,B2 with each in [0, 1)", read_betas), "0.9,0.999"},
      {"eps", "eps (default: 1e-10 adagrad, 1e-8 adam and rowwise_adagrad)",
       R::optional_real(Range::closed(0, 1),
                        [](TableSpec& s, std::optional<double> v) { s.optimizer.eps = v; })},
      {"lr_decay", "adagrad: lr decay",
       R::real(kRate, [](TableSpec& s, double v) { s.optimizer.lr_decay = v; }), "0"},
      {"initial_accumulator_value", "adagrad and rowwise_adagrad: initial accumulator",
       R::real(kRate, [](TableSpec& s, double v) { s.optimizer.initial_accumulator_value = v; }),
       "0"},
      {"comm_precision",
       "how rows and gradients travel between ranks: fp32 (exact) | bf16 | fp16 (gradients "
       "scaled by 1024, saturating at 65504): 16 bits halve the bytes",
       R::choice({"fp32", "bf16", "fp16"},
                 [](TableSpec& s, const std::string& v) {
                   s.comm_precision = parse_comm_precision(v);
                 }),
       "fp32"},
  };
  return options;
}

void add_table_options(po::options_description* options, const OptionDefaults& defaults) {
  add_flags(options, table_options(), defaults);
}

void read_table_options(const po::variables_map& vm, TableSpec* spec) {
  read_flags(vm, table_options(), spec);
  spec->validate();
}

const OptionList<DeviceChoice>& device_options() {
  using R = Rules<DeviceChoice>;
  static const OptionList<DeviceChoice> options = {
      {"device",
       "where the tables live and the embedding step runs: cpu | cuda (rank r uses GPU "
       "local_rank % device_count)",
       R::choice({"cpu", "cuda"}, &DeviceChoice::device)},
      {"data_comm",
       "with device cuda, how device buffers travel: auto (nccl when each GPU has one rank, "
       "else mpi-staged) | nccl | mpi-staged",
       R::choice({"auto", "nccl", "mpi-staged"},
                 [](DeviceChoice& d, const std::string& v) { d.cuda.data_comm = v; }),
       "auto"},
  };
  return options;
}

void add_device_options(po::options_description* options) { add_flags(options, device_options()); }

DeviceChoice read_device_options(const po::variables_map& vm) {
  DeviceChoice choice;
  read_flags(vm, device_options(), &choice);
  return choice;
}

po::variables_map parse_command_line(int argc, char** argv, const po::options_description& options,
                                     const std::string& command) {
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(options).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    // main prefixes "embtrain <command>: error: ".
    throw make_error(e.what(), " (see 'embtrain ", command, " --help')");
  }
  return vm;
}

void require_output_folder(const std::string& option, const std::string& path) {
  const std::string problem = output_folder_problem(path);
  EMBTRAIN_REQUIRE(problem.empty(), "option ", option, " = '", path, "': ", problem);
}

}  // namespace app
}  // namespace embtrain
