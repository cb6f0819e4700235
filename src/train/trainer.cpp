#include "embtrain/trainer.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "embtrain/checkpoint.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/npy.hpp"
#include "comm/watchdog.hpp"
#include "common/progress.hpp"
#include "common/timer.hpp"
#include "train/stop_signals.hpp"

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

// EMBTRAIN_INJECT_NAN_LOSS="STEP[:RANK]" as (0-based step, rank or -1);
// (-1, -1) when unset.
std::pair<int64_t, int> injected_nan_loss() {
  const char* text = std::getenv("EMBTRAIN_INJECT_NAN_LOSS");
  if (!text || !*text) return {-1, -1};
  long long step = 0;
  int rank = -1;
  const int n = std::sscanf(text, "%lld:%d", &step, &rank);
  EMBTRAIN_REQUIRE(n >= 1 && step >= 1, "EMBTRAIN_INJECT_NAN_LOSS = '", text,
                   "': expected STEP or STEP:RANK with STEP >= 1");
  return {step - 1, n == 2 ? rank : -1};
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

// Rank 0's JSON-lines metrics file; other ranks hold none. Every line is
// flushed, and a failed write, flush or close (a full disk) is an error:
// a run must not end "successfully" with its metrics lost.
class MetricsLog {
 public:
  MetricsLog(const std::string& path, bool append, bool active) : path_(path) {
    if (active && !path.empty()) out_ = std::fopen(path.c_str(), append ? "a" : "w");
    EMBTRAIN_REQUIRE(!active || path.empty() || out_, path, ": cannot open metrics file: ",
                     std::strerror(errno));
  }
  ~MetricsLog() {
    if (out_) std::fclose(out_);
  }
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void write(const json& j) {
    if (!out_) return;
    const std::string line = j.dump() + "\n";
    const bool ok = std::fwrite(line.data(), 1, line.size(), out_) == line.size() &&
                    std::fflush(out_) == 0;
    EMBTRAIN_REQUIRE(ok, path_, ": cannot write metrics: ", std::strerror(errno));
  }
  void close() {
    if (!out_) return;
    const int rc = std::fclose(out_);
    out_ = nullptr;
    EMBTRAIN_REQUIRE(rc == 0, path_, ": cannot close metrics file: ", std::strerror(errno));
  }

 private:
  std::string path_;
  std::FILE* out_ = nullptr;
};

// Samples that steps [0, k) read when each step takes `global` of an
// epoch's `epoch` samples in order, the last step of an epoch what is left
// (Workload::epoch_samples); saturates at INT64_MAX.
int64_t samples_before(int64_t k, int64_t epoch, int64_t global) {
  epoch = std::max<int64_t>(1, epoch);
  global = std::max<int64_t>(1, global);
  const int64_t per_epoch = (epoch + global - 1) / global;
  int64_t full = 0, part = 0, n = 0;
  if (__builtin_mul_overflow(k / per_epoch, epoch, &full) ||
      __builtin_mul_overflow(k % per_epoch, global, &part) ||
      __builtin_add_overflow(full, part, &n))
    return std::numeric_limits<int64_t>::max();
  return n;
}

// The first line where texts `a` (saved) and `b` (now) differ, as
// "line N: 'x' there, 'y' now"; "" when they are equal.
std::string first_difference(const std::string& a, const std::string& b) {
  std::istringstream ia(a), ib(b);
  std::string la, lb;
  for (int64_t n = 1;; ++n) {
    const bool ha = static_cast<bool>(std::getline(ia, la));
    const bool hb = static_cast<bool>(std::getline(ib, lb));
    if (!ha && !hb) return "";
    if (ha != hb || la != lb)
      return detail::concat("line ", n, ": '", ha ? la : "(end)", "' there, '", hb ? lb : "(end)",
                            "' now");
  }
}

}  // namespace

