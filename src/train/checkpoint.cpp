#include "embtrain/checkpoint.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <regex>
#include <sstream>
#include <utility>

#include "checkpoint_manifest.hpp"
#include "durable_file.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/npy.hpp"

namespace embtrain {

namespace fs = std::filesystem;

namespace {

std::string step_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step_%08lld", static_cast<long long>(step));
  return name;
}

// The step of a folder name "step_N" (or of a ".step_N.old" set aside by an
// interrupted re-save), or -1.
int64_t step_of(const std::string& name, bool aside = false) {
  static const std::regex plain("step_([0-9]{1,18})"), old("\\.step_([0-9]{1,18})\\.old");
  std::smatch match;
  if (!std::regex_match(name, match, aside ? old : plain)) return -1;
  return std::stoll(match[1].str());
}

// Runs `work`, turning a file-system exception (permissions, a vanished
// folder) into an Error that run_agreed shares with every rank.
template <typename Work>
void as_error(const Work& work) {
  try {
    work();
  } catch (const fs::filesystem_error& e) {
    throw make_error(e.what());
  }
}

bool is_stale_temporary(const std::string& name) {
  static const std::regex tmp("\\.step_[0-9]+\\.tmp|latest\\.tmp");
  return std::regex_match(name, tmp);
}

}  // namespace

int64_t first_nonfinite_row(const float* data, int64_t rows, int64_t width) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < width; ++k)
      if (!std::isfinite(data[r * width + k])) return r;
  return -1;
}

namespace {

// Calls visit(first, n, rows) for this rank's shard of table t, n rows
// (width floats each) from local row `first` at a time: the host rows
// themselves on the CPU, a transfer chunk read into `buffer` on a GPU.
template <typename Visit>
void for_each_chunk(const ShardedEmbedding& tables, int t, TablePart part, Visit visit) {
  const int64_t width = tables.width(t, part);
  const EmbeddingTable& shard = tables.shard(t);
  const int64_t rows = shard.num_rows();
  if (width == 0 || rows == 0) return;
  if (!tables.on_gpu()) {
    visit(0, rows, (part == TablePart::kWeights ? shard.weights() : shard.state()).data());
    return;
  }
  const int64_t chunk = transfer_chunk_rows(width);
  std::vector<float> buffer(static_cast<size_t>(std::min(chunk, rows) * width));
  for (int64_t first = 0; first < rows; first += chunk) {
    const int64_t n = std::min(chunk, rows - first);
    tables.read_rows(t, part, first, n, buffer.data());
    visit(first, n, buffer.data());
  }
}

}  // namespace

int64_t first_nonfinite_row(const ShardedEmbedding& tables, int t, TablePart part) {
  int64_t found = -1;
  const int64_t width = tables.width(t, part);
  for_each_chunk(tables, t, part, [&](int64_t first, int64_t n, const float* rows) {
    if (found >= 0) return;
    const int64_t bad = first_nonfinite_row(rows, n, width);
    if (bad >= 0) found = first + bad;
  });
  return found;
}

namespace {

// ---------------------------------------------------------------- save

// Removes what dead runs left in `root`: temporary folders and files, and
// a checkpoint set aside by an interrupted re-save once its step is back in
// place (else it is moved back). Never a complete step_N folder.
void clean_stale(const fs::path& root) {
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    std::error_code ec;
    if (is_stale_temporary(name)) {
      fs::remove_all(e.path(), ec);
    } else if (const int64_t step = step_of(name, /*aside=*/true); step >= 0) {
      const fs::path back = root / step_name(step);
      if (fs::exists(back)) fs::remove_all(e.path(), ec);
      else fs::rename(e.path(), back, ec);
    }
    EMBTRAIN_REQUIRE(!ec, e.path().string(), ": cannot clean up: ", ec.message());
  }
}

void prepare_root(const fs::path& root, const fs::path& tmp_dir) {
  std::error_code ec;
  fs::create_directories(root, ec);
  EMBTRAIN_REQUIRE(!ec, root.string(), ": cannot create checkpoint folder: ", ec.message());
  clean_stale(root);
  fs::create_directories(tmp_dir, ec);
  EMBTRAIN_REQUIRE(!ec, tmp_dir.string(), ": cannot create folder: ", ec.message());
}

