#include "engine/engine.hpp"

#include "common/fingerprint.hpp"

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

uint64_t fingerprint(const std::vector<IdsView>& ids) {
  uint64_t h = kFnvBasis;
  for (const IdsView& v : ids) {
    const int64_t n = v.numel(), rank = static_cast<int64_t>(v.shape.size());
    h = fnv1a(&v.dtype, sizeof(v.dtype), h);
    h = fnv1a(&rank, sizeof(rank), h);
    h = fnv1a(v.shape, h);
    h = fnv1a_words(v.data, static_cast<size_t>(n) * dtype_size(v.dtype), h);
  }
  return h;
}

uint64_t fingerprint(const std::vector<IdSpan>& ids) {
  uint64_t h = kFnvBasis;
  for (const IdSpan& span : ids) {
    h = fnv1a(&span.data, sizeof(span.data), h);
    h = fnv1a(&span.n, sizeof(span.n), h);
  }
  return h;
}

bool agree_on_prefetch(Communicator& control, bool mine, const std::string* error) {
  // 2 for a fine batch, plus 1 for the prefetched one: the minimum says both.
  const bool fine = error == nullptr || error->empty();
  int all = (fine ? 2 : 0) + (mine ? 1 : 0);
  control.allreduce_min(&all, 1, CommType::kInt32);
  if (all < 2) throw AgreedError(agree_on_batch(control, fine ? std::string() : *error));
  return all == 3;
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
