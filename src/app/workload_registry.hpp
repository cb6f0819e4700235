// The workloads `embtrain train` knows. Each workload registers itself from
// its own options file (src/app/options_<name>.cpp) with
// EMBTRAIN_REGISTER_WORKLOAD, so adding a workload touches no shared code.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config.hpp"
#include "embtrain/workload.hpp"

namespace embtrain {
namespace app {

struct WorkloadEntry {
  std::string name;                  // value of train.workload
  std::string summary;               // one line for --help
  std::vector<std::string> tables;   // its tables, in ShardedEmbedding order
  // Defaults of its table keys, by full key, e.g. {"table.output.init", "zeros"}.
  std::map<std::string, std::string> table_defaults;
  // Declares the keys of its own section, e.g. "recsys.users".
  std::function<void(Config&)> declare;
  // Reads its keys (errors name key and source) and builds the workload,
  // loading or generating its data. A collective.
  std::function<std::unique_ptr<Workload>(const Config&, const WorkloadContext&)> create;
};

void register_workload(WorkloadEntry entry);
const std::vector<WorkloadEntry>& registered_workloads();

}  // namespace app
}  // namespace embtrain

#define EMBTRAIN_REGISTER_WORKLOAD_CONCAT2(a, b) a##b
#define EMBTRAIN_REGISTER_WORKLOAD_CONCAT(a, b) EMBTRAIN_REGISTER_WORKLOAD_CONCAT2(a, b)
// At namespace scope in one .cpp of the embtrain executable:
//   EMBTRAIN_REGISTER_WORKLOAD(make_entry());   // make_entry() returns a WorkloadEntry
#define EMBTRAIN_REGISTER_WORKLOAD(entry_expr)                                             \
  static const bool EMBTRAIN_REGISTER_WORKLOAD_CONCAT(embtrain_workload_registered_,        \
                                                      __LINE__) =                           \
      (::embtrain::app::register_workload(entry_expr), true)
