#include "table_options.hpp"

#include <cmath>
#include <limits>
#include <sstream>

#include "embtrain/errors.hpp"

namespace embtrain {
namespace app {

void add_table_options(po::options_description* options, const std::string& default_optimizer,
                       double default_lr, bool default_scale_grad_by_freq) {
  // clang-format off
  options->add_options()
    ("padding-idx", po::value<int64_t>(),
     "row that gets no gradient; negative counts from the end")
    ("max-norm", po::value<double>(), "renorm looked-up rows whose norm exceeds this")
    ("norm-type", po::value<std::string>()->default_value("2"), "p of the max-norm p-norm (inf allowed)")
    ("scale-grad-by-freq", po::value<bool>()->default_value(default_scale_grad_by_freq)
                               ->implicit_value(true),
     "divide each row's gradient by its count in the batch (=false to turn off)")
    ("freeze", po::bool_switch(), "no optimizer updates (from_pretrained(freeze=True))")
    ("optimizer", po::value<std::string>()->default_value(default_optimizer),
     "sgd | adagrad | adam | rowwise_adagrad")
    ("lr", po::value<double>()->default_value(default_lr), "learning rate")
    ("betas", po::value<std::string>()->default_value("0.9,0.999"), "adam: B1,B2")
    ("eps", po::value<double>(), "eps (default: 1e-10 adagrad, 1e-8 adam and rowwise_adagrad)")
    ("lr-decay", po::value<double>()->default_value(0.0), "adagrad: lr decay")
    ("initial-accumulator-value", po::value<double>()->default_value(0.0),
     "adagrad and rowwise_adagrad: initial accumulator");
  // clang-format on
}

namespace {
double parse_number(const std::string& text, const std::string& option) {
  if (text == "inf" || text == "+inf") return std::numeric_limits<double>::infinity();
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  EMBTRAIN_REQUIRE(used == text.size() && !text.empty(), "option --", option, ": '", text,
                   "' is not a number");
  return v;
}
}  // namespace

void read_table_options(const po::variables_map& vm, TableSpec* spec) {
  if (vm.count("padding-idx")) spec->padding_idx = vm["padding-idx"].as<int64_t>();
  if (vm.count("max-norm")) spec->max_norm = vm["max-norm"].as<double>();
  spec->norm_type = parse_number(vm["norm-type"].as<std::string>(), "norm-type");
  spec->scale_grad_by_freq = vm["scale-grad-by-freq"].as<bool>();
  spec->freeze = vm["freeze"].as<bool>();

  OptimizerConfig& opt = spec->optimizer;
  opt.kind = parse_optimizer_kind(vm["optimizer"].as<std::string>());
  opt.lr = vm["lr"].as<double>();
  const std::string betas = vm["betas"].as<std::string>();
  const size_t comma = betas.find(',');
  EMBTRAIN_REQUIRE(comma != std::string::npos, "option --betas: '", betas,
                   "' is not of the form B1,B2");
  opt.beta1 = parse_number(betas.substr(0, comma), "betas");
  opt.beta2 = parse_number(betas.substr(comma + 1), "betas");
  if (vm.count("eps")) opt.eps = vm["eps"].as<double>();
  opt.lr_decay = vm["lr-decay"].as<double>();
  opt.initial_accumulator_value = vm["initial-accumulator-value"].as<double>();
  spec->validate();
}

void add_device_options(po::options_description* options) {
  // clang-format off
  options->add_options()
    ("device", po::value<std::string>()->default_value("cpu"),
     "cpu | cuda: where the table lives and the step runs (GPU local_rank % device_count)")
    ("data-comm", po::value<std::string>()->default_value("auto"),
     "with --device cuda, how device buffers travel: auto | nccl | mpi-staged");
  // clang-format on
}

std::string read_device_options(const po::variables_map& vm, CudaOptions* cuda) {
  const std::string device = vm["device"].as<std::string>();
  EMBTRAIN_REQUIRE(device == "cpu" || device == "cuda", "option --device = '", device,
                   "' is invalid (valid: cpu, cuda)");
  cuda->data_comm = vm["data-comm"].as<std::string>();
  EMBTRAIN_REQUIRE(cuda->data_comm == "auto" || cuda->data_comm == "nccl" ||
                       cuda->data_comm == "mpi-staged",
                   "option --data-comm = '", cuda->data_comm,
                   "' is invalid (valid: auto, nccl, mpi-staged)");
  return device;
}

po::variables_map parse_command_line(int argc, char** argv, const po::options_description& options,
                                     const std::string& command) {
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(options).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw make_error("embtrain ", command, ": ", e.what(), " (see 'embtrain ", command,
                     " --help')");
  }
  return vm;
}

}  // namespace app
}  // namespace embtrain
