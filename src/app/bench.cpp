// embtrain bench: times whole training steps (forward, backward with a fixed
// random gradient, optimizer) on a synthetic Zipf workload and reports
// throughput, time per phase, bytes exchanged, and how close the step comes
// to its memory-traffic floor on this machine. Under mpirun the table is
// row-sharded; --batch is per rank (weak scaling) unless --global-batch
// splits one batch over the ranks (strong scaling).
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "embtrain/communicator.hpp"
#include "embtrain/embedding.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/random.hpp"
#include "embtrain/sharded_embedding.hpp"
#include "embtrain/timer.hpp"
#include "embtrain/zipf.hpp"
#include "machine_info.hpp"
#if defined(EMBTRAIN_HAVE_CUDA)
#include "embtrain/kernels_cuda.hpp"
#endif
#include "table_options.hpp"

namespace embtrain {
namespace app {

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The least memory traffic a step can have on one rank: read the ids, read
// each distinct row once and write the output, read the output gradient,
// and read and write each updated row with its optimizer state.
double floor_bytes(double lookups, double unique, double updated, int64_t dim,
                   int64_t state_width) {
  const double row = 4.0 * static_cast<double>(dim);
  return 8.0 * lookups + unique * row + 2.0 * lookups * row +
         updated * 2.0 * (row + 4.0 * static_cast<double>(state_width));
}

// Phase names in step order, as reported.
const char* const kPhases[] = {"unique",        "alltoall_ids",    "gather", "alltoall_rows",
                               "backward_reduce", "alltoall_grads", "update"};
constexpr int kNumPhases = 7;

// The engine under test: one whole table in this process (local), or the
// table row-sharded over the job's ranks, on the CPU or on the GPU. On the
// GPU the batches, the gradient and the output stay in device memory, as a
// model running there would keep them.
class BenchEngine {
 public:
  BenchEngine(const TableSpec& spec, uint64_t seed, Communicator* comm, bool sharded,
              const std::string& device, const CudaOptions& cuda_options) {
    if (sharded || device == "cuda")
      sharded_ = std::make_unique<ShardedEmbedding>(std::vector<TableSpec>{spec}, comm, seed);
    else
      local_ = std::make_unique<Embedding>(spec, seed);
    if (device == "cuda") sharded_->use_cuda(cuda_options);
  }

  bool on_gpu() const { return sharded_ && sharded_->on_gpu(); }
  std::string gpu_description() { return on_gpu() ? sharded_->device_description() : ""; }

  // Device copies of the batches and the gradient, made once before timing.
  void upload(const std::vector<std::vector<int64_t>>& batches, const RowBuffer& grad,
              int64_t out_floats) {
#if defined(EMBTRAIN_HAVE_CUDA)
    if (!on_gpu()) return;
    d_batches_.resize(batches.size());
    for (size_t b = 0; b < batches.size(); ++b) {
      d_batches_[b].reserve(batches[b].size() * sizeof(int64_t));
      cuda::copy_to_device(d_batches_[b].data(), batches[b].data(),
                           batches[b].size() * sizeof(int64_t), nullptr);
    }
    d_grad_.reserve(grad.size() * sizeof(float));
    cuda::copy_to_device(d_grad_.data(), grad.data(), grad.size() * sizeof(float), nullptr);
    d_out_.reserve(static_cast<size_t>(out_floats) * sizeof(float));
    cuda::synchronize(nullptr);
#else
    (void)batches, (void)grad, (void)out_floats;
#endif
  }

  void step(int64_t b, const IdsView& ids, float* out, const float* grad) {
    if (local_) {
      local_->forward(ids, out);
      local_->backward(grad);
      local_->step();
      return;
    }
#if defined(EMBTRAIN_HAVE_CUDA)
    if (on_gpu()) {
      sharded_->forward_device({DeviceIds{d_batches_[b].as<int64_t>(), ids.numel()}},
                               {d_out_.as<float>()});
      sharded_->backward_device({d_grad_.as<float>()});
      sharded_->step();
      return;
    }
#endif
    (void)b;
    sharded_->forward({ids}, {out});
    sharded_->backward({grad});
    sharded_->step();
  }

  void reset() {
    if (local_) local_->reset_times();
    if (sharded_) sharded_->reset_stats();
  }

