// embtrain train: a config-driven training run of one workload with its
// tables row-sharded over the ranks of the job.
#include <omp.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "commands.hpp"
#include "config.hpp"
#include "embtrain/checkpoint.hpp"
#include "embtrain/communicator.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/trainer.hpp"
#include "workload_registry.hpp"

namespace embtrain {
namespace app {

namespace fs = std::filesystem;

namespace {

const WorkloadEntry* find_workload(const std::string& name) {
  for (const WorkloadEntry& e : registered_workloads())
    if (e.name == name) return &e;
  return nullptr;
}

std::string workload_names() {
  std::string names;
  for (const WorkloadEntry& e : registered_workloads()) names += (names.empty() ? "" : ", ") + e.name;
  return names;
}

void declare_common(Config& c) {
  c.declare("train.workload", "recsys", "the model to train: " + workload_names());
  c.declare("train.steps", "0", "total steps (0: train.epochs passes over the data)");
  c.declare("train.epochs", "1", "passes over the training data, when train.steps is 0");
  c.declare("train.batch_size", "1024", "examples per rank per step");
  c.declare("train.seed", "1", "seed of initial tables and batches");
  c.declare("train.threads", "0", "CPU threads per rank (0: OpenMP's default)");
  c.declare("train.device", "cpu",
            "where the tables live and the embedding step runs: cpu | cuda (rank r uses GPU "
            "local_rank % device_count)");
  c.declare("train.data_comm", "auto",
            "with device cuda, how device buffers travel: auto (nccl when each GPU has one rank, "
            "else mpi-staged) | nccl | mpi-staged");
  c.declare("train.eval_every", "0", "steps between evaluations (0: at start and end only)");
  c.declare("log.interval", "100", "steps between progress lines");
  c.declare("log.dir", "runs/default", "where config.ini and metrics.jsonl are written");
  c.declare("log.quiet", "false", "no progress lines");
  c.declare("checkpoint.dir", "", "checkpoint root (default: LOG_DIR/checkpoints)");
  c.declare("checkpoint.every", "0", "steps between checkpoints (0: only at the end)");
  c.declare("checkpoint.keep", "3", "newest checkpoints kept (0: all)");
  c.declare("checkpoint.enabled", "true", "write checkpoints at all");
  c.declare("checkpoint.resume", "",
            "resume from: a checkpoint folder, a checkpoint root (its latest), or 'auto' "
            "(checkpoint.dir's latest if there is one, else a fresh start)");
}

// table.NAME.* keys, with the workload's defaults over the general ones.
void declare_table(Config& c, const WorkloadEntry& w, const std::string& name) {
  const std::string p = "table." + name + ".";
  auto d = [&](const std::string& key, const std::string& general, const std::string& help) {
    const auto it = w.table_defaults.find(p + key);
    c.declare(p + key, it != w.table_defaults.end() ? it->second : general, help);
  };
  d("rows", "", "rows (default: what the workload's data needs)");
  d("dim", "32", "embedding_dim");
  d("padding_idx", "", "row that gets no gradient; negative counts from the end");
  d("max_norm", "", "renorm looked-up rows whose norm exceeds this");
  d("norm_type", "2", "p of the max_norm p-norm (inf allowed)");
  d("scale_grad_by_freq", "false", "divide a row's gradient by its count in the global batch");
  d("optimizer", "adagrad", "sgd | adagrad | adam | rowwise_adagrad");
  d("lr", "0.05", "learning rate");
  d("betas", "0.9,0.999", "adam: B1,B2");
  d("eps", "", "eps (default: 1e-10 adagrad, 1e-8 adam and rowwise_adagrad)");
  d("lr_decay", "0", "adagrad: lr decay");
  d("initial_accumulator_value", "0", "adagrad and rowwise_adagrad: initial accumulator");
  d("init", "normal", "normal | zeros | PATH.npy (from_pretrained: rows used as given)");
  d("init_std", "1", "standard deviation of init = normal (1 is torch.nn.Embedding's)");
  d("freeze", "false", "no updates (from_pretrained(freeze=True))");
}

TableSetup read_table(const Config& c, const std::string& name) {
  const std::string p = "table." + name + ".";
  const int64_t kMax = std::numeric_limits<int64_t>::max();
  TableSetup s;
  s.spec.name = name;
  s.spec.num_embeddings = c.optional_integer(p + "rows", 1, kMax).value_or(0);
  s.spec.dim = c.integer(p + "dim", 1, 1 << 20);
  s.spec.padding_idx = c.optional_integer(p + "padding_idx", -kMax, kMax);
  s.spec.max_norm = c.optional_real(p + "max_norm", 1e-30, 1e30);
  const std::string norm = c.str(p + "norm_type");
  s.spec.norm_type = norm == "inf" ? std::numeric_limits<double>::infinity()
                                   : c.real(p + "norm_type", 1e-6, 1e6);
  s.spec.scale_grad_by_freq = c.boolean(p + "scale_grad_by_freq");
  s.spec.freeze = c.boolean(p + "freeze");
  OptimizerConfig& o = s.spec.optimizer;
  o.kind = parse_optimizer_kind(c.choice(p + "optimizer", {"sgd", "adagrad", "adam", "rowwise_adagrad"}));
  o.lr = c.real(p + "lr", 0, 1e6);
  const std::string betas = c.str(p + "betas");
  const size_t comma = betas.find(',');
  char* end = nullptr;
  if (comma == std::string::npos) c.fail(p + "betas", "not of the form B1,B2");
  o.beta1 = std::strtod(betas.substr(0, comma).c_str(), &end);
  if (*end || !(o.beta1 >= 0 && o.beta1 < 1)) c.fail(p + "betas", "B1 must be in [0, 1)");
  o.beta2 = std::strtod(betas.substr(comma + 1).c_str(), &end);
  if (*end || !(o.beta2 >= 0 && o.beta2 < 1)) c.fail(p + "betas", "B2 must be in [0, 1)");
  o.eps = c.optional_real(p + "eps", 0, 1);
  o.lr_decay = c.real(p + "lr_decay", 0, 1e6);
  o.initial_accumulator_value = c.real(p + "initial_accumulator_value", 0, 1e6);
  s.init = c.str(p + "init");
  if (s.init.empty()) c.fail(p + "init", "a value is required (normal, zeros or PATH.npy)");
  if (s.init != "normal" && s.init != "zeros" && !fs::exists(s.init))
    c.fail(p + "init", "no such file (valid: normal, zeros, or the path of a .npy)");
  s.init_std = c.real(p + "init_std", 0, 1e6);
  return s;
}

}  // namespace

int run_train(int argc, char** argv) {
  std::unique_ptr<Communicator> comm = make_mpi_communicator();
  const bool root = comm->rank() == 0;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      if (!root) return 0;
      std::printf(
          "usage: [mpirun -np P] embtrain train [--config FILE.ini] [--section.key=value ...]\n\n"
          "Trains a workload with its embedding tables row-sharded over the ranks. Every key\n"
          "can be set in the INI file ([section] then key = value) or on the command line,\n"
          "which wins. Keys and defaults:\n");
      Config common;
      declare_common(common);
      std::printf("%s", common.help_text().c_str());
      for (const WorkloadEntry& w : registered_workloads()) {
        Config c;
        for (const std::string& t : w.tables) declare_table(c, w, t);
        w.declare(c);
        std::printf("\n== workload %s: %s\n%s", w.name.c_str(), w.summary.c_str(),
                    c.help_text().c_str());
      }
      return 0;
    }

