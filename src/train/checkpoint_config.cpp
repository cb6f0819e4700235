// Which configuration keys a resumed run may change. The checkpoint holds
// its run's effective configuration; every key that decides what the
// tables, the data or the random streams are (seed, workload data, table
// specs, optimizer settings) must be the same when training goes on from
// it, or the resumed run is not the run it claims to continue. Keys that
// only say how long, how fast or where to write may change.
#include <map>
#include <sstream>

#include "embtrain/checkpoint.hpp"
#include "embtrain/errors.hpp"

namespace embtrain {

namespace {

// Keys a resume may always change: how long, how fast, where to write,
// how a fresh table would start (a resumed one starts from the
// checkpoint), and what a workload writes at the end. '*' matches any text.
const char* const kFreeKeys[] = {
    "train.steps",  "train.epochs",     "train.threads",     "train.eval_every",
    "train.pipeline", "train.device",   "train.data_comm",   "log.*",
    "checkpoint.*", "table.*.init",     "table.*.init_std",  "train.on_nonfinite",
    "train.collective_timeout", "train.overlap_chunks",
    "skipgram.export", "skipgram.neighbors", "skipgram.neighbors_k",  // what the end prints
};

// Whether `key` matches `pattern`, where '*' stands for any text.
bool matches(const char* key, const char* pattern) {
  if (*pattern == '\0') return *key == '\0';
  if (*pattern == '*')
    return matches(key, pattern + 1) || (*key != '\0' && matches(key + 1, pattern));
  return *key == *pattern && matches(key + 1, pattern + 1);
}

// "key -> value" of an effective configuration: "[section]" lines, then
// "name = value    # where it came from".
std::map<std::string, std::string> parse_effective_ini(const std::string& text) {
  std::map<std::string, std::string> keys;
  std::istringstream in(text);
  std::string line, section;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line.front() == '[' && line.back() == ']') {
      section = line.substr(1, line.size() - 2);
      continue;
    }
    const size_t eq = line.find(" = ");
    if (eq == std::string::npos) continue;
    const size_t comment = line.rfind("    # ");
    const size_t end = comment != std::string::npos && comment >= eq + 3 ? comment : line.size();
    const std::string value = line.substr(eq + 3, end - eq - 3);
    const std::string name = line.substr(0, eq);
    keys[section.empty() ? name : section + "." + name] = value;
  }
  return keys;
}

}  // namespace

bool key_matches(const std::string& key, const std::string& pattern) {
  return matches(key.c_str(), pattern.c_str());
}

void check_resume_config(const std::string& dir, const std::string& saved,
                         const std::string& current, const std::vector<std::string>& allowed) {
  const std::map<std::string, std::string> before = parse_effective_ini(saved);
  const std::map<std::string, std::string> now = parse_effective_ini(current);
  std::string changed;
  for (const auto& [key, old_value] : before) {
    const auto it = now.find(key);
    if (it == now.end() || it->second == old_value) continue;
    bool free = false;
    for (const char* p : kFreeKeys) free = free || matches(key.c_str(), p);
    for (const std::string& p : allowed) free = free || matches(key.c_str(), p.c_str());
    if (!free)
      changed += detail::concat("\n  ", key, " = ", old_value, " in the checkpoint, ", it->second,
                                " now");
  }
  EMBTRAIN_REQUIRE(changed.empty(), "checkpoint ", dir,
                   ": resuming would change keys that decide what it holds:", changed,
                   "\n(keep them, or name them in checkpoint.allow_changes, comma-separated, to "
                   "resume anyway)");
}

}  // namespace embtrain