// Where rank r's table t's sums are in the gathered array: 4 numbers each
// (weights bytes, weights crc, state bytes, state crc).
size_t sum_slot(int rank, int t, int num_tables) {
  return (static_cast<size_t>(rank) * num_tables + t) * 4;
}

// Each rank writes and fsyncs its shards, a chunk at a time; every rank
// gets every file's size and checksum. A table holding a NaN or an
// infinity is refused (a checkpoint is what a run falls back to, so it
// must hold numbers), checked chunk by chunk as it is written, so a device
// table crosses to the host once; the caller removes the folder then.
std::vector<int64_t> write_shards(const fs::path& tmp_dir, ShardedEmbedding& tables,
                                  int64_t step) {
  Communicator& comm = tables.comm();
  const int T = tables.num_tables();
  std::vector<int64_t> sums(sum_slot(comm.size(), 0, T), 0);
  run_agreed(comm, [&] {
    for (int t = 0; t < T; ++t) {
      const EmbeddingTable& shard = std::as_const(tables).shard(t);  // no re-upload
      const std::string& name = shard.spec().name;
      const std::pair<const char*, TablePart> parts[] = {{"weights", TablePart::kWeights},
                                                         {"state", TablePart::kState}};
      for (int k = 0; k < 2; ++k) {
        const std::string path = (tmp_dir / shard_file(name, comm.rank(), parts[k].first)).string();
        const int64_t width = tables.width(t, parts[k].second);
        NpyWriter npy(path, DType::kFloat32, {shard.num_rows(), width});
        for_each_chunk(tables, t, parts[k].second, [&](int64_t first, int64_t n, const float* rows) {
          const int64_t bad = first_nonfinite_row(rows, n, width);
          EMBTRAIN_REQUIRE(bad < 0, "checkpoint at step ", step, ": table '", name, "' row ",
                           shard.plan().global_row(shard.rank(), first + bad), " (rank ",
                           shard.rank(), ") holds a non-finite ",
                           k == 0 ? "weight" : "optimizer state value",
                           "; refusing to save it (a checkpoint holds finite values only)");
          npy.write(rows, n * width * static_cast<int64_t>(sizeof(float)));
        });
        npy.finish();
        const FileSum sum = seal_file(path);
        sums[sum_slot(comm.rank(), t, T) + 2 * k] = sum.bytes;
        sums[sum_slot(comm.rank(), t, T) + 2 * k + 1] = sum.crc32c;
      }
    }
  });
  comm.allreduce(sums.data(), static_cast<int64_t>(sums.size()), CommType::kInt64, ReduceOp::kSum);
  return sums;
}

// The manifest of a checkpoint of `tables` at info.step, with the sums of
// the shards' files.
Manifest manifest_of(const CheckpointInfo& info, ShardedEmbedding& tables,
                     const std::vector<int64_t>& sums) {
  Communicator& comm = tables.comm();
  Manifest m;
  m.version = kCheckpointVersion;
  m.workload = info.workload;
  m.config = info.config;
  m.step = info.step;
  m.ranks = comm.size();
  m.seed = info.seed;
  m.progress = info.progress;
  for (const auto& [name, text] : info.files) m.texts.push_back(name);
  for (int t = 0; t < tables.num_tables(); ++t) {
    const EmbeddingTable& shard = std::as_const(tables).shard(t);  // no re-upload
    const TableSpec& spec = shard.spec();
    ManifestTable mt{spec.name, optimizer_name(spec.optimizer.kind), spec.num_embeddings,
                     spec.dim, shard.state_width(), shard.step(), tables.plan(t).layout(), {}};
    for (int r = 0; r < comm.size(); ++r) {
      mt.shards.push_back({r, tables.plan(t).shard_rows(r), shard_file(spec.name, r, "weights"),
                           shard_file(spec.name, r, "state")});
      const size_t at = sum_slot(r, t, tables.num_tables());
      m.files[mt.shards.back().weights] = {sums[at], static_cast<uint32_t>(sums[at + 1])};
      m.files[mt.shards.back().state] = {sums[at + 2], static_cast<uint32_t>(sums[at + 3])};
    }
    m.tables.push_back(std::move(mt));
  }
  return m;
}

