#include "embtrain/bags.hpp"

#include "embtrain/errors.hpp"

namespace embtrain {

const char* pool_mode_name(PoolMode mode) {
  switch (mode) {
    case PoolMode::kSum: return "sum";
    case PoolMode::kMean: return "mean";
    case PoolMode::kMax: return "max";
  }
  return "?";
}

bool parse_pool_mode(const std::string& text, PoolMode* mode) {
  for (PoolMode m : {PoolMode::kSum, PoolMode::kMean, PoolMode::kMax})
    if (text == pool_mode_name(m)) {
      *mode = m;
      return true;
    }
  return false;
}

const char* pool_at_name(PoolAt at) { return at == PoolAt::kOwner ? "owner" : "requester"; }

bool parse_pool_at(const std::string& text, PoolAt* at) {
  for (PoolAt a : {PoolAt::kRequester, PoolAt::kOwner})
    if (text == pool_at_name(a)) {
      *at = a;
      return true;
    }
  return false;
}

std::string check_bags(const BagsView& bags, int64_t n, const std::string& table,
                       bool scale_grad_by_freq) {
  if (!bags.pooled()) return "";
  const std::string where = "table '" + table + "': ";
  if (bags.num_bags < 0) return detail::concat(where, "num_bags = ", bags.num_bags, " (valid: >= 0)");
  if (bags.weights && bags.mode != PoolMode::kSum)
    return detail::concat(where, "per-sample weights are only supported with mode 'sum' (got '",
                          pool_mode_name(bags.mode), "'), as in torch.nn.EmbeddingBag");
  if (scale_grad_by_freq && bags.mode == PoolMode::kMax)
    return where + "scale_grad_by_freq is not supported with mode 'max', as in torch.nn.EmbeddingBag";
  const int64_t* o = bags.offsets;
  if (o[0] != 0)
    return detail::concat(where, "offsets[0] = ", o[0],
                          ": the first bag has to start at position 0");
  for (int64_t b = 1; b <= bags.num_bags; ++b) {
    if (o[b] < o[b - 1])
      return detail::concat(where, "offsets[", b, "] = ", o[b], " is less than offsets[", b - 1,
                            "] = ", o[b - 1], " (offsets must not decrease)");
    if (o[b] > n)
      return detail::concat(where, "offsets[", b, "] = ", o[b], " is past the end of the ", n,
                            " ids (valid: [0, ", n, "])");
  }
  return "";
}

BagInput::BagInput(const IdsView& ids, const std::vector<int64_t>* offsets,
                   bool include_last_offset, const std::string& what) {
  const int64_t n = ids.numel();
  if (ids.shape.size() == 2) {
    EMBTRAIN_REQUIRE(offsets == nullptr, what, ": ids of shape ", shape_to_string(ids.shape),
                     " are fixed-length bags, so no offsets may be given");
    const int64_t bags = ids.shape[0], length = ids.shape[1];
    offsets_.resize(static_cast<size_t>(bags) + 1);
    for (int64_t b = 0; b <= bags; ++b) offsets_[b] = b * length;
    return;
  }
  EMBTRAIN_REQUIRE(ids.shape.size() == 1, what, ": ids of a bag table must be 2-D (bags, length)",
                   " or 1-D with offsets, got shape ", shape_to_string(ids.shape));
  EMBTRAIN_REQUIRE(offsets != nullptr, what, ": 1-D ids need offsets (the start of each bag)");
  EMBTRAIN_REQUIRE(!include_last_offset || !offsets->empty(), what,
                   ": include_last_offset needs at least one offset (the end of the last bag)");
  offsets_ = *offsets;
  if (!include_last_offset) offsets_.push_back(n);
  const BagsView view{PoolMode::kSum, offsets_.data(), num_bags(), nullptr};
  const std::string error = check_bags(view, n, "", false);
  // check_bags names a table; here the offsets came from `what`.
  EMBTRAIN_REQUIRE(error.empty(), what, ": ", error.substr(error.find(": ") + 2));
  // Without include_last_offset the appended end is n itself, so a last
  // given offset past n shows up above as offsets[B - 1] > n.
}

}  // namespace embtrain