  // Summed milliseconds per phase (kPhases order) and bytes sent per exchange.
  std::vector<double> phase_ms() const {
    if (local_) {
      const PhaseTimes& t = local_->times();
      return {t.unique, 0, t.gather, 0, t.reduce, 0, t.update};
    }
    const ShardedStepStats& s = sharded_->stats();
    return {s.unique_ms, s.alltoall_ids_ms, s.gather_ms,        s.alltoall_rows_ms,
            s.reduce_ms, s.alltoall_grads_ms, s.update_ms};
  }
  std::vector<double> bytes_sent() const {
    if (local_) return {0, 0, 0};
    const ShardedStepStats& s = sharded_->stats();
    return {static_cast<double>(s.ids_bytes_sent), static_cast<double>(s.rows_bytes_sent),
            static_cast<double>(s.grads_bytes_sent)};
  }

 private:
  std::unique_ptr<Embedding> local_;
  std::unique_ptr<ShardedEmbedding> sharded_;
#if defined(EMBTRAIN_HAVE_CUDA)
  std::vector<cuda::DeviceBuffer> d_batches_;
  cuda::DeviceBuffer d_grad_, d_out_;
#endif
};

}  // namespace

int run_bench(int argc, char** argv) {
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
    ("zipf", po::value<double>()->default_value(1.05), "Zipf exponent ALPHA (0: uniform)")
    ("pad-frac", po::value<double>()->default_value(0.1), "fraction of ids set to padding id 0")
    ("steps", po::value<int64_t>()->default_value(50), "timed steps")
    ("warmup", po::value<int64_t>()->default_value(5), "untimed steps first")
    ("threads", po::value<int>()->default_value(0), "CPU threads per rank (0: OpenMP's default)")
    ("seed", po::value<uint64_t>()->default_value(1), "seed of table and workload")
    ("distinct-batches", po::value<int64_t>()->default_value(8),
     "distinct batches drawn up front and cycled through")
    ("engine", po::value<std::string>()->default_value("auto"),
     "local (one process, no exchange) | sharded | auto (local for one rank, else sharded)")
    ("json", po::bool_switch(), "print one JSON object instead of text");
  // clang-format on
  // The workload's ids 0 are its padding.
  add_table_options(&options, {{"optimizer", "adam"},
                               {"lr", "0.001"},
                               {"scale_grad_by_freq", "true"},
                               {"padding_idx", "0"}});
  add_device_options(&options);
  if (argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    std::cout << options << "\n";
    return 0;
  }
  std::unique_ptr<Communicator> comm = make_mpi_communicator();
  const int P = comm->size(), rank = comm->rank();
  const bool root = rank == 0;

  po::variables_map vm;
  TableSpec spec;
  int64_t batch = 0, seq = 0, steps = 0, warmup = 0, distinct = 0;
  double pad_frac = 0;
  bool sharded = P > 1;
  std::string device = "cpu";
  CudaOptions cuda_options;
  run_agreed(*comm, [&] {
    vm = parse_command_line(argc, argv, options, "bench");
    spec.name = "bench";
    spec.num_embeddings = vm["rows"].as<int64_t>();
    spec.dim = vm["dim"].as<int64_t>();
    read_table_options(vm, &spec);
    seq = vm["seq"].as<int64_t>();
    steps = vm["steps"].as<int64_t>();
    warmup = vm["warmup"].as<int64_t>();
    distinct = vm["distinct-batches"].as<int64_t>();
    pad_frac = vm["pad-frac"].as<double>();
    if (vm.count("global-batch")) {
      const int64_t global = vm["global-batch"].as<int64_t>();
      EMBTRAIN_REQUIRE(global >= P, "option --global-batch = ", global,
                       " is invalid (valid: >= the number of ranks, ", P, ")");
      batch = global / P + (rank < global % P ? 1 : 0);
    } else {
      batch = vm["batch"].as<int64_t>();
    }
    EMBTRAIN_REQUIRE(batch >= 1, "option --batch = ", batch, " is invalid (valid: >= 1)");
    EMBTRAIN_REQUIRE(seq >= 1, "option --seq = ", seq, " is invalid (valid: >= 1)");
    EMBTRAIN_REQUIRE(steps >= 1, "option --steps = ", steps, " is invalid (valid: >= 1)");
    EMBTRAIN_REQUIRE(warmup >= 0, "option --warmup = ", warmup, " is invalid (valid: >= 0)");
    EMBTRAIN_REQUIRE(distinct >= 1, "option --distinct-batches = ", distinct,
                     " is invalid (valid: >= 1)");
    EMBTRAIN_REQUIRE(pad_frac >= 0 && pad_frac <= 1, "option --pad-frac = ", pad_frac,
                     " is invalid (valid: [0, 1])");
    const int threads = vm["threads"].as<int>();
    EMBTRAIN_REQUIRE(threads >= 0, "option --threads = ", threads, " is invalid (valid: >= 0)");
    if (threads > 0) omp_set_num_threads(threads);
    const std::string engine = vm["engine"].as<std::string>();
    EMBTRAIN_REQUIRE(engine == "auto" || engine == "local" || engine == "sharded",
                     "option --engine = '", engine, "' is invalid (valid: auto, local, sharded)");
    EMBTRAIN_REQUIRE(engine != "local" || P == 1,
                     "option --engine = local needs a job of one rank, this one has ", P);
    if (engine != "auto") sharded = engine == "sharded";
    const DeviceChoice choice = read_device_options(vm);
    device = choice.device;
    cuda_options = choice.cuda;
    EMBTRAIN_REQUIRE(device == "cpu" || engine != "local",
                     "option --engine = local runs on the CPU only; --device cuda uses the sharded "
                     "engine");
    if (device == "cuda") sharded = true;
  });
  if (vm.count("help")) {
    if (root) std::cout << options << "\n";
    return 0;
  }
  const int threads = omp_get_max_threads();
  const int64_t lookups = batch * seq, dim = spec.dim;
  const bool json = vm["json"].as<bool>();
  const bool text = root && !json;
  int64_t global_lookups = lookups;
  comm->allreduce_sum(&global_lookups, 1, CommType::kInt64);

  const MachineInfo machine = machine_info();
  if (text) {
    std::printf("# embtrain bench: host %s, cpu %s, %d cores; %d rank(s) x %d threads, engine %s, "
                "device %s\n",
                machine.host.c_str(), machine.cpu.c_str(), machine.cores, P, threads,
                sharded ? "sharded" : "local", device.c_str());
    const std::string padding = spec.padding_idx ? std::to_string(*spec.padding_idx) : "none";
    std::printf("# table %lld x %lld, optimizer %s, scale_grad_by_freq %d, padding_idx %s\n",
                static_cast<long long>(spec.num_embeddings), static_cast<long long>(dim),
                optimizer_name(spec.optimizer.kind), spec.scale_grad_by_freq ? 1 : 0,
                padding.c_str());
    std::printf("# %lld lookups/step over all ranks (rank 0: batch %lld x seq %lld), zipf %.3f, "
                "pad-frac %.3f, steps %lld + warmup %lld\n",
                static_cast<long long>(global_lookups), static_cast<long long>(batch),
                static_cast<long long>(seq), vm["zipf"].as<double>(), pad_frac,
                static_cast<long long>(steps), static_cast<long long>(warmup));
    std::fflush(stdout);
  }

  // Workload: batches and one output gradient, drawn before the clock starts;
  // each rank draws its own streams.
  Stopwatch setup;
  const ZipfSampler zipf(spec.num_embeddings, vm["zipf"].as<double>());
  const uint64_t seed = vm["seed"].as<uint64_t>();
  std::vector<std::vector<int64_t>> batches;
  for (int64_t b = 0; b < distinct; ++b)
    batches.push_back(sample_ids(zipf, lookups, pad_frac, seed,
                                 /*stream=*/1000 + static_cast<uint64_t>(rank) * 1000003 + b));
  RowBuffer grad(static_cast<size_t>(lookups * dim));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < lookups * dim; ++i) grad[i] = random_normal(seed, 7 + rank, i);
  BenchEngine engine(spec, seed, comm.get(), sharded, device, cuda_options);
  RowBuffer out(static_cast<size_t>(lookups * dim));
  engine.upload(batches, grad, lookups * dim);
  const std::string gpu = engine.gpu_description();
  comm->barrier();
  if (text && !gpu.empty()) std::printf("# gpu (rank 0): %s\n", gpu.c_str());
  if (text) std::printf("# setup %.1f s\n", setup.lap_ms() / 1e3);

