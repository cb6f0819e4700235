// embtrain plan: what a run will need and how fast it will go, before it
// is started. One process, whatever the number of ranks planned for: it
// reads the same configuration as `embtrain train` (or a bench job's
// options), prints each rank's memory plan (the one train refuses a run
// with) and whether it fits, and, from a machine profile measured by
// `embtrain bench --profile`, a predicted step time (step_model.hpp).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "app/bench/harness.hpp"
#include "commands.hpp"
#include "embtrain/comm_precision.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/memory_plan.hpp"
#include "step_model.hpp"
#include "train_setup.hpp"

namespace embtrain {
namespace app {

namespace {

const char kPlanUsage[] =
    "usage: embtrain plan --ranks P [--profile MACHINE.json] [--cluster SPEC] [--json]\n"
    "                     (--config FILE.ini [--section.key=value ...] | --bench [bench options])\n"
    "\n"
    "Plans a run of P ranks without starting it (one process, no mpirun): each rank's memory\n"
    "(its shard of every table with its optimizer state, the workload's data, the step's\n"
    "buffers, the process itself) and whether it fits, the same plan `embtrain train` refuses\n"
    "a run with; then, given a machine profile, a predicted step time. The job is the\n"
    "configuration `embtrain train` would read, or, after --bench, `embtrain bench`'s options.\n"
    "\n"
    "  --ranks P          ranks of the run (required)\n"
    "  --profile FILE     machine profile: 'embtrain bench --profile FILE' (one rank: the local\n"
    "                     engine's phases) and 'mpirun -np 2 embtrain bench --profile FILE' (the\n"
    "                     sharded engine's phases and the all-to-all) on the machine to predict\n"
    "                     (where ranks share its cores, e.g. emulated hosts, at the run's P)\n"
    "  --cluster SPEC     hosts=H,gpus_per_host=G,intra=RATE,inter=RATE[,intra_latency=3us]\n"
    "                     [,inter_latency=10us][,device_memory=SIZE][,host_memory=SIZE]: P = H x "
    "G\n"
    "                     ranks; exchanges inside a host at `intra`, across hosts at `inter`\n"
    "                     (each rank's bandwidth, e.g. 450GB/s, 400Gbit/s)\n"
    "  --json             one JSON object instead of the table\n"
    "\n"
    "Exit status 1 when the run does not fit.\n";

struct PlanArgs {
  int ranks = 0;
  std::string profile, cluster;
  bool json = false, bench = false, help = false;
  std::vector<char*> rest;  // argv[0] and the job's own options
};

PlanArgs read_args(int argc, char** argv) {
  PlanArgs a;
  a.rest.push_back(argv[0]);
  bool have_ranks = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (a.bench) {
      a.rest.push_back(argv[i]);
      continue;
    }
    auto value = [&](const char* name) -> std::string {
      const std::string flag = std::string("--") + name;
      if (arg.compare(0, flag.size() + 1, flag + "=") == 0) return arg.substr(flag.size() + 1);
      EMBTRAIN_REQUIRE(i + 1 < argc, "option ", flag, " needs a value");
      return argv[++i];
    };
    auto is = [&](const char* name) {
      const std::string flag = std::string("--") + name;
      return arg == flag || arg.compare(0, flag.size() + 1, flag + "=") == 0;
    };
    if (arg == "--help" || arg == "-h") {
      a.help = true;
    } else if (is("ranks")) {
      const std::string v = value("ranks");
      size_t end = 0;
      long n = 0;
      try {
        n = std::stol(v, &end);
      } catch (const std::exception&) {
        end = 0;
      }
      EMBTRAIN_REQUIRE(end == v.size() && n >= 1 && n <= 1000000, "option --ranks = '", v,
                       "' is invalid (valid: 1 to 1000000)");
      a.ranks = static_cast<int>(n);
      have_ranks = true;
    } else if (is("profile")) {
      a.profile = value("profile");
    } else if (is("cluster")) {
      a.cluster = value("cluster");
    } else if (arg == "--json") {
      a.json = true;
    } else if (arg == "--bench") {
      a.bench = true;
    } else {
      a.rest.push_back(argv[i]);
    }
  }
  EMBTRAIN_REQUIRE(have_ranks || a.help, "option --ranks is required (the ranks of the run)");
  return a;
}

// What is planned: the memory of one rank, and the shape of its step.
struct Job {
  std::string what;    // one line: workload, tables
  std::string device;  // cpu | cuda
  MemoryPlan memory;
  std::vector<std::string> unknown_tables;  // rows known only once the data is read
  StepShape step;
  std::string step_note;           // how the distinct ids were estimated
  std::vector<std::string> notes;  // what else the prediction leaves out
};

// The step model knows lookups and distinct ids, not bags: a pooled table
// is modeled as its lookups, which this note says (`table`: its name).
std::string bag_note(const std::string& table, PoolAt at) {
  if (at == PoolAt::kOwner)
    return embtrain::detail::concat(
        "table ", table,
        " pools its bags at the owners: modeled as plain lookups, so its exchanges are counted "
        "as requester pooling's rows (an upper bound for long bags: owner pooling sends a row "
        "per bag and owner it touches, plus 8 bytes per id) and its owners' pooling work is not "
        "counted");
  return embtrain::detail::concat(
      "table ", table,
      " pools its bags at the requester: modeled as plain lookups (the same rows travel; its "
      "pooling is counted as the expand of its rows)");
}

Job bench_job(const PlanArgs& a) {
  const BenchJob b =
      read_bench_job(static_cast<int>(a.rest.size()), const_cast<char**>(a.rest.data()), a.ranks);
  Job job;
  job.device = b.device;
  const double lookups = static_cast<double>(b.batch * b.seq);
  job.what = embtrain::detail::concat("bench job: table ", b.spec.num_embeddings, " x ", b.spec.dim,
                                      ", ", optimizer_name(b.spec.optimizer.kind), ", batch ",
                                      b.batch, " x seq ", b.seq, " per rank, zipf ", b.zipf);
  job.memory = bench_memory_plan(b, a.ranks);
  job.step.lookups = lookups;
  job.step.distinct = expected_distinct_zipf(b.spec.num_embeddings, b.zipf, lookups, b.pad_frac);
  job.step.dim = b.spec.dim;
  job.step.wire_bytes = comm_bytes(b.spec.comm_precision);
  job.step.counts = b.spec.scale_grad_by_freq;
  job.step_note = "distinct ids per rank: expected number among the batch's Zipf draws";
  if (b.pooled) job.notes.push_back(bag_note(b.spec.name, b.spec.pool_at));
  return job;
}

Job config_job(const PlanArgs& a) {
  RunSetup setup;
  // The keys are train's: errors point at its --help.
  read_setup(static_cast<int>(a.rest.size()), const_cast<char**>(a.rest.data()), &setup, "train");
  const WorkloadContext context = run_context(setup, nullptr);
  const WorkloadEstimate estimate = run_estimate(setup, context);
  EMBTRAIN_REQUIRE(estimate.data_problem.empty(), estimate.data_problem);
  Job job;
  job.device = setup.keys.device;
  job.what = embtrain::detail::concat("workload ", setup.workload->name, ", train.batch_size ",
                                      setup.keys.batch_size, " per rank");
  job.memory = run_memory_plan(setup, context, estimate, a.ranks, nullptr);
  job.unknown_tables = tables_of_unknown_rows(setup, estimate);
  double weighted_dim = 0;
  bool unknown_distinct = false;
  for (const WorkloadEstimate::Step& s : estimate.step) {
    int64_t dim = 0;
    for (const TableSetup& t : setup.tables)
      if (t.spec.name == s.table) {
        dim = t.spec.dim;
        job.step.wire_bytes = comm_bytes(t.spec.comm_precision);
        job.step.counts = job.step.counts || t.spec.scale_grad_by_freq;
      }
    job.step.lookups += s.lookups;
    job.step.distinct += s.distinct > 0 ? s.distinct : s.lookups;
    unknown_distinct = unknown_distinct || s.distinct <= 0;
    weighted_dim += s.lookups * static_cast<double>(dim);
  }
  for (const TableSetup& t : setup.tables)
    if (t.bag) job.notes.push_back(bag_note(t.spec.name, t.spec.pool_at));
  job.notes.push_back(embtrain::detail::concat(
      "the embedding step alone (what bench measures): ", setup.workload->name,
      "'s own work, its model and its batches, comes on top of it in a train step"));
  job.step.tables = static_cast<int>(setup.tables.size());
  if (job.step.lookups > 0) job.step.dim = std::llround(weighted_dim / job.step.lookups);
  job.step_note = unknown_distinct
                      ? "distinct ids per rank: not known before the data is read, taken as the "
                        "lookups (an upper bound)"
                      : "distinct ids per rank: expected number among the workload's Zipf draws";
  return job;
}

// The memory a rank may use, and where that figure comes from (< 0: unknown).
double memory_per_rank(const Job& job, int ranks, const Cluster* cluster, std::string* source) {
  if (job.device == "cuda") {
    if (cluster && cluster->device_bytes > 0) {
      *source = "--cluster device_memory";
      return cluster->device_bytes;
    }
    *source = "device memory unknown: give --cluster ...,device_memory=SIZE";
    return -1;
  }
  if (cluster) {
    if (cluster->host_bytes > 0) {
      *source = embtrain::detail::concat("--cluster host_memory, shared by ", cluster->per_host,
                                         " rank(s) per host");
      return cluster->host_bytes / cluster->per_host;
    }
    *source = "host memory unknown: give --cluster ...,host_memory=SIZE";
    return -1;
  }
  std::string where;
  const double mine = host_bytes_per_rank(ranks, &where);
  *source = embtrain::detail::concat(where, " of this host, shared by ", ranks, " rank(s)");
  return mine;
}

void print_prediction(const Prediction& p, const StepShape& s, int ranks) {
  std::printf(
      "\npredicted step time per rank (%s engine's phases; %.0f lookups, %.0f distinct ids "
      "per rank per step):\n",
      p.engine.c_str(), s.lookups, s.distinct);
  for (const auto& ph : p.phases) std::printf("  %-18s %10.3f ms\n", ph.name.c_str(), ph.ms);
  for (const auto& e : p.exchanges)
    std::printf(
        "  %-18s %10.3f ms  (%d all-to-all(s), %.0f messages each, %s sent per rank: "
        "%.3f ms on the wire, %.3f ms the engine's own, of which %.3f ms waiting for the slowest "
        "rank)\n",
        e.name.c_str(), e.ms, e.alltoalls, e.messages, bytes_text(e.bytes).c_str(), e.network_ms,
        e.engine_ms, e.wait_ms);
  std::printf("  %-18s %10.3f ms  = %.4g lookups/s over %d rank(s)\n", "step", p.step_ms,
              s.lookups * ranks / (p.step_ms * 1e-3), ranks);
  std::printf(
      "  (local phases, the engine's own exchange cost%s x %.3f: the profile's median "
      "step over its phases' mean)\n",
      p.network_calibrated ? " and the wire" : "", p.calibration);
}

}  // namespace

int run_plan(int argc, char** argv) {
  const PlanArgs a = read_args(argc, argv);
  if (a.help) {
    std::fputs(kPlanUsage, stdout);
    return 0;
  }
  Cluster cluster;
  const bool clustered = !a.cluster.empty();
  if (clustered) {
    cluster = parse_cluster(a.cluster);
    EMBTRAIN_REQUIRE(cluster.ranks() == a.ranks, "option --cluster gives ", cluster.hosts, " x ",
                     cluster.per_host, " = ", cluster.ranks(), " ranks but --ranks = ", a.ranks);
  }
  const Job job = a.bench ? bench_job(a) : config_job(a);
  std::string source;
  const double available = memory_per_rank(job, a.ranks, clustered ? &cluster : nullptr, &source);
  // A GPU run is held to its device lines (the host keeps the rest, no
  // copy of a table; `train` checks both).
  const bool on_device = job.device == "cuda";
  const double needed = on_device ? job.memory.device_total() : job.memory.total();
  const bool fits = available < 0 || needed <= available;

  bool predicted = false;
  Prediction prediction;
  if (!a.profile.empty()) {
    const MachineProfile profile = read_profile(a.profile);
    EMBTRAIN_REQUIRE(job.step.lookups > 0,
                     "this workload says nothing of its lookups per step: "
                     "no step time can be predicted");
    prediction = predict_step(profile, job.step, a.ranks, clustered ? &cluster : nullptr);
    prediction.notes.insert(prediction.notes.begin(), job.step_note);
    prediction.notes.insert(prediction.notes.begin() + 1, job.notes.begin(), job.notes.end());
    predicted = true;
  }

  if (a.json) {
    nlohmann::json lines = nlohmann::json::array();
    for (const auto& l : job.memory.lines())
      lines.push_back({{"what", l.what},
                       {"bytes", l.bytes},
                       {"device", l.device},
                       {"host", job.memory.on_host(l)}});
    nlohmann::json out = {
        {"job", job.what},
        {"ranks", a.ranks},
        {"device", job.device},
        {"memory_per_rank",
         {{"lines", lines},
          {"total_bytes", job.memory.total()},
          {"device_bytes", job.memory.device_total()}}},
        {"available_per_rank_bytes", available},
        {"available_source", source},
        {"fits", fits},
        {"tables_of_unknown_rows", job.unknown_tables}};
    if (predicted) {
      nlohmann::json phases, exchanges;
      for (const auto& p : prediction.phases) phases[p.name] = p.ms;
      for (const auto& e : prediction.exchanges)
        exchanges[e.name] = {{"ms", e.ms},
                             {"network_ms", e.network_ms},
                             {"engine_ms", e.engine_ms},
                             {"wait_ms", e.wait_ms},
                             {"bytes_per_rank", e.bytes},
                             {"alltoalls", e.alltoalls},
                             {"messages", e.messages}};
      out["prediction"] = {{"engine", prediction.engine},
                           {"lookups_per_rank", job.step.lookups},
                           {"distinct_per_rank", job.step.distinct},
                           {"dim", job.step.dim},
                           {"phase_ms", phases},
                           {"exchange_ms", exchanges},
                           {"step_ms", prediction.step_ms},
                           {"calibration", prediction.calibration},
                           {"network_calibrated", prediction.network_calibrated},
                           {"notes", prediction.notes}};
    }
    std::cout << out.dump() << std::endl;
  } else {
    std::printf(
        "embtrain plan: %s; %d rank(s)%s, device %s\n", job.what.c_str(), a.ranks,
        clustered
            ? embtrain::detail::concat(" = ", cluster.hosts, " hosts x ", cluster.per_host).c_str()
            : " on this host",
        job.device.c_str());
    if (on_device)
      std::printf(
          "\nmemory per rank (the largest shard), in the GPU's memory:\n%s"
          "in the host's (no copy of a table: rows stream through the transfer buffers):\n%s",
          job.memory.text(/*device=*/true).c_str(), job.memory.text().c_str());
    else
      std::printf("\nmemory per rank (the largest shard):\n%s", job.memory.text().c_str());
    for (const std::string& t : job.unknown_tables)
      std::printf("  (table %s: rows known once the data is read, not counted)\n", t.c_str());
    if (available < 0)
      std::printf("fits: not known (%s)\n", source.c_str());
    else
      std::printf("%s: %s per rank available (%s)\n", fits ? "fits" : "DOES NOT FIT",
                  bytes_text(available).c_str(), source.c_str());
    if (predicted) {
      print_prediction(prediction, job.step, a.ranks);
      for (const std::string& n : prediction.notes) std::printf("  note: %s\n", n.c_str());
    } else {
      std::printf(
          "\nno step-time prediction: give --profile MACHINE.json, made on the machine to predict "
          "with\n  embtrain bench --profile MACHINE.json [bench options]                 (one "
          "rank)\n"
          "  mpirun -np 2 embtrain bench --profile MACHINE.json [bench options]  (the sharded "
          "engine and the all-to-all)\n");
    }
  }
  std::fflush(stdout);
  EMBTRAIN_REQUIRE(fits, "the run does not fit in ", on_device ? "device " : "",
                   "memory: each rank needs ", bytes_text(needed), " but has ",
                   bytes_text(available), " (", source, "). ", kMemoryAdvice);
  return 0;
}

}  // namespace app
}  // namespace embtrain