namespace {

// from_pretrained: this rank's rows of the .npy at `path` into table t, a
// chunk at a time (the file read once, in windows of a chunk's rows), as
// they are (padding not zeroed). A NaN or infinity among them is refused
// here: the run could not save a checkpoint of them at its end.
void load_pretrained(ShardedEmbedding& tables, int t, const std::string& path) {
  const TableSpec& spec = tables.spec(t);
  const std::string key = "config key 'table." + spec.name + ".init' = '" + path + "'";
  std::unique_ptr<NpyReader> file;
  try {
    file = std::make_unique<NpyReader>(path);
  } catch (const Error& e) {  // the file's own fault, said with the key that named it
    throw make_error(key, ": ", e.what());
  }
  NpyReader& npy = *file;
  const std::vector<int64_t> want{spec.num_embeddings, spec.dim};
  EMBTRAIN_REQUIRE(npy.dtype() == DType::kFloat32 && npy.shape() == want, key, ": table '",
                   spec.name, "' needs float32 of shape (", spec.num_embeddings, ", ", spec.dim,
                   "), got ", dtype_name(npy.dtype()), " of shape ", shape_to_string(npy.shape()));
  const ShardPlan& plan = tables.plan(t);
  const int rank = tables.comm().rank();
  const int64_t rows = plan.shard_rows(rank), dim = spec.dim;
  const int64_t chunk = transfer_chunk_rows(dim);
  NpyRowReader reader(&npy, dim, chunk);
  std::vector<float> buffer(static_cast<size_t>(std::min(chunk, rows) * dim));
  for (int64_t first = 0; first < rows; first += chunk) {
    const int64_t n = std::min(chunk, rows - first);
    for (int64_t k = 0; k < n; ++k) {
      const int64_t row = plan.global_row(rank, first + k);
      const float* values = reader.row(row);
      for (int64_t j = 0; j < dim; ++j)
        EMBTRAIN_REQUIRE(std::isfinite(values[j]), key, ": row ", row, ", column ", j, " is ",
                         values[j], " (valid: finite values)");
      std::copy_n(values, dim, buffer.data() + k * dim);
    }
    tables.write_rows(t, TablePart::kWeights, first, n, buffer.data());
  }
}

}  // namespace

std::string key_place(const KeySource& source, const std::string& key) {
  return source ? " (" + source(key) + ")" : "";
}

ShardedEmbedding build_tables(const Workload& workload, std::vector<TableSetup> setups,
                              Communicator& comm, uint64_t seed, const std::string& device,
                              const CudaOptions& cuda, const KeySource& key_source) {
  const std::vector<std::string> names = workload.table_names();
  EMBTRAIN_ASSERT(names.size() == setups.size());
  std::vector<TableSpec> specs;
  for (size_t t = 0; t < setups.size(); ++t) {
    TableSpec& spec = setups[t].spec;
    EMBTRAIN_ASSERT(spec.name == names[t]);
    const int64_t rows = workload.table_rows(spec.name);
    const std::string key = "table." + spec.name + ".";
    EMBTRAIN_REQUIRE(spec.num_embeddings == 0 || spec.num_embeddings == rows, "config key '", key,
                     "rows' = '", spec.num_embeddings, "'", key_place(key_source, key + "rows"),
                     ": workload ", workload.name(), " needs ", rows,
                     " rows (leave it unset to take the workload's)");
    spec.num_embeddings = rows;
    // Here, where the rows are known, rather than in the table's own check,
    // so that the error names the key.
    if (const std::optional<int64_t> p = spec.padding_idx)
      EMBTRAIN_REQUIRE(*p >= -rows && *p < rows, "config key '", key, "padding_idx' = '", *p,
                       "'", key_place(key_source, key + "padding_idx"), ": not a row of table '",
                       spec.name, "', which has ", rows, " (valid: [", -rows, ", ", rows - 1,
                       "]; negative counts from the end)");
    specs.push_back(spec);
  }
  // Fresh rows: N(0, 1) drawn by global row (the same for any number of
  // ranks) times init_std, or zeros (also under a from_pretrained table's
  // rows), drawn where the tables are placed: on the GPU with device cuda,
  // so that no host copy of a table is ever made.
  ShardedEmbedding tables(specs, &comm, seed);
  for (size_t t = 0; t < setups.size(); ++t) {
    const bool normal = setups[t].init == "normal";
    tables.set_fresh_rows(static_cast<int>(t),
                          normal ? static_cast<float>(setups[t].init_std) : 1.f, !normal);
  }
  if (device == "cuda") tables.use_cuda(cuda);
  run_agreed(comm, [&] {
    for (size_t t = 0; t < setups.size(); ++t)
      if (setups[t].init != "normal" && setups[t].init != "zeros")
        load_pretrained(tables, static_cast<int>(t), setups[t].init);
  });
  return tables;
}

