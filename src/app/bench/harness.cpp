// embtrain bench: times whole training steps (forward, backward with a fixed
// random gradient, optimizer) on a synthetic Zipf workload and reports
// throughput, time per stage of the step, bytes exchanged, and how close the step comes
// to its memory-traffic floor on this machine. Under mpirun the table is
// row-sharded; --batch is per rank (weak scaling) unless --global-batch
// splits one batch over the ranks (strong scaling).
#include "harness.hpp"

#include <omp.h>

#include <algorithm>
#include <fstream>
#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "app/commands.hpp"
#include "app/machine_info.hpp"
#include "app/step_model.hpp"
#include "app/table_options.hpp"
#include "comm/device_selection.hpp"
#include "common/timer.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/memory_plan.hpp"  // process_memory_bytes, bytes_text
#include "embtrain/random.hpp"
#include "embtrain/zipf.hpp"
#include "train/durable_file.hpp"

namespace embtrain {
namespace app {
namespace bench {

namespace {

// The exchanges, as the report names them, and their bytes sent.
struct Exchange {
  const char* name;
  int64_t StepStats::*bytes_sent;
};
const Exchange kExchanges[] = {
    {"ids", &StepStats::ids_bytes_sent},
    {"rows", &StepStats::rows_bytes_sent},
    {"grads", &StepStats::grads_bytes_sent},
};

std::map<std::string, CaseFactory>& registry() {
  static std::map<std::string, CaseFactory> cases;  // filled before main, read after
  return cases;
}

}  // namespace

// The phases are the stages of the step, in step order (step_stats.hpp).
const std::vector<std::string>& phase_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (int i = 0; i < kNumStages; ++i) v.push_back(stage_name(static_cast<Stage>(i)));
    return v;
  }();
  return names;
}

const std::vector<std::string>& exchange_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const Exchange& e : kExchanges) v.push_back(e.name);
    return v;
  }();
  return names;
}

CaseStats stats_of(const StepStats& stats) {
  CaseStats c;
  c.phase_ms.assign(stats.ms, stats.ms + kNumStages);
  c.wait_ms.assign(stats.wait_ms, stats.wait_ms + kNumStages);
  c.hidden_ms.assign(stats.hidden_ms, stats.hidden_ms + kNumStages);
  for (const Exchange& e : kExchanges)
    c.bytes_sent.push_back(static_cast<double>(stats.*e.bytes_sent));
  return c;
}

double BenchCase::copy_bandwidth_gbps(int threads) const {
  return measure_copy_bandwidth_gbps(threads);
}

CaseRegistration::CaseRegistration(const std::string& name, CaseFactory make) {
  registry()[name] = std::move(make);
}

const CaseFactory* find_case(const std::string& name) {
  const auto it = registry().find(name);
  return it == registry().end() ? nullptr : &it->second;
}

