// Options declared once and read from either of the two places a command
// takes them: INI keys through Config (`embtrain train`: `lr = 0.1` under
// [table.users] in a file, or `--table.users.lr=0.1`) or command-line flags
// through Boost.Program_options (`embtrain replay`, `embtrain bench`:
// `--lr 0.1`). A declaration holds the option's name, default and help and
// the rule that parses, checks and stores its value, so both readers accept
// the same values and say the same about a bad one: the option, where its
// value came from, what is wrong and the valid values.
#pragma once

#include <boost/program_options.hpp>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "config.hpp"
#include "option_values.hpp"

namespace embtrain {
namespace app {

enum class ValueKind { kInteger, kReal, kBoolean, kChoice, kText };

// How an option's text becomes part of a Target.
template <typename Target>
struct ValueRule {
  ValueKind kind = ValueKind::kText;  // a kBoolean flag given alone means true
  std::string valid;                  // the values it accepts, as errors show them
  // Parses `text` ("" when unset), checks it and stores it; throws ValueError.
  std::function<void(const std::string& text, Target& target)> read;
  // The value in `target` as text; only for a value in a data member.
  std::function<std::string(const Target& target)> show;
};

template <typename Target>
struct Option {
  // `default_value`: "" = unset or, for a value in a data member, the
  // member's initial value in Target{}, so that a default is written once.
  Option(std::string name, std::string help, ValueRule<Target> rule, std::string default_value = "")
      : name(std::move(name)),
        help(std::move(help)),
        rule(std::move(rule)),
        default_value(std::move(default_value)) {}