namespace {

// Sums over the steps since the last progress line, this rank's.
struct Window {
  double loss = 0, examples = 0, lookups = 0, words = 0;

  void add(const StepOutput& out) {
    loss += out.loss_sum;
    examples += static_cast<double>(out.examples);
    lookups += static_cast<double>(out.lookups);
    words += static_cast<double>(out.words);
  }
};

// Bytes the exchanges have sent to other ranks so far.
int64_t exchanged(const StepStats& s) {
  return s.ids_bytes_sent + s.rows_bytes_sent + s.grads_bytes_sent;
}

// One call of train(): its tables, metrics and summary, and the parts of
// the loop as methods (resume, evaluate, log progress, checkpoint, finish).
class TrainingRun {
 public:
  TrainingRun(Workload& workload, const std::vector<TableSetup>& setups,
              const TrainOptions& options, Communicator& comm)
      : workload_(workload),
        options_(options),
        comm_(comm),
        root_(comm.rank() == 0),
        talk_(root_ && !options.quiet),
        tables_(build_tables(workload, setups, comm, options.seed, options.device, options.cuda,
                             options.key_source)),
        dense_(workload.dense_parameters()),
        per_epoch_(std::max<int64_t>(1, workload.steps_per_epoch())) {}

  ~TrainingRun() { workload_.set_step_guard(nullptr); }

  TrainSummary run() {
    workload_.set_step_guard([this](double loss_sum) { return guard(loss_sum, true); });
    resume();
    if (options_.device == "cuda") {
      tables_.use_cuda(options_.cuda);
      if (talk_) std::printf("device: %s\n", tables_.device_description().c_str());
    }
    tables_.overlap_exchanges(options_.overlap_chunks);
    plan_steps();
    if (finished_here()) {
      if (talk_)
        std::printf("checkpoint %s is already at step %lld of %lld: nothing to train (raise "
                    "train.steps or train.epochs to go on)\n",
                    resume_dir_.c_str(), static_cast<long long>(summary_.steps),
                    static_cast<long long>(summary_.steps));
      return summary_;
    }
    open_metrics();
    summary_.reference = workload_.reference_metrics();
    if (talk_ && !summary_.reference.empty())
      std::printf("reference (ground truth on the eval set): %s\n",
                  metrics_string(summary_.reference).c_str());
    summary_.eval_start = evaluate(summary_.first_step, "start");
    if (talk_) std::fflush(stdout);
    train_steps();
    if (summary_.stop_signal) {  // a scheduler's grace period is short: save, nothing else
      checkpoint(summary_.steps);
      report();
      run_agreed(comm_, [&] {
        if (root_) metrics_->close();
      });
      return summary_;
    }
    summary_.eval_end = evaluate(summary_.steps, "end");
    checkpoint(summary_.steps);
    workload_.finish(tables_, options_.out_dir);
    report();
    run_agreed(comm_, [&] {
      if (root_) metrics_->close();
    });
    return summary_;
  }

 private:
  void resume() {
    if (options_.resume.empty()) return;
    std::vector<std::string> notes;
    resume_dir_ = find_checkpoint(comm_, options_.resume, &notes);
    for (const std::string& note : notes)
      if (root_) std::fprintf(stderr, "embtrain train: checkpoint: %s\n", note.c_str());
    if (resume_dir_.empty()) return;
    run_agreed(comm_, [&] {
      const CheckpointInfo info = read_checkpoint_info(resume_dir_);
      EMBTRAIN_REQUIRE(info.workload == workload_.name(), "checkpoint ", resume_dir_,
                       " is of workload '", info.workload, "', not '", workload_.name(), "'");
      check_resume_config(resume_dir_, info.config, options_.config_text, options_.allow_changes);
      if (root_) check_resume_files();
    });
    const CheckpointInfo info = load_checkpoint(resume_dir_, tables_, dense_);
    summary_.first_step = info.step;
    resume_progress(info);
  }