namespace {

bool is_exchange(size_t phase) {
  const auto stage = static_cast<Stage>(phase);
  return stage == Stage::kExchangeIds || stage == Stage::kExchangeRows ||
         stage == Stage::kExchangeGrads;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The least memory traffic a step can have on one rank: read the ids, read
// each distinct row once and write the output, read the output gradient,
// and read and write each updated row with its optimizer state.
// With bags the output (and its gradient) is one row per bag.
double floor_bytes(double lookups, double outputs, double unique, double updated, int64_t dim,
                   int64_t state_width) {
  const double row = 4.0 * static_cast<double>(dim);
  return 8.0 * lookups + unique * row + 2.0 * outputs * row +
         updated * 2.0 * (row + 4.0 * static_cast<double>(state_width));
}

po::options_description bench_options() {
  po::options_description options(
      "usage: [mpirun -np P] embtrain bench [options]\n\n"
      "Times training steps of one table on a synthetic workload: batch x seq ids drawn from a\n"
      "Zipf law over rows 1..rows-1, a fraction set to the padding id 0. Under mpirun the table\n"
      "is row-sharded over the ranks.\n\noptions");
  // clang-format off
  options.add_options()
    ("help,h", "show this help")
    ("rows", po::value<int64_t>()->default_value(1000000), "table rows")
    ("dim", po::value<int64_t>()->default_value(128), "embedding dim")
    ("batch", po::value<int64_t>()->default_value(4096), "samples per step per rank (weak scaling)")
    ("global-batch", po::value<int64_t>(),
     "samples per step over all ranks, split between them (strong scaling; overrides --batch)")
    ("seq", po::value<int64_t>()->default_value(20), "ids per sample")
    ("zipf", po::value<double>()->default_value(1.05, "1.05"), "Zipf exponent ALPHA (0: uniform)")
    ("pad-frac", po::value<double>()->default_value(0.1, "0.1"), "fraction of ids set to padding id 0")
    ("steps", po::value<int64_t>()->default_value(50), "timed steps")
    ("warmup", po::value<int64_t>()->default_value(5), "untimed steps first")
    ("threads", po::value<int>()->default_value(0), "CPU threads per rank (0: OpenMP's default)")
    ("seed", po::value<uint64_t>()->default_value(1), "seed of table and workload")
    ("distinct-batches", po::value<int64_t>()->default_value(8),
     "distinct batches drawn up front and cycled through")
    ("engine", po::value<std::string>()->default_value("auto"),
     "local (one process, no exchange) | sharded | auto (local for one rank, else sharded)")
    ("pipeline", po::bool_switch(),
     "start each step's input distribution during the step before (ShardedEmbedding::prefetch), "
     "as a pipelined trainer does")
    ("overlap-chunks", po::value<int>()->default_value(1),
     "rows and gradients travel in this many slices, the owners' gathers and updates running "
     "while the next slices move (ShardedEmbedding::overlap_exchanges; 1: each exchange "
     "whole). The report then gives each exchange's exposed time against the raw "
     "collective, and the owners' work that ran while slices travelled")
    ("skew", po::value<bool>()->default_value(true)->implicit_value(true),
     "time each exchange's wait for the slowest rank apart, at a barrier before it "
     "(=false: no barrier)")
    ("json", po::bool_switch(), "print one JSON object instead of text")
    ("pool", po::value<std::string>(),
     "bags (torch.nn.EmbeddingBag): each sample's ids are one bag, pooled by sum | mean | max")
    ("bag", po::value<int64_t>(), "bags of this many ids (sets --seq; --pool defaults to mean)")
    ("pool-at", po::value<std::string>()->default_value("requester"),
     "with bags: where they are pooled: requester | owner (the table's pool_at)")
    ("profile", po::value<std::string>(),
     "also write this machine's profile for 'embtrain plan' to this JSON file: copy bandwidth, "
     "the engine's phases per lookup and, with 2 or more ranks, the all-to-all's latency and "
     "bandwidth at a few sizes (an existing profile keeps its other engine's phases)");
  // clang-format on
  // The workload's ids 0 are its padding.
  add_table_options(&options, {{"optimizer", "adam"},
                               {"lr", "0.001"},
                               {"scale_grad_by_freq", "true"},
                               {"padding_idx", "0"}});
  add_device_options(&options);
  return options;
}

// What the command line asks for, checked the same on every rank.
struct BenchOptions {
  TableSpec spec;
  int64_t batch = 0;  // this rank's
  int64_t seq = 0, steps = 0, warmup = 0, distinct = 0;
  double zipf = 0, pad_frac = 0;
  uint64_t seed = 0;
  bool sharded = false, json = false, skew = true, pipeline = false;
  int overlap_chunks = 1;
  bool pooled = false;
  PoolMode mode = PoolMode::kMean;
  DeviceChoice device;
  std::string profile;  // --profile: where to write the machine profile
};

// --batch, or this rank's share of --global-batch.
int64_t read_batch(const po::variables_map& vm, int ranks, int rank) {
  if (!vm.count("global-batch")) return vm["batch"].as<int64_t>();
  const int64_t global = vm["global-batch"].as<int64_t>();
  EMBTRAIN_REQUIRE(global >= ranks, "option --global-batch = ", global,
                   " is invalid (valid: >= the number of ranks, ", ranks, ")");
  return global / ranks + (rank < global % ranks ? 1 : 0);
}

// Local or sharded: --engine, or by default sharded when there are ranks
// to shard over; on a GPU always sharded.
bool read_engine(const po::variables_map& vm, int ranks, const std::string& device) {
  const std::string engine = vm["engine"].as<std::string>();
  EMBTRAIN_REQUIRE(engine == "auto" || engine == "local" || engine == "sharded",
                   "option --engine = '", engine, "' is invalid (valid: auto, local, sharded)");
  EMBTRAIN_REQUIRE(engine != "local" || ranks == 1,
                   "option --engine = local needs a job of one rank, this one has ", ranks);
  EMBTRAIN_REQUIRE(device == "cpu" || engine != "local",
                   "option --engine = local runs on the CPU only; --device cuda uses the sharded "
                   "engine");
  return engine == "auto" ? ranks > 1 || device == "cuda" : engine == "sharded";
}

BenchOptions read_options(const po::variables_map& vm, int ranks, int rank) {
  BenchOptions o;
  o.spec.name = "bench";
  o.spec.num_embeddings = vm["rows"].as<int64_t>();
  o.spec.dim = vm["dim"].as<int64_t>();
  read_table_options(vm, &o.spec);
  o.seq = vm["seq"].as<int64_t>();
  o.pooled = vm.count("pool") || vm.count("bag");
  if (vm.count("bag")) {
    o.seq = vm["bag"].as<int64_t>();
    EMBTRAIN_REQUIRE(o.seq >= 1, "option --bag = ", o.seq, " is invalid (valid: >= 1 ids per bag)");
  }
  if (vm.count("pool")) {
    const std::string mode = vm["pool"].as<std::string>();
    EMBTRAIN_REQUIRE(parse_pool_mode(mode, &o.mode), "option --pool = '", mode,
                     "' is invalid (valid: sum, mean, max)");
  }
  const std::string at = vm["pool-at"].as<std::string>();
  EMBTRAIN_REQUIRE(parse_pool_at(at, &o.spec.pool_at), "option --pool-at = '", at,
                   "' is invalid (valid: requester, owner)");
  EMBTRAIN_REQUIRE(o.pooled || vm["pool-at"].defaulted(), "option --pool-at needs --pool or --bag");
  EMBTRAIN_REQUIRE(!o.pooled || o.mode != PoolMode::kMax || !o.spec.scale_grad_by_freq,
                   "option --pool = max does not support scale_grad_by_freq (as "
                   "torch.nn.EmbeddingBag): add --scale-grad-by-freq=false");
  o.steps = vm["steps"].as<int64_t>();
  o.warmup = vm["warmup"].as<int64_t>();
  o.distinct = vm["distinct-batches"].as<int64_t>();
  o.zipf = vm["zipf"].as<double>();
  o.pad_frac = vm["pad-frac"].as<double>();
  o.seed = vm["seed"].as<uint64_t>();
  o.json = vm["json"].as<bool>();
  o.skew = vm["skew"].as<bool>();
  o.pipeline = vm["pipeline"].as<bool>();
  o.overlap_chunks = vm["overlap-chunks"].as<int>();
  EMBTRAIN_REQUIRE(o.overlap_chunks >= 1, "option --overlap-chunks = ", o.overlap_chunks,
                   " is invalid (valid: >= 1)");
  if (vm.count("profile")) {
    o.profile = vm["profile"].as<std::string>();
    require_output_folder("--profile", o.profile);  // now, not after the benchmark
  }
  o.batch = read_batch(vm, ranks, rank);
  EMBTRAIN_REQUIRE(o.batch >= 1, "option --batch = ", o.batch, " is invalid (valid: >= 1)");
  EMBTRAIN_REQUIRE(o.seq >= 1, "option --seq = ", o.seq, " is invalid (valid: >= 1)");
  EMBTRAIN_REQUIRE(o.steps >= 1, "option --steps = ", o.steps, " is invalid (valid: >= 1)");
  EMBTRAIN_REQUIRE(o.warmup >= 0, "option --warmup = ", o.warmup, " is invalid (valid: >= 0)");
  EMBTRAIN_REQUIRE(o.distinct >= 1, "option --distinct-batches = ", o.distinct,
                   " is invalid (valid: >= 1)");
  EMBTRAIN_REQUIRE(o.pad_frac >= 0 && o.pad_frac <= 1, "option --pad-frac = ", o.pad_frac,
                   " is invalid (valid: [0, 1])");
  const int threads = vm["threads"].as<int>();
  EMBTRAIN_REQUIRE(threads >= 0, "option --threads = ", threads, " is invalid (valid: >= 0)");
  if (threads > 0) omp_set_num_threads(threads);
  o.device = read_device_options(vm);
  o.sharded = read_engine(vm, ranks, o.device.device);
  // Bags run in ShardedEmbedding, whose one-rank step is the local engine's.
  EMBTRAIN_REQUIRE(!o.pooled || vm["engine"].as<std::string>() != "local",
                   "option --engine = local has no bags; with --pool the default engine runs "
                   "one rank's step in one process");
  if (o.pooled) o.sharded = true;
  return o;
}

const char* engine_name(const BenchOptions& o) { return o.sharded ? "sharded" : "local"; }

void print_header(const BenchOptions& o, const MachineInfo& machine, int ranks, int threads,
                  int64_t global_lookups) {
  std::printf(
      "# embtrain bench: host %s, cpu %s, %d cores; %d rank(s) x %d threads, engine %s, "
      "device %s\n",
      machine.host.c_str(), machine.cpu.c_str(), machine.cores, ranks, threads, engine_name(o),
      o.device.device.c_str());
  const std::string padding = o.spec.padding_idx ? std::to_string(*o.spec.padding_idx) : "none";
  std::printf(
      "# table %lld x %lld, optimizer %s, scale_grad_by_freq %d, padding_idx %s, comm %s%s\n",
      static_cast<long long>(o.spec.num_embeddings), static_cast<long long>(o.spec.dim),
      optimizer_name(o.spec.optimizer.kind), o.spec.scale_grad_by_freq ? 1 : 0, padding.c_str(),
      comm_precision_name(o.spec.comm_precision), o.pipeline ? ", pipelined" : "");
  if (o.overlap_chunks > 1 && ranks > 1)
    std::printf(o.spec.pool_at == PoolAt::kOwner
                    ? "# overlapped exchanges: none sliced (%d asked): a table pooled at the owners "
                      "moves its partial rows whole\n"
                    : "# overlapped exchanges: rows and gradients in %d slices\n",
                o.overlap_chunks);
  std::printf(
      "# %lld lookups/step over all ranks (rank 0: batch %lld x seq %lld), zipf %.3f, "
      "pad-frac %.3f, steps %lld + warmup %lld\n",
      static_cast<long long>(global_lookups), static_cast<long long>(o.batch),
      static_cast<long long>(o.seq), o.zipf, o.pad_frac, static_cast<long long>(o.steps),
      static_cast<long long>(o.warmup));
  if (o.pooled)
    std::printf("# bags: each sample's %lld ids pooled by %s (EmbeddingBag, pooled at the %s)\n",
                static_cast<long long>(o.seq), pool_mode_name(o.mode),
                pool_at_name(o.spec.pool_at));
  std::fflush(stdout);
}

// This rank's batches and output gradient, from its own random streams.
BenchData draw_data(const BenchOptions& o, int rank) {
  BenchData data;
  data.batch = o.batch;
  data.seq = o.seq;
  data.pooled = o.pooled;
  data.mode = o.mode;
  if (o.pooled)
    for (int64_t b = 0; b <= o.batch; ++b) data.offsets.push_back(b * o.seq);
  const ZipfSampler zipf(o.spec.num_embeddings, o.zipf);
  for (int64_t b = 0; b < o.distinct; ++b)
    data.batches.push_back(sample_ids(zipf, data.lookups(), o.pad_frac, o.seed,
                                      /*stream=*/1000 + static_cast<uint64_t>(rank) * 1000003 + b));
  const int64_t n = data.outputs() * o.spec.dim;
  data.grad.resize(static_cast<size_t>(n));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) data.grad[i] = random_normal(o.seed, 7 + rank, i);
  return data;
}

// The case of the engine and device asked for. A build without CUDA has no
// "cuda" case; the sharded one then says so.
std::unique_ptr<BenchCase> make_case(const BenchOptions& o, Communicator* comm,
                                     const BenchData& data) {
  // The device-resident GPU case has no bags: with bags the GPU steps
  // host batches (the sharded case, its table moved to the GPU).
  const CaseFactory* make =
      o.device.device == "cuda" && !o.pooled ? find_case("cuda") : nullptr;
  if (!make) make = find_case(engine_name(o));
  EMBTRAIN_ASSERT(make);
  return (*make)(CaseSetup{o.spec, o.seed, comm, o.device, data});
}

// What the timed steps give: each step's time, and the all-to-alls of
// each step's exchanges.
struct Timings {
  std::vector<double> step_ms;
  std::vector<std::vector<TransferShape>> transfers;
};

// A step's time is the slowest rank's: ranks synchronise in every exchange,
// and a barrier before each step keeps stragglers from hiding.
Timings time_steps(const BenchOptions& o, BenchCase* engine, Communicator& comm) {
  Timings t;
  engine->measure_skew(o.skew);
  engine->overlap_exchanges(o.overlap_chunks);
  for (int64_t s = 0; s < o.warmup + o.steps; ++s) {
    if (s == o.warmup) engine->reset_stats();
    comm.barrier();
    Stopwatch clock;
    const bool last = s + 1 == o.warmup + o.steps;
    engine->step(s % o.distinct, o.pipeline && !last ? (s + 1) % o.distinct : -1);
    double ms = clock.lap_ms();
    comm.allreduce_max(&ms, 1, CommType::kFloat64);
    if (s < o.warmup) continue;
    t.step_ms.push_back(ms);
    t.transfers.push_back(engine->last_transfers());
  }
  return t;
}

// Per stage, the time of the transport's own all-to-all of the same bytes
// per peer as the last `steps` timed steps' exchanges (in the same order on
// every rank; a step's shapes vary little from one to the next), per step:
// the raw collective the exchanges are held to, with the host's caches as
// a step leaves them (`caches` kCold), or warm from a run of itself (kWarm,
// its best case, reported beside it).
std::vector<double> raw_exchange_ms(const Timings& t, BenchCase* engine,
                                    Communicator::Caches caches, size_t steps) {
  std::vector<double> raw(kNumStages, 0.0);
  const size_t first = t.transfers.size() - std::min(steps, t.transfers.size());
  for (size_t s = first; s < t.transfers.size(); ++s)
    for (const TransferShape& shape : t.transfers[s])
      raw[static_cast<int>(shape.stage)] += engine->native_alltoallv_ms(shape, caches);
  for (double& r : raw) r /= static_cast<double>(std::max<size_t>(t.transfers.size() - first, 1));
  return raw;
}

// Distinct ids per timed step: this rank's (what it sends).
double distinct_ids(const BenchOptions& o, const BenchData& data) {
  double unique = 0;
  for (int64_t s = o.warmup; s < o.warmup + o.steps; ++s) {
    std::vector<int64_t> ids = data.batches[s % o.distinct];
    std::sort(ids.begin(), ids.end());
    unique += static_cast<double>(std::unique(ids.begin(), ids.end()) - ids.begin());
  }
  return unique / static_cast<double>(o.steps);
}

// The run's numbers over all ranks, per step, as reported.
struct Summary {
  int64_t global_lookups = 0;
  double unique = 0;                     // distinct ids, summed over ranks
  std::vector<double> phase_ms;          // phase_names() order, max over ranks
  std::vector<double> wait_ms;           // of phase_ms, skew: max over ranks
  std::vector<double> hidden_ms;         // owner work behind the transfers: max over ranks
  std::vector<double> transfer_ms;       // phase_ms less the wait: max over ranks
  std::vector<double> raw_ms;            // the raw collective of each exchange: max over ranks
  std::vector<double> raw_warm_ms;       // the same with warm caches (its best case)
  std::vector<double> bytes, bytes_max;  // sent per exchange: summed over ranks; busiest rank's
  double bytes_total = 0;
  double step_ms = 0, step_ms_min = 0;  // median and least
  double floor_bytes = 0;               // per rank
  double bandwidth = 0;                 // copy bandwidth (GB/s), least over ranks
  double floor_ms = 0;
  int overlap_chunks = 1;  // slices per exchange (BenchOptions), with 2 or more ranks
  bool on_gpu = false;     // hidden_ms is not measured there (StepStats)
};

// The phases' times, their waits and transfers, and the raw collectives,
// per step, max over ranks.
void summarise_phases(const CaseStats& stats, double steps, std::vector<double> raw_ms,
                      std::vector<double> raw_warm_ms, Communicator& comm, Summary* s) {
  s->phase_ms = stats.phase_ms;
  s->wait_ms = stats.wait_ms;
  s->hidden_ms = stats.hidden_ms;
  s->transfer_ms.resize(s->phase_ms.size());
  for (size_t i = 0; i < s->phase_ms.size(); ++i) {
    s->phase_ms[i] /= steps;
    s->wait_ms[i] /= steps;
    s->hidden_ms[i] /= steps;
    s->transfer_ms[i] = s->phase_ms[i] - s->wait_ms[i];
  }
  s->raw_ms = std::move(raw_ms);
  s->raw_warm_ms = std::move(raw_warm_ms);
  for (std::vector<double>* v :
       {&s->phase_ms, &s->wait_ms, &s->hidden_ms, &s->transfer_ms, &s->raw_ms, &s->raw_warm_ms})
    comm.allreduce_max(v->data(), static_cast<int64_t>(v->size()), CommType::kFloat64);
}

Summary summarise(const BenchOptions& o, const BenchData& data, BenchCase& engine,
                  const Timings& timings, int64_t global_lookups, Communicator& comm) {
  const std::vector<double>& step_ms = timings.step_ms;
  Summary s;
  const int ranks = comm.size();
  const double n = static_cast<double>(o.steps);
  s.global_lookups = global_lookups;
  s.overlap_chunks = ranks > 1 ? o.overlap_chunks : 1;
  s.on_gpu = o.device.device == "cuda";
  s.unique = distinct_ids(o, data);
  comm.allreduce_sum(&s.unique, 1, CommType::kFloat64);

  const CaseStats stats = engine.stats();
  // Cold over the last 5 steps, warm over the last one: each costs two
  // collectives per exchange and step (cold also a pass over the caches),
  // and a step's shapes vary little.
  summarise_phases(stats, n, raw_exchange_ms(timings, &engine, Communicator::Caches::kCold, 5),
                   raw_exchange_ms(timings, &engine, Communicator::Caches::kWarm, 1), comm, &s);
  s.bytes = stats.bytes_sent;
  for (double& b : s.bytes) b /= n;
  s.bytes_max = s.bytes;
  const auto exchanges = static_cast<int64_t>(s.bytes.size());
  comm.allreduce_sum(s.bytes.data(), exchanges, CommType::kFloat64);
  comm.allreduce_max(s.bytes_max.data(), exchanges, CommType::kFloat64);
  for (double b : s.bytes) s.bytes_total += b;

  s.step_ms = median(step_ms);
  s.step_ms_min = *std::min_element(step_ms.begin(), step_ms.end());
  const int64_t width =
      o.spec.freeze ? 0 : optimizer_state_width(o.spec.optimizer.kind, o.spec.dim);
  // The floor of the busiest rank, as if it did its share of the work with
  // no exchange: global traffic divided by ranks.
  const double lookups = static_cast<double>(s.global_lookups) / ranks;
  s.floor_bytes = floor_bytes(lookups, o.pooled ? lookups / static_cast<double>(o.seq) : lookups,
                              s.unique / ranks, s.unique / ranks, o.spec.dim, width);
  s.bandwidth = engine.copy_bandwidth_gbps(omp_get_max_threads());
  comm.allreduce_min(&s.bandwidth, 1, CommType::kFloat64);
  s.floor_ms = s.floor_bytes / (s.bandwidth * 1e6);
  return s;
}

nlohmann::json to_json(const BenchOptions& o, const Summary& s, const MachineInfo& machine,
                       int ranks, const std::string& gpu) {
  nlohmann::json phases, bytes, exchanges;
  double raw_total = 0;
  for (size_t i = 0; i < phase_names().size(); ++i) {
    phases[phase_names()[i]] = s.phase_ms[i];
    if (!is_exchange(i)) continue;
    exchanges[phase_names()[i]] = {{"ms", s.phase_ms[i]},
                                   {"skew_ms", s.wait_ms[i]},
                                   {"transfer_ms", s.transfer_ms[i]},
                                   {"raw_ms", s.raw_ms[i]},
                                   {"raw_warm_ms", s.raw_warm_ms[i]},
                                   {"hidden_ms", s.hidden_ms[i]}};
    raw_total += s.raw_ms[i];
  }
  for (size_t i = 0; i < exchange_names().size(); ++i) bytes[exchange_names()[i]] = s.bytes[i];
  bytes["total"] = s.bytes_total;
  double bytes_max_rank = 0;
  for (double b : s.bytes_max) bytes_max_rank += b;
  const double lookups = static_cast<double>(s.global_lookups);
  return {
      {"host", machine.host},
      {"cpu", machine.cpu},
      {"ranks", ranks},
      {"threads", omp_get_max_threads()},
      {"engine", engine_name(o)},
      {"device", o.device.device},
      {"gpu", gpu},
      {"rows", o.spec.num_embeddings},
      {"dim", o.spec.dim},
      {"optimizer", optimizer_name(o.spec.optimizer.kind)},
      {"scale_grad_by_freq", o.spec.scale_grad_by_freq},
      {"comm_precision", comm_precision_name(o.spec.comm_precision)},
      {"pipeline", o.pipeline},
      {"overlap_chunks", o.overlap_chunks},
      {"pool", o.pooled ? pool_mode_name(o.mode) : "none"},
      {"pool_at", pool_at_name(o.spec.pool_at)},
      {"lookups_per_step", s.global_lookups},
      {"unique_per_step", s.unique},
      {"unique_ratio", s.unique / lookups},
      {"step_ms", s.step_ms},
      {"step_ms_min", s.step_ms_min},
      {"lookups_per_s", lookups / (s.step_ms * 1e-3)},
      {"phase_ms_max_over_ranks", phases},
      {"exchanges_ms_max_over_ranks", exchanges},
      {"raw_alltoall_ms", raw_total},
      {"bytes_sent_per_step", bytes},
      {"bytes_sent_per_step_max_rank", bytes_max_rank},
      {"bytes_sent_per_lookup", s.bytes_total / lookups},
      {"floor_bytes_per_step_per_rank", s.floor_bytes},
      {"copy_bandwidth_gbps", s.bandwidth},
      {"floor_ms", s.floor_ms},
      {"floor_fraction", s.floor_ms / s.step_ms},
  };
}

// Each exchange against the raw collective of the same bytes, when there
// were any: its time, the wait for the slowest rank, the transfer after it.
void print_exchanges(const Summary& s) {
  double raw_total = 0;
  for (size_t i = 0; i < s.raw_ms.size(); ++i) raw_total += is_exchange(i) ? s.raw_ms[i] : 0;
  if (raw_total <= 0) return;
  std::printf("# exchanges, ms/step (max over ranks): %-14s %8s %8s %8s %8s %9s %9s\n", "stage",
              "ms", "skew", "transfer", "raw", "xfer/raw", "raw warm");
  for (size_t i = 0; i < phase_names().size(); ++i)
    if (is_exchange(i))
      std::printf("#   %37s%-14s %8.2f %8.2f %8.2f %8.2f %8.2fx %9.2f\n", "",
                  phase_names()[i].c_str(), s.phase_ms[i], s.wait_ms[i], s.transfer_ms[i],
                  s.raw_ms[i], s.raw_ms[i] > 0 ? s.transfer_ms[i] / s.raw_ms[i] : 0.0,
                  s.raw_warm_ms[i]);
  std::printf("#   (raw: the transport's all-to-all of the same bytes per peer, the host's caches\n"
              "#    pushed out first as a step leaves them; raw warm: right after a run of itself)\n");
  if (s.overlap_chunks > 1 && s.on_gpu) {
    std::printf("# overlapped in %d slices (transfer: what was left exposed; the owners' kernels\n"
                "#   run between the slices' transfers, their time in the exchanges' where the\n"
                "#   host waited for them: not measured apart on the GPU)\n",
                s.overlap_chunks);
  } else if (s.overlap_chunks > 1) {
    const auto at = [](const char* name) {
      return static_cast<size_t>(std::find(phase_names().begin(), phase_names().end(), name) -
                                 phase_names().begin());
    };
    std::printf("# overlapped in %d slices (transfer: what was left exposed): owner work run while\n"
                "#   slices travelled, ms/step (max over ranks): gathers %.2f behind exchange_rows,\n"
                "#   updates %.2f behind exchange_grads\n",
                s.overlap_chunks, s.hidden_ms[at("exchange_rows")], s.hidden_ms[at("exchange_grads")]);
  }
}

void print_report(const Summary& s) {
  const double lookups = static_cast<double>(s.global_lookups);
  std::printf("# distinct ids: %.0f/step summed over ranks (%.1f%% of lookups)\n", s.unique,
              100.0 * s.unique / lookups);
  std::printf("# phases, ms/step (max over ranks):");
  for (size_t i = 0; i < phase_names().size(); ++i)
    std::printf(" %s %.2f", phase_names()[i].c_str(), s.phase_ms[i]);
  std::printf("\n");
  print_exchanges(s);
  std::printf("# sent to other ranks: %.2f MB/step (%.1f bytes/lookup)\n", s.bytes_total / 1e6,
              s.bytes_total / lookups);
  std::printf("# floor: %.1f MB/step/rank at %.1f GB/s copy bandwidth = %.2f ms (%.0f%% of step)\n",
              s.floor_bytes / 1e6, s.bandwidth, s.floor_ms, 100.0 * s.floor_ms / s.step_ms);
  std::printf("%12s %14s %14s\n", "step_ms", "lookups/s", "unique/step");
  std::printf("%12.3f %14.4g %14.0f\n", s.step_ms, lookups / (s.step_ms * 1e-3), s.unique);
}

// The all-to-all of the engine's communicator at a few sizes per peer,
// fitted to ms = latency x (P - 1) + bytes sent per rank / bandwidth
// (least squares over the sizes). Each size's time is the least of 5: a
// busy moment of a shared machine only ever slows one down (the median of
// 5 at 4 emulated hosts on 2 busy cores made a latency of 0.5 ms from
// nothing); what the engine's exchanges take beyond it is the profile's
// "engine's own" cost (step_model.hpp).
AllToAllCost measure_alltoall(BenchCase& engine, int ranks) {
  AllToAllCost a;
  a.ranks = ranks;
  if (ranks < 2) {
    a.note = "one rank: no peer to exchange with; run 'mpirun -np 2 embtrain bench --profile' to "
             "measure it";
    return a;
  }
  for (int64_t per_peer : {int64_t{1} << 10, int64_t{1} << 14, int64_t{1} << 18, int64_t{1} << 21}) {
    TransferShape shape;
    shape.stage = Stage::kExchangeRows;
    shape.send_bytes.assign(static_cast<size_t>(ranks), per_peer);
    shape.recv_bytes = shape.send_bytes;
    std::vector<double> ms;
    for (int r = 0; r < 5; ++r)
      ms.push_back(engine.native_alltoallv_ms(shape, Communicator::Caches::kWarm));
    a.points.push_back(
        {static_cast<double>(per_peer) * (ranks - 1), *std::min_element(ms.begin(), ms.end())});
  }
  if (a.points.back().second <= 0) {
    a.note = "this engine has no all-to-all of its own to time";
    return a;
  }
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  const double n = static_cast<double>(a.points.size());
  for (const auto& [x, y] : a.points) sx += x, sy += y, sxx += x * x, sxy += x * y;
  const double slope = (n * sxy - sx * sy) / (n * sxx - sx * sx);  // ms per byte
  const double intercept = std::max(0.0, (sy - slope * sx) / n);
  a.measured = slope > 0;
  a.latency_us = intercept * 1e3 / (ranks - 1);
  a.bandwidth_gbps = a.measured ? 1e-6 / slope : 0;
  a.note = embtrain::detail::concat("fitted over ", a.points.size(), " sizes, ", ranks, " ranks");
  return a;
}

// --profile: this run's phases per lookup, with the all-to-all measured
// (a collective), written by rank 0 into OUT, keeping OUT's other engine.
void write_profile(const BenchOptions& o, const Summary& s, BenchCase& engine,
                   Communicator& comm, const MachineInfo& machine, const std::string& gpu) {
  const AllToAllCost alltoall = measure_alltoall(engine, comm.size());
  if (comm.rank() != 0) return;
  MachineProfile p;
  {
    std::ifstream in(o.profile);
    nlohmann::json old;
    if (in && (in >> old, true)) {
      try {
        p = profile_from_json(old, o.profile);
      } catch (const Error&) {
        p = MachineProfile{};  // not a profile: replaced
      }
    }
  }
  if (p.host != machine.host || p.device != o.device.device) p = MachineProfile{};
  p.host = machine.host;
  p.cpu = machine.cpu;
  p.device = o.device.device;
  p.gpu = gpu;
  p.copy_bandwidth_gbps = s.bandwidth;
  PhaseCosts c;
  c.ranks = comm.size();
  c.threads = omp_get_max_threads();
  c.dim = o.spec.dim;
  c.optimizer = optimizer_name(o.spec.optimizer.kind);
  c.lookups = static_cast<double>(s.global_lookups) / comm.size();
  c.distinct = s.unique / comm.size();
  c.step_ms = s.step_ms;
  for (size_t i = 0; i < phase_names().size(); ++i) {
    c.ms[phase_names()[i]] = s.phase_ms[i];
    if (phase_names()[i].compare(0, 9, "exchange_") == 0)
      c.wait_ms[phase_names()[i]] = s.wait_ms[i];
  }
  c.wire_bytes = comm_bytes(o.spec.comm_precision);
  c.counts = o.spec.scale_grad_by_freq;
  p.engines[engine_name(o)] = c;
  if (alltoall.measured || !p.alltoall.measured) p.alltoall = alltoall;
  make_output_folder(o.profile);
  std::ofstream out(o.profile, std::ios::trunc);
  out << profile_json(p).dump(2) << "\n";
  out.close();
  EMBTRAIN_REQUIRE(out, "option --profile = '", o.profile, "': cannot write");
  if (!o.json)
    std::printf("# profile written to %s (engine %s%s)\n", o.profile.c_str(), engine_name(o),
                alltoall.measured ? ", all-to-all measured" : "; all-to-all not measured: one rank");
}

}  // namespace

}  // namespace bench

