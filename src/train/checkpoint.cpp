#include "embtrain/checkpoint.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "embtrain/errors.hpp"
#include "embtrain/npy.hpp"

namespace embtrain {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kFormat = "embtrain-checkpoint";
constexpr int kVersion = 1;

std::string step_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step_%08lld", static_cast<long long>(step));
  return name;
}

std::string shard_file(const std::string& table, int rank, const char* what) {
  return table + ".rank" + std::to_string(rank) + "." + what + ".npy";
}

// Writes `text` to `path` through a temporary file and a rename.
void write_file_atomic(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    out.flush();
    EMBTRAIN_REQUIRE(out, tmp.string(), ": write failed");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  EMBTRAIN_REQUIRE(!ec, path.string(), ": cannot rename into place: ", ec.message());
}

json read_manifest(const std::string& dir) {
  const fs::path path = fs::path(dir) / "manifest.json";
  std::ifstream in(path);
  EMBTRAIN_REQUIRE(in, path.string(), ": cannot open checkpoint manifest");
  json m;
  try {
    in >> m;
  } catch (const json::exception& e) {
    throw make_error(path.string(), ": malformed checkpoint manifest: ", e.what());
  }
  // Compared as JSON values, which never throws: a "format" that is not a
  // string (or a manifest that is not an object) is simply not ours.
  EMBTRAIN_REQUIRE(m.is_object() && m.value("format", json()) == kFormat &&
                       m.value("version", json()) == kVersion,
                   path.string(), ": not an embtrain checkpoint manifest of version ", kVersion);
  return m;
}

const json& manifest_table(const json& m, const std::string& name, const std::string& dir) {
  for (const json& t : m.at("tables"))
    if (t.at("name") == name) return t;
  throw make_error("checkpoint ", dir, " has no table '", name, "'");
}

// How a checkpoint's table was sharded when it was saved: the manifest's
// "sharding" (block before it had the key) over its shards.
ShardPlan saved_plan(const json& table, const std::string& dir) {
  const int64_t rows = table.at("rows");
  const json& shards = table.at("shards");
  const ShardPlan plan(rows, static_cast<int>(shards.size()),
                       parse_shard_layout(table.value("sharding", "block")));
  for (const json& shard : shards) {
    const int r = shard.at("rank");
    EMBTRAIN_REQUIRE(r >= 0 && r < plan.num_ranks() && shard.at("rows") == plan.shard_rows(r),
                     "checkpoint ", dir, ": table '", table.at("name").get<std::string>(),
                     "': shard of rank ", r, " holds ", shard.at("rows").get<int64_t>(),
                     " rows, not the ", r >= 0 && r < plan.num_ranks() ? plan.shard_rows(r) : 0,
                     " of a ", shard_layout_name(plan.layout()), " plan of ", plan.num_ranks(),
                     " ranks");
  }
  return plan;
}

// Copies the rows `plan` gives `rank` (in local order) of a table from the
// checkpoint's shards into `out` (width floats per row), reading only the
// shards that hold some of them: a checkpoint of any number of ranks loads
// into any other.
void read_rows(const std::string& dir, const json& table, const char* what, const ShardPlan& plan,
               int rank, int64_t width, float* out) {
  if (width == 0 || plan.shard_rows(rank) == 0) return;
  const ShardPlan saved = saved_plan(table, dir);
  for (const json& shard : table.at("shards")) {
    const int s = shard.at("rank");
    std::vector<std::pair<int64_t, int64_t>> moves;  // (row here, row in the shard)
    for (int64_t k = 0; k < plan.shard_rows(rank); ++k) {
      const int64_t row = plan.global_row(rank, k);
      if (saved.owner(row) == s) moves.emplace_back(k, saved.local_row(row));
    }
    if (moves.empty()) continue;
    const std::string path = (fs::path(dir) / shard.at(what).get<std::string>()).string();
    const NpyArray a = read_npy(path);
    const std::vector<int64_t> want{saved.shard_rows(s), width};
    EMBTRAIN_REQUIRE(a.dtype == DType::kFloat32 && a.shape == want,
                     path, ": expected float32 of shape (", want[0], ", ", width, "), got ",
                     dtype_name(a.dtype), " of shape ", shape_to_string(a.shape));
    for (const auto& [here, there] : moves)
      std::copy_n(a.as<float>() + there * width, width, out + here * width);
  }
}

}  // namespace

