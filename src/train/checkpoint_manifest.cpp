#include "checkpoint_manifest.hpp"

#include <cctype>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "common/crc32c.hpp"
#include "embtrain/errors.hpp"

namespace embtrain {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int64_t kMaxInt64 = std::numeric_limits<int64_t>::max();
constexpr int64_t kMaxDim = int64_t{1} << 20;    // table.NAME.dim's limit
constexpr int kMaxRanks = 1 << 20;

// j[key] as an integer in [lo, hi]; `where` starts the error.
int64_t get_int(const json& j, const char* key, int64_t lo, int64_t hi, const std::string& where) {
  EMBTRAIN_REQUIRE(j.is_object() && j.contains(key), where, ": '", key, "' is missing");
  const json& v = j.at(key);
  EMBTRAIN_REQUIRE(v.is_number_integer(), where, ": '", key, "' = ", v.dump(),
                   " is not an integer");
  const bool fits = !v.is_number_unsigned() || v.get<uint64_t>() <= static_cast<uint64_t>(kMaxInt64);
  const int64_t x = fits ? v.get<int64_t>() : kMaxInt64;
  EMBTRAIN_REQUIRE(fits && x >= lo && x <= hi, where, ": '", key, "' = ", v.dump(),
                   " is out of range [", lo, ", ", hi, "]");
  return x;
}

std::string get_text(const json& j, const char* key, const std::string& where,
                     const std::string& fallback = "\x01") {
  if (!j.contains(key) && fallback != "\x01") return fallback;
  EMBTRAIN_REQUIRE(j.contains(key) && j.at(key).is_string(), where, ": '", key,
                   "' is missing or not a string");
  return j.at(key).get<std::string>();
}

// The bytes of rows x width float32, or an error naming the product and
// the limit: sizes read from a manifest are never trusted to fit.
int64_t data_bytes(int64_t rows, int64_t width, const std::string& where) {
  int64_t elements = 0, bytes = 0;
  EMBTRAIN_REQUIRE(!__builtin_mul_overflow(rows, width, &elements) &&
                       !__builtin_mul_overflow(elements, int64_t{4}, &bytes),
                   where, ": ", rows, " rows x ", width, " floats x 4 bytes overflows the limit of ",
                   kMaxInt64, " bytes");
  return bytes;
}

ManifestShard parse_shard(const json& j, const ManifestTable& t, const ShardPlan& plan,
                          const std::string& where) {
  ManifestShard s;
  s.rank = static_cast<int>(get_int(j, "rank", 0, plan.num_ranks() - 1, where));
  const std::string here = where + " (rank " + std::to_string(s.rank) + ")";
  s.rows = get_int(j, "rows", 0, kMaxInt64, here);
  EMBTRAIN_REQUIRE(s.rows == plan.shard_rows(s.rank), here, ": holds ", s.rows,
                   " rows, but a ", shard_layout_name(plan.layout()), " plan of ", t.rows,
                   " rows over ", plan.num_ranks(), " ranks gives rank ", s.rank, " ",
                   plan.shard_rows(s.rank));
  if (plan.layout() == ShardPlan::Layout::kBlock && j.contains("row_begin")) {
    const int64_t begin = get_int(j, "row_begin", 0, t.rows, here);
    EMBTRAIN_REQUIRE(begin == plan.row_begin(s.rank), here, ": starts at row ", begin,
                     " but rank ", s.rank, "'s rows are [", plan.row_begin(s.rank), ", ",
                     plan.row_end(s.rank), ")");
  }
  s.weights = get_text(j, "weights", here);
  s.state = get_text(j, "state", here);
  for (const auto& [file, what] : {std::pair{s.weights, "weights"}, {s.state, "state"}})
    EMBTRAIN_REQUIRE(file == shard_file(t.name, s.rank, what), here, ": ", what, " file is '",
                     file, "', expected '", shard_file(t.name, s.rank, what), "'");
  return s;
}

// The shards of a table: each rank 0..P-1 exactly once.
void parse_shards(const json& j, int ranks, ManifestTable* t, const std::string& where) {
  EMBTRAIN_REQUIRE(j.contains("shards") && j.at("shards").is_array(), where,
                   ": 'shards' is missing or not a list");
  const ShardPlan plan(t->rows, ranks, t->layout);
  t->shards.assign(static_cast<size_t>(ranks), ManifestShard{});
  std::vector<bool> seen(static_cast<size_t>(ranks), false);
  int index = 0;
  for (const json& js : j.at("shards")) {
    const std::string here = where + ", shard #" + std::to_string(index++);
    EMBTRAIN_REQUIRE(index <= ranks, where, ": has more shards than the ", ranks,
                     " ranks that wrote the checkpoint");
    const ManifestShard s = parse_shard(js, *t, plan, here);
    EMBTRAIN_REQUIRE(!seen[s.rank], here, ": rank ", s.rank,
                     " appears twice (each of ranks 0..", ranks - 1, " must hold one shard)");
    seen[s.rank] = true;
    t->shards[s.rank] = s;
  }
  for (int r = 0; r < ranks; ++r)
    EMBTRAIN_REQUIRE(seen[r], where, ": the shard of rank ", r, " is missing (", ranks,
                     " ranks wrote the checkpoint: ranks 0..", ranks - 1,
                     " must each hold one shard)");
}

ManifestTable parse_table(const json& j, int ranks, const std::string& dir) {
  ManifestTable t;
  t.name = get_text(j, "name", "checkpoint " + dir + ": a table");
  const std::string where = "checkpoint " + dir + ": table '" + t.name + "'";
  t.rows = get_int(j, "rows", 1, kMaxInt64, where);
  t.dim = get_int(j, "dim", 1, kMaxDim, where);
  t.state_width = get_int(j, "state_width", 0, kMaxDim, where);
  t.optimizer_step = get_int(j, "optimizer_step", 0, kMaxInt64, where);
  t.optimizer = get_text(j, "optimizer", where);
  try {
    t.layout = parse_shard_layout(get_text(j, "sharding", where, "block"));
  } catch (const Error& e) {
    throw make_error(where, ": ", e.what());
  }
  data_bytes(t.rows, std::max(t.dim, t.state_width), where);
  parse_shards(j, ranks, &t, where);
  return t;
}

void parse_files(const json& j, Manifest* m) {
  const std::string where = "checkpoint " + m->dir + ": 'files'";
  EMBTRAIN_REQUIRE(j.contains("files") && j.at("files").is_object(), where,
                   " (sizes and checksums) is missing or not an object");
  for (const auto& [name, entry] : j.at("files").items()) {
    const std::string here = where + " entry '" + name + "'";
    FileSum sum;
    sum.bytes = get_int(entry, "bytes", 0, kMaxInt64, here);
    const std::string crc = get_text(entry, "crc32c", here);
    size_t used = 0;
    unsigned long value = 0;
    try {
      value = std::stoul(crc, &used, 16);
    } catch (const std::exception&) {
    }
    EMBTRAIN_REQUIRE(crc.size() == 8 && used == 8, here, ": crc32c = '", crc,
                     "' is not 8 hex digits");
    sum.crc32c = static_cast<uint32_t>(value);
    m->files[name] = sum;
  }
}

// Every file a table's shard needs is listed, with at least its rows' bytes.
void check_listed(const Manifest& m) {
  for (const ManifestTable& t : m.tables)
    for (const ManifestShard& s : t.shards)
      for (const auto& [file, width] : {std::pair{s.weights, t.dim}, {s.state, t.state_width}}) {
        const auto it = m.files.find(file);
        EMBTRAIN_REQUIRE(it != m.files.end(), "checkpoint ", m.dir, ": table '", t.name,
                         "', rank ", s.rank, ": file ", file, " has no size and checksum in 'files'");
        const int64_t need = data_bytes(s.rows, width, "checkpoint " + m.dir);
        EMBTRAIN_REQUIRE(it->second.bytes >= need, "checkpoint ", m.dir, ": table '", t.name,
                         "', rank ", s.rank, ": ", file, " is listed as ", it->second.bytes,
                         " bytes, too few for ", s.rows, " x ", width, " float32 (", need, ")");
      }
  EMBTRAIN_REQUIRE(m.dense.empty() || m.files.count(m.dense), "checkpoint ", m.dir, ": file ",
                   m.dense, " has no size and checksum in 'files'");
  for (const std::string& text : m.texts)
    EMBTRAIN_REQUIRE(m.files.count(text), "checkpoint ", m.dir, ": file ", text,
                     " has no size and checksum in 'files'");
}

// "texts": the names of the checkpoint's text files, each a plain name
// (never a path out of the folder) listed once.
void parse_texts(const json& j, Manifest* m, const std::string& where) {
  if (!j.contains("texts")) return;
  EMBTRAIN_REQUIRE(j.at("texts").is_array(), where, ": 'texts' is not a list");
  std::set<std::string> seen;
  for (const json& t : j.at("texts")) {
    EMBTRAIN_REQUIRE(t.is_string() && is_text_file_name(t.get<std::string>()), where,
                     ": 'texts' entry ", t.dump(),
                     " is not a plain file name (letters, digits, '.', '_', '-')");
    EMBTRAIN_REQUIRE(seen.insert(t.get<std::string>()).second, where, ": 'texts' lists ", t.dump(),
                     " twice");
    m->texts.push_back(t.get<std::string>());
  }
}

// "progress": the samples the run consumed (absent before it was saved).
void parse_progress(const json& j, Manifest* m, const std::string& where) {
  if (!j.contains("progress")) return;
  const std::string here = where + ": 'progress'";
  const json& p = j.at("progress");
  m->progress.samples = get_int(p, "samples", 0, kMaxInt64, here);
  m->progress.global_batch = get_int(p, "global_batch", 1, kMaxInt64, here);
  m->progress.epoch_samples = get_int(p, "epoch_samples", 1, kMaxInt64, here);
}

// A JSON parse error, its "last read: '...'" (which for a file cut short
// inside a string is everything after the quote) cut to its first 60
// characters.
std::string parse_error_text(const std::string& what) {
  constexpr size_t kShown = 60;
  const std::string marker = "last read: '";
  const size_t from = what.find(marker);
  if (from == std::string::npos) return what;
  const size_t begin = from + marker.size();
  size_t end = what.find("'; ", begin);
  if (end == std::string::npos) end = what.rfind('\'');  // the token ends the message
  if (end == std::string::npos || end < begin) return what;
  const size_t length = end - begin;
  if (length <= kShown) return what;
  return what.substr(0, begin + kShown) + "...' (" + std::to_string(length) + " characters)" +
         what.substr(end + 1);
}

json load_json(const std::string& dir) {
  const fs::path path = fs::path(dir) / "manifest.json";
  std::ifstream in(path);
  EMBTRAIN_REQUIRE(in, path.string(), ": cannot open checkpoint manifest");
  try {
    json m;
    in >> m;
    return m;
  } catch (const json::exception& e) {
    throw make_error(path.string(), ": malformed checkpoint manifest: ", parse_error_text(e.what()));
  }
}

}  // namespace