namespace {

BenchJob bench_job_of(const bench::BenchOptions& o) {
  BenchJob job;
  job.spec = o.spec;
  job.batch = o.batch;
  job.seq = o.seq;
  job.distinct_batches = o.distinct;
  job.zipf = o.zipf;
  job.pad_frac = o.pad_frac;
  job.pooled = o.pooled;
  job.device = o.device.device;
  return job;
}

}  // namespace

BenchJob read_bench_job(int argc, char** argv, int ranks) {
  const po::variables_map vm =
      parse_command_line(argc, argv, bench::bench_options(), "plan --bench");
  return bench_job_of(bench::read_options(vm, ranks, 0));
}

MemoryPlan bench_memory_plan(const BenchJob& b, int ranks) {
  MemoryPlan plan;
  plan.set_gpu(b.device == "cuda");
  const double lookups = static_cast<double>(b.batch * b.seq);
  plan.add_table(b.spec, static_cast<double>(b.spec.num_embeddings), ranks);
  plan.add(embtrain::detail::concat("bench data (", b.distinct_batches,
                                    " batches of ids, output gradient)"),
           static_cast<double>(b.distinct_batches) * lookups * 8 +
               lookups * static_cast<double>(b.spec.dim) * 4);
  plan.add("step buffers (rows and gradients of the batch, several copies)",
           lookups * static_cast<double>(b.spec.dim) * 4 * 6, /*device=*/true);
  plan.add_transfer_buffers();
  plan.add_process();
  return plan;
}