namespace {

// The manifest of a checkpoint of `tables` at info.step.
json manifest_of(const CheckpointInfo& info, ShardedEmbedding& tables) {
  Communicator& comm = tables.comm();
  json m = {{"format", kFormat},     {"version", kVersion},        {"workload", info.workload},
            {"step", info.step},     {"ranks", comm.size()},       {"config", info.config},
            {"rng", {{"seed", info.seed}, {"next_step", info.step}}}};
  json jt = json::array();
  for (int t = 0; t < tables.num_tables(); ++t) {
    const EmbeddingTable& shard = std::as_const(tables).shard(t);  // no re-upload
    const TableSpec& spec = shard.spec();
    const ShardPlan& plan = tables.plan(t);
    json shards = json::array();
    for (int r = 0; r < comm.size(); ++r) {
      json shard = {{"rank", r},
                    {"rows", plan.shard_rows(r)},
                    {"weights", shard_file(spec.name, r, "weights")},
                    {"state", shard_file(spec.name, r, "state")}};
      if (plan.layout() == ShardPlan::Layout::kBlock) shard["row_begin"] = plan.row_begin(r);
      shards.push_back(shard);
    }
    jt.push_back({{"name", spec.name},
                  {"rows", spec.num_embeddings},
                  {"sharding", shard_layout_name(plan.layout())},
                  {"dim", spec.dim},
                  {"optimizer", optimizer_name(spec.optimizer.kind)},
                  {"state_width", shard.state_width()},
                  {"optimizer_step", shard.step()},
                  {"shards", shards}});
  }
  m["tables"] = jt;
  return m;
}

// Moves the finished `tmp_dir` to `final_dir`: an older copy of the same
// step (a re-save after a resume) goes first; `latest` moves only once the
// new folder is whole. Then only the newest `keep` checkpoints stay.
void swap_into_place(const fs::path& root, const fs::path& tmp_dir, const fs::path& final_dir,
                     int64_t step, int keep) {
  std::error_code ec;
  fs::remove_all(final_dir, ec);
  fs::rename(tmp_dir, final_dir, ec);
  EMBTRAIN_REQUIRE(!ec, final_dir.string(), ": cannot rename checkpoint into place: ",
                   ec.message());
  write_file_atomic(root / "latest", step_name(step) + "\n");
  if (keep <= 0) return;
  std::vector<fs::path> steps;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory() && e.path().filename().string().rfind("step_", 0) == 0)
      steps.push_back(e.path());
  std::sort(steps.begin(), steps.end());
  for (size_t i = 0; i + keep < steps.size(); ++i) fs::remove_all(steps[i], ec);
}

}  // namespace

std::string save_checkpoint(const std::string& root, const CheckpointInfo& info,
                            ShardedEmbedding& tables, const std::vector<float>* dense, int keep) {
  Communicator& comm = tables.comm();
  const bool is_root = comm.rank() == 0;
  const fs::path final_dir = fs::path(root) / step_name(info.step);
  const fs::path tmp_dir = fs::path(root) / ("." + step_name(info.step) + ".tmp");

  run_agreed(comm, [&] {
    if (!is_root) return;
    std::error_code ec;
    fs::create_directories(root, ec);
    EMBTRAIN_REQUIRE(!ec, root, ": cannot create checkpoint folder: ", ec.message());
    fs::remove_all(tmp_dir, ec);
    fs::create_directories(tmp_dir, ec);
    EMBTRAIN_REQUIRE(!ec, tmp_dir.string(), ": cannot create folder: ", ec.message());
  });
  run_agreed(comm, [&] {
    for (int t = 0; t < tables.num_tables(); ++t) {
      const EmbeddingTable& shard = std::as_const(tables).shard(t);  // no re-upload
      const std::string& name = shard.spec().name;
      write_npy((tmp_dir / shard_file(name, comm.rank(), "weights")).string(), DType::kFloat32,
                {shard.num_rows(), shard.dim()}, shard.weights().data());
      write_npy((tmp_dir / shard_file(name, comm.rank(), "state")).string(), DType::kFloat32,
                {shard.num_rows(), shard.state_width()}, shard.state().data());
    }
  });
  run_agreed(comm, [&] {
    if (!is_root) return;
    json m = manifest_of(info, tables);
    if (dense) {
      write_npy((tmp_dir / "dense.npy").string(), DType::kFloat32,
                {static_cast<int64_t>(dense->size())}, dense->data());
      m["dense"] = "dense.npy";
    }
    write_file_atomic(tmp_dir / "manifest.json", m.dump(2) + "\n");
    swap_into_place(root, tmp_dir, final_dir, info.step, keep);
  });
  return final_dir.string();
}