  std::string name;  // as a key "padding_idx"; as a flag "--padding-idx"
  std::string help;
  ValueRule<Target> rule;
  std::string default_value;
};

template <typename Target>
using OptionList = std::vector<Option<Target>>;

// Defaults a command or a workload puts over the declared ones, by name.
using OptionDefaults = std::map<std::string, std::string>;

namespace detail {

template <typename T>
std::string show_value(const T& v) {
  if constexpr (std::is_same_v<T, bool>)
    return v ? "true" : "false";
  else if constexpr (std::is_integral_v<T>)
    return std::to_string(v);
  else if constexpr (std::is_floating_point_v<T>)
    return format_value(static_cast<double>(v));
  else
    return v;
}
template <typename T>
std::string show_value(const std::optional<T>& v) {
  return v ? show_value(*v) : "";
}

// A rule that parses with `parse` and stores the value through `store`: a
// data member of Target or a callable store(Target&, value).
template <typename Target, typename Store, typename Parse>
ValueRule<Target> make_rule(ValueKind kind, std::string valid, Store store, Parse parse) {
  ValueRule<Target> rule;
  rule.kind = kind;
  rule.valid = std::move(valid);
  if constexpr (std::is_member_object_pointer_v<Store>) {
    rule.read = [=](const std::string& text, Target& t) {
      using Field = std::remove_reference_t<decltype(t.*store)>;
      t.*store = static_cast<Field>(parse(text));
    };
    rule.show = [=](const Target& t) { return show_value(t.*store); };
  } else {
    rule.read = [=](const std::string& text, Target& t) { store(t, parse(text)); };
  }
  return rule;
}

}  // namespace detail

// The rules options of Target are made of. Each takes where the value goes:
// a data member of Target (&TableSetup::init_std) or a callable
// store(Target&, value) for anything deeper.
template <typename Target>
struct Rules {
  template <typename Store>
  static ValueRule<Target> integer(int64_t lo, int64_t hi, Store store) {
    return detail::make_rule<Target>(
        ValueKind::kInteger, integer_range_text(lo, hi), store,
        [=](const std::string& text) { return parse_integer(text, lo, hi); });
  }
  // "" leaves it unset (std::nullopt).
  template <typename Store>
  static ValueRule<Target> optional_integer(int64_t lo, int64_t hi, Store store) {
    return detail::make_rule<Target>(
        ValueKind::kInteger, integer_range_text(lo, hi), store, [=](const std::string& text) {
          return text.empty() ? std::optional<int64_t>() : parse_integer(text, lo, hi);
        });
  }
  template <typename Store>
  static ValueRule<Target> real(const Range& range, Store store) {
    return detail::make_rule<Target>(
        ValueKind::kReal, range.text(), store,
        [=](const std::string& text) { return parse_real(text, range); });
  }
  // "" leaves it unset (std::nullopt).
  template <typename Store>
  static ValueRule<Target> optional_real(const Range& range, Store store) {
    return detail::make_rule<Target>(
        ValueKind::kReal, range.text(), store, [=](const std::string& text) {
          return text.empty() ? std::optional<double>() : parse_real(text, range);
        });
  }
  template <typename Store>
  static ValueRule<Target> boolean(Store store) {
    return detail::make_rule<Target>(ValueKind::kBoolean, "true, false", store,
                                     [](const std::string& text) { return parse_boolean(text); });
  }
  template <typename Store>
  static ValueRule<Target> choice(const std::vector<std::string>& valid, Store store) {
    return detail::make_rule<Target>(ValueKind::kChoice, join(valid), store,
                                     [=](const std::string& text) {
                                       check_choice(text, valid);
                                       return text;
                                     });
  }
  // Any text, "" included, that `store` takes: it may throw ValueError,
  // and `valid` says what it takes ("" for free text).
  template <typename Store>
  static ValueRule<Target> text(const std::string& valid, Store store) {
    return detail::make_rule<Target>(ValueKind::kText, valid, store,
                                     [](const std::string& text) { return text; });
  }
};

// "padding_idx" -> "padding-idx": flags spell with dashes what keys spell
// with underscores.
std::string flag_name(const std::string& name);
// The error text for a refused value: what is wrong, then the valid values.
std::string explain(const ValueError& error, const std::string& valid);
// The option's default: the command's or workload's, else its own.
template <typename Target>
std::string default_of(const Option<Target>& option, const OptionDefaults& defaults) {
  const auto it = defaults.find(option.name);
  if (it != defaults.end()) return it->second;
  if (!option.default_value.empty() || !option.rule.show) return option.default_value;
  const Target initial;  // every member of a Target has an initializer
  return option.rule.show(initial);
}

// --- As INI keys: PREFIX + name, e.g. "table.users." + "lr" ------------------

template <typename Target>
void declare_keys(Config* config, const std::string& prefix, const OptionList<Target>& options,
                  const OptionDefaults& defaults = {}) {
  for (const Option<Target>& o : options)
    config->declare(prefix + o.name, default_of(o, defaults), o.help);
}

// Errors name the key, its file and line (or "command line") and the valid values.
template <typename Target>
void read_keys(const Config& config, const std::string& prefix, const OptionList<Target>& options,
               Target* target) {
  for (const Option<Target>& o : options) {
    const std::string key = prefix + o.name;
    try {
      o.rule.read(config.str(key), *target);
    } catch (const ValueError& e) {
      config.fail(key, explain(e, o.rule.valid));
    }
  }
}

// --- As command-line flags: "--" + flag_name(name) --------------------------

namespace po = boost::program_options;

template <typename Target>
void add_flags(po::options_description* flags, const OptionList<Target>& options,
               const OptionDefaults& defaults = {}) {
  for (const Option<Target>& o : options) {
    auto* value = po::value<std::string>();
    const std::string d = default_of(o, defaults);
    if (!d.empty()) value->default_value(d);
    if (o.rule.kind == ValueKind::kBoolean) value->implicit_value("true");
    flags->add_options()(flag_name(o.name).c_str(), value, o.help.c_str());
  }
}

// Throws the error for a refused flag value: the flag, its value, where
// the value came from ("command line" or "default") and `what`.
[[noreturn]] void fail_flag(const std::string& flag, const std::string& text,
                            const std::string& source, const std::string& what);

template <typename Target>
void read_flags(const po::variables_map& vm, const OptionList<Target>& options, Target* target) {
  for (const Option<Target>& o : options) {
    const std::string flag = flag_name(o.name);
    const auto it = vm.find(flag);
    const bool given = it != vm.end() && !it->second.defaulted();
    const std::string text = it == vm.end() ? "" : trim(it->second.as<std::string>());
    try {
      o.rule.read(text, *target);
    } catch (const ValueError& e) {
      fail_flag(flag, text, given ? "command line" : "default", explain(e, o.rule.valid));
    }
  }
}

}  // namespace app
}  // namespace embtrain