  // Step time is the slowest rank's: ranks synchronise in every exchange,
  // and a barrier before each step keeps stragglers from hiding.
  std::vector<double> step_ms;
  for (int64_t s = 0; s < warmup + steps; ++s) {
    if (s == warmup) engine.reset();
    const std::vector<int64_t>& ids = batches[s % distinct];
    comm->barrier();
    Stopwatch clock;
    engine.step(s % distinct, IdsView{ids.data(), DType::kInt64, {batch, seq}}, out.data(),
                grad.data());
    double ms = clock.lap_ms();
    comm->allreduce_max(&ms, 1, CommType::kFloat64);
    if (s >= warmup) step_ms.push_back(ms);
  }

  // Distinct ids per step: per rank (what it sends) and over the global batch.
  double local_unique = 0;
  for (int64_t s = warmup; s < warmup + steps; ++s) {
    std::vector<int64_t> ids = batches[s % distinct];
    std::sort(ids.begin(), ids.end());
    local_unique += static_cast<double>(std::unique(ids.begin(), ids.end()) - ids.begin());
  }
  const double n = static_cast<double>(steps);
  local_unique /= n;
  double sum_unique = local_unique;
  comm->allreduce_sum(&sum_unique, 1, CommType::kFloat64);

  std::vector<double> phases = engine.phase_ms();
  for (double& p : phases) p /= n;
  comm->allreduce_max(phases.data(), kNumPhases, CommType::kFloat64);
  std::vector<double> bytes = engine.bytes_sent();
  for (double& b : bytes) b /= n;
  std::vector<double> bytes_max = bytes;
  comm->allreduce_sum(bytes.data(), 3, CommType::kFloat64);
  comm->allreduce_max(bytes_max.data(), 3, CommType::kFloat64);
  const double bytes_total = bytes[0] + bytes[1] + bytes[2];

