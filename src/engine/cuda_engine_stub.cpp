// make_cuda_engine in a build without the CUDA backend: a clear error
// instead of a missing symbol, so --device cuda fails the same way on every
// rank.
#include "embtrain/errors.hpp"
#include "engine/step_engine.hpp"

namespace embtrain {

std::unique_ptr<StepEngine> make_cuda_engine(std::vector<EmbeddingTable>*,
                                             const std::vector<ShardPlan>&, Communicator*,
                                             const CudaOptions&) {
  throw AgreedError(
      "device cuda: this embtrain was built without the CUDA backend (nvcc was not found when "
      "it was configured, or -DEMBTRAIN_CUDA=OFF); rebuild it with CUDA or use device cpu");
}

}  // namespace embtrain
