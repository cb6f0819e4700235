// The workloads `embtrain train` knows. Each workload registers itself from
// its own options file (src/app/options_<name>.cpp) with a
// WorkloadRegistration, so adding a workload touches no shared code.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config.hpp"
#include "embtrain/memory_plan.hpp"
#include "embtrain/workload.hpp"
#include "options.hpp"

namespace embtrain {
namespace app {

struct WorkloadEntry {
  std::string name;                 // value of train.workload
  std::string summary;              // one line for --help
  std::vector<std::string> tables;  // its tables, in ShardedEmbedding order
  // Its defaults of table keys over train's: for all its tables, e.g.
  // {"optimizer", "adagrad"}, and for one, e.g. {"output", {{"init", "zeros"}}}.
  OptionDefaults table_defaults;
  std::map<std::string, OptionDefaults> per_table_defaults;
  // Declares the keys of its own section, e.g. "recsys.users".
  std::function<void(Config&)> declare;
  // Reads its keys (errors name key and source) and builds the workload,
  // loading or generating its data. A collective.
  std::function<std::unique_ptr<Workload>(const Config&, const WorkloadContext&)> create;
  // What it will hold per rank, from its keys alone (memory_plan.hpp); may
  // be empty.
  std::function<WorkloadEstimate(const Config&, const WorkloadContext&)> estimate;
};

void register_workload(WorkloadEntry entry);
const std::vector<WorkloadEntry>& registered_workloads();

// Registers a workload whose section [NAME] has the keys `options`, which
// fill a Settings. Once each key has been read and checked, `check` (if
// any) checks what no single key can, with config.fail naming the key,
// and `make` builds the workload. At namespace scope in the workload's
// options file:
//   const WorkloadRegistration kRegistration(recsys_entry(), recsys_options(),
//                                            make_recsys_workload, check_recsys);
struct WorkloadRegistration {
  template <typename Settings>
  using Make = std::unique_ptr<Workload> (*)(const Settings&, const WorkloadContext&);
  template <typename Settings>
  using Check = void (*)(const Settings&, const Config&);
  template <typename Settings>
  using Estimate = WorkloadEstimate (*)(const Settings&, const WorkloadContext&);

  template <typename Settings>
  WorkloadRegistration(WorkloadEntry entry, OptionList<Settings> options, Make<Settings> make,
                       Check<Settings> check = nullptr, Estimate<Settings> estimate = nullptr) {
    const std::string prefix = entry.name + ".";
    entry.declare = [=](Config& config) { declare_keys(&config, prefix, options); };
    entry.create = [=](const Config& config, const WorkloadContext& context) {
      Settings settings;
      read_keys(config, prefix, options, &settings);
      if (check) check(settings, config);
      return make(settings, context);
    };
    if (estimate)
      entry.estimate = [=](const Config& config, const WorkloadContext& context) {
        Settings settings;
        read_keys(config, prefix, options, &settings);
        return estimate(settings, context);
      };
    register_workload(std::move(entry));
  }
};

}  // namespace app
}  // namespace embtrain
