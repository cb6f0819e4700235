// The CPU engine: the step over CpuBackend, local with one rank, sharded
// with several.
#include <memory>
#include <utility>

#include "engine/cpu_backend.hpp"
#include "engine/engine.hpp"

namespace embtrain {

std::unique_ptr<StepEngine> make_cpu_engine(std::vector<EmbeddingTable> shards,
                                            const std::vector<ShardPlan>& plans,
                                            Communicator* comm) {
  auto owned = std::make_unique<std::vector<EmbeddingTable>>(std::move(shards));
  auto backend = std::make_unique<CpuBackend>(owned.get(), comm);
  return make_engine(std::move(owned), std::move(backend), comm, plans);
}

}  // namespace embtrain