// Moves the finished `tmp_dir` to `final_dir`. An older copy of the same
// step (a re-save after a resume) is swapped out atomically, or set aside
// where the file system cannot swap, and is deleted only after `latest`
// names the new one: no moment without a complete checkpoint of the step.
void swap_into_place(const fs::path& root, const fs::path& tmp_dir, const fs::path& final_dir,
                     int64_t step) {
  std::error_code ec;
  const fs::path aside = root / ("." + step_name(step) + ".old");
  if (!fs::exists(final_dir)) {
    fs::rename(tmp_dir, final_dir, ec);
  } else if (!exchange_paths(tmp_dir.string(), final_dir.string())) {
    fs::rename(final_dir, aside, ec);
    if (!ec) fs::rename(tmp_dir, final_dir, ec);
  }
  EMBTRAIN_REQUIRE(!ec, final_dir.string(), ": cannot rename checkpoint into place: ",
                   ec.message());
  sync_folder(root.string());
  write_text_durable((root / "latest").string(), step_name(step) + "\n");
  fs::remove_all(tmp_dir, ec);  // the old copy, when it was swapped out
  fs::remove_all(aside, ec);
}

// Only the newest `keep` checkpoints stay, the one just written always.
void prune(const fs::path& root, const fs::path& final_dir, int keep) {
  if (keep <= 0) return;
  std::vector<std::pair<int64_t, fs::path>> steps;
  for (const auto& e : fs::directory_iterator(root)) {
    const int64_t step = step_of(e.path().filename().string());
    if (step >= 0 && e.is_directory() && e.path() != final_dir) steps.emplace_back(step, e.path());
  }
  std::sort(steps.begin(), steps.end());
  std::error_code ec;
  for (size_t i = 0; i + static_cast<size_t>(keep) < steps.size() + 1; ++i) fs::remove_all(steps[i].second, ec);
}

// Rank 0, once every shard is on disk: dense parameters, the text files,
// the manifest, and the renames.
void finish_save(const fs::path& root, const fs::path& tmp_dir, const fs::path& final_dir,
                 Manifest m, const std::vector<float>* dense,
                 const std::map<std::string, std::string>& texts, int keep) {
  for (const auto& [name, text] : texts) {
    const std::string path = (tmp_dir / name).string();
    write_text_durable(path, text);
    m.files[name] = seal_file(path);
  }
  if (dense) {
    const std::string path = (tmp_dir / "dense.npy").string();
    write_npy(path, DType::kFloat32, {static_cast<int64_t>(dense->size())}, dense->data());
    m.dense = "dense.npy";
    m.files[m.dense] = seal_file(path);
  }
  write_text_durable((tmp_dir / "manifest.json").string(), manifest_json(m).dump(2) + "\n");
  sync_folder(tmp_dir.string());
  swap_into_place(root, tmp_dir, final_dir, m.step);
  prune(root, final_dir, keep);
}

}  // namespace

std::string save_checkpoint(const std::string& root, const CheckpointInfo& info,
                            ShardedEmbedding& tables, const std::vector<float>* dense, int keep) {
  Communicator& comm = tables.comm();
  const bool is_root = comm.rank() == 0;
  const fs::path final_dir = fs::path(root) / step_name(info.step);
  const fs::path tmp_dir = fs::path(root) / ("." + step_name(info.step) + ".tmp");

  for (const auto& [name, text] : info.files) EMBTRAIN_ASSERT(is_text_file_name(name));
  run_agreed(comm, [&] {
    if (is_root) as_error([&] { prepare_root(root, tmp_dir); });
  });
  try {
    const std::vector<int64_t> sums = write_shards(tmp_dir, tables, info.step);
    run_agreed(comm, [&] {
      if (!is_root) return;
      const Manifest m = manifest_of(info, tables, sums);
      as_error([&] { finish_save(root, tmp_dir, final_dir, m, dense, info.files, keep); });
    });
  } catch (const Error&) {
    std::error_code ec;
    if (is_root) fs::remove_all(tmp_dir, ec);  // a failed save frees its space
    throw;
  }
  return final_dir.string();
}

// ---------------------------------------------------------------- find

std::string checkpoints_at(const std::string& path) {
  if (holds_checkpoint(path)) return path;
  const std::string root = (fs::path(path) / "checkpoints").string();
  return holds_checkpoint(root) ? root : "";
}

