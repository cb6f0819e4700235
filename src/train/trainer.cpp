#include "embtrain/trainer.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "embtrain/checkpoint.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/npy.hpp"
#include "common/timer.hpp"

namespace embtrain {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string clock_string(double seconds) {
  const long long s = static_cast<long long>(std::llround(std::max(0.0, seconds)));
  char text[32];
  if (s >= 3600)
    std::snprintf(text, sizeof(text), "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(text, sizeof(text), "%lld:%02lld", s / 60, s % 60);
  return text;
}

std::string rate_string(double per_s) {
  char text[32];
  if (per_s >= 1e6)
    std::snprintf(text, sizeof(text), "%.2fM", per_s / 1e6);
  else if (per_s >= 1e3)
    std::snprintf(text, sizeof(text), "%.1fk", per_s / 1e3);
  else
    std::snprintf(text, sizeof(text), "%.0f", per_s);
  return text;
}

std::string metrics_string(const std::map<std::string, double>& m) {
  std::string s;
  char item[96];
  for (const auto& [k, v] : m) {
    std::snprintf(item, sizeof(item), "%s%s %.4f", s.empty() ? "" : "  ", k.c_str(), v);
    s += item;
  }
  return s;
}

// Rank 0's JSON-lines metrics file; other ranks hold a closed stream.
class MetricsLog {
 public:
  MetricsLog(const std::string& path, bool append, bool active) {
    if (active && !path.empty())
      out_.open(path, append ? std::ios::app : std::ios::trunc);
    EMBTRAIN_REQUIRE(!active || path.empty() || out_, path, ": cannot open metrics file");
  }
  void write(const json& j) {
    if (!out_.is_open()) return;
    out_ << j.dump() << "\n";
    out_.flush();
  }

