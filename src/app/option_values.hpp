// The text of one option as a value: the same parsing for every option of
// every command, whether it came from an INI file, a `--section.key=value`
// override or a flag. A parser returns the value or throws ValueError saying
// what is wrong with the text; the caller knows which option it was, where
// the text came from and which values are valid, and adds them.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace embtrain {
namespace app {

// What is wrong with an option's text, without naming the option.
class ValueError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The real numbers an option accepts: [lo, hi], or [lo, hi) when hi_open;
// with infinity_ok also +inf ("inf", "+inf").
struct Range {
  double lo = 0, hi = 0;
  bool hi_open = false;
  bool infinity_ok = false;

  static Range closed(double lo, double hi) { return {lo, hi, false, false}; }
  static Range half_open(double lo, double hi) { return {lo, hi, true, false}; }
  Range or_infinity() const { return {lo, hi, hi_open, true}; }

  bool contains(double v) const;
  std::string text() const;  // "[0, 1)", "[1e-06, 1e+06] or inf"
};

// "[lo, hi]", with "inf" for the largest int64_t ("any integer" for all).
std::string integer_range_text(int64_t lo, int64_t hi);

int64_t parse_integer(const std::string& text, int64_t lo, int64_t hi);
double parse_real(const std::string& text, const Range& range);
bool parse_boolean(const std::string& text);  // true|false, 1|0, yes|no, on|off
// Throws unless `text` is one of `valid`.
void check_choice(const std::string& text, const std::vector<std::string>& valid);

// Text of values as defaults and help show them.
std::string format_value(int64_t v);
std::string format_value(double v);                       // "%g"
std::string join(const std::vector<std::string>& words);  // "a, b, c"
std::string trim(const std::string& text);                // without surrounding blanks

}  // namespace app
}  // namespace embtrain