bool holds_checkpoint(const std::string& path) {
  const fs::path p(path);
  std::error_code ec;
  if (fs::exists(p / "manifest.json", ec) || fs::exists(p / "latest", ec)) return true;
  if (!fs::is_directory(p, ec)) return false;
  for (const auto& e : fs::directory_iterator(p, ec))
    if (step_of(e.path().filename().string()) >= 0) return true;
  return false;
}

namespace {

// The folders under `root` that may hold a checkpoint, the one `latest`
// names first, then newest first (a set-aside ".step_N.old" where step_N
// is missing counts as step N). Says in `notes` what is wrong with `latest`.
std::vector<std::string> candidates(const fs::path& root, std::vector<std::string>* notes) {
  std::vector<std::pair<int64_t, std::string>> found;  // (step, folder name)
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory()) continue;
    if (int64_t s = step_of(name); s >= 0) found.emplace_back(s, name);
    else if (s = step_of(name, true); s >= 0 && !fs::exists(root / step_name(s)))
      found.emplace_back(s, name);
  }
  std::sort(found.rbegin(), found.rend());
  std::vector<std::string> names;
  std::ifstream in(root / "latest");
  std::string latest;
  if (!in) {
    if (!found.empty()) notes->push_back((root / "latest").string() + " is missing");
  } else if (std::getline(in, latest), step_of(latest) < 0) {
    notes->push_back((root / "latest").string() + " holds '" + latest + "', not a step_N name");
  } else if (!fs::is_directory(root / latest)) {
    notes->push_back((root / "latest").string() + " names " + latest + ", which is missing");
  } else {
    names.push_back(latest);
  }
  for (const auto& [step, name] : found)
    if (name != latest) names.push_back(name);
  return names;
}

void broadcast_text(Communicator& comm, std::string* text) {
  int64_t size = static_cast<int64_t>(text->size());
  comm.broadcast(&size, 1, CommType::kInt64, 0);
  text->resize(static_cast<size_t>(size));
  comm.broadcast(text->data(), size, CommType::kByte, 0);
}

// "" when the checkpoint's manifest reads and every file matches its size
// and checksum, else why not; the ranks share the files. A collective.
std::string verify_checkpoint(Communicator& comm, const std::string& dir) {
  std::string error;
  try {
    const Manifest m = read_manifest(dir);
    const std::vector<std::string> files = manifest_files(m);
    for (size_t i = static_cast<size_t>(comm.rank()); i < files.size();
         i += static_cast<size_t>(comm.size()))
      verify_file(m, files[i]);
  } catch (const std::exception& e) {  // file-system errors included
    error = e.what();
  }
  return comm.agree_on_error(error);
}

}  // namespace

std::string find_checkpoint(Communicator& comm, const std::string& path,
                            std::vector<std::string>* notes) {
  std::error_code ec;
  if (fs::exists(fs::path(path) / "manifest.json", ec)) return path;
  std::string list;  // rank 0 lists, so every rank tries the same folders
  run_agreed(comm, [&] {
    if (comm.rank() == 0 && fs::is_directory(path, ec))
      as_error([&] {
        for (const std::string& name : candidates(path, notes)) list += name + "\n";
      });
  });
  broadcast_text(comm, &list);
  std::istringstream names(list);
  std::vector<std::string> skipped;
  for (std::string name; std::getline(names, name);) {
    const std::string dir = (fs::path(path) / name).string();
    const std::string error = verify_checkpoint(comm, dir);
    if (error.empty()) {
      if (!skipped.empty() || !notes->empty())
        notes->push_back("took " + dir + ", the newest checkpoint that verifies");
      return dir;
    }
    skipped.push_back("skipped " + name + ": " + error);
    notes->push_back(skipped.back());
  }
  if (skipped.empty()) return "";
  std::string why;
  for (const std::string& s : skipped) why += "\n  " + s;
  throw AgreedError("checkpoint root " + path + " holds no complete checkpoint:" + why);
}

// ---------------------------------------------------------------- load

namespace {

CheckpointInfo info_of(const Manifest& m) {
  CheckpointInfo info{m.workload, m.step, m.seed, m.config, m.ranks, m.progress, {}};
  for (const std::string& name : m.texts) info.files[name];
  return info;
}

}  // namespace

