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
#include "options.hpp"
#include "table_options.hpp"
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

void read_init(TableSetup& setup, const std::string& init) {
  if (init.empty()) throw ValueError("a value is required");
  if (init != "normal" && init != "zeros" && !fs::exists(init)) throw ValueError("no such file");
  setup.init = init;
}

// The keys of a table that only train has, beside table_options(): its
// shape and how its rows start (replay takes them from the weights it
// replays, bench from its own flags).
const OptionList<TableSetup>& train_table_options() {
  using R = Rules<TableSetup>;
  const int64_t kMax = std::numeric_limits<int64_t>::max();
  static const OptionList<TableSetup> options = {
      {"rows", "rows (default: what the workload's data needs)",
       R::optional_integer(
           1, kMax,
           [](TableSetup& s, std::optional<int64_t> v) { s.spec.num_embeddings = v.value_or(0); })},
      {"dim", "embedding_dim",
       R::integer(1, 1 << 20, [](TableSetup& s, int64_t v) { s.spec.dim = v; }), "32"},
      {"init", "normal | zeros | PATH.npy (from_pretrained: rows used as given)",
       R::text("normal, zeros, or the path of a .npy", read_init), "normal"},
      {"init_std", "standard deviation of init = normal (1 is torch.nn.Embedding's)",
       R::real(Range::closed(0, 1e6), &TableSetup::init_std)},
  };
  return options;
}

std::string table_prefix(const std::string& table) { return "table." + table + "."; }

// A table's defaults: train's, then the workload's.
OptionDefaults table_defaults(const WorkloadEntry& w, const std::string& table) {
  OptionDefaults defaults = {{"optimizer", "adagrad"}, {"lr", "0.05"}};
  const std::string prefix = table_prefix(table);
  for (const auto& [key, value] : w.table_defaults)
    if (key.rfind(prefix, 0) == 0) defaults[key.substr(prefix.size())] = value;
  return defaults;
}

// table.NAME.* keys.
void declare_table(Config& c, const WorkloadEntry& w, const std::string& name) {
  const OptionDefaults defaults = table_defaults(w, name);
  declare_keys(&c, table_prefix(name), table_options(), defaults);
  declare_keys(&c, table_prefix(name), train_table_options(), defaults);
}

TableSetup read_table(const Config& c, const std::string& name) {
  TableSetup setup;
  setup.spec.name = name;
  read_keys(c, table_prefix(name), table_options(), &setup.spec);
  read_keys(c, table_prefix(name), train_table_options(), &setup);
  return setup;
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