std::string resolve_checkpoint(const std::string& path) {
  const fs::path p(path);
  if (fs::exists(p / "manifest.json")) return p.string();
  const fs::path latest = p / "latest";
  if (!fs::exists(latest)) {
    EMBTRAIN_REQUIRE(!fs::exists(p) || fs::is_directory(p), path,
                     ": not a checkpoint folder or checkpoint root");
    return "";
  }
  std::ifstream in(latest);
  std::string name;
  std::getline(in, name);
  const fs::path dir = p / name;
  EMBTRAIN_REQUIRE(!name.empty() && fs::exists(dir / "manifest.json"), latest.string(),
                   ": names '", name, "', which is not a checkpoint folder");
  return dir.string();
}

CheckpointInfo read_checkpoint_info(const std::string& dir) {
  const json m = read_manifest(dir);
  CheckpointInfo info;
  try {
    info.workload = m.value("workload", "");
    info.step = m.at("step");
    info.seed = m.at("rng").at("seed");
    info.config = m.value("config", "");
  } catch (const json::exception& e) {
    throw make_error("checkpoint ", dir, ": malformed manifest: ", e.what());
  }
  return info;
}

namespace {
void load_into(const std::string& dir, ShardedEmbedding& tables, std::vector<float>* dense,
               CheckpointInfo* info_out);
}  // namespace

CheckpointInfo load_checkpoint(const std::string& dir, ShardedEmbedding& tables,
                               std::vector<float>* dense) {
  Communicator& comm = tables.comm();
  CheckpointInfo info;
  run_agreed(comm, [&] {
    try {
      load_into(dir, tables, dense, &info);
    } catch (const json::exception& e) {
      throw make_error("checkpoint ", dir, ": malformed manifest: ", e.what());
    }
  });
  return info;
}

namespace {
// The body of load_checkpoint, outside the error agreement.
void load_into(const std::string& dir, ShardedEmbedding& tables, std::vector<float>* dense,
               CheckpointInfo* info_out) {
  CheckpointInfo& info = *info_out;
  {
    const json m = read_manifest(dir);
    info = read_checkpoint_info(dir);
    for (int t = 0; t < tables.num_tables(); ++t) {
      EmbeddingTable& shard = tables.shard(t);
      const TableSpec& spec = shard.spec();
      const json& jt = manifest_table(m, spec.name, dir);
      const int64_t rows = jt.at("rows"), dim = jt.at("dim"), width = jt.at("state_width");
      const std::string opt = jt.at("optimizer");
      EMBTRAIN_REQUIRE(rows == spec.num_embeddings && dim == spec.dim, "checkpoint ", dir,
                       ": table '", spec.name, "' is ", rows, " x ", dim,
                       " but the configuration asks for ", spec.num_embeddings, " x ", spec.dim);
      EMBTRAIN_REQUIRE(opt == optimizer_name(spec.optimizer.kind) && width == shard.state_width(),
                       "checkpoint ", dir, ": table '", spec.name, "' was trained with optimizer ",
                       opt, " (state width ", width, ") but the configuration asks for ",
                       optimizer_name(spec.optimizer.kind), " (state width ",
                       shard.state_width(), ")");
      read_rows(dir, jt, "weights", shard.plan(), shard.rank(), dim, shard.weights().data());
      read_rows(dir, jt, "state", shard.plan(), shard.rank(), width, shard.state().data());
      shard.set_step(jt.at("optimizer_step"));
    }
    if (dense) {
      EMBTRAIN_REQUIRE(m.contains("dense"), "checkpoint ", dir, " has no dense parameters");
      const std::string path = (fs::path(dir) / m.at("dense").get<std::string>()).string();
      const NpyArray a = read_npy(path);
      EMBTRAIN_REQUIRE(a.dtype == DType::kFloat32 && a.numel() == static_cast<int64_t>(dense->size()),
                       path, ": expected ", dense->size(), " float32 dense parameters, got ",
                       a.numel(), " ", dtype_name(a.dtype));
      std::copy(a.as<float>(), a.as<float>() + a.numel(), dense->begin());
    }
  }
}
}  // namespace

std::vector<float> read_checkpoint_table(const std::string& dir, const std::string& table,
                                         int64_t* rows, int64_t* dim) {
  const json m = read_manifest(dir);
  try {
    const json& jt = manifest_table(m, table, dir);
    *rows = jt.at("rows");
    *dim = jt.at("dim");
    std::vector<float> out(static_cast<size_t>(*rows * *dim));
    read_rows(dir, jt, "weights", ShardPlan(*rows, 1), 0, *dim, out.data());
    return out;
  } catch (const json::exception& e) {
    throw make_error("checkpoint ", dir, ": malformed manifest: ", e.what());
  }
}

}  // namespace embtrain