CheckpointInfo read_checkpoint_info(const std::string& dir) { return info_of(read_manifest(dir)); }

bool read_checkpoint_file(const std::string& dir, const std::string& name, std::string* text) {
  const Manifest m = read_manifest(dir);
  if (std::find(m.texts.begin(), m.texts.end(), name) == m.texts.end()) return false;
  verify_file(m, name);
  std::ifstream in(m.path(name), std::ios::binary);
  EMBTRAIN_REQUIRE(in, "checkpoint ", dir, ": cannot open ", name);
  std::ostringstream all;
  all << in.rdbuf();
  EMBTRAIN_REQUIRE(!in.bad(), "checkpoint ", dir, ": cannot read ", name);
  *text = all.str();
  // The checksum was of the file as it was then; it may have changed since.
  const auto sum = m.files.find(name);
  EMBTRAIN_REQUIRE(sum == m.files.end() || static_cast<int64_t>(text->size()) == sum->second.bytes,
                   "checkpoint ", dir, ": ", name, " changed while it was read");
  return true;
}

namespace {

// A table's rows as a checkpoint's shards hold them, by global row: each
// shard's file is verified (size and checksum) and opened when a row of it
// is first asked for, and read in windows of `window_rows` rows, so any
// number of ranks loads from any other with bounded memory. Rows must be
// asked for in increasing order.
class SavedRows {
 public:
  SavedRows(const Manifest& m, const ManifestTable& t, bool weights, int64_t width,
            int64_t window_rows)
      : m_(m),
        t_(t),
        saved_(t.plan()),
        weights_(weights),
        width_(width),
        window_rows_(window_rows),
        files_(t.shards.size()),
        readers_(t.shards.size()) {}

  const float* row(int64_t global) {
    const int s = saved_.owner(global);
    if (!readers_[s]) open(s);
    return readers_[s]->row(saved_.local_row(global));
  }

 private:
  void open(int s) {
    const ManifestShard& shard = t_.shards[s];
    EMBTRAIN_ASSERT(shard.rank == s);
    const std::string& file = weights_ ? shard.weights : shard.state;
    verify_file(m_, file);
    files_[s] = std::make_unique<NpyReader>(m_.path(file));
    const NpyReader& a = *files_[s];
    const std::vector<int64_t> want{shard.rows, width_};
    EMBTRAIN_REQUIRE(a.dtype() == DType::kFloat32 && a.shape() == want, m_.path(file),
                     ": expected float32 of shape (", want[0], ", ", width_, "), got ",
                     dtype_name(a.dtype()), " of shape ", shape_to_string(a.shape()));
    readers_[s] = std::make_unique<NpyRowReader>(files_[s].get(), width_, window_rows_);
  }