bool is_text_file_name(const std::string& name) {
  if (name.empty() || name.size() > 64 || name[0] == '.' || name == "manifest.json" ||
      name == "dense.npy" || (name.size() >= 4 && name.compare(name.size() - 4, 4, ".npy") == 0))
    return false;
  for (const char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
      return false;
  return true;
}

std::string shard_file(const std::string& table, int rank, const char* what) {
  return table + ".rank" + std::to_string(rank) + "." + what + ".npy";
}

const ManifestTable& Manifest::table(const std::string& name) const {
  std::string names;
  for (const ManifestTable& t : tables) {
    if (t.name == name) return t;
    names += (names.empty() ? "" : ", ") + t.name;
  }
  throw make_error("checkpoint ", dir, " has no table '", name, "' (its tables: ", names, ")");
}

std::string Manifest::path(const std::string& file) const {
  return (fs::path(dir) / file).string();
}

namespace {

Manifest parse_manifest(const json& j, const std::string& dir) {
  const std::string where = "checkpoint " + dir + ": manifest.json";
  EMBTRAIN_REQUIRE(j.is_object() && get_text(j, "format", where, "") == kCheckpointFormat, where,
                   ": not an embtrain checkpoint manifest");
  Manifest m;
  m.dir = dir;
  m.version = static_cast<int>(get_int(j, "version", 1, kCheckpointVersion, where));
  m.workload = get_text(j, "workload", where, "");
  m.config = get_text(j, "config", where, "");
  m.step = get_int(j, "step", 0, kMaxInt64, where);
  m.ranks = static_cast<int>(get_int(j, "ranks", 1, kMaxRanks, where));
  EMBTRAIN_REQUIRE(j.contains("rng") && j.at("rng").contains("seed") &&
                       j.at("rng").at("seed").is_number_unsigned(),
                   where, ": 'rng.seed' is missing or not a non-negative integer");
  m.seed = j.at("rng").at("seed").get<uint64_t>();
  EMBTRAIN_REQUIRE(j.contains("tables") && j.at("tables").is_array(), where,
                   ": 'tables' is missing or not a list");
  std::set<std::string> names;
  for (const json& jt : j.at("tables")) {
    m.tables.push_back(parse_table(jt, m.ranks, dir));
    EMBTRAIN_REQUIRE(names.insert(m.tables.back().name).second, where, ": table '",
                     m.tables.back().name, "' appears twice");
  }
  m.dense = get_text(j, "dense", where, "");
  EMBTRAIN_REQUIRE(m.dense.empty() || m.dense == "dense.npy", where, ": 'dense' = '", m.dense,
                   "', expected 'dense.npy'");
  parse_texts(j, &m, where);
  parse_progress(j, &m, where);
  if (m.version >= 2) {
    parse_files(j, &m);
    check_listed(m);
  }
  return m;
}

}  // namespace

Manifest read_manifest(const std::string& dir) {
  const json j = load_json(dir);
  try {
    return parse_manifest(j, dir);
  } catch (const json::exception& e) {
    throw make_error("checkpoint ", dir, ": malformed manifest.json: ", e.what());
  }
}

void verify_file(const Manifest& m, const std::string& file) {
  const std::string path = m.path(file);
  std::error_code ec;
  if (m.version < 2) {
    EMBTRAIN_REQUIRE(fs::exists(path, ec), "checkpoint ", m.dir, ": ", file, " is missing");
    return;
  }
  const auto it = m.files.find(file);
  EMBTRAIN_REQUIRE(it != m.files.end(), "checkpoint ", m.dir, ": ", file,
                   " has no size and checksum in the manifest");
  EMBTRAIN_REQUIRE(fs::exists(path, ec), "checkpoint ", m.dir, ": ", file, " is missing");
  const FileSum found = sum_file(path);
  EMBTRAIN_REQUIRE(found.bytes == it->second.bytes, "checkpoint ", m.dir, ": ", file, " is ",
                   found.bytes, " bytes, the manifest records ", it->second.bytes,
                   " (truncated or replaced)");
  EMBTRAIN_REQUIRE(found.crc32c == it->second.crc32c, "checkpoint ", m.dir, ": ", file,
                   " is corrupt: its CRC-32C is ", crc32c_hex(found.crc32c),
                   ", the manifest records ", crc32c_hex(it->second.crc32c));
}

std::vector<std::string> manifest_files(const Manifest& m) {
  std::vector<std::string> files;
  for (const ManifestTable& t : m.tables)
    for (const ManifestShard& s : t.shards) {
      files.push_back(s.weights);
      files.push_back(s.state);
    }
  if (!m.dense.empty()) files.push_back(m.dense);
  files.insert(files.end(), m.texts.begin(), m.texts.end());
  return files;
}

json manifest_json(const Manifest& m) {
  json tables = json::array();
  for (const ManifestTable& t : m.tables) {
    const ShardPlan plan = t.plan();
    json shards = json::array();
    for (const ManifestShard& s : t.shards) {
      json js = {{"rank", s.rank}, {"rows", s.rows}, {"weights", s.weights}, {"state", s.state}};
      if (t.layout == ShardPlan::Layout::kBlock) js["row_begin"] = plan.row_begin(s.rank);
      shards.push_back(js);
    }
    tables.push_back({{"name", t.name}, {"rows", t.rows}, {"sharding", shard_layout_name(t.layout)},
                      {"dim", t.dim}, {"optimizer", t.optimizer}, {"state_width", t.state_width},
                      {"optimizer_step", t.optimizer_step}, {"shards", shards}});
  }
  json files = json::object();
  for (const auto& [name, sum] : m.files)
    files[name] = {{"bytes", sum.bytes}, {"crc32c", crc32c_hex(sum.crc32c)}};
  json j = {{"format", kCheckpointFormat}, {"version", m.version}, {"workload", m.workload},
            {"step", m.step}, {"ranks", m.ranks}, {"config", m.config},
            {"rng", {{"seed", m.seed}, {"next_step", m.step}}}, {"tables", tables},
            {"files", files}};
  if (!m.dense.empty()) j["dense"] = m.dense;
  if (!m.texts.empty()) j["texts"] = m.texts;
  if (m.progress.samples >= 0)
    j["progress"] = {{"samples", m.progress.samples},
                     {"global_batch", m.progress.global_batch},
                     {"epoch_samples", m.progress.epoch_samples}};
  return j;
}

}  // namespace embtrain
