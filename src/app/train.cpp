// embtrain train: a config-driven training run of one workload with its
// tables row-sharded over the ranks of the job.
#include <omp.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "commands.hpp"
#include "config.hpp"
#include "embtrain/checkpoint.hpp"
#include "embtrain/communicator.hpp"
#include "comm/device_selection.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/memory_plan.hpp"
#include "embtrain/trainer.hpp"
#include "options.hpp"
#include "table_options.hpp"
#include "train_setup.hpp"
#include "workload_registry.hpp"

namespace embtrain {
namespace app {

namespace fs = std::filesystem;

namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

#ifdef EMBTRAIN_BUILD_ID
constexpr const char* kBuildId = EMBTRAIN_BUILD_ID;
#else
constexpr const char* kBuildId = "unnamed";
#endif

}  // namespace

const char* build_id() { return kBuildId; }

namespace {

const WorkloadEntry* find_workload(const std::string& name) {
  for (const WorkloadEntry& e : registered_workloads())
    if (e.name == name) return &e;
  return nullptr;
}

std::vector<std::string> workload_names() {
  std::vector<std::string> names;
  for (const WorkloadEntry& e : registered_workloads()) names.push_back(e.name);
  return names;
}

// "train.seed, recsys.*" -> {"train.seed", "recsys.*"}.
void read_allow_changes(RunKeys& keys, const std::string& text) {
  keys.allow_changes.clear();
  std::string item;
  for (std::istringstream in(text); std::getline(in, item, ',');) {
    item = trim(item);
    if (item.empty()) continue;
    if (item.find_first_of(" \t=") != std::string::npos)
      throw ValueError("'" + item + "' is not a key");
    keys.allow_changes.push_back(item);
  }
}

void read_log_dir(RunKeys& keys, const std::string& dir) {
  if (dir.empty()) throw ValueError("a folder is required");
  keys.out_dir = dir;
}

OptionList<RunKeys> run_options() {
  using R = Rules<RunKeys>;
  return {
      {"train.workload", "the model to train: " + join(workload_names()),
       R::choice(workload_names(), &RunKeys::workload), "recsys"},
      {"train.steps", "total steps (0: train.epochs passes over the data)",
       R::integer(0, kMax, &RunKeys::steps)},
      {"train.epochs", "passes over the training data, when train.steps is 0",
       R::real(Range::closed(1e-9, 1e9), &RunKeys::epochs)},
      {"train.batch_size", "examples per rank per step",
       R::integer(1, 1 << 30, &RunKeys::batch_size)},
      {"train.seed", "seed of initial tables and batches", R::integer(0, kMax, &RunKeys::seed)},
      {"train.threads", "CPU threads per rank (0: OpenMP's default)",
       R::integer(0, 4096, &RunKeys::threads)},
      {"train.pipeline",
       "start distributing the next step's ids during the current step (same results)",
       R::boolean(&RunKeys::pipeline)},
      {"train.overlap_chunks",
       "rows and gradients cross the network in this many slices, so that the owners' gathers "
       "and optimizer updates run while the next slices travel (same results; 1: each "
       "exchange whole)",
       R::integer(1, 1024, &RunKeys::overlap_chunks)},
      {"train.on_nonfinite",
       "a step whose loss is NaN or infinite: stop (an error, before the step is applied) or "
       "skip_step (skip it and go on; stops after 20 such steps in a row)",
       R::choice({"stop", "skip_step"}, &RunKeys::on_nonfinite), "stop"},
      {"train.collective_timeout",
       "seconds without progress (a rank stopped or lost) before the watchdog ends the job "
       "naming the ranks that did not arrive; 0: never",
       R::real(Range::closed(0, 1e9), &RunKeys::collective_timeout_s), "600"},
      {"train.eval_every", "steps between evaluations (0: at start and end only)",
       R::integer(0, kMax, &RunKeys::eval_every)},
      {"log.interval", "steps between progress lines", R::integer(1, kMax, &RunKeys::log_interval)},
      {"log.dir", "where config.ini and metrics.jsonl are written", R::text("", read_log_dir),
       "runs/default"},
      {"log.quiet",
       "print nothing on the terminal but errors and what the workload writes at its end "
       "(skipgram's neighbours); metrics.jsonl has it all",
       R::boolean(&RunKeys::quiet)},
      {"log.overwrite",
       "a fresh run into a log.dir that holds another run's metrics or checkpoints removes "
       "them (otherwise it is refused)",
       R::boolean(&RunKeys::overwrite)},
      {"checkpoint.dir", "checkpoint root (default: LOG_DIR/checkpoints)",
       R::text("", &RunKeys::checkpoint_root)},
      {"checkpoint.every", "steps between checkpoints (0: only at the end)",
       R::integer(0, kMax, &RunKeys::checkpoint_every)},
      {"checkpoint.minutes",
       "minutes between checkpoints, beside checkpoint.every (0: none by time)",
       R::real(Range::closed(0, 1e9), &RunKeys::checkpoint_minutes), "10"},
      {"checkpoint.keep", "newest checkpoints kept (0: all)",
       R::integer(0, 1000000, &RunKeys::checkpoint_keep)},
      {"checkpoint.enabled", "write checkpoints at all", R::boolean(&RunKeys::checkpoints_enabled)},
      {"checkpoint.resume",
       "resume from: a checkpoint folder, a checkpoint root (its latest), a run's log.dir (its "
       "checkpoints), or 'auto' "
       "(checkpoint.dir's newest checkpoint that verifies if there is one, else a fresh start)",
       R::text("", &RunKeys::resume)},
      {"checkpoint.allow_changes",
       "keys a resume may change that decide what the checkpoint holds (seed, data, tables), "
       "comma-separated; '*' matches any text ('recsys.*', 'table.*.lr')",
       R::text("comma-separated config keys", read_allow_changes)},
  };
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
      {"kind",
       "embedding (torch.nn.Embedding: a row per id) | bag (torch.nn.EmbeddingBag: a pooled "
       "row per bag, where the workload has bags)",
       R::choice({"embedding", "bag"}, [](TableSetup& s, const std::string& v) { s.bag = v == "bag"; }),
       "embedding"},
      {"mode", "kind = bag: how a bag's rows are pooled: sum | mean | max",
       R::choice({"sum", "mean", "max"},
                 [](TableSetup& s, const std::string& v) { parse_pool_mode(v, &s.mode); }),
       "mean"},
      {"pool_at",
       "kind = bag: where bags are pooled: requester (rows travel as for embedding) | owner "
       "(each owner pools its ids per bag; one partial row per bag and owner travels)",
       R::choice({"requester", "owner"},
                 [](TableSetup& s, const std::string& v) { parse_pool_at(v, &s.spec.pool_at); }),
       "requester"},
  };
  return options;
}

// A table's defaults: train's, then the workload's for all its tables, then
// the workload's for this one.
OptionDefaults table_defaults(const WorkloadEntry& w, const std::string& table) {
  OptionDefaults defaults = {{"optimizer", "adagrad"}, {"lr", "0.05"}};
  for (const auto& [key, value] : w.table_defaults) defaults[key] = value;
  const auto own = w.per_table_defaults.find(table);
  if (own != w.per_table_defaults.end())
    for (const auto& [key, value] : own->second) defaults[key] = value;
  return defaults;
}

std::string table_prefix(const std::string& table) { return "table." + table + "."; }

// The keys of workload `w`: its tables' and its own section's.
void declare_workload_keys(Config* config, const WorkloadEntry& w) {
  for (const std::string& t : w.tables) {
    const OptionDefaults defaults = table_defaults(w, t);
    declare_keys(config, table_prefix(t), table_options(), defaults);
    declare_keys(config, table_prefix(t), train_table_options(), defaults);
  }
  w.declare(*config);
}

TableSetup read_table(const Config& config, const std::string& name) {
  TableSetup setup;
  setup.spec.name = name;
  read_keys(config, table_prefix(name), table_options(), &setup.spec);
  read_keys(config, table_prefix(name), train_table_options(), &setup);
  const std::string mode = table_prefix(name) + "mode";
  if (!setup.bag && setup.mode != PoolMode::kMean)
    config.fail(mode, "pools bags, so it needs " + table_prefix(name) + "kind = bag");
  if (!setup.bag && setup.spec.pool_at == PoolAt::kOwner) {
    // A workload's default pools its bags there; a table looked up row by
    // row has none, so only a pool_at given for it is an error.
    const std::string key = table_prefix(name) + "pool_at";
    if (config.source(key) != "default")
      config.fail(key, "pools bags, so it needs " + table_prefix(name) + "kind = bag");
    setup.spec.pool_at = PoolAt::kRequester;
  }
  if (setup.bag && setup.mode == PoolMode::kMax && setup.spec.scale_grad_by_freq)
    config.fail(mode, "max does not support scale_grad_by_freq (as torch.nn.EmbeddingBag)");
  return setup;
}

void print_help() {
  std::printf(
      "usage: [mpirun -np P] embtrain train [--config FILE.ini] [--section.key=value ...]\n\n"
      "Trains a workload with its embedding tables row-sharded over the ranks. Every key\n"
      "can be set in the INI file ([section] then key = value) or on the command line,\n"
      "which wins. Keys and defaults:\n");
  Config common;
  declare_keys(&common, "", run_options());
  declare_keys(&common, "train.", device_options());
  std::printf("%s", common.help_text().c_str());
  for (const WorkloadEntry& w : registered_workloads()) {
    Config c;
    declare_workload_keys(&c, w);
    std::printf("\n== workload %s: %s\n%s", w.name.c_str(), w.summary.c_str(),
                c.help_text().c_str());
  }
}

// checkpoint.dir defaults to LOG_DIR/checkpoints; checkpoint.resume = auto
// resumes from its latest checkpoint, if any.
void resolve_checkpoints(const Config& config, RunKeys* keys) {
  if (keys->checkpoints_enabled)
    keys->checkpoint_dir = keys->checkpoint_root.empty()
                               ? (fs::path(keys->out_dir) / "checkpoints").string()
                               : keys->checkpoint_root;
  if (keys->resume == "auto") {
    if (keys->checkpoint_dir.empty())
      config.fail("checkpoint.resume", "'auto' needs checkpoints enabled");
    keys->resume = keys->checkpoint_dir;
  } else if (!keys->resume.empty()) {
    keys->resume = checkpoints_at(keys->resume);
    if (keys->resume.empty())
      config.fail("checkpoint.resume", "no checkpoint there (valid: a checkpoint step_N, a "
                                       "checkpoint root holding them, a run's log.dir, or auto)");
  }
}

// What the terminal shows of the configuration: the keys set in a file or
// on the command line, with where each was set; the whole goes to
// config.ini.
std::string config_summary(const Config& config, const std::string& out_dir) {
  std::string set;
  int count = 0;
  for (const auto& [key, value] : config.values()) {
    ++count;
    if (config.source(key) == "default") continue;
    set += "  " + key + " = " + value + "    # " + config.source(key) + "\n";
  }
  return embtrain::detail::concat("configuration (", count, " keys; every one in ",
                                  (fs::path(out_dir) / "config.ini").string(), "), set here:\n",
                                  set.empty() ? "  (all defaults)\n" : set);
}

// A fresh run into a folder that holds another run's results would mix
// them (metrics appended, stale checkpoints picked up by a later resume):
// refused unless log.overwrite. resume = auto where there is no checkpoint
// yet (a run killed before its first, requeued with the same command)
// starts over as its help says, and replaces what is there as
// log.overwrite would, saying so. Returns what the new run replaces
// (removed by remove_replaced once it has started: nothing goes on a
// typo).
std::vector<fs::path> check_log_dir(const Config& config, const RunKeys& keys) {
  // Continuing the run that is there (a resume path with no checkpoint
  // was refused already, unless it came from 'auto').
  if (!keys.resume.empty() && holds_checkpoint(keys.resume)) return {};
  const bool fresh_auto = !keys.resume.empty();
  const fs::path dir = keys.out_dir;
  const fs::path own_checkpoints = dir / "checkpoints";
  std::vector<fs::path> found;
  for (const fs::path& p : {dir / "metrics.jsonl", own_checkpoints}) {
    std::error_code ec;
    if (fs::exists(p, ec)) found.push_back(p);
  }
  if (!found.empty() && fresh_auto && !keys.overwrite)
    std::fprintf(stderr,
                 "embtrain train: checkpoint.resume = auto: no checkpoint in %s yet, so this run "
                 "starts over and replaces %s\n",
                 keys.resume.c_str(), found[0].string().c_str());
  else if (!found.empty() && !keys.overwrite)
    config.fail("log.dir",
                embtrain::detail::concat(
                    "holds another run (", found[0].string(),
                    "); continue it with --checkpoint.resume=auto, replace it with "
                    "--log.overwrite=true, or pick another --log.dir"));
  return found;
}

void remove_replaced(const std::vector<fs::path>& found) {
  for (const fs::path& p : found) {
    std::error_code ec;
    fs::remove_all(p, ec);
    EMBTRAIN_REQUIRE(!ec, "log.overwrite: cannot remove ", p.string(), ": ", ec.message());
  }
}

// The run's folder holds the configuration that reproduces it.
void write_config_ini(const TrainOptions& options, int ranks) {
  std::error_code ec;
  fs::create_directories(options.out_dir, ec);
  EMBTRAIN_REQUIRE(!ec, "config key 'log.dir' = '", options.out_dir,
                   "': cannot create folder: ", ec.message());
  const fs::path path = fs::path(options.out_dir) / "config.ini";
  std::ofstream out(path, std::ios::trunc);
  // The ranks matter too (each holds 1/P of every table): said up front.
  out << "# written by a run of " << ranks << " rank(s); again: "
      << (ranks > 1 ? "mpirun -np " + std::to_string(ranks) + " " : std::string())
      << program_path() << " train --config " << path.string() << "\n";
  out << options.config_text;
  out.close();  // a full disk shows at the flush
  EMBTRAIN_REQUIRE(out, path.string(), ": cannot write (disk full?)");
}

// Every rank must run the same configuration and the same build: a rank
// with another table shape, seed or batch would corrupt or hang the job.
// Threads may differ (ranks on unequal hosts).
void agree_on_config(Communicator& comm, const Config& config) {
  AgreedValues values = {{"embtrain build", kBuildId}};
  for (const auto& [key, value] : config.values())
    if (key != "train.threads") values.emplace_back(key, value);
  const std::string differ = find_disagreement(comm, values, "config key");
  if (!differ.empty())
    throw AgreedError(differ + "; every rank must run the same build and configuration");
}

// The same configuration may still read different files on different hosts.
void agree_on_data(Communicator& comm, const Workload& workload) {
  const std::string differ =
      find_disagreement(comm, {{"data", workload.data_identity()}}, "workload");
  if (!differ.empty())
    throw AgreedError(differ + "; every rank must read the same data (copy the same files to "
                               "every host)");
}

// The run's memory plan per rank (memory_plan.hpp), refused when it does
// not fit the host: first with the tables whose rows the keys give (before
// the workload builds its data), then with every table once `workload`
// knows. Returns the plan.
MemoryPlan check_memory(Communicator& comm, int ranks_on_host, const RunSetup& setup,
                        const WorkloadContext& context, const Workload* workload) {
  WorkloadEstimate estimate;
  run_agreed(comm, [&] { estimate = run_estimate(setup, context); });
  MemoryPlan plan = run_memory_plan(setup, context, estimate, comm.size(), workload);
  check_memory_plan(comm, ranks_on_host, plan, kMemoryAdvice);
  return plan;
}

bool asks_for_help(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") return true;
  return false;
}

}  // namespace