  const Manifest& m_;
  const ManifestTable& t_;
  const ShardPlan saved_;
  const bool weights_;
  const int64_t width_, window_rows_;
  std::vector<std::unique_ptr<NpyReader>> files_;
  std::vector<std::unique_ptr<NpyRowReader>> readers_;
};

// Local rows of `rank`'s shard under `plan` of the checkpoint's table t
// (its weights, or its optimizer state), a transfer chunk at a time:
// visit(first, n, rows) per chunk (n x width floats, valid during the
// call), each chunk checked finite first (a NaN would spread through
// training).
template <typename Visit>
void read_saved_chunks(const Manifest& m, const ManifestTable& t, bool weights,
                       const ShardPlan& plan, int rank, Visit visit) {
  const int64_t width = weights ? t.dim : t.state_width;
  const int64_t rows = plan.shard_rows(rank);
  if (width == 0 || rows == 0) return;
  const int64_t chunk = transfer_chunk_rows(width);
  const auto files = static_cast<int64_t>(std::max<size_t>(1, t.shards.size()));
  SavedRows saved(m, t, weights, width, std::max<int64_t>(1, chunk / files));
  std::vector<float> buffer(static_cast<size_t>(std::min(chunk, rows) * width));
  for (int64_t first = 0; first < rows; first += chunk) {
    const int64_t n = std::min(chunk, rows - first);
    for (int64_t k = 0; k < n; ++k)
      std::copy_n(saved.row(plan.global_row(rank, first + k)), width, buffer.data() + k * width);
    const int64_t bad = first_nonfinite_row(buffer.data(), n, width);
    EMBTRAIN_REQUIRE(bad < 0, "checkpoint ", m.dir, ": table '", t.name, "' row ",
                     plan.global_row(rank, first + bad), " holds a non-finite ",
                     weights ? "weight" : "optimizer state value",
                     " (a checkpoint must hold finite values only)");
    visit(first, n, buffer.data());
  }
}

// Loads table t's shard here from the checkpoint, a transfer chunk at a
// time; loaded rows must be numbers (a NaN would spread through training).
void load_table(const Manifest& m, ShardedEmbedding& tables, int ti) {
  EmbeddingTable& shard = tables.shard(ti);
  const TableSpec& spec = shard.spec();
  const ManifestTable& t = m.table(spec.name);
  EMBTRAIN_REQUIRE(t.rows == spec.num_embeddings && t.dim == spec.dim, "checkpoint ", m.dir,
                   ": table '", spec.name, "' is ", t.rows, " x ", t.dim,
                   " but the configuration asks for ", spec.num_embeddings, " x ", spec.dim);
  EMBTRAIN_REQUIRE(t.optimizer == optimizer_name(spec.optimizer.kind) &&
                       t.state_width == shard.state_width(),
                   "checkpoint ", m.dir, ": table '", spec.name, "' was trained with optimizer ",
                   t.optimizer, " (state width ", t.state_width,
                   ") but the configuration asks for ", optimizer_name(spec.optimizer.kind),
                   " (state width ", shard.state_width(), ")");
  for (const bool weights : {true, false})
    read_saved_chunks(m, t, weights, shard.plan(), shard.rank(),
                      [&](int64_t first, int64_t n, const float* rows) {
                        tables.write_rows(ti, weights ? TablePart::kWeights : TablePart::kState,
                                          first, n, rows);
                      });
  shard.set_step(t.optimizer_step);
}

void load_dense(const Manifest& m, std::vector<float>* dense) {
  EMBTRAIN_REQUIRE(!m.dense.empty(), "checkpoint ", m.dir, " has no dense parameters");
  verify_file(m, m.dense);
  const std::string path = m.path(m.dense);
  const NpyArray a = read_npy(path);
  EMBTRAIN_REQUIRE(a.dtype == DType::kFloat32 && a.numel() == static_cast<int64_t>(dense->size()),
                   path, ": expected ", dense->size(), " float32 dense parameters, got ",
                   a.numel(), " ", dtype_name(a.dtype));
  const int64_t bad = first_nonfinite_row(a.as<float>(), a.numel(), 1);
  EMBTRAIN_REQUIRE(bad < 0, path, ": dense parameter ", bad, " is not finite");
  std::copy(a.as<float>(), a.as<float>() + a.numel(), dense->begin());
}

}  // namespace

CheckpointInfo load_checkpoint(const std::string& dir, ShardedEmbedding& tables,
                               std::vector<float>* dense) {
  CheckpointInfo info;
  run_agreed(tables.comm(), [&] {
    const Manifest m = read_manifest(dir);
    info = info_of(m);
    for (int t = 0; t < tables.num_tables(); ++t) load_table(m, tables, t);
    if (dense) load_dense(m, dense);
  });
  return info;
}

void read_checkpoint_table(const std::string& dir, const std::string& table, int64_t* rows,
                           int64_t* dim,
                           const std::function<void(int64_t, int64_t, const float*)>& visit) {
  const Manifest m = read_manifest(dir);
  const ManifestTable& t = m.table(table);
  // Every shard is verified (size and checksum) before the table's memory
  // is taken: the files, not the manifest's numbers, bound it.
  for (const ManifestShard& s : t.shards) {
    verify_file(m, s.weights);
    const int64_t need = s.rows * t.dim * 4;  // read_manifest checked it fits
    std::error_code ec;
    const auto size = static_cast<int64_t>(fs::file_size(m.path(s.weights), ec));
    EMBTRAIN_REQUIRE(!ec && size >= need, m.path(s.weights), ": ", ec ? -1 : size,
                     " bytes, too few for ", s.rows, " x ", t.dim, " float32");
  }
  *rows = t.rows;
  *dim = t.dim;
  read_saved_chunks(m, t, /*weights=*/true, ShardPlan(t.rows, 1), 0, visit);
}

}  // namespace embtrain