  // The checkpoint's copies of the files that name the tables' rows (a
  // vocabulary) must be this run's: the same configuration may read a
  // corpus that has changed since. Checkpoints without them pass.
  void check_resume_files() const {
    for (const auto& [name, now] : workload_.checkpoint_files()) {
      std::string saved;
      if (!read_checkpoint_file(resume_dir_, name, &saved) || saved == now) continue;
      throw make_error("checkpoint ", resume_dir_, ": its ", name,
                       " differs from this run's (the data changed since it was saved?), first at ",
                       first_difference(saved, now),
                       "; resume with the data it was trained on, or start a fresh run");
    }
  }

  // Where the data stands: the samples the checkpoint's run consumed
  // (recorded; for a checkpoint saved before they were, counted from its
  // step with its ranks' global batch), and what changed with the ranks.
  void resume_progress(const CheckpointInfo& info) {
    const int64_t epoch = workload_.epoch_samples(), global = workload_.global_batch();
    int64_t old_global = info.progress.global_batch;
    if (info.progress.samples >= 0) {
      start_samples_ = info.progress.samples;
    } else {  // train.batch_size cannot change on resume unless allowed: per rank as now
      old_global = global / comm_.size() * std::max(1, info.ranks);
      start_samples_ = samples_before(info.step, epoch, old_global);
    }
    if (!talk_) return;
    std::printf("resumed from %s at step %lld, epoch %.2f\n", resume_dir_.c_str(),
                static_cast<long long>(info.step), epoch_at(info.step));
    if (old_global != global)
      std::printf(
          "  the global batch changed: %lld samples per step (%d rank(s)) -> %lld (%d "
          "rank(s)); epochs count the samples consumed (a step is now %.4g of an "
          "epoch)\n  a step's batch depends on the number of ranks: the data order "
          "does not continue exactly where the saved run stopped\n",
          static_cast<long long>(old_global), info.ranks, static_cast<long long>(global),
          comm_.size(),
          static_cast<double>(global) / static_cast<double>(std::max<int64_t>(1, epoch)));
  }

  // Samples consumed once steps [0, step) are done.
  int64_t samples_at(int64_t step) const {
    const int64_t epoch = workload_.epoch_samples(), global = workload_.global_batch();
    // samples_before grows with the step, so the difference is >= 0.
    const int64_t since =
        samples_before(step, epoch, global) - samples_before(summary_.first_step, epoch, global);
    int64_t n = 0;
    return __builtin_add_overflow(start_samples_, since, &n) ? std::numeric_limits<int64_t>::max()
                                                             : n;
  }

  // Epochs done once steps [0, step) are: samples consumed / epoch size.
  double epoch_at(int64_t step) const {
    return static_cast<double>(samples_at(step)) /
           static_cast<double>(std::max<int64_t>(1, workload_.epoch_samples()));
  }

  // Whether this run resumed its own checkpoint root at its last step: a
  // finished run started again, with nothing to do. (Resuming another
  // root's last step still saves it here: a re-shard.)
  bool finished_here() const {
    if (resume_dir_.empty() || summary_.first_step != summary_.steps ||
        options_.checkpoint_dir.empty())
      return false;
    std::error_code ec;
    const fs::path root = fs::weakly_canonical(options_.checkpoint_dir, ec);
    const fs::path parent = fs::weakly_canonical(fs::path(resume_dir_).parent_path(), ec);
    return !ec && root == parent;
  }

