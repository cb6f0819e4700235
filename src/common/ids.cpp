#include "embtrain/ids.hpp"

#include <algorithm>
#include <sstream>

#include "embtrain/errors.hpp"

namespace embtrain {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kFloat32: return "float32";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
  }
  return "?";
}

int dtype_size(DType t) { return t == DType::kInt64 ? 8 : 4; }

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << '(';
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  if (shape.size() == 1) os << ',';
  os << ')';
  return os.str();
}

int64_t IdsView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

// The multi-dimensional position of flat index `flat` in `shape`.
std::string position_string(int64_t flat, const std::vector<int64_t>& shape) {
  std::vector<int64_t> pos(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    pos[d] = flat % shape[d];
    flat /= shape[d];
  }
  return shape_to_string(pos);
}

template <typename T>
int64_t first_bad(const T* ids, int64_t n, int64_t bound) {
  int64_t bad = n;
#pragma omp parallel for reduction(min : bad)
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || static_cast<int64_t>(ids[i]) >= bound) bad = i < bad ? i : bad;
  return bad;
}

}  // namespace

std::string check_ids(const IdsView& ids, const std::string& table, int64_t num_embeddings) {
  if (ids.dtype != DType::kInt32 && ids.dtype != DType::kInt64)
    return detail::concat("table '", table, "': ids must be int32 or int64, got ",
                          dtype_name(ids.dtype));
  const int64_t n = ids.numel();
  int64_t bad;
  int64_t value;
  if (ids.dtype == DType::kInt32) {
    const auto* p = static_cast<const int32_t*>(ids.data);
    bad = first_bad(p, n, num_embeddings);
    value = bad < n ? p[bad] : 0;
  } else {
    const auto* p = static_cast<const int64_t*>(ids.data);
    bad = first_bad(p, n, num_embeddings);
    value = bad < n ? p[bad] : 0;
  }
  if (bad == n) return "";
  return detail::concat("table '", table, "': index ", value, " at position ",
                        position_string(bad, ids.shape), " of ids with shape ",
                        shape_to_string(ids.shape), " is out of range [0, ", num_embeddings, ")");
}

void ids_to_int64(const IdsView& ids, std::vector<int64_t>* out) {
  const int64_t n = ids.numel();
  out->resize(static_cast<size_t>(n));
  if (ids.dtype == DType::kInt32) {
    const auto* p = static_cast<const int32_t*>(ids.data);
    std::copy(p, p + n, out->begin());
  } else {
    const auto* p = static_cast<const int64_t*>(ids.data);
    std::copy(p, p + n, out->begin());
  }
}

}  // namespace embtrain
