#include "options.hpp"

#include <algorithm>

#include "embtrain/errors.hpp"

namespace embtrain {
namespace app {

std::string flag_name(const std::string& name) {
  std::string flag = name;
  std::replace(flag.begin(), flag.end(), '_', '-');
  return flag;
}

std::string explain(const ValueError& error, const std::string& valid) {
  return valid.empty() ? error.what() : std::string(error.what()) + " (valid: " + valid + ")";
}

void fail_flag(const std::string& flag, const std::string& text, const std::string& source,
               const std::string& what) {
  throw make_error("option --", flag, " = '", text, "' (", source, "): ", what);
}

}  // namespace app
}  // namespace embtrain
