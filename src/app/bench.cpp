// embtrain bench: times whole training steps (forward, backward with a fixed
// random gradient, optimizer) on a synthetic Zipf workload and reports
// throughput, time per phase, and how close the step comes to its
// memory-traffic floor on this machine.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "embtrain/embedding.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/random.hpp"
#include "embtrain/timer.hpp"
#include "embtrain/zipf.hpp"
#include "machine_info.hpp"
#include "table_options.hpp"

namespace embtrain {
namespace app {

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The least memory traffic a step can have: read the ids, read each
// distinct row once and write the output, read the output gradient, and
// read and write each updated row with its optimizer state.
double floor_bytes(int64_t lookups, double unique, double updated, int64_t dim,
                   int64_t state_width) {
  const double row = 4.0 * static_cast<double>(dim);
  return 8.0 * static_cast<double>(lookups) + unique * row +
         2.0 * static_cast<double>(lookups) * row +
         updated * 2.0 * (row + 4.0 * static_cast<double>(state_width));
}

}  // namespace

int run_bench(int argc, char** argv) {
  po::options_description options(
      "usage: embtrain bench [options]\n\n"
      "Times training steps of one table on a synthetic workload: batch x seq ids drawn from a\n"
      "Zipf law over rows 1..rows-1, a fraction set to the padding id 0.\n\noptions");
  // clang-format off
  options.add_options()
    ("help,h", "show this help")
    ("rows", po::value<int64_t>()->default_value(1000000), "table rows")
    ("dim", po::value<int64_t>()->default_value(128), "embedding dim")
    ("batch", po::value<int64_t>()->default_value(4096), "samples per step")
    ("seq", po::value<int64_t>()->default_value(20), "ids per sample")
    ("zipf", po::value<double>()->default_value(1.05), "Zipf exponent ALPHA (0: uniform)")
    ("pad-frac", po::value<double>()->default_value(0.1), "fraction of ids set to padding id 0")
    ("steps", po::value<int64_t>()->default_value(50), "timed steps")
    ("warmup", po::value<int64_t>()->default_value(5), "untimed steps first")
    ("threads", po::value<int>()->default_value(0), "CPU threads (0: OpenMP's default)")
    ("seed", po::value<uint64_t>()->default_value(1), "seed of table and workload")
    ("distinct-batches", po::value<int64_t>()->default_value(8),
     "distinct batches drawn up front and cycled through")
    ("json", po::bool_switch(), "print one JSON object instead of text");
  // clang-format on
  add_table_options(&options, "adam", 1e-3, /*default_scale_grad_by_freq=*/true);
  const po::variables_map vm = parse_command_line(argc, argv, options, "bench");
  if (vm.count("help")) {
    std::cout << options << "\n";
    return 0;
  }
  TableSpec spec;
  spec.name = "bench";
  spec.num_embeddings = vm["rows"].as<int64_t>();
  spec.dim = vm["dim"].as<int64_t>();
  spec.padding_idx = 0;
  read_table_options(vm, &spec);
  const int64_t batch = vm["batch"].as<int64_t>(), seq = vm["seq"].as<int64_t>();
  const int64_t steps = vm["steps"].as<int64_t>(), warmup = vm["warmup"].as<int64_t>();
  const int64_t distinct = vm["distinct-batches"].as<int64_t>();
  const double pad_frac = vm["pad-frac"].as<double>();
  const uint64_t seed = vm["seed"].as<uint64_t>();
  const int threads_opt = vm["threads"].as<int>();
  const bool json = vm["json"].as<bool>();
  EMBTRAIN_REQUIRE(batch >= 1 && seq >= 1, "options --batch and --seq must be >= 1");
  EMBTRAIN_REQUIRE(steps >= 1 && warmup >= 0, "option --steps must be >= 1 and --warmup >= 0");
  EMBTRAIN_REQUIRE(distinct >= 1, "option --distinct-batches must be >= 1");
  EMBTRAIN_REQUIRE(pad_frac >= 0 && pad_frac <= 1, "option --pad-frac = ", pad_frac,
                   " is invalid (valid: [0, 1])");
  EMBTRAIN_REQUIRE(threads_opt >= 0, "option --threads must be >= 0");
  if (threads_opt > 0) omp_set_num_threads(threads_opt);
  const int threads = omp_get_max_threads();
  const int64_t lookups = batch * seq;
  const int64_t dim = spec.dim;

  const MachineInfo machine = machine_info();
  auto say = [&](const char* fmt, auto... args) {
    if (!json) std::fprintf(stdout, fmt, args...);
  };
  say("# embtrain bench: host %s, cpu %s, %d cores, %d threads\n", machine.host.c_str(),
      machine.cpu.c_str(), machine.cores, threads);
  say("# table %lld x %lld, optimizer %s, scale_grad_by_freq %d, padding_idx 0\n",
      static_cast<long long>(spec.num_embeddings), static_cast<long long>(dim),
      optimizer_name(spec.optimizer.kind), spec.scale_grad_by_freq ? 1 : 0);
  say("# batch %lld x seq %lld = %lld lookups/step, zipf %.3f, pad-frac %.3f, steps %lld + "
      "warmup %lld\n",
      static_cast<long long>(batch), static_cast<long long>(seq),
      static_cast<long long>(lookups), vm["zipf"].as<double>(), pad_frac,
      static_cast<long long>(steps), static_cast<long long>(warmup));
  std::fflush(stdout);

  // Workload: batches and one output gradient, drawn before the clock starts.
  Stopwatch setup;
  const ZipfSampler zipf(spec.num_embeddings, vm["zipf"].as<double>());
  std::vector<std::vector<int64_t>> batches;
  for (int64_t b = 0; b < distinct; ++b)
    batches.push_back(sample_ids(zipf, lookups, pad_frac, seed, /*stream=*/1000 + b));
  std::vector<float> grad(static_cast<size_t>(lookups * dim));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < lookups * dim; ++i) grad[i] = random_normal(seed, 7, i);
  Embedding table(spec, seed);
  std::vector<float> out(static_cast<size_t>(lookups * dim));
  say("# setup %.1f s\n", setup.lap_ms() / 1e3);

