// embtrain replay: runs recorded steps (ids_<k>.npy, grad_<k>.npy) through
// forward, backward and the optimizer, and writes each step's output and the
// final table, so the result can be compared with PyTorch on the same steps.
//
// Nothing is written to the output folder unless every step succeeds: the
// files go to a temporary folder beside it and move into place at the end.
#include <omp.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include "commands.hpp"
#include "embtrain/bags.hpp"
#include "embtrain/communicator.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/npy.hpp"
#include "embtrain/sharded_embedding.hpp"
#include "table_options.hpp"

namespace embtrain {
namespace app {

namespace fs = std::filesystem;

namespace {

// A folder that is removed on destruction unless released.
class TempDir {
 public:
  explicit TempDir(fs::path path) : path_(std::move(path)) {
    std::error_code ec;
    fs::remove_all(path_, ec);
    EMBTRAIN_REQUIRE(fs::create_directories(path_, ec) && !ec, path_.string(),
                     ": cannot create folder: ", ec.message());
  }
  ~TempDir() {
    std::error_code ec;
    if (!released_) fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  void release() { released_ = true; }

 private:
  fs::path path_;
  bool released_ = false;
};

// Moves the files of `from` into `to` (created if absent), then removes `from`.
void move_into_place(TempDir* from, const fs::path& to) {
  std::error_code ec;
  if (!fs::exists(to)) {
    fs::rename(from->path(), to, ec);
    EMBTRAIN_REQUIRE(!ec, to.string(), ": cannot create output folder: ", ec.message());
    from->release();
    return;
  }
  for (const auto& entry : fs::directory_iterator(from->path())) {
    fs::rename(entry.path(), to / entry.path().filename(), ec);
    EMBTRAIN_REQUIRE(!ec, (to / entry.path().filename()).string(),
                     ": cannot move output into place: ", ec.message());
  }
}

// Rank `rank`'s part of a batch: a contiguous slice along the first axis,
// slices differing by at most one row, lower ranks taking the extra ones.
struct BatchSlice {
  int64_t first_element = 0, num_elements = 0;
  std::vector<int64_t> shape;
};

BatchSlice slice_batch(const NpyArray& ids, int ranks, int rank) {
  BatchSlice slice;
  if (ids.shape.empty()) {  // a single id: rank 0 takes it
    slice.num_elements = rank == 0 ? 1 : 0;
    slice.shape = rank == 0 ? std::vector<int64_t>{} : std::vector<int64_t>{0};
    return slice;
  }
  const int64_t inner = ids.shape[0] == 0 ? 0 : ids.numel() / ids.shape[0];
  const ShardPlan split(ids.shape[0], ranks);
  slice.shape = ids.shape;
  slice.shape[0] = split.shard_rows(rank);
  slice.first_element = split.row_begin(rank) * inner;
  slice.num_elements = split.shard_rows(rank) * inner;
  return slice;
}

int64_t count_steps(const fs::path& batches) {
  int64_t k = 0;
  while (fs::exists(batches / ("ids_" + std::to_string(k) + ".npy"))) ++k;
  return k;
}

po::options_description replay_options() {
  po::options_description options(
      "usage: [mpirun -np P] embtrain replay --weights W.npy --batches DIR --out DIR2 [options]\n\n"
      "Replays K recorded steps: for k = 0..K-1 it reads DIR/ids_<k>.npy (int32 or int64, any\n"
      "shape) and DIR/grad_<k>.npy (float32, ids.shape + [dim]), runs forward, backward with\n"
      "that gradient and one optimizer step, and writes DIR2/out_<k>.npy and the final table\n"
      "DIR2/weights.npy. Under mpirun the table is row-sharded over the ranks and rank r takes\n"
      "a contiguous slice of each batch along its first axis; the files written are those of\n"
      "one process. On any error nothing is written to DIR2.\n\n"
      "With --pool MODE the table is a torch.nn.EmbeddingBag: ids_<k>.npy is (bags, length), or\n"
      "1-D with --offsets (DIR/offsets_<k>.npy: each bag's start; --include-last-offset: and the\n"
      "end), --per-sample-weights reads DIR/weights_<k>.npy (float32, ids' shape; sum only),\n"
      "grad_<k>.npy and out_<k>.npy are (bags, dim), and rank r takes a contiguous run of bags.\n"
      "--pool-at owner pools each bag at the rows' owners (partial rows travel, not rows).\n\n"
      "options");
  // clang-format off
  options.add_options()
    ("help,h", "show this help")
    ("weights", po::value<std::string>()->required(), "starting table, float32 .npy of shape (rows, dim)")
    ("batches", po::value<std::string>()->required(), "folder with ids_<k>.npy and grad_<k>.npy")
    ("steps", po::value<int64_t>(), "number of steps K (default: every ids_<k>.npy from k = 0)")
    ("out", po::value<std::string>()->required(), "output folder (created if absent)")
    ("threads", po::value<int>()->default_value(0), "CPU threads per rank (0: OpenMP's default)")
    ("pool", po::value<std::string>(), "pool bags: sum | mean | max (torch.nn.EmbeddingBag's mode)")
    ("offsets", "with --pool: 1-D ids with DIR/offsets_<k>.npy")
    ("include-last-offset", "with --offsets: the offsets end with the end of the last bag")
    ("per-sample-weights", "with --pool sum: DIR/weights_<k>.npy weighs each id")
    ("pool-at", po::value<std::string>()->default_value("requester"),
     "with --pool: where bags are pooled: requester | owner (the table's pool_at)");
  // clang-format on
  add_table_options(&options, {{"optimizer", "sgd"}, {"lr", "0.01"}});
  add_device_options(&options);
  return options;
}

// What the command line and the starting weights say; the same on every
// rank but for the shard of the weights.
struct ReplaySetup {
  fs::path batches, out_dir;
  int64_t steps = 0;
  TableSpec spec;
  std::vector<float> local_rows;  // this rank's shard of the starting weights
  DeviceChoice device;
  // Bags: --pool and how each step's bags are given.
  bool pooled = false;
  PoolMode mode = PoolMode::kMean;
  bool offsets = false, include_last_offset = false, weights = false;
};

ReplaySetup read_setup(const po::variables_map& vm, const Communicator& comm) {
  ReplaySetup s;
  const int threads = vm["threads"].as<int>();
  EMBTRAIN_REQUIRE(threads >= 0, "option --threads = ", threads, " is invalid (valid: >= 0)");
  if (threads > 0) omp_set_num_threads(threads);
  s.device = read_device_options(vm);
  s.batches = vm["batches"].as<std::string>();
  EMBTRAIN_REQUIRE(fs::is_directory(s.batches), "option --batches: ", s.batches.string(),
                   " is not a folder");
  s.steps = vm.count("steps") ? vm["steps"].as<int64_t>() : count_steps(s.batches);
  EMBTRAIN_REQUIRE(s.steps >= 0, "option --steps = ", s.steps, " is invalid (valid: >= 0)");
  // A folder with no step 0 is a wrong path, not a replay of nothing
  // (--steps 0 asks for that explicitly).
  EMBTRAIN_REQUIRE(vm.count("steps") || s.steps > 0, "option --batches: ", s.batches.string(),
                   " holds no ids_0.npy (valid: a folder of ids_<k>.npy and grad_<k>.npy, "
                   "k = 0, 1, ...)");
  s.out_dir = vm["out"].as<std::string>();
  if (!s.out_dir.has_filename()) s.out_dir = s.out_dir.parent_path();  // "dir/" -> "dir"
  EMBTRAIN_REQUIRE(!fs::exists(s.out_dir) || fs::is_directory(s.out_dir),
                   "option --out: ", s.out_dir.string(), " exists and is not a folder");

  const std::string weights_path = vm["weights"].as<std::string>();
  const NpyArray w = read_npy(weights_path);
  EMBTRAIN_REQUIRE(w.dtype == DType::kFloat32 && w.shape.size() == 2, weights_path,
                   ": weights must be a 2-D float32 array, got ", dtype_name(w.dtype), " of shape ",
                   shape_to_string(w.shape));
  s.spec.name = "replay";
  s.spec.num_embeddings = w.shape[0];
  s.spec.dim = w.shape[1];
  read_table_options(vm, &s.spec);
  s.pooled = vm.count("pool") > 0;
  s.offsets = vm.count("offsets") > 0;
  s.include_last_offset = vm.count("include-last-offset") > 0;
  s.weights = vm.count("per-sample-weights") > 0;
  if (s.pooled) {
    const std::string mode = vm["pool"].as<std::string>();
    EMBTRAIN_REQUIRE(parse_pool_mode(mode, &s.mode), "option --pool = '", mode,
                     "' is invalid (valid: sum, mean, max)");
    EMBTRAIN_REQUIRE(!s.weights || s.mode == PoolMode::kSum,
                     "option --per-sample-weights needs --pool sum (got --pool ", mode,
                     "), as torch.nn.EmbeddingBag");
    EMBTRAIN_REQUIRE(!s.spec.scale_grad_by_freq || s.mode != PoolMode::kMax,
                     "option --scale-grad-by-freq is not supported with --pool max, as in "
                     "torch.nn.EmbeddingBag");
    const std::string at = vm["pool-at"].as<std::string>();
    EMBTRAIN_REQUIRE(parse_pool_at(at, &s.spec.pool_at), "option --pool-at = '", at,
                     "' is invalid (valid: requester, owner)");
  } else {
    EMBTRAIN_REQUIRE(!s.offsets && !s.include_last_offset && !s.weights,
                     "options --offsets, --include-last-offset and --per-sample-weights need --pool");
    EMBTRAIN_REQUIRE(vm["pool-at"].defaulted(), "option --pool-at needs --pool");
  }
  EMBTRAIN_REQUIRE(!s.include_last_offset || s.offsets, "option --include-last-offset needs --offsets");
  const ShardPlan plan = ShardedEmbedding::table_plan(s.spec.num_embeddings, comm.size());
  s.local_rows.resize(static_cast<size_t>(plan.shard_rows(comm.rank()) * s.spec.dim));
  plan.take_shard(comm.rank(), w.as<float>(), s.spec.dim, s.local_rows.data());
  return s;
}

// Step k's ids and output gradient, read and checked whole on every rank.
struct RecordedStep {
  std::string ids_path;
  NpyArray ids, grad;
  std::vector<int64_t> out_shape;  // ids.shape + [dim], or (bags, dim)
  // With --pool: every bag's offsets (bags + 1) and the weights, if any.
  std::vector<int64_t> bag_offsets;
  NpyArray weights;
};

// The offsets of step k's bags (BagInput's form) and its weights.
void read_bags(const fs::path& batches, int64_t k, const ReplaySetup& setup, RecordedStep* step) {
  std::vector<int64_t> given;
  if (setup.offsets) {
    const std::string path = (batches / ("offsets_" + std::to_string(k) + ".npy")).string();
    const NpyArray offsets = read_npy(path);
    EMBTRAIN_REQUIRE((offsets.dtype == DType::kInt32 || offsets.dtype == DType::kInt64) &&
                         offsets.shape.size() == 1,
                     path, ": offsets must be a 1-D int32 or int64 array, got ",
                     dtype_name(offsets.dtype), " of shape ", shape_to_string(offsets.shape));
    ids_to_int64(ids_view(offsets), &given);
  }
  const BagInput bags(ids_view(step->ids), setup.offsets ? &given : nullptr,
                      setup.include_last_offset, step->ids_path);
  step->bag_offsets = bags.offsets();
  step->out_shape = {bags.num_bags(), setup.spec.dim};
  if (setup.weights) {
    const std::string path = (batches / ("weights_" + std::to_string(k) + ".npy")).string();
    step->weights = read_npy(path);
    EMBTRAIN_REQUIRE(step->weights.dtype == DType::kFloat32 &&
                         step->weights.shape == step->ids.shape,
                     path, ": per-sample weights must be float32 of the ids' shape ",
                     shape_to_string(step->ids.shape), ", got ", dtype_name(step->weights.dtype),
                     " of shape ", shape_to_string(step->weights.shape));
  }
}

RecordedStep read_step(const fs::path& batches, int64_t k, const ReplaySetup& setup) {
  const TableSpec& spec = setup.spec;
  RecordedStep step;
  step.ids_path = (batches / ("ids_" + std::to_string(k) + ".npy")).string();
  const std::string grad_path = (batches / ("grad_" + std::to_string(k) + ".npy")).string();
  step.ids = read_npy(step.ids_path);
  EMBTRAIN_REQUIRE(step.ids.dtype == DType::kInt32 || step.ids.dtype == DType::kInt64,
                   step.ids_path, ": ids must be int32 or int64, got ", dtype_name(step.ids.dtype));
  step.grad = read_npy(grad_path);
  step.out_shape = step.ids.shape;
  step.out_shape.push_back(spec.dim);
  if (setup.pooled) read_bags(batches, k, setup, &step);
  EMBTRAIN_REQUIRE(
      step.grad.dtype == DType::kFloat32 && step.grad.shape == step.out_shape, grad_path,
      ": gradient must be float32 of shape ", setup.pooled ? "(bags, dim) = " : "ids.shape + [dim] = ",
      shape_to_string(step.out_shape),
      ", got ", dtype_name(step.grad.dtype), " of shape ", shape_to_string(step.grad.shape));
  // Check the whole batch here so that an error names the id's position
  // in the file, not in one rank's slice of it.
  const std::string bad = check_ids(ids_view(step.ids), spec);
  EMBTRAIN_REQUIRE(bad.empty(), step.ids_path, ": ", bad);
  return step;
}

// Rank `rank`'s part of a batch of bags: a contiguous run of bags (split
// as slice_batch splits rows) with their ids; the last rank also takes the
// ids past the last bag, which belong to no bag but are still looked up.
struct BagSlice {
  int64_t first_bag = 0, num_bags = 0, first_id = 0, num_ids = 0;
  std::vector<int64_t> offsets;  // num_bags + 1, from 0
};

BagSlice slice_bags(const RecordedStep& step, int ranks, int rank) {
  const std::vector<int64_t>& o = step.bag_offsets;
  const int64_t bags = static_cast<int64_t>(o.size()) - 1;
  const ShardPlan split(bags, ranks);
  BagSlice slice;
  slice.first_bag = split.row_begin(rank);
  slice.num_bags = split.shard_rows(rank);
  slice.first_id = o[slice.first_bag];
  const int64_t end = rank == ranks - 1 ? step.ids.numel() : o[slice.first_bag + slice.num_bags];
  slice.num_ids = end - slice.first_id;
  for (int64_t b = 0; b <= slice.num_bags; ++b)
    slice.offsets.push_back(o[slice.first_bag + b] - slice.first_id);
  return slice;
}

// The pooled step: this rank's run of bags (slice_bags), the whole batch's
// bags gathered on rank 0 into `global_out`.
void run_bag_step(const RecordedStep& step, PoolMode mode, ShardedEmbedding* table,
                  Communicator& comm, std::vector<float>* global_out) {
  const int64_t dim = table->spec(0).dim;
  const BagSlice slice = slice_bags(step, comm.size(), comm.rank());
  const IdsView view{step.ids.data.data() + slice.first_id * dtype_size(step.ids.dtype),
                     step.ids.dtype, {slice.num_ids}};
  const float* weights = step.weights.data.empty() ? nullptr
                                                   : step.weights.as<float>() + slice.first_id;
  const BagsView bags{mode, slice.offsets.data(), slice.num_bags, weights};
  std::vector<float> out(static_cast<size_t>(slice.num_bags * dim));
  try {
    table->forward({view}, {bags}, {out.data()});
  } catch (const AgreedError& e) {
    throw AgreedError(step.ids_path + ": " + e.what());
  }
  table->backward({step.grad.as<float>() + slice.first_bag * dim});
  table->step();

  std::vector<int64_t> counts(comm.size());
  for (int r = 0; r < comm.size(); ++r) counts[r] = slice_bags(step, comm.size(), r).num_bags * dim;
  if (comm.rank() == 0) global_out->resize(static_cast<size_t>(step.out_shape[0] * dim));
  comm.gatherv(out.data(), counts[comm.rank()], global_out->data(), counts, CommType::kFloat32, 0);
}

// Runs a step on this rank's slice of the batch (along the first axis; a
// 0-d batch goes to rank 0) and gathers the whole batch's output on rank 0
// into `global_out`.
void run_step(const RecordedStep& step, ShardedEmbedding* table, Communicator& comm,
              std::vector<float>* global_out) {
  const int64_t dim = table->spec(0).dim;
  const BatchSlice slice = slice_batch(step.ids, comm.size(), comm.rank());
  const IdsView view{step.ids.data.data() + slice.first_element * dtype_size(step.ids.dtype),
                     step.ids.dtype, slice.shape};
  std::vector<float> out(static_cast<size_t>(slice.num_elements * dim));
  try {
    table->forward({view}, {out.data()});
  } catch (const AgreedError& e) {
    throw AgreedError(step.ids_path + ": " + e.what());
  }
  table->backward({step.grad.as<float>() + slice.first_element * dim});
  table->step();

  std::vector<int64_t> counts(comm.size());
  for (int r = 0; r < comm.size(); ++r)
    counts[r] = slice_batch(step.ids, comm.size(), r).num_elements * dim;
  if (comm.rank() == 0) global_out->resize(static_cast<size_t>(step.ids.numel() * dim));
  comm.gatherv(out.data(), counts[comm.rank()], global_out->data(), counts, CommType::kFloat32, 0);
}

}  // namespace

int run_replay(int argc, char** argv) {
  const po::options_description options = replay_options();
  if (argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    std::cout << options << "\n";
    return 0;
  }
  std::unique_ptr<Communicator> comm = make_world_communicator();
  const bool root = comm->rank() == 0;

  // Setup: the same on every rank, so a bad option or file fails everywhere.
  po::variables_map vm;
  ReplaySetup setup;
  run_agreed(*comm, [&] {
    vm = parse_command_line(argc, argv, options, "replay");
    if (!vm.count("help")) setup = read_setup(vm, *comm);
  });
  if (vm.count("help")) {
    if (root) std::cout << options << "\n";
    return 0;
  }
  ShardedEmbedding table({setup.spec}, comm.get(), {std::move(setup.local_rows)});
  if (setup.device.device == "cuda") table.use_cuda(setup.device.cuda);

  // Only rank 0 writes, into a temporary folder that moves into place once
  // every step has succeeded.
  std::unique_ptr<TempDir> tmp;
  run_agreed(*comm, [&] {
    if (root)
      tmp = std::make_unique<TempDir>(setup.out_dir.string() + ".partial-" +
                                      std::to_string(::getpid()));
  });
  std::vector<float> global_out;
  for (int64_t k = 0; k < setup.steps; ++k) {
    RecordedStep step;
    run_agreed(*comm, [&] { step = read_step(setup.batches, k, setup); });
    if (setup.pooled)
      run_bag_step(step, setup.mode, &table, *comm, &global_out);
    else
      run_step(step, &table, *comm, &global_out);
    run_agreed(*comm, [&] {
      if (root)
        write_npy((tmp->path() / ("out_" + std::to_string(k) + ".npy")).string(), DType::kFloat32,
                  step.out_shape, global_out.data());
    });
  }
  const std::vector<float> weights = table.gather_table(0, 0);
  run_agreed(*comm, [&] {
    if (!root) return;
    write_npy((tmp->path() / "weights.npy").string(), DType::kFloat32,
              {setup.spec.num_embeddings, setup.spec.dim}, weights.data());
    move_into_place(tmp.get(), setup.out_dir);
  });
  if (root)
    std::fprintf(stderr, "embtrain replay: %lld steps on %d rank(s), wrote %s\n",
                 static_cast<long long>(setup.steps), comm->size(), setup.out_dir.string().c_str());
  return 0;
}

}  // namespace app
}  // namespace embtrain