  void plan_steps() {
    const double from_epochs = options_.epochs * static_cast<double>(per_epoch_);
    if (options_.steps == 0 && from_epochs > 0x1p62)
      throw AgreedError(detail::concat("config key 'train.epochs' = ", options_.epochs,
                                       ": ", per_epoch_, " steps per epoch make ", from_epochs,
                                       " steps, beyond 2^62 (valid: fewer epochs, or train.steps)"));
    summary_.steps = options_.steps > 0 ? options_.steps
                                        : std::max<int64_t>(1, std::llround(from_epochs));
    // Resumed with another global batch (ranks) at some point: the epochs
    // left, in this run's steps.
    const int64_t first = summary_.first_step;
    const int64_t epoch = workload_.epoch_samples(), global = workload_.global_batch();
    if (options_.steps == 0 && start_samples_ != samples_before(first, epoch, global)) {
      const double left = options_.epochs - static_cast<double>(start_samples_) / epoch;
      summary_.steps =
          first + std::max<int64_t>(0, std::llround(left * static_cast<double>(per_epoch_)));
    }
    if (summary_.first_step > summary_.steps)
      throw AgreedError(detail::concat("checkpoint ", resume_dir_, " is at step ",
                                       summary_.first_step, " but the run has only ",
                                       summary_.steps, " steps"));
  }

  void open_metrics() {
    run_agreed(comm_, [&] {
      if (root_ && options_.claim_out_dir) options_.claim_out_dir();
      if (root_) workload_.start(options_.out_dir);
      metrics_ = std::make_unique<MetricsLog>(
          options_.out_dir.empty() ? "" : (fs::path(options_.out_dir) / "metrics.jsonl").string(),
          /*append=*/!resume_dir_.empty(), root_);
    });
  }

  // Rank 0 writes; every rank learns of a failure (a collective).
  void log_metrics(const json& j) {
    run_agreed(comm_, [&] {
      if (root_) metrics_->write(j);
    });
  }

  std::map<std::string, double> evaluate(int64_t step, const char* when) {
    mark_progress("evaluate: start");
    std::map<std::string, double> m = workload_.evaluate(tables_);
    json j = {{"type", "eval"}, {"step", step}, {"when", when}};
    for (const auto& [k, v] : m) j[k] = v;
    log_metrics(j);
    if (talk_)
      std::printf("eval  step %lld: %s\n", static_cast<long long>(step), metrics_string(m).c_str());
    return m;
  }

  void checkpoint(int64_t step) {
    if (options_.checkpoint_dir.empty()) return;
    mark_progress("checkpoint: start");
    CheckpointInfo info;
    info.workload = workload_.name();
    info.step = step;
    info.seed = options_.seed;
    info.config = options_.config_text;
    info.progress = {samples_at(step), workload_.global_batch(), workload_.epoch_samples()};
    if (root_) {  // what makes the checkpoint usable alone (rank 0 writes them)
      info.files = workload_.checkpoint_files();
      info.files["config.ini"] = options_.config_text;
    }
    const std::string dir =
        save_checkpoint(options_.checkpoint_dir, info, tables_, dense_, options_.checkpoint_keep);
    last_checkpoint_ = dir;
    save_due_ = false;
    since_checkpoint_.reset();
    log_metrics({{"type", "checkpoint"}, {"step", step}, {"path", dir}});
    if (talk_)
      std::printf("checkpoint  step %lld -> %s\n", static_cast<long long>(step), dir.c_str());
  }

  // The step guard (Workload::StepGuard): one small allreduce per step
  // tells every rank whether any rank's loss is non-finite and whether any
  // rank received a stop signal. `can_skip` is false when the step has
  // already been applied (a workload that does not call the guard).
  bool guard(double loss_sum, bool can_skip) {
    mark_progress("loss");
    if (step_ == injected_nan_.first && (injected_nan_.second < 0 || injected_nan_.second == comm_.rank()))
      loss_sum = std::numeric_limits<double>::quiet_NaN();
    const bool time_to_save = root_ && options_.checkpoint_minutes > 0 &&
                              since_checkpoint_.seconds() >= 60 * options_.checkpoint_minutes;
    int flags[3] = {std::isfinite(loss_sum) ? 0 : 1, StopSignals::received(), time_to_save};
    comm_.allreduce_max(flags, 3, CommType::kInt32);
    if (flags[1] != 0 && summary_.stop_signal == 0) summary_.stop_signal = flags[1];
    save_due_ = save_due_ || flags[2] != 0;
    if (flags[0] == 0) {
      skipped_in_a_row_ = 0;
      return true;
    }
    const std::string loss = comm_.agree_on_error(
        std::isfinite(loss_sum)
            ? ""
            : detail::concat("the loss on rank ", comm_.rank(), " is ", loss_sum));
    if (can_skip && options_.on_nonfinite == "skip_step" &&
        ++skipped_in_a_row_ < kMaxSkippedInARow) {
      skip_step(loss);
      return false;
    }
    throw AgreedError(nonfinite_message(loss, /*applied=*/!can_skip));
  }