  std::vector<double> step_ms;
  double unique_sum = 0, updated_sum = 0;
  for (int64_t s = 0; s < warmup + steps; ++s) {
    if (s == warmup) table.reset_times();
    const std::vector<int64_t>& ids = batches[s % distinct];
    Stopwatch clock;
    table.forward(IdsView{ids.data(), DType::kInt64, {batch, seq}}, out.data());
    table.backward(grad.data());
    table.step();
    if (s >= warmup) {
      step_ms.push_back(clock.lap_ms());
      updated_sum += static_cast<double>(table.grad().rows.size());
    }
  }
  // Distinct ids of a step include the padding row when it occurs.
  for (int64_t s = warmup; s < warmup + steps; ++s) {
    std::vector<int64_t> ids = batches[s % distinct];
    std::sort(ids.begin(), ids.end());
    unique_sum += static_cast<double>(std::unique(ids.begin(), ids.end()) - ids.begin());
  }
  const double n = static_cast<double>(steps);
  const double unique = unique_sum / n, updated = updated_sum / n;
  const double ms = median(step_ms);
  const PhaseTimes& t = table.times();
  const int64_t width = spec.freeze ? 0 : optimizer_state_width(spec.optimizer.kind, dim);
  const double bytes = floor_bytes(lookups, unique, updated, dim, width);
  const double bw = measure_copy_bandwidth_gbps(threads);
  const double floor_ms = bytes / (bw * 1e6);

  nlohmann::json result = {
      {"host", machine.host},
      {"cpu", machine.cpu},
      {"threads", threads},
      {"rows", spec.num_embeddings},
      {"dim", dim},
      {"optimizer", optimizer_name(spec.optimizer.kind)},
      {"scale_grad_by_freq", spec.scale_grad_by_freq},
      {"lookups_per_step", lookups},
      {"unique_per_step", unique},
      {"updated_rows_per_step", updated},
      {"step_ms", ms},
      {"step_ms_min", *std::min_element(step_ms.begin(), step_ms.end())},
      {"lookups_per_s", static_cast<double>(lookups) / (ms * 1e-3)},
      {"phase_ms",
       {{"unique", t.unique / n}, {"gather", t.gather / n}, {"backward_reduce", t.reduce / n},
        {"update", t.update / n}}},
      {"floor_bytes_per_step", bytes},
      {"copy_bandwidth_gbps", bw},
      {"floor_ms", floor_ms},
      {"floor_fraction", floor_ms / ms},
  };
  if (json) {
    std::cout << result.dump() << std::endl;
    return 0;
  }
  std::printf("# unique %.0f/step (%.1f%%), updated rows %.0f/step\n", unique,
              100.0 * unique / static_cast<double>(lookups), updated);
  std::printf("# phases ms/step: unique %.2f  gather %.2f  backward_reduce %.2f  update %.2f\n",
              t.unique / n, t.gather / n, t.reduce / n, t.update / n);
  std::printf("# floor: %.1f MB/step at %.1f GB/s copy bandwidth = %.2f ms (%.0f%% of step)\n",
              bytes / 1e6, bw, floor_ms, 100.0 * floor_ms / ms);
  std::printf("%12s %14s %14s\n", "step_ms", "lookups/s", "unique/step");
  std::printf("%12.3f %14.4g %14.0f\n", ms, static_cast<double>(lookups) / (ms * 1e-3), unique);
  return 0;
}

}  // namespace app
}  // namespace embtrain
