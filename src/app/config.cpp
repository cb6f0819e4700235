#include "config.hpp"

#include <filesystem>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

#include "embtrain/errors.hpp"
#include "option_values.hpp"
#include "workload_registry.hpp"

namespace embtrain {
namespace app {

namespace po = boost::program_options;

namespace {

// A line of a file as an error message may show it: bytes other than
// printable ASCII as \xNN (a binary file given as the config would
// otherwise write its bytes to the terminal), at most 80 characters.
std::string shown_line(const std::string& line) {
  std::string out;
  for (const char c : line) {
    if (out.size() >= 80) return out + "...";
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) {
      out += c;
    } else {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", u);
      out += hex;
    }
  }
  return out;
}

// Line numbers of the keys of an INI file, by full "section.key" name.
// Boost parses the file; this reads it first so that every error can point
// at its line: a line that is neither a section, a comment nor key = value,
// and a key given twice, are errors here.
std::map<std::string, int> index_lines(const std::string& path) {
  std::map<std::string, int> lines;
  std::ifstream in(path);
  std::string line, section;
  for (int n = 1; std::getline(in, line); ++n) {
    const std::string t = trim(line);
    if (t.empty() || t[0] == '#' || t[0] == ';') continue;
    if (t.front() == '[' && t.back() == ']') {
      section = trim(t.substr(1, t.size() - 2));
      continue;
    }
    const size_t eq = t.find('=');
    EMBTRAIN_REQUIRE(eq != std::string::npos && eq > 0, path, ":", n, ": '", shown_line(t),
                     "' is not 'key = value', a [section] or a # comment");
    const std::string key = trim(t.substr(0, eq));
    const std::string full = section.empty() ? key : section + "." + key;
    const auto [at, fresh] = lines.emplace(full, n);
    EMBTRAIN_REQUIRE(fresh, path, ":", n, ": key '", full, "' is set twice (first at line ",
                     at->second, ")");
  }
  return lines;
}

// Edits (insertions, deletions, substitutions) between a and b.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = up;
    }
  }
  return row[b.size()];
}

}  // namespace

std::string Config::peek(int argc, char** argv, const std::string& key, std::string* source) {
  std::string ignored;
  std::string& where = source ? *source : ignored;
  where = "default";
  std::string file;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    for (const std::string& name : {key, std::string("config")}) {
      const std::string flag = "--" + name;
      std::string value;
      if (a.rfind(flag + "=", 0) == 0)
        value = a.substr(flag.size() + 1);
      else if (a == flag && i + 1 < argc)
        value = argv[i + 1];
      else
        continue;
      if (name == key) {
        where = "command line";
        return trim(value);
      }
      file = value;
    }
  }
  if (file.empty()) return "";
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) return "";  // parse() reports it
  std::ifstream in(file);
  if (!in) return "";  // parse() reports the missing file properly
  po::options_description options;
  options.add_options()(key.c_str(), po::value<std::string>());
  po::variables_map vm;
  try {
    po::store(po::parse_config_file(in, options, /*allow_unregistered=*/true), vm);
  } catch (const po::error&) {
    return "";  // parse() reports it with the full set of keys
  }
  if (!vm.count(key)) return "";
  const std::map<std::string, int> lines = index_lines(file);
  const auto line = lines.find(key);
  where = file + (line != lines.end() ? ":" + std::to_string(line->second) : "");
  return trim(vm[key].as<std::string>());
}

void Config::declare(const std::string& key, const std::string& default_value,
                     const std::string& help) {
  keys_[key] = Key{default_value, help};
  values_[key] = default_value;
  sources_[key] = "default";
}

std::string Config::nearest_key(const std::string& key) const {
  std::string best;
  size_t best_distance = std::max<size_t>(3, key.size() / 4) + 1;  // near misses only
  for (const auto& [known, spec] : keys_) {
    const size_t d = edit_distance(key, known);
    if (d < best_distance) best = known, best_distance = d;
  }
  return best;
}

std::string Config::unknown_key(const std::string& key, const std::string& command) const {
  // A key of a workload whose keys were not declared (not this run's): of
  // its section, or of one of its tables.
  auto declared = [&](const std::string& prefix) {
    const auto it = keys_.lower_bound(prefix);
    return it != keys_.end() && it->first.rfind(prefix, 0) == 0;
  };
  for (const WorkloadEntry& w : registered_workloads()) {
    bool its = key.rfind(w.name + ".", 0) == 0 && !declared(w.name + ".");
    for (const std::string& t : w.tables) {
      const std::string table = "table." + t + ".";
      its = its || (key.rfind(table, 0) == 0 && !declared(table));
    }
    if (its)
      return embtrain::detail::concat("key '", key, "' belongs to workload ", w.name,
                                      ", which this run's train.workload is not; 'embtrain ",
                                      command, " --help' lists every workload's keys");
  }
  const std::string best = nearest_key(key);
  return embtrain::detail::concat("unknown key '", key, "'",
                        best.empty() ? std::string() : " (did you mean '" + best + "'?)",
                        "; 'embtrain ", command, " --help' lists the keys");
}