  void skip_step(const std::string& loss) {
    skipping_ = true;
    ++summary_.skipped_steps;
    if (root_) metrics_->write({{"type", "skipped"}, {"step", step_ + 1}, {"reason", loss}});
    if (talk_) std::printf("step %lld skipped: %s\n", static_cast<long long>(step_ + 1), loss.c_str());
  }

  std::string nonfinite_message(const std::string& loss, bool applied) const {
    std::string where = "the tables are finite";
    std::string mine;
    for (int t = 0; t < tables_.num_tables() && mine.empty(); ++t) {
      const int64_t bad = first_nonfinite_row(tables_, t, TablePart::kWeights);
      if (bad >= 0)
        mine = detail::concat("table '", tables_.spec(t).name, "' row ",
                              tables_.plan(t).global_row(comm_.rank(), bad), " is not finite");
    }
    const std::string found = comm_.agree_on_error(mine);
    if (!found.empty()) where = found;
    return detail::concat(
        "step ", step_ + 1, ": ", loss, " (train.on_nonfinite = ", options_.on_nonfinite,
        skipped_in_a_row_ >= kMaxSkippedInARow
            ? detail::concat(", and the ", kMaxSkippedInARow, " steps before it were skipped too")
            : std::string(),
        "); ", applied ? "" : "its gradients were not applied; ", where,
        ". Lower the learning rate (or check the data), or set train.on_nonfinite = skip_step to "
        "skip such steps; ", resume_advice());
  }

  void train_steps() {
    const int64_t total = summary_.steps;
    Stopwatch run_clock;
    window_clock_.lap_ms();
    for (int64_t step = summary_.first_step; step < total; ++step) {
      const int64_t done = step + 1;
      const bool evaluate_now =
          options_.eval_every > 0 && done % options_.eval_every == 0 && done != total;
      // An evaluation's lookups would drop a prefetch: none before one.
      const bool ahead = options_.pipeline && done < total && !evaluate_now;
      workload_.set_prefetch_step(ahead ? done : -1);
      workload_.reset_guard_called();
      step_ = step;
      skipping_ = false;
      mark_step(done, "step start");
      const int64_t sent = exchanged(tables_.stats());
      const StepOutput out = workload_.train_step(tables_, step);
      exchanged_ += static_cast<double>(exchanged(tables_.stats()) - sent);
      if (!workload_.guard_called()) guard(out.loss_sum, /*can_skip=*/false);
      if (!skipping_) window_.add(out);
      const bool stop = summary_.stop_signal != 0;
      if (done % std::max<int64_t>(1, options_.log_interval) == 0 || done == total || stop)
        log_progress(done);
      if (stop) {
        summary_.steps = done;
        break;
      }
      if (evaluate_now) evaluate(done, "periodic");
      const bool every = options_.checkpoint_every > 0 && done % options_.checkpoint_every == 0;
      if ((every || save_due_) && done != total) checkpoint(done);
    }
    summary_.seconds = run_clock.lap_ms() / 1e3;
    comm_.allreduce_sum(&exchanged_, 1, CommType::kFloat64);
    if (summary_.steps > summary_.first_step)
      summary_.exchange_bytes_per_step =
          exchanged_ / static_cast<double>(summary_.steps - summary_.first_step);
    summary_.prefetched_steps = tables_.stats().prefetched_steps;
    summary_.sliced_steps = tables_.stats().sliced_steps;
    summary_.lookups_per_s = lookups_ / std::max(elapsed_, 1e-9);
    summary_.words_per_s = words_ / std::max(elapsed_, 1e-9);
  }