  const double ms = median(step_ms);
  const int64_t width = spec.freeze ? 0 : optimizer_state_width(spec.optimizer.kind, dim);
  // The floor of the busiest rank, as if it did its share of the work with
  // no exchange: global traffic divided by ranks.
  const double floor = floor_bytes(static_cast<double>(global_lookups) / P, sum_unique / P,
                                   sum_unique / P, dim, width);
  // The floor is against the memory the step runs in: host RAM or HBM.
#if defined(EMBTRAIN_HAVE_CUDA)
  double bw = engine.on_gpu() ? cuda::copy_bandwidth_gbps() : measure_copy_bandwidth_gbps(threads);
#else
  double bw = measure_copy_bandwidth_gbps(threads);
#endif
  comm->allreduce_min(&bw, 1, CommType::kFloat64);
  const double floor_ms = floor / (bw * 1e6);
  if (!root) return 0;

  nlohmann::json phase_json;
  for (int i = 0; i < kNumPhases; ++i) phase_json[kPhases[i]] = phases[i];
  nlohmann::json result = {
      {"host", machine.host},
      {"cpu", machine.cpu},
      {"ranks", P},
      {"threads", threads},
      {"engine", sharded ? "sharded" : "local"},
      {"device", device},
      {"gpu", gpu},
      {"rows", spec.num_embeddings},
      {"dim", dim},
      {"optimizer", optimizer_name(spec.optimizer.kind)},
      {"scale_grad_by_freq", spec.scale_grad_by_freq},
      {"lookups_per_step", global_lookups},
      {"unique_per_step", sum_unique},
      {"unique_ratio", sum_unique / static_cast<double>(global_lookups)},
      {"step_ms", ms},
      {"step_ms_min", *std::min_element(step_ms.begin(), step_ms.end())},
      {"lookups_per_s", static_cast<double>(global_lookups) / (ms * 1e-3)},
      {"phase_ms_max_over_ranks", phase_json},
      {"bytes_sent_per_step",
       {{"ids", bytes[0]}, {"rows", bytes[1]}, {"grads", bytes[2]}, {"total", bytes_total}}},
      {"bytes_sent_per_step_max_rank", bytes_max[0] + bytes_max[1] + bytes_max[2]},
      {"bytes_sent_per_lookup", bytes_total / static_cast<double>(global_lookups)},
      {"floor_bytes_per_step_per_rank", floor},
      {"copy_bandwidth_gbps", bw},
      {"floor_ms", floor_ms},
      {"floor_fraction", floor_ms / ms},
  };
  if (json) {
    std::cout << result.dump() << std::endl;
    return 0;
  }
  std::printf("# distinct ids: %.0f/step summed over ranks (%.1f%% of lookups)\n", sum_unique,
              100.0 * sum_unique / static_cast<double>(global_lookups));
  std::printf("# phases, ms/step (max over ranks):");
  for (int i = 0; i < kNumPhases; ++i) std::printf(" %s %.2f", kPhases[i], phases[i]);
  std::printf("\n# sent to other ranks: %.2f MB/step (%.1f bytes/lookup)\n", bytes_total / 1e6,
              bytes_total / static_cast<double>(global_lookups));
  std::printf("# floor: %.1f MB/step/rank at %.1f GB/s copy bandwidth = %.2f ms (%.0f%% of step)\n",
              floor / 1e6, bw, floor_ms, 100.0 * floor_ms / ms);
  std::printf("%12s %14s %14s\n", "step_ms", "lookups/s", "unique/step");
  std::printf("%12.3f %14.4g %14.0f\n", ms, static_cast<double>(global_lookups) / (ms * 1e-3),
              sum_unique);
  return 0;
}

}  // namespace app
}  // namespace embtrain
