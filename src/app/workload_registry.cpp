#include "workload_registry.hpp"

#include <algorithm>

namespace embtrain {
namespace app {

namespace {
std::vector<WorkloadEntry>& registry() {
  static std::vector<WorkloadEntry> entries;  // built before main, read after
  return entries;
}
}  // namespace

void register_workload(WorkloadEntry entry) {
  registry().push_back(std::move(entry));
  std::sort(registry().begin(), registry().end(),
            [](const WorkloadEntry& a, const WorkloadEntry& b) { return a.name < b.name; });
}

const std::vector<WorkloadEntry>& registered_workloads() { return registry(); }

}  // namespace app
}  // namespace embtrain
