#include "embtrain/comm_precision.hpp"

#include "embtrain/errors.hpp"

namespace embtrain {

const char* comm_precision_name(CommPrecision p) {
  switch (p) {
    case CommPrecision::kFp32: return "fp32";
    case CommPrecision::kBf16: return "bf16";
    case CommPrecision::kFp16: return "fp16";
  }
  return "?";
}

CommPrecision parse_comm_precision(const std::string& name) {
  if (name == "fp32") return CommPrecision::kFp32;
  if (name == "bf16") return CommPrecision::kBf16;
  if (name == "fp16") return CommPrecision::kFp16;
  throw make_error("comm precision '", name, "' is not one of fp32, bf16, fp16");
}

}  // namespace embtrain
