// The [recsys] section of `embtrain train` and the workload's table
// defaults. Each key is declared once with its default, help and valid
// range, so an error names the key, where its value came from and the
// valid range.
#include <string>

#include <filesystem>

#include "embtrain/workloads/recsys.hpp"
#include "step_model.hpp"
#include "workload_registry.hpp"

namespace embtrain {
namespace app {

namespace {

// The keys of the hidden model that synthetic clicks come from (when
// recsys.data is not given).
OptionList<RecsysConfig> synthetic_options() {
  using R = Rules<RecsysConfig>;
  using L = RecsysLimits;
  OptionList<RecsysConfig> options = {
      {"latent_dim", "dimension of the hidden user and item vectors",
       R::integer(1, L::kMaxLatentDim, &RecsysConfig::latent_dim)},
      {"zipf", "Zipf exponent of user and item popularity",
       R::real(Range::closed(0, L::kMaxZipf), &RecsysConfig::zipf)},
      {"temperature", "hidden logit = <U, V> / temperature - 1 (higher: noisier clicks)",
       R::real(Range::closed(L::kMinTemperature, L::kMaxTemperature), &RecsysConfig::temperature)},
      {"train_samples", "training samples in one epoch",
       R::integer(1, L::kMaxSamples, &RecsysConfig::train_samples)},
      {"eval_samples", "held-out samples",
       R::integer(1, L::kMaxEvalSamples, &RecsysConfig::eval_samples)},
  };
  for (Option<RecsysConfig>& o : options) o.help = "synthetic: " + o.help;
  return options;
}

// The keys of [recsys]; their defaults are RecsysConfig's own.
OptionList<RecsysConfig> recsys_options() {
  using R = Rules<RecsysConfig>;
  using L = RecsysLimits;
  OptionList<RecsysConfig> options = {
      {"data",
       "click log to train on, TSV lines 'user<TAB>item item ...<TAB>candidate<TAB>label' "
       "(empty: synthetic clicks from a hidden model)",
       R::text("", &RecsysConfig::data)},
      {"eval_data", "held-out click log (default: the last eval_fraction of data)",
       R::text("", &RecsysConfig::eval_data)},
      {"eval_fraction", "share of the click log held out when eval_data is not given",
       R::real(Range::closed(0, L::kMaxEvalFraction), &RecsysConfig::eval_fraction)},
      {"users", "user ids 0..users-1 (rows of table users)",
       R::integer(1, L::kMaxIds, &RecsysConfig::users)},
      {"items", "item ids 1..items; 0 pads histories (table items has items+1 rows)",
       R::integer(1, L::kMaxIds, &RecsysConfig::items)},
      {"history", "history slots per sample (longer logged histories keep their last)",
       R::integer(0, L::kMaxHistory, &RecsysConfig::history)},
      {"bias_lr", "SGD rate of the dense bias (default: table.items.lr)",
       R::optional_real(Range::closed(0, L::kMaxBiasLr), &RecsysConfig::bias_lr)},
  };
  const OptionList<RecsysConfig> synthetic = synthetic_options();
  options.insert(options.end(), synthetic.begin(), synthetic.end());
  return options;
}

void check_recsys(const RecsysConfig& r, const Config& c) {
  if (!r.eval_data.empty() && r.data.empty())
    c.fail("recsys.eval_data", "needs recsys.data (the training click log) too");
}

// Files read whole: about 3 bytes held per byte of text (int64 ids from
// 5-7 characters each, and the vectors' growth).
double file_bytes(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  return ec ? 0 : static_cast<double>(size);
}

// What recsys holds per rank (memory_plan.hpp): its data, and per step the
// looked-up rows and their gradients several times over (the engine's
// expanded, reduced and exchanged copies).
WorkloadEstimate estimate_recsys(const RecsysConfig& r, const WorkloadContext& c) {
  WorkloadEstimate e;
  const double users = static_cast<double>(r.users), items = static_cast<double>(r.items) + 1;
  e.rows = {{"users", users}, {"items", items}};
  if (r.data.empty()) {
    e.data_what = "synthetic clicks (hidden model, samplers, held-out set)";
    e.data_bytes = (users + items) * (static_cast<double>(r.latent_dim) * 4 + 16) +
                   static_cast<double>(r.eval_samples) * static_cast<double>(r.history + 3) * 8;
  } else {
    e.data_what = "click log (3 x its size)";
    e.data_bytes = 3 * (file_bytes(r.data) + (r.eval_data.empty() ? 0 : file_bytes(r.eval_data)));
  }
  auto dim = [&](const char* t) {
    const auto it = c.table_dims.find(t);
    return it == c.table_dims.end() ? 0.0 : static_cast<double>(it->second);
  };
  const double batch = static_cast<double>(c.batch_size);
  const double sample_floats = dim("users") + static_cast<double>(r.history + 1) * dim("items");
  // A training step: its rows and gradients, several copies (expanded,
  // reduced, exchanged); an evaluation's forward of up to kEvalChunk
  // held-out samples: their rows once more, beside the step's buffers.
  const double eval_chunk = static_cast<double>(std::min(RecsysLimits::kEvalChunk, r.eval_samples));
  e.step_bytes = batch * sample_floats * 4 * 6 + eval_chunk * sample_floats * 4;
  // A user and history + 1 items per sample; the synthetic clicks draw
  // both by Zipf popularity (a log's ids: not known before it is read).
  const double item_lookups = batch * static_cast<double>(r.history + 1);
  e.step = {{"users", batch, r.data.empty() ? expected_distinct_zipf(r.users + 1, r.zipf, batch, 0) : 0},
            {"items", item_lookups,
             r.data.empty() ? expected_distinct_zipf(r.items + 1, r.zipf, item_lookups, 0) : 0}};
  return e;
}

WorkloadEntry recsys_entry() {
  WorkloadEntry e;
  e.name = "recsys";
  e.summary = "click model: user, item history and candidate ids, logistic loss, AUC";
  e.tables = {"users", "items"};
  // Small initial rows keep the first scores near 0 (N(0, 1) rows of
  // dim 32 would start with scores of standard deviation ~6); Adagrad
  // adapts each row's step to how often it is seen, which suits Zipf ids.
  e.table_defaults = {{"dim", "32"}, {"optimizer", "adagrad"}, {"lr", "0.1"}, {"init_std", "0.1"}};
  // Item 0 pads the histories.
  // Histories are bags of items: the table pools them (kind = bag, mode
  // mean), each owner its own rows (pool_at = owner: one partial row per
  // history and owner travels instead of a row per distinct item); with
  // kind = embedding every history row comes back and the model averages
  // them.
  e.per_table_defaults = {
      {"items", {{"padding_idx", "0"}, {"kind", "bag"}, {"pool_at", "owner"}}}};
  return e;
}

const WorkloadRegistration kRegistration(recsys_entry(), recsys_options(), make_recsys_workload,
                                         check_recsys, estimate_recsys);

}  // namespace

}  // namespace app
}  // namespace embtrain
