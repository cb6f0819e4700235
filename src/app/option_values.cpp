#include "option_values.hpp"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <sstream>

namespace embtrain {
namespace app {

bool Range::contains(double v) const {
  if (infinity_ok && v == std::numeric_limits<double>::infinity()) return true;
  return v >= lo && (hi_open ? v < hi : v <= hi);
}

std::string Range::text() const {
  std::ostringstream os;
  os << "[" << lo << ", " << hi << (hi_open ? ")" : "]") << (infinity_ok ? " or inf" : "");
  return os.str();
}

std::string integer_range_text(int64_t lo, int64_t hi) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  if (lo == -kMax && hi == kMax) return "any integer";
  return "[" + std::to_string(lo) + ", " + (hi == kMax ? std::string("inf") : std::to_string(hi)) +
         "]";
}

int64_t parse_integer(const std::string& text, int64_t lo, int64_t hi) {
  if (text.empty()) throw ValueError("a value is required");
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (*end != '\0' || end == text.c_str()) throw ValueError("not an integer");
  // strtoll clamps what int64 cannot hold and says ERANGE: out of range too.
  if (errno == ERANGE || v < lo || v > hi) throw ValueError("out of range");
  return v;
}

double parse_real(const std::string& text, const Range& range) {
  if (text.empty()) throw ValueError("a value is required");
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (*end != '\0' || std::isnan(v)) throw ValueError("not a number");
  if (!range.contains(v)) throw ValueError("out of range");
  return v;
}

bool parse_boolean(const std::string& text) {
  if (text == "true" || text == "1" || text == "yes" || text == "on") return true;
  if (text == "false" || text == "0" || text == "no" || text == "off") return false;
  throw ValueError("not a boolean");
}

void check_choice(const std::string& text, const std::vector<std::string>& valid) {
  for (const std::string& v : valid)
    if (text == v) return;
  throw ValueError("not a valid choice");
}

std::string format_value(double v) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", v);
  return text;
}

std::string join(const std::vector<std::string>& words) {
  std::string list;
  for (const std::string& w : words) list += (list.empty() ? "" : ", ") + w;
  return list;
}

std::string trim(const std::string& text) {
  const size_t b = text.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  return text.substr(b, text.find_last_not_of(" \t\r") - b + 1);
}

}  // namespace app
}  // namespace embtrain
