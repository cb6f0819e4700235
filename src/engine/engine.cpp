#include "engine/engine.hpp"

namespace embtrain {

std::string agree_on_batch(Communicator& control, std::string error) {
  if (!error.empty() && control.size() > 1)
    error += detail::concat(" (in rank ", control.rank(), "'s batch)");
  return control.agree_on_error(error);
}

std::string check_batch_size(const TableSpec& spec, int64_t n) {
  // The kernels index a batch's positions with int32 (on both backends).
  if (n < (int64_t{1} << 31)) return "";
  return detail::concat("table '", spec.name, "': a batch holds ", n,
                        " ids; one table's batch per rank is limited to 2^31 - 1");
}

const char* stage_name(Stage stage) {
  switch (stage) {
    case Stage::kBucketByOwner: return "bucket_by_owner";
    case Stage::kExchangeIds: return "exchange_ids";
    case Stage::kGatherOwned: return "gather_owned";
    case Stage::kExchangeRows: return "exchange_rows";
    case Stage::kExpand: return "expand";
    case Stage::kReduceRequested: return "reduce_requested";
    case Stage::kExchangeGrads: return "exchange_grads";
    case Stage::kCombineAtOwner: return "combine_at_owner";
    case Stage::kUpdate: return "update";
  }
  return "?";
}

}  // namespace embtrain
