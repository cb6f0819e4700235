#include "step_model.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <sstream>

#include "embtrain/errors.hpp"

namespace embtrain {
namespace app {

namespace {

// Phases whose work follows the lookups, and those that follow the rows
// an owner serves (its distinct ids); all but bucket_by_owner move rows.
const char* const kLookupPhases[] = {"bucket_by_owner", "expand", "reduce_requested"};
const char* const kRowPhases[] = {"gather_owned", "combine_at_owner", "update"};

template <typename T>
T field(const nlohmann::json& j, const char* key, const std::string& path) {
  EMBTRAIN_REQUIRE(j.is_object() && j.contains(key), "profile ", path, ": no field '", key,
                   "' (make one with 'embtrain bench --profile ", path, "')");
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(
        embtrain::detail::concat("profile ", path, ": field '", key, "' has the wrong type"));
  }
}

// "450GB/s" -> {450, "gb/s"}.
std::pair<double, std::string> number_and_unit(const std::string& text, const std::string& what) {
  size_t end = 0;
  double value = 0;
  try {
    value = std::stod(text, &end);
  } catch (const std::exception&) {
    end = 0;
  }
  EMBTRAIN_REQUIRE(end > 0 && std::isfinite(value) && value > 0, what, " = '", text,
                   "' is not a positive number with a unit");
  std::string unit = text.substr(end);
  unit.erase(
      std::remove_if(unit.begin(), unit.end(), [](unsigned char c) { return std::isspace(c); }),
      unit.end());
  std::transform(unit.begin(), unit.end(), unit.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return {value, unit};
}

double parse_time(const std::string& text, const std::string& what) {
  const auto [value, unit] = number_and_unit(text, what);
  const std::map<std::string, double> units = {{"s", 1}, {"ms", 1e-3}, {"us", 1e-6}, {"ns", 1e-9}};
  const auto it = units.find(unit);
  EMBTRAIN_REQUIRE(it != units.end(), what, " = '", text, "': unknown unit (valid: s, ms, us, ns)");
  return value * it->second;
}

}  // namespace

double parse_size(const std::string& text, const std::string& what) {
  const auto [value, unit] = number_and_unit(text, what);
  const std::map<std::string, double> units = {
      {"b", 1},           {"kb", 1e3},           {"mb", 1e6},
      {"gb", 1e9},        {"tb", 1e12},          {"kib", 1024},
      {"mib", 1048576.0}, {"gib", 1073741824.0}, {"tib", 1099511627776.0}};
  const auto it = units.find(unit);
  EMBTRAIN_REQUIRE(it != units.end(), what, " = '", text,
                   "': unknown unit (valid: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)");
  return value * it->second;
}

double parse_rate(const std::string& text, const std::string& what) {
  auto [value, unit] = number_and_unit(text, what);
  if (unit.size() > 2 && unit.compare(unit.size() - 2, 2, "/s") == 0) unit.resize(unit.size() - 2);
  if (unit.size() > 3 && unit.compare(unit.size() - 3, 3, "bps") == 0)
    unit = unit.substr(0, unit.size() - 3) + "bit";
  const std::map<std::string, double> units = {
      {"b", 1},       {"kb", 1e3},   {"mb", 1e6},      {"gb", 1e9},      {"tb", 1e12},
      {"bit", 0.125}, {"kbit", 125}, {"mbit", 1.25e5}, {"gbit", 1.25e8}, {"tbit", 1.25e11}};
  const auto it = units.find(unit);
  EMBTRAIN_REQUIRE(it != units.end(), what, " = '", text,
                   "': unknown unit (valid: GB/s, MB/s, Gbit/s, Mbit/s, ...)");
  return value * it->second;
}

Cluster parse_cluster(const std::string& text) {
  Cluster c;
  bool hosts = false, per_host = false;
  std::string item;
  for (std::istringstream in(text); std::getline(in, item, ',');) {
    const size_t eq = item.find('=');
    EMBTRAIN_REQUIRE(eq != std::string::npos, "option --cluster: '", item,
                     "' is not key=value (keys: hosts, gpus_per_host, intra, inter, "
                     "intra_latency, inter_latency, device_memory, host_memory)");
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    const std::string what = "option --cluster " + key;
    auto count = [&] {
      int n = 0;
      try {
        size_t end = 0;
        n = std::stoi(value, &end);
        if (end != value.size()) n = 0;
      } catch (const std::exception&) {
        n = 0;
      }
      EMBTRAIN_REQUIRE(n >= 1 && n <= 1000000, what, " = '", value,
                       "' is invalid (valid: 1 to 1000000)");
      return n;
    };
    if (key == "hosts")
      c.hosts = count(), hosts = true;
    else if (key == "gpus_per_host" || key == "ranks_per_host")
      c.per_host = count(), per_host = true;
    else if (key == "intra")
      c.intra_bps = parse_rate(value, what);
    else if (key == "inter")
      c.inter_bps = parse_rate(value, what);
    else if (key == "intra_latency")
      c.intra_latency_s = parse_time(value, what);
    else if (key == "inter_latency")
      c.inter_latency_s = parse_time(value, what);
    else if (key == "device_memory")
      c.device_bytes = parse_size(value, what);
    else if (key == "host_memory")
      c.host_bytes = parse_size(value, what);
    else
      throw Error(embtrain::detail::concat(
          "option --cluster: unknown key '", key,
          "' (valid: hosts, gpus_per_host, intra, inter, intra_latency, inter_latency, "
          "device_memory, host_memory)"));
  }
  EMBTRAIN_REQUIRE(hosts && per_host, "option --cluster = '", text,
                   "' needs hosts=N and gpus_per_host=G");
  EMBTRAIN_REQUIRE(c.inter_bps > 0 || c.hosts == 1, "option --cluster = '", text,
                   "' needs inter=RATE (each rank's bandwidth to other hosts)");
  EMBTRAIN_REQUIRE(c.intra_bps > 0 || c.per_host == 1, "option --cluster = '", text,
                   "' needs intra=RATE (each rank's bandwidth inside its host)");
  return c;
}

double expected_distinct_zipf(int64_t rows, double alpha, double draws, double pad_frac) {
  const int64_t n = rows - 1;
  const double real = draws * (1 - pad_frac);
  if (n < 1) return draws > 0 ? 1 : 0;
  // Ids 1..2^20 one by one, then blocks of ids whose probability differs
  // by under 0.1% (a table of 10^10 rows costs ~20k blocks, not 10^10 terms).
  struct Block {
    double first, count;
  };
  std::vector<Block> blocks;
  const double exact = std::min<double>(static_cast<double>(n), 1 << 20);
  for (double k = 1; k <= exact; ++k) blocks.push_back({k, 1});
  for (double k = exact + 1; k <= static_cast<double>(n);) {
    const double count =
        std::min(std::max(1.0, std::floor(k * 1e-3)), static_cast<double>(n) - k + 1);
    blocks.push_back({k, count});
    k += count;
  }
  auto weight = [&](const Block& b) { return std::pow(b.first + (b.count - 1) / 2, -alpha); };
  double sum = 0;
  for (const Block& b : blocks) sum += b.count * weight(b);
  double distinct = 0;
  for (const Block& b : blocks) {
    const double p = weight(b) / sum;
    distinct += b.count * -std::expm1(real * std::log1p(-std::min(p, 1 - 1e-16)));
  }
  // The padding id is among the distinct ids when any position is padding.
  return distinct +
         (pad_frac > 0 ? -std::expm1(draws * std::log1p(-std::min(pad_frac, 1 - 1e-16))) : 0);
}

nlohmann::json profile_json(const MachineProfile& p) {
  nlohmann::json engines = nlohmann::json::object();
  for (const auto& [name, e] : p.engines)
    engines[name] = {{"ranks", e.ranks},
                     {"threads", e.threads},
                     {"dim", e.dim},
                     {"optimizer", e.optimizer},
                     {"lookups_per_rank", e.lookups},
                     {"distinct_per_rank", e.distinct},
                     {"step_ms", e.step_ms},
                     {"phase_ms", e.ms},
                     {"wait_ms", e.wait_ms},
                     {"wire_bytes", e.wire_bytes},
                     {"counts", e.counts}};
  nlohmann::json points = nlohmann::json::array();
  for (const auto& [bytes, ms] : p.alltoall.points)
    points.push_back({{"bytes_per_rank", bytes}, {"ms", ms}});
  return {{"kind", "embtrain machine profile"},
          {"version", 1},
          {"host", p.host},
          {"cpu", p.cpu},
          {"device", p.device},
          {"gpu", p.gpu},
          {"copy_bandwidth_gbps", p.copy_bandwidth_gbps},
          {"engines", engines},
          {"alltoall",
           {{"measured", p.alltoall.measured},
            {"ranks", p.alltoall.ranks},
            {"latency_us", p.alltoall.latency_us},
            {"bandwidth_gbps", p.alltoall.bandwidth_gbps},
            {"note", p.alltoall.note},
            {"points", points}}}};
}

MachineProfile profile_from_json(const nlohmann::json& j, const std::string& path) {
  EMBTRAIN_REQUIRE(j.is_object() && j.value("kind", "") == "embtrain machine profile", "profile ",
                   path,
                   ": not an embtrain machine profile (make one with 'embtrain bench "
                   "--profile ",
                   path, "')");
  MachineProfile p;
  p.host = field<std::string>(j, "host", path);
  p.cpu = field<std::string>(j, "cpu", path);
  p.device = field<std::string>(j, "device", path);
  p.gpu = j.value("gpu", "");
  p.copy_bandwidth_gbps = field<double>(j, "copy_bandwidth_gbps", path);
  const nlohmann::json engines = field<nlohmann::json>(j, "engines", path);
  EMBTRAIN_REQUIRE(engines.is_object() && !engines.empty(), "profile ", path,
                   ": field 'engines' holds no engine");
  for (const auto& [name, e] : engines.items()) {
    PhaseCosts c;
    c.ranks = field<int>(e, "ranks", path);
    c.threads = field<int>(e, "threads", path);
    c.dim = field<int64_t>(e, "dim", path);
    c.optimizer = field<std::string>(e, "optimizer", path);
    c.lookups = field<double>(e, "lookups_per_rank", path);
    c.distinct = field<double>(e, "distinct_per_rank", path);
    c.step_ms = field<double>(e, "step_ms", path);
    c.ms = field<std::map<std::string, double>>(e, "phase_ms", path);
    if (e.contains("wait_ms")) c.wait_ms = field<std::map<std::string, double>>(e, "wait_ms", path);
    c.wire_bytes = e.value("wire_bytes", 4);
    c.counts = e.value("counts", false);
    EMBTRAIN_REQUIRE(c.lookups > 0 && c.distinct > 0 && c.dim > 0, "profile ", path, ": engine '",
                     name, "' has no lookups, distinct ids or dim");
    p.engines[name] = c;
  }
  const nlohmann::json a = field<nlohmann::json>(j, "alltoall", path);
  p.alltoall.measured = field<bool>(a, "measured", path);
  p.alltoall.ranks = field<int>(a, "ranks", path);
  p.alltoall.latency_us = field<double>(a, "latency_us", path);
  p.alltoall.bandwidth_gbps = field<double>(a, "bandwidth_gbps", path);
  p.alltoall.note = a.value("note", "");
  return p;
}

MachineProfile read_profile(const std::string& path) {
  std::ifstream in(path);
  EMBTRAIN_REQUIRE(in, "option --profile = '", path,
                   "': cannot open for reading (make one with 'embtrain bench --profile ", path,
                   "')");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    throw Error(embtrain::detail::concat("profile ", path, ": not JSON (", e.what(), ")"));
  }
  return profile_from_json(j, path);
}

namespace {

// Each exchange as all-to-alls of the raw collective (see the header).
std::vector<Prediction::Part> exchange_model(const MachineProfile& profile, const StepShape& shape,
                                             int ranks, const Cluster* cluster,
                                             std::vector<std::string>* notes) {
  std::vector<Prediction::Part> parts;
  const double P = ranks, away = shape.distinct * (P - 1) / P;
  const double row = static_cast<double>(shape.dim) * shape.wire_bytes;
  // Each all-to-all: bytes sent per rank.
  struct A {
    const char* stage;
    double bytes;
  };
  std::vector<A> alls = {{"exchange_ids", (P - 1) * 8.0 * shape.tables},
                         {"exchange_ids", away * 8},
                         {"exchange_rows", away * row},
                         {"exchange_grads", away * row}};
  if (shape.counts) alls.push_back({"exchange_grads", away * 4});
  double latency_s = 0, bandwidth = 0;
  if (!cluster) {
    if (profile.alltoall.measured) {
      latency_s = profile.alltoall.latency_us * 1e-6;
      bandwidth = profile.alltoall.bandwidth_gbps * 1e9;
    } else {
      bandwidth = profile.copy_bandwidth_gbps * 1e9 / 2;
      if (notes)
        notes->push_back(
            "the profile's all-to-all was not measured (" + profile.alltoall.note +
            "): exchanges taken at half the copy bandwidth with no latency; make the profile "
            "under mpirun -np 2 or more");
    }
  }
  for (const char* stage : {"exchange_ids", "exchange_rows", "exchange_grads"}) {
    Prediction::Part part{stage};
    for (const A& a : alls) {
      if (std::string(a.stage) != stage) continue;
      ++part.alltoalls;
      part.bytes += a.bytes;
      part.messages = P - 1;
      if (!cluster) {
        part.ms += 1e3 * (latency_s * (P - 1) + a.bytes / bandwidth);
      } else {
        const double G = std::min<double>(cluster->per_host, P);
        const double intra = a.bytes * (G - 1) / (P - 1), inter = a.bytes - intra;
        if (G > 1)
          part.ms += 1e3 * (cluster->intra_latency_s * (G - 1) + intra / cluster->intra_bps);
        if (P > G)
          part.ms += 1e3 * (cluster->inter_latency_s * (P - G) + inter / cluster->inter_bps);
      }
    }
    part.network_ms = part.ms;
    parts.push_back(part);
  }
  return parts;
}

}  // namespace

Prediction predict_step(const MachineProfile& profile, const StepShape& shape, int ranks,
                        const Cluster* cluster) {
  Prediction out;
  const bool sharded = ranks > 1;
  const char* want = sharded ? "sharded" : "local";
  auto it = profile.engines.find(want);
  if (it == profile.engines.end()) {
    it = profile.engines.begin();
    out.notes.push_back(embtrain::detail::concat(
        "the profile has no ", want, " engine's phases: ", it->first,
        "'s used (run 'embtrain bench --profile' ",
        sharded ? "under mpirun -np 2" : "with one rank", " into the same file to add them)"));
  }
  out.engine = it->first;
  const PhaseCosts& c = it->second;
  const double scale = static_cast<double>(shape.dim) / static_cast<double>(c.dim);
  if (shape.dim != c.dim)
    out.notes.push_back(embtrain::detail::concat("rows of dim ", shape.dim,
                                                 " against the profile's ", c.dim,
                                                 ": phases that move rows scaled by ", scale));
  for (const char* name : kLookupPhases) {
    const auto ms = c.ms.find(name);
    const double per = ms == c.ms.end() ? 0 : ms->second / c.lookups;
    out.phases.push_back(
        {name, per * shape.lookups * (std::string(name) == "bucket_by_owner" ? 1 : scale)});
  }
  for (const char* name : kRowPhases) {
    const auto ms = c.ms.find(name);
    const double per = ms == c.ms.end() ? 0 : ms->second / c.distinct;
    out.phases.push_back({name, per * shape.distinct * scale});
  }
  // Step order.
  const std::vector<std::string> order = {"bucket_by_owner",  "gather_owned",     "expand",
                                          "reduce_requested", "combine_at_owner", "update"};
  std::sort(out.phases.begin(), out.phases.end(), [&](const auto& a, const auto& b) {
    return std::find(order.begin(), order.end(), a.name) <
           std::find(order.begin(), order.end(), b.name);
  });
  // The phases are means over the profile's steps, each the max over ranks,
  // its step a median: their sum is above the step (a few slow steps, a
  // busy moment, and each phase's slowest rank, which is not the same rank
  // in every phase). The parts measured on this machine are scaled by one
  // factor that makes the profile's own step come out at its median: the
  // machine-bound ones (local phases, the engine's own exchange cost), and
  // the all-to-alls too where the prediction is for the profile's own
  // network (no --cluster, and the profile's step crossed it).
  std::vector<Prediction::Part> own;  // the profile's own step's all-to-alls
  if (c.ranks > 1) {
    StepShape measured;
    measured.lookups = c.lookups;
    measured.distinct = c.distinct;
    measured.dim = c.dim;
    measured.wire_bytes = c.wire_bytes;
    measured.counts = c.counts;
    own = exchange_model(profile, measured, c.ranks, nullptr, nullptr);
  }
  double local0 = 0, engine0 = 0, network0 = 0, local = 0;
  for (const auto& p : out.phases) local += p.ms;
  for (const auto& [name, ms] : c.ms) {
    const auto o =
        std::find_if(own.begin(), own.end(), [&](const auto& p) { return p.name == name; });
    if (name.compare(0, 9, "exchange_") != 0)
      local0 += ms;
    else if (o != own.end())
      engine0 += std::max(0.0, ms - o->ms), network0 += o->ms;
  }
  const bool same_network = !cluster && c.ranks > 1;
  const double machine = same_network ? c.step_ms / (local0 + engine0 + network0)
                                      : (c.step_ms - network0) / (local0 + engine0);
  out.calibration = machine > 0 && std::isfinite(machine) ? machine : 1;
  out.network_calibrated = same_network;
  for (auto& p : out.phases) p.ms *= out.calibration, out.step_ms += p.ms;

  if (ranks > 1) {
    std::vector<Prediction::Part> model =
        exchange_model(profile, shape, ranks, cluster, &out.notes);
    if (c.ranks > 1 && c.ranks != ranks && !cluster)
      out.notes.push_back(
          embtrain::detail::concat("the profile's sharded run had ", c.ranks, " ranks, this run ",
                                   ranks, ": its local phases and all-to-all are those of ",
                                   c.ranks, " ranks sharing the machine (profile at ", ranks,
                                   " ranks where they share cores, "
                                   "e.g. emulated hosts)"));
    if (c.ranks < 2)
      out.notes.push_back(
          "the profile has no sharded run: exchanges are the raw all-to-all "
          "alone (no packing, no waiting for the slowest rank)");
    for (size_t i = 0; i < model.size(); ++i) {
      Prediction::Part& part = model[i];
      if (same_network) part.network_ms *= out.calibration, part.ms = part.network_ms;
      if (!own.empty()) {
        // Above the raw all-to-all: the wait for the slowest rank follows
        // how long the ranks work before the exchange (their local phases,
        // unevenly done), the rest (packing, rendezvous) the rows moved.
        const auto ms = c.ms.find(part.name);
        const auto w = c.wait_ms.find(part.name);
        const double extra = ms == c.ms.end() ? 0 : std::max(0.0, ms->second - own[i].ms);
        const double wait = w == c.wait_ms.end() ? 0 : std::min(extra, w->second);
        part.wait_ms = local0 > 0 ? wait * local / local0 * out.calibration : 0;
        part.engine_ms =
            (extra - wait) * shape.distinct / c.distinct * out.calibration + part.wait_ms;
        part.ms += part.engine_ms;
      }
      out.step_ms += part.ms;
      out.exchanges.push_back(part);
    }
  }
  if (cluster && profile.device == "cpu")
    out.notes.push_back(
        "local phases from a CPU profile: for a GPU cluster make the profile on "
        "one of its GPUs ('embtrain bench --device cuda --profile OUT.json')");
  return out;
}

}  // namespace app
}  // namespace embtrain