  Config config;
  const WorkloadEntry* entry = nullptr;
  TrainOptions options;
  std::vector<TableSetup> setups;
  int64_t batch_size = 0;
  run_agreed(*comm, [&] {
    std::string name = Config::peek(argc, argv, "train.workload");
    if (name.empty()) name = "recsys";
    entry = find_workload(name);
    EMBTRAIN_REQUIRE(entry, "config key 'train.workload' = '", name,
                     "' is not a workload (valid: ", workload_names(), ")");
    declare_common(config);
    for (const std::string& t : entry->tables) declare_table(config, *entry, t);
    entry->declare(config);
    config.parse(argc, argv, "train");

    const int64_t kMax = std::numeric_limits<int64_t>::max();
    options.workload = entry->name;
    options.steps = config.integer("train.steps", 0, kMax);
    options.epochs = config.real("train.epochs", 1e-9, 1e9);
    batch_size = config.integer("train.batch_size", 1, 1 << 30);
    options.seed = static_cast<uint64_t>(config.integer("train.seed", 0, kMax));
    const int threads = static_cast<int>(config.integer("train.threads", 0, 4096));
    if (threads > 0) omp_set_num_threads(threads);
    options.device = config.choice("train.device", {"cpu", "cuda"});
    options.cuda.data_comm = config.choice("train.data_comm", {"auto", "nccl", "mpi-staged"});
    options.eval_every = config.integer("train.eval_every", 0, kMax);
    options.log_interval = config.integer("log.interval", 1, kMax);
    options.out_dir = config.str("log.dir");
    if (options.out_dir.empty()) config.fail("log.dir", "a folder is required");
    options.quiet = config.boolean("log.quiet");
    if (config.boolean("checkpoint.enabled"))
      options.checkpoint_dir = config.has("checkpoint.dir")
                                   ? config.str("checkpoint.dir")
                                   : (fs::path(options.out_dir) / "checkpoints").string();
    options.checkpoint_every = config.integer("checkpoint.every", 0, kMax);
    options.checkpoint_keep = static_cast<int>(config.integer("checkpoint.keep", 0, 1000000));
    options.resume = config.str("checkpoint.resume");
    if (options.resume == "auto") {
      if (options.checkpoint_dir.empty())
        config.fail("checkpoint.resume", "'auto' needs checkpoints enabled");
      options.resume = options.checkpoint_dir;
    } else if (!options.resume.empty() && resolve_checkpoint(options.resume).empty()) {
      config.fail("checkpoint.resume", "no checkpoint there");
    }
    for (const std::string& t : entry->tables) setups.push_back(read_table(config, t));
    options.config_text = config.effective_ini();
  });