 private:
  std::ofstream out_;
};

}  // namespace

ShardedEmbedding build_tables(const Workload& workload, std::vector<TableSetup> setups,
                              Communicator& comm, uint64_t seed) {
  const std::vector<std::string> names = workload.table_names();
  EMBTRAIN_ASSERT(names.size() == setups.size());
  std::vector<TableSpec> specs;
  for (size_t t = 0; t < setups.size(); ++t) {
    TableSpec& spec = setups[t].spec;
    EMBTRAIN_ASSERT(spec.name == names[t]);
    const int64_t rows = workload.table_rows(spec.name);
    EMBTRAIN_REQUIRE(spec.num_embeddings == 0 || spec.num_embeddings == rows, "table '",
                     spec.name, "': rows = ", spec.num_embeddings, " but workload ",
                     workload.name(), " needs ", rows, " (leave table.", spec.name,
                     ".rows unset to take the workload's)");
    spec.num_embeddings = rows;
    specs.push_back(spec);
  }
  // Fresh N(0, 1) rows first (drawn by global row, the same for any number
  // of ranks), then each table's own start.
  ShardedEmbedding tables(specs, &comm, seed);
  run_agreed(comm, [&] {
    for (size_t t = 0; t < setups.size(); ++t) {
      EmbeddingTable& shard = tables.shard(static_cast<int>(t));
      const TableSetup& setup = setups[t];
      RowBuffer& w = shard.weights();
      if (setup.init == "normal") {
        const float std = static_cast<float>(setup.init_std);
        for (float& x : w) x *= std;
      } else if (setup.init == "zeros") {
        std::fill(w.begin(), w.end(), 0.f);
      } else {
        // from_pretrained: the .npy's rows as they are (padding not zeroed).
        const NpyArray a = read_npy(setup.init);
        const std::vector<int64_t> want{specs[t].num_embeddings, specs[t].dim};
        EMBTRAIN_REQUIRE(a.dtype == DType::kFloat32 && a.shape == want,
                         setup.init, ": table '", specs[t].name, "' needs float32 of shape (",
                         specs[t].num_embeddings, ", ", specs[t].dim, "), got ",
                         dtype_name(a.dtype), " of shape ", shape_to_string(a.shape));
        std::copy(a.as<float>() + shard.row_begin() * shard.dim(),
                  a.as<float>() + (shard.row_begin() + shard.num_rows()) * shard.dim(), w.begin());
      }
    }
  });
  return tables;
}

TrainSummary train(Workload& workload, const std::vector<TableSetup>& setups,
                   const TrainOptions& options, Communicator& comm) {
  const bool root = comm.rank() == 0;
  const bool talk = root && !options.quiet;
  TrainSummary summary;

  const std::string resume_dir = options.resume.empty() ? "" : resolve_checkpoint(options.resume);
  ShardedEmbedding tables = build_tables(workload, setups, comm, options.seed);
  std::vector<float>* dense = workload.dense_parameters();
  if (!resume_dir.empty()) {
    run_agreed(comm, [&] {
      const CheckpointInfo info = read_checkpoint_info(resume_dir);
      EMBTRAIN_REQUIRE(info.workload == workload.name(), "checkpoint ", resume_dir,
                       " is of workload '", info.workload, "', not '", workload.name(), "'");
    });
    const CheckpointInfo info = load_checkpoint(resume_dir, tables, dense);
    summary.first_step = info.step;
    if (talk) std::printf("resumed from %s at step %lld\n", resume_dir.c_str(),
                          static_cast<long long>(info.step));
  }

  if (options.device == "cuda") {
    tables.use_cuda(options.cuda);
    if (talk) std::printf("device: %s\n", tables.device_description().c_str());
  }

  const int64_t per_epoch = std::max<int64_t>(1, workload.steps_per_epoch());
  const int64_t total =
      options.steps > 0 ? options.steps
                        : std::max<int64_t>(1, std::llround(options.epochs * per_epoch));
  summary.steps = total;
  if (summary.first_step > total)
    throw AgreedError(detail::concat("checkpoint ", resume_dir, " is at step ", summary.first_step,
                                     " but the run has only ", total, " steps"));

  std::unique_ptr<MetricsLog> metrics_file;
  run_agreed(comm, [&] {
    metrics_file = std::make_unique<MetricsLog>(
        options.out_dir.empty() ? "" : (fs::path(options.out_dir) / "metrics.jsonl").string(),
        /*append=*/!resume_dir.empty(), root);
  });
  MetricsLog& metrics = *metrics_file;
  auto evaluate = [&](int64_t step, const char* when) {
    std::map<std::string, double> m = workload.evaluate(tables);
    json j = {{"type", "eval"}, {"step", step}, {"when", when}};
    for (const auto& [k, v] : m) j[k] = v;
    if (root) metrics.write(j);
    if (talk) std::printf("eval  step %lld: %s\n", static_cast<long long>(step), metrics_string(m).c_str());
    return m;
  };

  summary.reference = workload.reference_metrics();
  if (talk && !summary.reference.empty())
    std::printf("reference (ground truth on the eval set): %s\n",
                metrics_string(summary.reference).c_str());
  summary.eval_start = evaluate(summary.first_step, "start");
  if (talk) std::fflush(stdout);

  auto checkpoint = [&](int64_t step) {
    if (options.checkpoint_dir.empty()) return;
    CheckpointInfo info{workload.name(), step, options.seed, options.config_text};
    const std::string dir =
        save_checkpoint(options.checkpoint_dir, info, tables, dense, options.checkpoint_keep);
    if (root) metrics.write({{"type", "checkpoint"}, {"step", step}, {"path", dir}});
    if (talk) std::printf("checkpoint  step %lld -> %s\n", static_cast<long long>(step), dir.c_str());
  };

  // Sums since the last progress line, this rank's: loss, examples,
  // lookups, words.
  double window[4] = {0, 0, 0, 0};
  double totals[2] = {0, 0};  // lookups, words over the whole run, all ranks
  Stopwatch run_clock, window_clock;
  double elapsed = 0, window_s = 0;
  for (int64_t step = summary.first_step; step < total; ++step) {
    const StepOutput out = workload.train_step(tables, step);
    window[0] += out.loss_sum;
    window[1] += static_cast<double>(out.examples);
    window[2] += static_cast<double>(out.lookups);
    window[3] += static_cast<double>(out.words);
    const int64_t done = step + 1;
    const bool log_now = done % std::max<int64_t>(1, options.log_interval) == 0 || done == total;
    if (log_now) {
      comm.allreduce_sum(window, 4, CommType::kFloat64);
      window_s = window_clock.lap_ms() / 1e3;
      elapsed += window_s;
      totals[0] += window[2];
      totals[1] += window[3];
      const double loss = window[1] > 0 ? window[0] / window[1] : 0;
      summary.final_train_loss = loss;
      const double lookups_per_s = window[2] / std::max(window_s, 1e-9);
      const double words_per_s = window[3] / std::max(window_s, 1e-9);
      const double eta = elapsed / static_cast<double>(done - summary.first_step) *
                         static_cast<double>(total - done);
      json j = {{"type", "train"}, {"step", done}, {"epoch", static_cast<double>(done) / per_epoch},
                {"loss", loss},    {"lookups_per_s", lookups_per_s},
                {"elapsed_s", elapsed}};
      if (window[3] > 0) j["words_per_s"] = words_per_s;
      if (root) metrics.write(j);
      if (talk) {
        std::printf("step %*lld/%lld  epoch %.2f  loss %.4f  lookups/s %s%s  elapsed %s  eta %s\n",
                    static_cast<int>(std::to_string(total).size()), static_cast<long long>(done),
                    static_cast<long long>(total), static_cast<double>(done) / per_epoch, loss,
                    rate_string(lookups_per_s).c_str(),
                    window[3] > 0 ? ("  words/s " + rate_string(words_per_s)).c_str() : "",
                    clock_string(elapsed).c_str(), clock_string(eta).c_str());
        std::fflush(stdout);
      }
      std::fill(std::begin(window), std::end(window), 0.0);
      window_clock.lap_ms();  // logging is not training time
    }
    if (options.eval_every > 0 && done % options.eval_every == 0 && done != total)
      evaluate(done, "periodic");
    if (options.checkpoint_every > 0 && done % options.checkpoint_every == 0 && done != total)
      checkpoint(done);
  }
  summary.seconds = run_clock.lap_ms() / 1e3;
  summary.lookups_per_s = totals[0] / std::max(elapsed, 1e-9);
  summary.words_per_s = totals[1] / std::max(elapsed, 1e-9);
  summary.eval_end = evaluate(total, "end");
  checkpoint(total);
  workload.finish(tables, options.out_dir);

  json j = {{"type", "summary"}, {"steps", total}, {"first_step", summary.first_step},
            {"seconds", summary.seconds}, {"lookups_per_s", summary.lookups_per_s},
            {"train_loss", summary.final_train_loss}};
  if (summary.words_per_s > 0) j["words_per_s"] = summary.words_per_s;
  for (const auto& [k, v] : summary.eval_end) j["eval_" + k] = v;
  for (const auto& [k, v] : summary.reference) j["reference_" + k] = v;
  if (root) metrics.write(j);
  if (talk) {
    std::printf("done: %lld steps in %s, %s lookups/s", static_cast<long long>(total - summary.first_step),
                clock_string(summary.seconds).c_str(), rate_string(summary.lookups_per_s).c_str());
    if (summary.words_per_s > 0) std::printf(", %s words/s", rate_string(summary.words_per_s).c_str());
    std::printf("\n  eval at start: %s\n  eval at end:   %s\n", metrics_string(summary.eval_start).c_str(),
                metrics_string(summary.eval_end).c_str());
    if (!summary.reference.empty())
      std::printf("  reference:     %s\n", metrics_string(summary.reference).c_str());
    std::fflush(stdout);
  }
  return summary;
}

}  // namespace embtrain