const char kMemoryAdvice[] =
    "Each rank holds 1/P of every table: use more ranks on more hosts, fewer rows or a smaller "
    "dim, an optimizer with less state (sgd: none; rowwise_adagrad: one float per row), or a "
    "smaller train.batch_size.";

void read_setup(int argc, char** argv, RunSetup* setup, const std::string& command) {
  // The workload decides which keys exist, so it is read first.
  std::string source;
  std::string name = Config::peek(argc, argv, "train.workload", &source);
  if (name.empty()) name = "recsys";
  setup->workload = find_workload(name);
  EMBTRAIN_REQUIRE(setup->workload, "config key 'train.workload' = '", name, "' (", source,
                   "): not a workload (valid: ", join(workload_names()), ")");
  Config& config = setup->config;
  declare_keys(&config, "", run_options());
  declare_keys(&config, "train.", device_options());
  declare_workload_keys(&config, *setup->workload);
  config.parse(argc, argv, command);

  RunKeys& keys = setup->keys;
  read_keys(config, "", run_options(), &keys);
  // An entry that names no key would let nothing through, silently.
  for (const std::string& item : keys.allow_changes) {
    bool any = false;
    for (const auto& entry : config.values()) any = any || key_matches(entry.first, item);
    if (any) continue;
    const std::string near = item.find('*') == std::string::npos ? config.nearest_key(item) : "";
    config.fail("checkpoint.allow_changes",
                "'" + item + "' is no key" + (near.empty() ? "" : " (did you mean '" + near + "'?)") +
                    "; 'embtrain " + command + " --help' lists the keys ('*' stands for any "
                    "text)");
  }
  const Config* parsed = &config;  // lives as long as the setup, which outlives the run
  keys.key_source = [parsed](const std::string& key) { return parsed->source(key); };
  DeviceChoice device;
  read_keys(config, "train.", device_options(), &device);
  keys.device = device.device;
  keys.cuda = device.cuda;
  if (keys.threads > 0) omp_set_num_threads(keys.threads);
  resolve_checkpoints(config, &keys);
  for (const std::string& t : setup->workload->tables)
    setup->tables.push_back(read_table(config, t));
  keys.config_text = config.effective_ini();
}

