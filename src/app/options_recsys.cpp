// The [recsys] section of `embtrain train` and the workload's table
// defaults. The keys are typed and range-checked here, so an error names
// the key, where its value came from and the valid range.
#include <cstdio>
#include <string>

#include "config.hpp"
#include "embtrain/workloads/recsys.hpp"
#include "workload_registry.hpp"

namespace embtrain {
namespace app {

namespace {

std::string number(double v) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", v);
  return text;
}

void declare_recsys(Config& c) {
  const RecsysConfig d;
  c.declare("recsys.data", "",
            "click log to train on, TSV lines 'user<TAB>item item ...<TAB>candidate<TAB>label' "
            "(empty: synthetic clicks from a hidden model)");
  c.declare("recsys.eval_data", "", "held-out click log (default: the last eval_fraction of data)");
  c.declare("recsys.eval_fraction", number(d.eval_fraction),
            "share of the click log held out when eval_data is not given");
  c.declare("recsys.users", std::to_string(d.users), "user ids 0..users-1 (rows of table users)");
  c.declare("recsys.items", std::to_string(d.items),
            "item ids 1..items; 0 pads histories (table items has items+1 rows)");
  c.declare("recsys.history", std::to_string(d.history),
            "history slots per sample (longer logged histories keep their last)");
  c.declare("recsys.latent_dim", std::to_string(d.latent_dim),
            "synthetic: dimension of the hidden user and item vectors");
  c.declare("recsys.zipf", number(d.zipf), "synthetic: Zipf exponent of user and item popularity");
  c.declare("recsys.temperature", number(d.temperature),
            "synthetic: hidden logit = <U, V> / temperature - 1 (higher: noisier clicks)");
  c.declare("recsys.train_samples", std::to_string(d.train_samples),
            "synthetic: training samples in one epoch");
  c.declare("recsys.eval_samples", std::to_string(d.eval_samples), "synthetic: held-out samples");
  c.declare("recsys.bias_lr", "", "SGD rate of the dense bias (default: table.items.lr)");
}

std::unique_ptr<Workload> create_recsys(const Config& c, const WorkloadContext& context) {
  using L = RecsysLimits;
  RecsysConfig r;
  r.data = c.str("recsys.data");
  r.eval_data = c.str("recsys.eval_data");
  if (!r.eval_data.empty() && r.data.empty())
    c.fail("recsys.eval_data", "needs recsys.data (the training click log) too");
  r.eval_fraction = c.real("recsys.eval_fraction", 0.0, L::kMaxEvalFraction);
  r.users = c.integer("recsys.users", 1, L::kMaxIds);
  r.items = c.integer("recsys.items", 1, L::kMaxIds);
  r.history = c.integer("recsys.history", 0, L::kMaxHistory);
  r.latent_dim = c.integer("recsys.latent_dim", 1, L::kMaxLatentDim);
  r.zipf = c.real("recsys.zipf", 0.0, L::kMaxZipf);
  r.temperature = c.real("recsys.temperature", L::kMinTemperature, L::kMaxTemperature);
  r.train_samples = c.integer("recsys.train_samples", 1, L::kMaxSamples);
  r.eval_samples = c.integer("recsys.eval_samples", 1, L::kMaxEvalSamples);
  r.bias_lr = c.optional_real("recsys.bias_lr", 0.0, L::kMaxBiasLr);
  return make_recsys_workload(r, context);
}

WorkloadEntry recsys_entry() {
  WorkloadEntry e;
  e.name = "recsys";
  e.summary = "click model: user, item history and candidate ids, logistic loss, AUC";
  e.tables = {"users", "items"};
  // Small initial rows keep the first scores near 0 (N(0, 1) rows of
  // dim 32 would start with scores of standard deviation ~6); Adagrad
  // adapts each row's step to how often it is seen, which suits Zipf ids.
  e.table_defaults = {
      {"table.users.dim", "32"},
      {"table.items.dim", "32"},
      {"table.users.optimizer", "adagrad"},
      {"table.items.optimizer", "adagrad"},
      {"table.users.lr", "0.1"},
      {"table.items.lr", "0.1"},
      {"table.users.init_std", "0.1"},
      {"table.items.init_std", "0.1"},
      {"table.items.padding_idx", "0"},
  };
  e.declare = declare_recsys;
  e.create = create_recsys;
  return e;
}

}  // namespace

EMBTRAIN_REGISTER_WORKLOAD(recsys_entry());

}  // namespace app
}  // namespace embtrain
