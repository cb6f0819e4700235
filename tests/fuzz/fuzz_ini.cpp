// libFuzzer target: the INI reader (Config over Boost.Program_options) and
// the typed reading of its values, on any bytes. The input is the config
// file, optionally followed by a NUL and command-line overrides, one per
// line ("table.t.lr=0.5"). Parsing the file and the overrides, then reading
// one table's keys and a few of every kind, must succeed or throw
// embtrain::Error naming the key.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "config.hpp"
#include "embtrain/embedding_table.hpp"
#include "embtrain/errors.hpp"
#include "fuzz_util.hpp"
#include "options.hpp"
#include "table_options.hpp"

namespace {

using embtrain::app::Config;
using embtrain::app::OptionList;
using embtrain::app::Range;
using embtrain::app::Rules;

// A few keys of every kind, as a command declares them.
struct RunKeys {
  int64_t steps = 0;
  double epochs = 1;
  bool quiet = false;
  std::string workload = "recsys";
  std::string dir;
};

const OptionList<RunKeys>& run_keys() {
  using R = Rules<RunKeys>;
  static const OptionList<RunKeys> keys = {
      {"steps", "", R::integer(0, int64_t{1} << 40, &RunKeys::steps)},
      {"epochs", "", R::real(Range::closed(1e-9, 1e9), &RunKeys::epochs)},
      {"quiet", "", R::boolean(&RunKeys::quiet)},
      {"workload", "", R::choice({"recsys", "skipgram"}, &RunKeys::workload), "recsys"},
      {"dir", "", R::text("", &RunKeys::dir)},
  };
  return keys;
}

// argv of `embtrain train --config PATH --key=value ...` from the part of
// the input after its first NUL.
std::vector<std::string> arguments(const std::string& path, const std::string& overrides) {
  std::vector<std::string> args = {"train", "--config", path};
  size_t begin = 0;
  while (begin < overrides.size()) {
    size_t end = overrides.find('\n', begin);
    if (end == std::string::npos) end = overrides.size();
    if (end > begin) args.push_back("--" + overrides.substr(begin, end - begin));
    begin = end + 1;
  }
  return args;
}

void read_config(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const int argc = static_cast<int>(args.size());
  Config::peek(argc, argv.data(), "train.workload");
  Config config;
  embtrain::app::declare_keys(&config, "train.", run_keys());
  embtrain::app::declare_keys(&config, "table.t.", embtrain::app::table_options());
  config.parse(argc, argv.data(), "train");
  RunKeys keys;
  embtrain::app::read_keys(config, "train.", run_keys(), &keys);
  embtrain::TableSpec spec;
  spec.name = "t";
  spec.num_embeddings = 100;
  spec.dim = 8;
  embtrain::app::read_keys(config, "table.t.", embtrain::app::table_options(), &spec);
  spec.validate();
  config.effective_ini();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = embtrain_fuzz::scratch_path("config.ini");
  const char* bytes = reinterpret_cast<const char*>(data);
  const size_t nul = std::find(bytes, bytes + size, '\0') - bytes;
  embtrain_fuzz::write_file(path, data, nul);
  const std::string overrides = nul < size ? std::string(bytes + nul + 1, size - nul - 1) : "";
  try {
    read_config(arguments(path, overrides));
  } catch (const embtrain::Error&) {
  }
  return 0;
}