  // The window's sums over all ranks as one progress line and one JSON line.
  void log_progress(int64_t done) {
    double sums[4] = {window_.loss, window_.examples, window_.lookups, window_.words};
    comm_.allreduce_sum(sums, 4, CommType::kFloat64);
    const double window_s = window_clock_.lap_ms() / 1e3;
    elapsed_ += window_s;
    lookups_ += sums[2];
    words_ += sums[3];
    const double loss = sums[1] > 0 ? sums[0] / sums[1] : 0;
    summary_.final_train_loss = loss;
    const double lookups_per_s = sums[2] / std::max(window_s, 1e-9);
    const double words_per_s = sums[3] / std::max(window_s, 1e-9);
    const int64_t total = summary_.steps;
    const double epoch = epoch_at(done);
    const double eta =
        elapsed_ / static_cast<double>(done - summary_.first_step) * static_cast<double>(total - done);
    json j = {{"type", "train"},  {"step", done},
              {"epoch", epoch},   {"loss", loss},
              {"lookups_per_s", lookups_per_s}, {"elapsed_s", elapsed_}};
    if (sums[3] > 0) j["words_per_s"] = words_per_s;
    log_metrics(j);
    if (talk_) {
      std::printf("step %*lld/%lld  epoch %.2f  loss %.4f  lookups/s %s%s  elapsed %s  eta %s\n",
                  static_cast<int>(std::to_string(total).size()), static_cast<long long>(done),
                  static_cast<long long>(total), epoch, loss, rate_string(lookups_per_s).c_str(),
                  sums[3] > 0 ? ("  words/s " + rate_string(words_per_s)).c_str() : "",
                  clock_string(elapsed_).c_str(), clock_string(eta).c_str());
      std::fflush(stdout);
    }
    window_ = Window{};
    window_clock_.lap_ms();  // logging is not training time
  }

  void report() {
    const TrainSummary& s = summary_;
    json j = {{"type", "summary"}, {"steps", s.steps},   {"first_step", s.first_step},
              {"seconds", s.seconds}, {"lookups_per_s", s.lookups_per_s},
              {"train_loss", s.final_train_loss}, {"prefetched_steps", s.prefetched_steps},
              {"sliced_steps", s.sliced_steps},
              {"skipped_steps", s.skipped_steps},
              {"exchange_bytes_per_step", s.exchange_bytes_per_step}};
    if (s.stop_signal) j["stopped_by"] = StopSignals::name(s.stop_signal);
    if (s.words_per_s > 0) j["words_per_s"] = s.words_per_s;
    for (const auto& [k, v] : s.eval_end) j["eval_" + k] = v;
    for (const auto& [k, v] : s.reference) j["reference_" + k] = v;
    log_metrics(j);
    if (!talk_) return;
    if (s.stop_signal) {
      std::printf("stopped by %s after step %lld%s\n", StopSignals::name(s.stop_signal),
                  static_cast<long long>(s.steps),
                  options_.checkpoint_dir.empty()
                      ? " (checkpoints are disabled: nothing was saved)"
                      : detail::concat("; resume with: ", this_command(), " train --config ",
                                       (fs::path(options_.out_dir) / "config.ini").string(),
                                       " --checkpoint.resume=auto")
                            .c_str());
      std::fflush(stdout);
      return;
    }
    std::printf("done: %lld steps in %s, %s lookups/s", static_cast<long long>(s.steps - s.first_step),
                clock_string(s.seconds).c_str(), rate_string(s.lookups_per_s).c_str());
    if (s.words_per_s > 0) std::printf(", %s words/s", rate_string(s.words_per_s).c_str());
    std::printf("\n  eval at start: %s\n  eval at end:   %s\n", metrics_string(s.eval_start).c_str(),
                metrics_string(s.eval_end).c_str());
    if (!s.reference.empty())
      std::printf("  reference:     %s\n", metrics_string(s.reference).c_str());
    print_where_and_next();
    std::fflush(stdout);
  }

  // How to go on after a stop: from the run's last checkpoint, if it saved
  // one (where resume = auto looks); else from the one it started from, by
  // name (auto looks only in this run's checkpoint.dir); else it can only
  // start over.
  std::string resume_advice() const {
    if (options_.checkpoint_dir.empty())
      return "checkpoints are disabled: nothing was saved to resume from";
    if (!last_checkpoint_.empty())
      return detail::concat("--checkpoint.resume=auto goes on from the last checkpoint, ",
                            last_checkpoint_);
    if (!resume_dir_.empty())
      return detail::concat("it saved no checkpoint; --checkpoint.resume=", resume_dir_,
                            " starts again from the one it began with");
    return "no checkpoint was saved before it: a new run starts over (--checkpoint.resume=auto "
           "too, replacing this run's metrics)";
  }