  // The run's folder holds the configuration that reproduces it.
  run_agreed(*comm, [&] {
    if (!root) return;
    std::error_code ec;
    fs::create_directories(options.out_dir, ec);
    EMBTRAIN_REQUIRE(!ec, "config key 'log.dir' = '", options.out_dir,
                     "': cannot create folder: ", ec.message());
    const fs::path path = fs::path(options.out_dir) / "config.ini";
    std::ofstream out(path, std::ios::trunc);
    out << options.config_text;
    EMBTRAIN_REQUIRE(out, path.string(), ": cannot write");
  });
  if (root && !options.quiet) {
    std::printf("embtrain train: %s on %d rank(s) x %d threads\n%s\n", entry->name.c_str(),
                comm->size(), omp_get_max_threads(), options.config_text.c_str());
    std::fflush(stdout);
  }

  WorkloadContext context;
  context.comm = comm.get();
  context.seed = options.seed;
  context.batch_size = batch_size;
  context.out_dir = options.out_dir;
  for (const TableSetup& s : setups) context.table_dims[s.spec.name] = s.spec.dim;
  std::unique_ptr<Workload> workload;
  run_agreed(*comm, [&] { workload = entry->create(config, context); });
  if (root && !options.quiet) {
    std::printf("workload: %s\n", workload->describe().c_str());
    std::fflush(stdout);
  }
  train(*workload, setups, options, *comm);
  return 0;
}

}  // namespace app
}  // namespace embtrain