void Config::parse(int argc, char** argv, const std::string& command) {
  po::options_description options;
  options.add_options()("config", po::value<std::string>(), "INI file");
  for (const auto& [key, spec] : keys_) options.add_options()(key.c_str(), po::value<std::string>());

  po::variables_map cli, file;
  // Keys match exactly: no guessing "--train.step" to mean train.steps.
  const int style = po::command_line_style::default_style & ~po::command_line_style::allow_guessing;
  try {
    po::store(po::command_line_parser(argc, argv).options(options).style(style).run(), cli);
  } catch (const po::unknown_option& e) {
    std::string key = e.get_option_name();
    key = key.substr(key.find_first_not_of('-'));
    throw make_error("command line: ", unknown_key(key.substr(0, key.find('=')), command));
  } catch (const po::error& e) {
    throw make_error("command line: ", e.what(), " ('embtrain ", command,
                     " --help' lists the keys)");
  }
  if (cli.count("config")) {
    file_ = cli["config"].as<std::string>();
    std::error_code ec;
    // A folder opens as a stream whose first read throws an opaque
    // std::ios_base::failure; name it instead.
    EMBTRAIN_REQUIRE(!std::filesystem::is_directory(file_, ec), "config file ", file_,
                     ": is a folder (valid: an INI file)");
    std::ifstream in(file_);
    EMBTRAIN_REQUIRE(in, "config file ", file_, ": cannot open for reading");
    file_lines_ = index_lines(file_);
    try {
      po::store(po::parse_config_file(in, options, /*allow_unregistered=*/false), file);
    } catch (const po::unknown_option& e) {
      const std::string key = e.get_option_name();
      const auto line = file_lines_.find(key);
      throw make_error(file_, line != file_lines_.end() ? ":" + std::to_string(line->second) : "",
                       ": ", unknown_key(key, command));
    } catch (const po::error& e) {
      throw make_error(file_, ": ", e.what());
    }
  }
  for (const auto& [key, spec] : keys_) {
    if (cli.count(key)) {
      values_[key] = trim(cli[key].as<std::string>());
      sources_[key] = "command line";
    } else if (file.count(key)) {
      values_[key] = trim(file[key].as<std::string>());
      const auto line = file_lines_.find(key);
      sources_[key] = file_ + (line != file_lines_.end() ? ":" + std::to_string(line->second) : "");
    }
  }
}

std::string Config::str(const std::string& key) const {
  const auto it = values_.find(key);
  EMBTRAIN_ASSERT(it != values_.end());
  return it->second;
}

std::string Config::source(const std::string& key) const {
  const auto it = sources_.find(key);
  return it == sources_.end() ? "default" : it->second;
}

void Config::fail(const std::string& key, const std::string& what) const {
  throw make_error("config key '", key, "' = '", str(key), "' (", source(key), "): ", what);
}

void Config::write_sections(
    std::ostream& os,
    const std::function<void(const std::string& key, const std::string& name)>& line) const {
  std::string section;
  for (const auto& entry : keys_) {
    const std::string& key = entry.first;
    const size_t dot = key.rfind('.');
    const std::string sec = dot == std::string::npos ? "" : key.substr(0, dot);
    if (sec != section) {
      os << "\n[" << sec << "]\n";
      section = sec;
    }
    line(key, key.substr(dot + 1));
  }
}

std::vector<std::pair<std::string, std::string>> Config::values() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [key, spec] : keys_) out.emplace_back(key, str(key));
  return out;
}

std::string Config::effective_ini() const {
  std::ostringstream os;
  os << "# effective configuration: every key, its value and where it came from\n";
  write_sections(os, [&](const std::string& key, const std::string& name) {
    os << name << " = " << str(key) << "    # " << source(key) << "\n";
  });
  return os.str();
}

std::string Config::help_text() const {
  std::ostringstream os;
  write_sections(os, [&](const std::string& key, const std::string& name) {
    const Key& spec = keys_.at(key);
    std::string left = "  " + name;
    if (!spec.default_value.empty()) left += " = " + spec.default_value;
    os << left;
    if (left.size() < 36) os << std::string(36 - left.size(), ' ');
    else os << "\n" << std::string(36, ' ');
    os << spec.help << "\n";
  });
  return os.str();
}

}  // namespace app
}  // namespace embtrain