  // This program as a user would run it again (program_path), after
  // mpirun -np P for a run of P > 1 ranks.
  std::string this_command() const {
    return comm_.size() > 1 ? detail::concat("mpirun -np ", comm_.size(), " ", program_path())
                            : program_path();
  }

  // Where the run's files are and what a user may want next.
  void print_where_and_next() const {
    const fs::path dir = options_.out_dir;
    std::printf("  metrics:       %s (JSON lines; see README, \"metrics.jsonl\")\n",
                (dir / "metrics.jsonl").c_str());
    std::printf("  config:        %s\n", (dir / "config.ini").c_str());
    if (!last_checkpoint_.empty())
      std::printf("  checkpoint:    %s\n", last_checkpoint_.c_str());
    // With no checkpoint (checkpoints disabled) there is nothing to go on from.
    std::printf("next:\n  train longer:  %s train --config %s --train.steps=%lld %s\n",
                this_command().c_str(), (dir / "config.ini").c_str(),
                static_cast<long long>(2 * summary_.steps),
                last_checkpoint_.empty() ? "--log.overwrite=true   (no checkpoint: starts over)"
                                         : "--checkpoint.resume=auto");
    if (!last_checkpoint_.empty() && tables_.num_tables() > 0)
      std::printf("  export:        %s export --checkpoint %s --table %s --out %s.npy\n",
                  program_path().c_str(),
                  last_checkpoint_.c_str(), tables_.spec(0).name.c_str(),
                  tables_.spec(0).name.c_str());
    std::printf("  plot:          /usr/bin/python3 bench/plot_metrics.py %s\n", dir.c_str());
  }

  Workload& workload_;
  const TrainOptions& options_;
  Communicator& comm_;
  const bool root_, talk_;
  std::string resume_dir_;  // the checkpoint resumed from, "" for a fresh run
  ShardedEmbedding tables_;
  std::vector<float>* dense_;
  const int64_t per_epoch_;
  int64_t start_samples_ = 0;  // samples consumed before summary_.first_step
  TrainSummary summary_;
  std::unique_ptr<MetricsLog> metrics_;
  std::string last_checkpoint_;  // the folder of the last checkpoint saved
  bool save_due_ = false;         // checkpoint.minutes have passed (agreed by the guard)
  Stopwatch since_checkpoint_;
  Window window_;
  Stopwatch window_clock_;
  double elapsed_ = 0;          // training seconds, logging excluded
  double lookups_ = 0, words_ = 0;  // over the run so far, all ranks
  double exchanged_ = 0;  // bytes this rank's training steps sent to other ranks
  int64_t step_ = 0;                // the step in progress (0-based)
  bool skipping_ = false;           // the guard skipped the step in progress
  int64_t skipped_in_a_row_ = 0;
  StopSignals signals_;             // SIGTERM, SIGINT, SIGUSR1 stop after a step
  Watchdog watchdog_{options_.collective_timeout_s};
  // Fault injection for tests: EMBTRAIN_INJECT_NAN_LOSS="STEP[:RANK]" makes
  // the loss of 1-based step STEP NaN (on RANK, or on every rank).
  const std::pair<int64_t, int> injected_nan_ = injected_nan_loss();
};

}  // namespace

TrainSummary train(Workload& workload, const std::vector<TableSetup>& setups,
                   const TrainOptions& options, Communicator& comm) {
  return TrainingRun(workload, setups, options, comm).run();
}

std::string program_path() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return "embtrain";
  const fs::path here = fs::current_path(ec);
  if (!ec) {
    const fs::path rel = exe.lexically_relative(here);
    if (!rel.empty() && *rel.begin() != "..")
      exe = std::distance(rel.begin(), rel.end()) == 1 ? fs::path(".") / rel : rel;
  }
  return exe.string();
}

}  // namespace embtrain