WorkloadContext run_context(const RunSetup& setup, Communicator* comm) {
  WorkloadContext context;
  context.comm = comm;
  context.seed = setup.keys.seed;
  context.batch_size = setup.keys.batch_size;
  context.out_dir = setup.keys.out_dir;
  context.key_source = setup.keys.key_source;
  for (const TableSetup& s : setup.tables) {
    context.table_dims[s.spec.name] = s.spec.dim;
    if (s.bag) context.table_bags[s.spec.name] = s.mode;
  }
  return context;
}

WorkloadEstimate run_estimate(const RunSetup& setup, const WorkloadContext& context) {
  return setup.workload->estimate ? setup.workload->estimate(setup.config, context)
                                  : WorkloadEstimate{};
}

namespace {

// Rows of a table: the keys', else the estimate's, else (0) unknown; the
// workload's once it is built.
double table_rows(const TableSetup& t, const WorkloadEstimate& estimate, const Workload* workload) {
  if (workload) return static_cast<double>(workload->table_rows(t.spec.name));
  double rows = static_cast<double>(t.spec.num_embeddings);
  for (const auto& [name, known] : estimate.rows)
    if (name == t.spec.name && rows == 0) rows = known;
  return rows;
}

}  // namespace

std::vector<std::string> tables_of_unknown_rows(const RunSetup& setup,
                                                const WorkloadEstimate& estimate) {
  std::vector<std::string> unknown;
  for (const TableSetup& t : setup.tables)
    if (table_rows(t, estimate, nullptr) <= 0) unknown.push_back(t.spec.name);
  return unknown;
}

