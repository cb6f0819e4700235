// Config: the keys of an experiment, read from an INI file and overridden on
// the command line, with Boost.Program_options doing the syntax (sections,
// `--section.key=value`, unknown keys) and this class remembering where each
// value came from (file and line, or the command line), so that an error
// names the key, its source and the valid values. The keys' types and ranges
// are their declarations' (options.hpp).
#pragma once

#include <boost/program_options.hpp>
#include <functional>
#include <map>
#include <ostream>
#include <string>
#include <vector>

namespace embtrain {
namespace app {

class Config {
 public:
  // Declares `key` ("section.key") with its default ("" = unset) and help.
  void declare(const std::string& key, const std::string& default_value, const std::string& help);

  // The value `key` has on the command line (`--key=V` or `--key V`) or, failing
  // that, in the `--config` file, without declaring anything; "" if unset.
  // For keys that decide which other keys exist (train.workload). `source`
  // (if given) gets where the value came from: "command line", "FILE:LINE"
  // or "default".
  static std::string peek(int argc, char** argv, const std::string& key,
                          std::string* source = nullptr);

  // Parses `--config FILE` (optional) and `--section.key=value` overrides;
  // the command line wins over the file, the file over defaults. Throws
  // embtrain::Error for unknown keys, bad syntax or a missing file.
  void parse(int argc, char** argv, const std::string& command);

  // The value as text, trimmed ("" = unset); its declaration in options.hpp
  // turns it into a typed, checked value.
  std::string str(const std::string& key) const;

  // "configs/x.ini:12", "command line" or "default".
  std::string source(const std::string& key) const;
  // Throws embtrain::Error naming the key and its source.
  [[noreturn]] void fail(const std::string& key, const std::string& what) const;

  // The declared key nearest to `key` by edit distance, if near enough to
  // be a typo of it; else "".
  std::string nearest_key(const std::string& key) const;

  // Every declared key and its value ("" = unset), in key order.
  std::vector<std::pair<std::string, std::string>> values() const;

  // The effective configuration as INI text (every declared key with its
  // value and where it came from), enough to reproduce the run.
  std::string effective_ini() const;
  // The usage text for --help.
  std::string help_text() const;
  const std::string& config_file() const { return file_; }

 private:
  // Walks the keys in order, writing a "[section]" header before each
  // section's first key, and calls `line` with the key and its name.
  void write_sections(
      std::ostream& os,
      const std::function<void(const std::string& key, const std::string& name)>& line) const;

  // "unknown key 'K' (did you mean 'K2'?); 'embtrain CMD --help' lists the keys".
  std::string unknown_key(const std::string& key, const std::string& command) const;

  struct Key {
    std::string default_value, help;
  };
  std::map<std::string, Key> keys_;
  std::map<std::string, std::string> values_;
  std::map<std::string, std::string> sources_;
  std::map<std::string, int> file_lines_;  // key -> line in the config file
  std::string file_;
};

}  // namespace app
}  // namespace embtrain