int run_bench(int argc, char** argv) {
  using namespace bench;
  const po::options_description options = bench_options();
  if (argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    std::cout << options << "\n";
    return 0;
  }
  std::unique_ptr<Communicator> comm = make_world_communicator();
  const int ranks = comm->size(), rank = comm->rank();
  po::variables_map vm;
  BenchOptions o;
  run_agreed(*comm, [&] {
    vm = parse_command_line(argc, argv, options, "bench");
    o = read_options(vm, ranks, rank);
  });
  if (vm.count("help")) {
    if (rank == 0) std::cout << options << "\n";
    return 0;
  }
  // A CPU job too big for this host's memory is refused now, with its plan
  // (the one 'embtrain plan --bench' prints), not ended by the allocator.
  // (A GPU bench keeps its table and step buffers on the device, which the
  // host plan would count twice.)
  if (o.device.device != "cuda")
    check_memory_plan(*comm, local_rank_info(*comm).local_size,
                      bench_memory_plan(bench_job_of(o), ranks),
                      "Each rank holds 1/P of the table: use more ranks, fewer --rows or a "
                      "smaller --dim, an optimizer with less state (--optimizer sgd: none), or a "
                      "smaller --batch.");
  const bool text = rank == 0 && !o.json;
  int64_t global_lookups = o.batch * o.seq;
  comm->allreduce_sum(&global_lookups, 1, CommType::kInt64);
  const MachineInfo machine = machine_info();
  if (text) print_header(o, machine, ranks, omp_get_max_threads(), global_lookups);

  Stopwatch setup;
  const BenchData data = draw_data(o, rank);
  const double data_s = setup.lap_ms() / 1e3;
  // The peak host memory so far is the data's (a Zipf sampler over every
  // row); from here on it is the table's and the steps' (VmHWM reset to the
  // current RSS by /proc/self/clear_refs, where the kernel allows it).
  const double data_peak_rss = process_memory_bytes("VmHWM");
  bool reset = false;
  {
    std::ofstream clear("/proc/self/clear_refs");
    reset = static_cast<bool>(clear << "5" << std::flush);
  }
  // The table: built, and on a GPU drawn there (with the device's start).
  const std::unique_ptr<BenchCase> engine = make_case(o, comm.get(), data);
  const std::string gpu = engine->gpu_description();
  comm->barrier();
  const double table_s = setup.lap_ms() / 1e3;
  if (text && !gpu.empty()) std::printf("# gpu (rank 0): %s\n", gpu.c_str());
  if (text)
    std::printf("# setup %.1f s (data %.2f s, table %.2f s)\n", data_s + table_s, data_s, table_s);

  const Timings timings = time_steps(o, engine.get(), *comm);
  const Summary summary = summarise(o, data, *engine, timings, global_lookups, *comm);
  if (!o.profile.empty()) write_profile(o, summary, *engine, *comm, machine, gpu);
  // Rank 0's peak resident host memory after the data was drawn (the
  // table's set-up and the steps; -1 where it could not be reset) and over
  // the whole run.
  const double peak_rss = process_memory_bytes("VmHWM");
  const double table_peak_rss = reset ? peak_rss : -1;
  if (rank != 0) return 0;
  if (o.json) {
    nlohmann::json out = to_json(o, summary, machine, ranks, gpu);
    out["setup_data_s"] = data_s;
    out["setup_table_s"] = table_s;
    out["peak_host_rss_bytes"] = std::max(peak_rss, data_peak_rss);
    out["peak_host_rss_after_data_bytes"] = table_peak_rss;
    std::cout << out.dump() << std::endl;
  } else {
    print_report(summary);
    std::printf("# peak host memory (rank 0, VmHWM): %s with the data, %s after it\n",
                bytes_text(std::max(peak_rss, data_peak_rss)).c_str(),
                reset ? bytes_text(table_peak_rss).c_str() : "unknown");
  }
  return 0;
}

}  // namespace app
}  // namespace embtrain