MemoryPlan run_memory_plan(const RunSetup& setup, const WorkloadContext& context,
                           const WorkloadEstimate& estimate, int ranks,
                           const Workload* workload) {
  MemoryPlan plan;
  plan.set_gpu(setup.keys.device == "cuda");
  for (const TableSetup& t : setup.tables) {
    const double rows = table_rows(t, estimate, workload);
    if (rows > 0) plan.add_table(t.spec, rows, ranks);
  }
  plan.add(estimate.data_what, estimate.data_bytes);
  plan.add(embtrain::detail::concat("step buffers (train.batch_size = ", context.batch_size, ")"),
           estimate.step_bytes, /*device=*/true);
  plan.add_transfer_buffers();
  plan.add_process();
  return plan;
}

int run_train(int argc, char** argv) {
  std::unique_ptr<Communicator> comm = make_world_communicator();
  const bool root = comm->rank() == 0;
  if (asks_for_help(argc, argv)) {
    if (root) print_help();
    return 0;
  }
  RunSetup setup;
  run_agreed(*comm, [&] { read_setup(argc, argv, &setup); });
  agree_on_config(*comm, setup.config);
  const RunKeys& keys = setup.keys;
  // The folder is checked now and claimed once the run has started
  // (TrainOptions::claim_out_dir): a run that fails to start, on a bad
  // init file or checkpoint say, leaves it as it was.
  std::vector<fs::path> replaced;
  run_agreed(*comm, [&] {
    if (root) replaced = check_log_dir(setup.config, keys);
  });
  setup.keys.claim_out_dir = [replaced, &keys, ranks = comm->size()] {
    remove_replaced(replaced);
    write_config_ini(keys, ranks);
  };
  const bool talk = root && !keys.quiet;
  if (talk) {
    std::printf("embtrain train: %s on %d rank(s) x %d threads, global batch %lld\n%s",
                setup.workload->name.c_str(), comm->size(), omp_get_max_threads(),
                static_cast<long long>(keys.batch_size * comm->size()),
                config_summary(setup.config, keys.out_dir).c_str());
    std::fflush(stdout);
  }

  const WorkloadContext context = run_context(setup, comm.get());
  const int ranks_on_host = local_rank_info(*comm).local_size;
  check_memory(*comm, ranks_on_host, setup, context, nullptr);  // before the data is built
  std::unique_ptr<Workload> workload;
  run_agreed(*comm, [&] { workload = setup.workload->create(setup.config, context); });
  agree_on_data(*comm, *workload);
  const MemoryPlan plan =
      check_memory(*comm, ranks_on_host, setup, context, workload.get());  // every table's rows
  // A GPU run's device lines against its GPU, once the engine has chosen it.
  const int rank = comm->rank();
  setup.keys.cuda.device_memory_check = [plan, rank](int device, int sharing, double free,
                                                     double total) {
    return device_memory_error(plan, rank, device, sharing, free, total, kMemoryAdvice);
  };
  if (talk) {
    std::printf("workload: %s\n", workload->describe().c_str());
    if (workload->global_batch() > workload->epoch_samples() && workload->epoch_samples() > 0)
      std::printf("note: the global batch (%lld = train.batch_size x %d ranks) is more than an "
                  "epoch's %lld samples: every step takes them all, some twice or more\n",
                  static_cast<long long>(workload->global_batch()), comm->size(),
                  static_cast<long long>(workload->epoch_samples()));
    std::fflush(stdout);
  }
  const TrainSummary summary = train(*workload, setup.tables, keys, *comm);
  // Stopped by a signal: the shell's convention, 128 + its number.
  return summary.stop_signal ? 128 + summary.stop_signal : 0;
}

}  // namespace app
}  // namespace embtrain
