// The GPU engine: this rank's device and data communicator, then the step
// over CudaBackend, local with one rank, sharded with several.
#include <algorithm>
#include <memory>
#include <string>
#include <utility>

#include "comm/device_selection.hpp"
#include "comm/nccl_communicator.hpp"
#include "comm/staged_communicator.hpp"
#include "embtrain/errors.hpp"
#include "engine/cuda_backend.hpp"
#include "engine/engine.hpp"

namespace embtrain {

namespace {

// This rank's GPU (local rank % device count), made current. Every rank
// must fail together, or the others would wait in the collectives after.
int select_device(Communicator& control) {
  const int devices = cuda::device_count();
  std::string error;
  if (devices == 0)
    error = detail::concat("device cuda: no CUDA device is visible to rank ", control.rank(),
                           " (check the driver and CUDA_VISIBLE_DEVICES), or use device cpu");
  error = control.agree_on_error(error);
  if (!error.empty()) throw AgreedError(error);
  const int device = pick_device(local_rank_info(control).local_rank, devices);
  cuda::set_device(device);
  return device;
}

// The run's device memory against the chosen GPU's free memory, shared by
// the `sharing` ranks of this host on it (ranks_on_same_gpu), before
// anything is allocated there; every rank fails together
// (CudaOptions::device_memory_check).
void check_device_memory(Communicator& control, int device, int sharing,
                         const CudaOptions& options) {
  if (!options.device_memory_check) return;
  size_t free_bytes = 0, total_bytes = 0;
  cuda::memory_info(&free_bytes, &total_bytes);
  std::string error = options.device_memory_check(device, sharing,
                                                  static_cast<double>(free_bytes),
                                                  static_cast<double>(total_bytes));
  error = control.agree_on_error(error);
  if (!error.empty()) throw AgreedError(error);
}

// The communicator of device buffers, and one line that says which and why.
std::unique_ptr<Communicator> make_data_communicator(Communicator& control, int sharing,
                                                     const CudaOptions& options, void* stream,
                                                     std::string* description) {
  EMBTRAIN_REQUIRE(options.data_comm == "auto" || options.data_comm == "nccl" ||
                       options.data_comm == "mpi-staged",
                   "data communicator '", options.data_comm,
                   "' is not one of auto, nccl, mpi-staged");
  const DataCommChoice choice =
      choose_data_communicator(control, sharing, cuda::device_count(),
                               options.data_comm != "mpi-staged");
  if (options.data_comm == "nccl" && choice.kind != DataCommKind::kNccl)
    throw AgreedError(detail::concat("data communicator nccl cannot be used: ", choice.reason));
  *description = detail::concat(data_comm_name(choice.kind), " (", choice.reason, ")");
  if (choice.kind == DataCommKind::kNccl) return make_nccl_communicator(control, stream);
  return make_staged_communicator(make_world_communicator(), make_cuda_copier(stream));
}

}  // namespace

std::unique_ptr<StepEngine> make_cuda_engine(std::vector<EmbeddingTable>* shards,
                                             const std::vector<ShardPlan>& plans,
                                             Communicator* control, const CudaOptions& options) {
  const int device = select_device(*control);
  // Which ranks of this host use this GPU, by its UUID: with one GPU made
  // visible to each rank (CUDA_VISIBLE_DEVICES), every rank's is device 0.
  // Reading it fails on every rank together, before the collective.
  std::string uuid;
  run_agreed(*control, [&] { uuid = cuda::device_uuid(device); });
  const int sharing = ranks_on_same_gpu(*control, uuid);
  check_device_memory(*control, device, sharing, options);
  auto stream = std::make_unique<cuda::Stream>();
  std::string comm;
  std::unique_ptr<Communicator> data =
      make_data_communicator(*control, sharing, options, stream->get(), &comm);
  const std::string description = detail::concat(
      "cuda:", device, " ", cuda::device_description(device), ", data over ", comm);

  // The shards move to the engine; back to the caller if the upload fails.
  auto owned = std::make_unique<std::vector<EmbeddingTable>>(std::move(*shards));
  std::unique_ptr<CudaBackend> backend;
  try {
    backend = std::make_unique<CudaBackend>(owned.get(), std::move(stream), std::move(data),
                                            description);
  } catch (...) {
    *shards = std::move(*owned);
    throw;
  }
  shards->clear();
  return make_engine(std::move(owned), std::move(backend), control, plans);
}

}  // namespace embtrain
