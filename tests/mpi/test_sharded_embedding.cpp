// ShardedEmbedding under mpiexec: P ranks must give what one process gives
// on the global batch (DESIGN.md, "One step, as data").
//
// Every rank draws the same random cases from the same seed: tables (rows
// fewer than the ranks included, padding absent / positive / negative,
// max_norm with norm_type 1/2/3, scale_grad_by_freq, every optimizer), and
// for each step and table a global batch with heavy duplicates within and
// across ranks, some empty or all-padding. Rank r takes a contiguous slice
// of each global batch (ShardPlan over the batch's samples, so lower ranks
// take the extras). The reference is a single-process embtrain::Embedding
// per table started from the same weights and run on the whole global
// batch; each rank compares its own slice of the forward output and its own
// shard's rows and optimizer state, with no gather.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "embtrain/communicator.hpp"
#include "embtrain/embedding.hpp"
#include "embtrain/embedding_table.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/optimizer.hpp"
#include "embtrain/random.hpp"
#include "embtrain/shard_plan.hpp"
#include "embtrain/sharded_embedding.hpp"
#include "mpi_test_util.hpp"
#if defined(EMBTRAIN_HAVE_CUDA) || defined(EMBTRAIN_EMULATED_CUDA)
#include "kernels/cuda/cuda_kernels.hpp"
#endif

namespace {

// memcmp for ranges that may be empty, whose pointers may then be null (an
// empty vector's data()), which memcmp itself must not be given (UBSan).
int bytes_cmp(const void* a, const void* b, size_t n) { return n == 0 ? 0 : std::memcmp(a, b, n); }

using embtrain::CommType;
using embtrain::Communicator;
using embtrain::DType;
using embtrain::Embedding;
using embtrain::IdsView;
using embtrain::OptimizerKind;
using embtrain::ShardedEmbedding;
using embtrain::ShardPlan;
using embtrain::TablePart;
using embtrain::TableSpec;
using embtrain_mpi_test::all_close;
using embtrain_mpi_test::all_ranks;
using embtrain_mpi_test::MpiTest;
using embtrain_mpi_test::seed_trace;
using embtrain_mpi_test::test_seed;
using embtrain_mpi_test::world;

// |a - b| <= kRtol * max(1, |b|): the distributed step sums the same
// gradients in another order (each rank its own positions, then the owner
// the ranks' partial sums), so results agree up to float rounding.
constexpr double kRtol = 1e-5;

// CUDA devices this rank sees; 0 in a build without CUDA (1 on the
// emulated device of tests/emulated).
int gpu_count() {
#if defined(EMBTRAIN_HAVE_CUDA) || defined(EMBTRAIN_EMULATED_CUDA)
  return embtrain::cuda::device_count();
#else
  return 0;
#endif
}

// Skips the test on every rank unless every rank sees a GPU;
// EMBTRAIN_REQUIRE_GPU=1 turns the skip into a failure.
#define SKIP_UNLESS_EVERY_RANK_HAS_GPU()                                                         \
  do {                                                                                           \
    if (!all_ranks(gpu_count() > 0)) {                                                           \
      const char* req = std::getenv("EMBTRAIN_REQUIRE_GPU");                                     \
      if (req && std::string(req) == "1") FAIL() << "EMBTRAIN_REQUIRE_GPU=1 but a rank has no GPU"; \
      GTEST_SKIP() << "no CUDA device on every rank (set EMBTRAIN_REQUIRE_GPU=1 to fail instead)"; \
    }                                                                                            \
  } while (0)

// Ids of one batch in the dtype the case chose, with their view.
struct TypedIds {
  std::vector<int32_t> i32;
  std::vector<int64_t> i64;
  IdsView view;

  // The view points into the vectors: moving keeps their buffers, copying
  // would not.
  TypedIds(const TypedIds&) = delete;
  TypedIds& operator=(const TypedIds&) = delete;
  TypedIds(TypedIds&&) = default;
  TypedIds& operator=(TypedIds&&) = default;

  TypedIds(const int64_t* ids, int64_t n, DType dtype, std::vector<int64_t> shape) {
    view.dtype = dtype;
    view.shape = std::move(shape);
    if (dtype == DType::kInt32) {
      i32.assign(ids, ids + n);
      view.data = i32.data();
    } else {
      i64.assign(ids, ids + n);
      view.data = i64.data();
    }
  }
};

// One table's global batch of one step: B samples of S ids.
struct StepBatch {
  int64_t samples = 0, per_sample = 1;
  bool two_d = false;
  DType dtype = DType::kInt64;
  std::vector<int64_t> ids;  // samples * per_sample
  std::vector<float> grad;   // ids.size() * dim
  std::string kind;          // for the trace

  // The view of samples [begin, end) in the batch's shape.
  TypedIds slice(int64_t begin, int64_t end) const {
    std::vector<int64_t> shape = two_d ? std::vector<int64_t>{end - begin, per_sample}
                                       : std::vector<int64_t>{(end - begin) * per_sample};
    return TypedIds(ids.data() + begin * per_sample, (end - begin) * per_sample, dtype,
                    std::move(shape));
  }
};

struct Case {
  uint64_t seed = 0;
  std::vector<TableSpec> specs;
  std::vector<std::vector<float>> init;       // per table: num_embeddings x dim
  std::vector<std::vector<StepBatch>> steps;  // [step][table]

  int num_tables() const { return static_cast<int>(specs.size()); }
  std::string describe() const;
};

std::string Case::describe() const {
  std::ostringstream os;
  os << "case seed " << seed << ": " << specs.size() << " table(s), " << steps.size() << " step(s)";
  for (const TableSpec& s : specs) {
    os << "\n  " << s.name << ": rows " << s.num_embeddings << ", dim " << s.dim << ", padding ";
    if (s.padding_idx)
      os << *s.padding_idx;
    else
      os << "none";
    if (s.max_norm) os << ", max_norm " << *s.max_norm << " p" << s.norm_type;
    os << ", freq " << s.scale_grad_by_freq << (s.freeze ? ", frozen" : "") << ", "
       << embtrain::optimizer_name(s.optimizer.kind) << " lr " << s.optimizer.lr;
  }
  for (size_t k = 0; k < steps.size(); ++k) {
    os << "\n  step " << k << ":";
    for (const StepBatch& b : steps[k])
      os << " [" << b.samples << "x" << b.per_sample << (b.two_d ? " 2d " : " 1d ")
         << embtrain::dtype_name(b.dtype) << " " << b.kind << "]";
  }
  return os.str();
}

template <typename T>
T pick(std::mt19937_64& rng, std::initializer_list<T> values) {
  std::uniform_int_distribution<size_t> d(0, values.size() - 1);
  return *(values.begin() + d(rng));
}

double uniform(std::mt19937_64& rng, double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(rng);
}

// A random table spec.
TableSpec random_spec(std::mt19937_64& rng, int t, int P) {
  TableSpec s;
  s.name = "table" + std::to_string(t);
  // Rows fewer than, equal to and just above the ranks, and larger tables.
  s.num_embeddings = pick<int64_t>(rng, {1, 2, 3, int64_t{P} - 1 > 0 ? int64_t{P} - 1 : 1, P,
                                         int64_t{P} + 1, 5, 7, 13, 64, 200, 1000});
  s.dim = pick<int64_t>(rng, {1, 3, 8, 33});
  switch (rng() % 3) {
    case 0:
      break;
    case 1:
      s.padding_idx = std::uniform_int_distribution<int64_t>(0, s.num_embeddings - 1)(rng);
      break;
    case 2:
      s.padding_idx = std::uniform_int_distribution<int64_t>(-s.num_embeddings, -1)(rng);
      break;
  }
  if (rng() % 2) {
    // Rows are N(0, 1), so norms are about sqrt(dim) (p = 2): these bounds
    // renorm many rows and leave others alone.
    s.max_norm = uniform(rng, 0.5, 3.0);
    s.norm_type = pick<double>(rng, {1.0, 2.0, 3.0});
  }
  s.scale_grad_by_freq = rng() % 2;
  s.freeze = rng() % 10 == 0;
  auto& opt = s.optimizer;
  opt.kind = static_cast<OptimizerKind>(rng() % 4);
  switch (opt.kind) {
    case OptimizerKind::kSgd:
      opt.lr = uniform(rng, 0.05, 0.5);
      break;
    case OptimizerKind::kAdagrad:
      opt.lr = uniform(rng, 0.01, 0.3);
      opt.lr_decay = rng() % 2 ? 0.0 : 0.1;
      opt.initial_accumulator_value = rng() % 2 ? 0.0 : 0.1;
      break;
    case OptimizerKind::kAdam:
      opt.lr = uniform(rng, 0.001, 0.05);
      break;
    case OptimizerKind::kRowwiseAdagrad:
      opt.lr = uniform(rng, 0.01, 0.3);
      opt.initial_accumulator_value = rng() % 2 ? 0.0 : 0.1;
      break;
  }
  return s;
}

// A random global batch for table `spec` at step `step`.
StepBatch random_batch(std::mt19937_64& rng, uint64_t case_seed, int step, int t,
                       const TableSpec& spec, int P) {
  StepBatch b;
  const int64_t N = spec.num_embeddings, pad = spec.padding_row();
  // Fewer samples than ranks leaves some ranks with an empty slice.
  b.samples = pick<int64_t>(rng, {0, 1, 2, int64_t{P} - 1, P, int64_t{P} + 1, 9, 23, 40, 250});
  b.per_sample = pick<int64_t>(rng, {1, 2, 3});
  b.two_d = b.per_sample > 1 || rng() % 2;
  b.dtype = rng() % 2 ? DType::kInt32 : DType::kInt64;
  const int64_t n = b.samples * b.per_sample;

  // Heavy duplicates: most ids from a small hot set shared by all ranks.
  std::uniform_int_distribution<int64_t> any(0, N - 1);
  std::vector<int64_t> hot(static_cast<size_t>(1 + rng() % 3));
  for (auto& h : hot) h = any(rng);
  const int mode = pad >= 0 && rng() % 6 == 0 ? 2 : static_cast<int>(rng() % 2);
  b.kind = mode == 0 ? "hot" : mode == 1 ? "uniform" : "all-padding";
  const double pad_frac = pad >= 0 ? pick<double>(rng, {0.0, 0.2, 0.5}) : 0.0;
  b.ids.resize(static_cast<size_t>(n));
  for (auto& id : b.ids) {
    if (mode == 2 || uniform(rng, 0, 1) < pad_frac)
      id = pad;
    else if (mode == 0 && uniform(rng, 0, 1) < 0.8)
      id = hot[rng() % hot.size()];
    else
      id = any(rng);
  }

  // Gradients whose sums neither cancel nor grow: every occurrence of a
  // row in one step gets the same sign per coordinate and a magnitude in
  // [0.5, 1.5) divided by the row's count in the global batch, so each
  // row's summed gradient lies in [0.5, 1.5) in absolute value.
  // - No cancellation within a step: Adam's and Adagrad's first steps
  //   divide a sum by its own magnitude (w -= lr * g / |g|), so a sum near
  //   zero would turn rounding from the other summation order into a sign
  //   flip worth 2 * lr.
  // - No growth: with sums of hundreds (a hot row of a 750-id batch), SGD
  //   moves weights by hundreds per step and later steps bring them back,
  //   so a final weight near 1 carries the rounding of the large
  //   intermediates (one ulp at 100 is 8e-6); seen as rare 1e-5 misses.
  // With both, the two summation orders agree to a few float ulps and kRtol
  // stays tight.
  const int64_t dim = spec.dim;
  std::map<int64_t, int64_t> count;
  for (int64_t id : b.ids) ++count[id];
  b.grad.resize(static_cast<size_t>(n * dim));
  const uint64_t stream = static_cast<uint64_t>(step) * 64 + static_cast<uint64_t>(t);
  for (int64_t p = 0; p < n; ++p)
    for (int64_t j = 0; j < dim; ++j) {
      const uint64_t bits =
          embtrain::random_bits(case_seed, stream, static_cast<uint64_t>(b.ids[p] * dim + j));
      const float sign = bits & 1 ? 1.f : -1.f;
      b.grad[p * dim + j] =
          sign * static_cast<float>(uniform(rng, 0.5, 1.5)) / static_cast<float>(count[b.ids[p]]);
    }
  return b;
}

Case random_case(uint64_t seed, int P, int max_tables = 3, int max_steps = 4) {
  std::mt19937_64 rng(seed);
  Case c;
  c.seed = seed;
  const int T = 1 + static_cast<int>(rng() % static_cast<uint64_t>(max_tables));
  std::normal_distribution<float> normal(0.f, 1.f);
  for (int t = 0; t < T; ++t) {
    c.specs.push_back(random_spec(rng, t, P));
    // Given weights are used as they are: the padding row is random too.
    std::vector<float> w(static_cast<size_t>(c.specs[t].num_embeddings * c.specs[t].dim));
    for (auto& x : w) x = normal(rng);
    c.init.push_back(std::move(w));
  }
  const int steps = 1 + static_cast<int>(rng() % static_cast<uint64_t>(max_steps));
  for (int k = 0; k < steps; ++k) {
    c.steps.emplace_back();
    for (int t = 0; t < T; ++t)
      c.steps.back().push_back(random_batch(rng, seed, k, t, c.specs[t], P));
  }
  return c;
}

// This rank's shard of table t's initial rows.
std::vector<std::vector<float>> local_rows(const Case& c, int P, int me) {
  std::vector<std::vector<float>> rows;
  for (int t = 0; t < c.num_tables(); ++t) {
    const ShardPlan plan = ShardedEmbedding::table_plan(c.specs[t].num_embeddings, P);
    const int64_t dim = c.specs[t].dim;
    rows.emplace_back(static_cast<size_t>(plan.shard_rows(me) * dim));
    plan.take_shard(me, c.init[t].data(), dim, rows.back().data());
  }
  return rows;
}

// Runs one forward/backward/step of `se` on this rank's slices of step k.
// Returns the outputs (per table, this rank's slice).
std::vector<std::vector<float>> sharded_step(ShardedEmbedding& se, const Case& c, size_t k) {
  const int P = se.comm().size(), me = se.comm().rank(), T = c.num_tables();
  std::vector<TypedIds> ids;
  std::vector<IdsView> views;
  std::vector<std::vector<float>> outs(static_cast<size_t>(T));
  std::vector<float*> out_ptrs;
  std::vector<const float*> grad_ptrs;
  for (int t = 0; t < T; ++t) {
    const StepBatch& b = c.steps[k][t];
    const ShardPlan split(b.samples, P);
    const int64_t begin = split.row_begin(me), end = split.row_end(me);
    ids.push_back(b.slice(begin, end));
    // NaN in every slot the forward must write.
    outs[t].assign(static_cast<size_t>((end - begin) * b.per_sample * c.specs[t].dim),
                   std::numeric_limits<float>::quiet_NaN());
    grad_ptrs.push_back(b.grad.data() + begin * b.per_sample * c.specs[t].dim);
  }
  for (int t = 0; t < T; ++t) {
    views.push_back(ids[t].view);
    out_ptrs.push_back(outs[t].data());
  }
  se.forward(views, out_ptrs);
  se.backward(grad_ptrs);
  se.step();
  return outs;
}

// The single-process reference: one Embedding per table on the global batch.
struct Reference {
  std::vector<std::unique_ptr<Embedding>> tables;

  explicit Reference(const Case& c) {
    for (int t = 0; t < c.num_tables(); ++t)
      tables.push_back(std::make_unique<Embedding>(c.specs[t], c.init[t]));
  }
  // Forward/backward/step on step k's global batches; returns the outputs.
  std::vector<std::vector<float>> step(const Case& c, size_t k) {
    std::vector<std::vector<float>> outs;
    for (int t = 0; t < c.num_tables(); ++t) {
      const StepBatch& b = c.steps[k][t];
      const TypedIds ids = b.slice(0, b.samples);
      outs.emplace_back(b.ids.size() * static_cast<size_t>(c.specs[t].dim));
      tables[t]->forward(ids.view, outs.back().data());
      tables[t]->backward(b.grad.data());
      tables[t]->step();
    }
    return outs;
  }
};

// This rank's rows of table t's weights or state, wherever they live (the
// host on the CPU, device memory on a GPU), through read_rows.
std::vector<float> rows_of(const ShardedEmbedding& se, int t, TablePart part) {
  const int64_t rows = se.shard(t).num_rows(), width = se.width(t, part);
  std::vector<float> out(static_cast<size_t>(rows * width));
  se.read_rows(t, part, 0, rows, out.data());
  return out;
}

// Compares this rank's shards of `se` (rows, optimizer state, step counter)
// with the reference's rows that the shard plan gives this rank.
void expect_shards_match(const ShardedEmbedding& se, int me, const Reference& ref, const Case& c) {
  for (int t = 0; t < c.num_tables(); ++t) {
    SCOPED_TRACE(c.specs[t].name);
    const embtrain::EmbeddingTable& shard = se.shard(t);
    const embtrain::EmbeddingTable& full = ref.tables[t]->table();
    const int64_t dim = c.specs[t].dim;
    const ShardPlan& plan = se.plan(t);
    EXPECT_EQ(shard.rank(), me);
    EXPECT_EQ(shard.num_rows(), plan.shard_rows(me));
    const std::vector<float> weights = rows_of(se, t, TablePart::kWeights);
    ASSERT_EQ(static_cast<int64_t>(weights.size()), shard.num_rows() * dim);
    std::vector<float> want(weights.size());
    plan.take_shard(me, full.weights().data(), dim, want.data());
    EXPECT_TRUE(all_close(weights.data(), want.data(), shard.num_rows() * dim, kRtol))
        << "weights of this rank's " << shard.num_rows() << " rows";
    const int64_t width =
        c.specs[t].freeze ? 0 : embtrain::optimizer_state_width(c.specs[t].optimizer.kind, dim);
    const std::vector<float> state = rows_of(se, t, TablePart::kState);
    ASSERT_EQ(static_cast<int64_t>(state.size()), shard.num_rows() * width);
    want.resize(state.size());
    plan.take_shard(me, full.state().data(), width, want.data());
    EXPECT_TRUE(all_close(state.data(), want.data(), shard.num_rows() * width, kRtol))
        << "optimizer state of this rank's " << shard.num_rows() << " rows";
    EXPECT_EQ(shard.step(), full.step());
  }
}

class ShardedEmbeddingTest : public MpiTest {};

std::string rank0_string(Communicator& comm, const std::string& mine);  // below

// The message of the AgreedError `work` throws; a test failure, and "", if
// it throws none or something else.
template <typename Work>
std::string agreed_error_of(Work work) {
  try {
    work();
    ADD_FAILURE() << "no error was thrown";
  } catch (const embtrain::AgreedError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw something other than AgreedError: " << e.what();
  }
  return "";
}

// Runs `cases` random cases through a ShardedEmbedding (on this rank's GPU
// when `on_gpu`) and the single-process reference, comparing every step's
// forward output slice, the final shards and gather_table.
void check_equals_one_process(uint64_t seed, int cases, bool on_gpu) {
  Communicator& comm = world();
  const int P = comm.size(), me = comm.rank();
  for (int n = 0; n < cases; ++n) {
    const Case c = random_case(embtrain::random_bits(seed, 101, static_cast<uint64_t>(n)), P);
    SCOPED_TRACE("case " + std::to_string(n) + " of " + std::to_string(cases) + ", " +
                 c.describe());
    ShardedEmbedding se(c.specs, &comm, local_rows(c, P, me));
    if (on_gpu) se.use_cuda();
    Reference ref(c);
    for (size_t k = 0; k < c.steps.size(); ++k) {
      const auto outs = sharded_step(se, c, k);
      const auto want = ref.step(c, k);
      for (int t = 0; t < c.num_tables(); ++t) {
        const StepBatch& b = c.steps[k][t];
        const int64_t begin = ShardPlan(b.samples, P).row_begin(me);
        const int64_t offset = begin * b.per_sample * c.specs[t].dim;
        EXPECT_TRUE(all_close(outs[t].data(), want[t].data() + offset,
                              static_cast<int64_t>(outs[t].size()), kRtol))
            << "forward output of step " << k << ", table " << t << " (samples from " << begin
            << ")";
      }
    }
    expect_shards_match(se, me, ref, c);

    // gather_table on rank 0 assembles the whole table.
    for (int t = 0; t < c.num_tables(); ++t) {
      const std::vector<float> full = se.gather_table(t, 0);
      if (me == 0) {
        const auto& want = ref.tables[t]->table().weights();
        EXPECT_EQ(full.size(), want.size()) << "gather_table(" << t << ", 0)";
        if (full.size() == want.size()) {
          EXPECT_TRUE(all_close(full.data(), want.data(), static_cast<int64_t>(full.size()), kRtol))
              << "gather_table(" << t << ", 0)";
        }
      } else {
        EXPECT_TRUE(full.empty()) << "gather_table(" << t << ", 0) on rank " << me;
      }
    }
    if (!all_ranks(!::testing::Test::HasFailure())) break;  // one failing case is enough to read
  }
}

TEST_F(ShardedEmbeddingTest, EqualsOneProcessOnTheGlobalBatch) {
  const uint64_t seed = test_seed(101);
  SCOPED_TRACE(seed_trace(seed));
  check_equals_one_process(seed, 300, /*on_gpu=*/false);
}

// The GPU step (CUDA kernels, data over NCCL for one rank per GPU, else MPI
// staging, so P >= 2 ranks on one GPU test the staged path) against the same
// reference. Skips on every rank unless every rank sees a GPU;
// EMBTRAIN_REQUIRE_GPU=1 turns the skip into a failure.
TEST_F(ShardedEmbeddingTest, GpuStepEqualsOneProcessOnTheGlobalBatch) {
  SKIP_UNLESS_EVERY_RANK_HAS_GPU();
  const uint64_t seed = test_seed(111);
  SCOPED_TRACE(seed_trace(seed));
  check_equals_one_process(seed, 100, /*on_gpu=*/true);
}

// This rank's shards of a GPU job and a CPU job, bit for bit (rows,
// optimizer state, step counters), and no copy of the GPU job's rows on
// the host (no mirror); `when` names the moment in the messages.
void expect_gpu_shards_equal_cpu(const ShardedEmbedding& gpu, const ShardedEmbedding& cpu,
                                 const std::string& when = "at the end") {
  for (int t = 0; t < gpu.num_tables(); ++t) {
    const embtrain::EmbeddingTable& host = gpu.shard(t);
    EXPECT_TRUE(host.weights().empty() && host.state().empty() && !host.placed_on_host())
        << when << ": the host holds " << host.weights().size() << " weights and "
        << host.state().size() << " state floats of table " << t << " (a mirror)";
    for (const TablePart part : {TablePart::kWeights, TablePart::kState}) {
      const std::vector<float> a = rows_of(gpu, t, part), b = rows_of(cpu, t, part);
      ASSERT_EQ(a.size(), b.size());
      EXPECT_EQ(bytes_cmp(a.data(), b.data(), a.size() * 4), 0)
          << when << ": " << (part == TablePart::kWeights ? "weights" : "state") << " of table "
          << t << " differ from the CPU's";
    }
    EXPECT_EQ(host.step(), cpu.shard(t).step()) << when << ": table " << t << "'s step";
  }
}

// Every step of case c on a GPU job and a CPU job, forward outputs
// compared bit for bit.
void step_both_and_compare(ShardedEmbedding& gpu, ShardedEmbedding& cpu, const Case& c) {
  for (size_t k = 0; k < c.steps.size(); ++k) {
    const auto want = sharded_step(cpu, c, k);
    const auto got = sharded_step(gpu, c, k);
    for (int t = 0; t < c.num_tables(); ++t) {
      ASSERT_EQ(got[t].size(), want[t].size());
      EXPECT_EQ(bytes_cmp(got[t].data(), want[t].data(), got[t].size() * 4), 0)
          << "forward output of step " << k << ", table " << t;
    }
  }
}

// The GPU step against the CPU step at the same number of ranks: bit for
// bit, forward outputs, rows, optimizer state and step counters alike,
// since both backends add in one order (embtrain/sum_order.hpp) and round
// alike. Every other case has its gradients replaced by cancelling ones (a
// quarter of them +-1000), where any difference in the order of the adds
// would show; every third sends table 0 in 16 bits, bf16 and fp16 in turn
// (the CPU update reads the gradients in that format, the GPU's unpacked).
void check_gpu_equals_cpu(uint64_t seed, int cases) {
  Communicator& comm = world();
  const int P = comm.size(), me = comm.rank();
  for (int n = 0; n < cases; ++n) {
    Case c = random_case(embtrain::random_bits(seed, 141, static_cast<uint64_t>(n)), P);
    std::mt19937_64 rng(embtrain::random_bits(seed, 142, static_cast<uint64_t>(n)));
    if (n % 2)
      for (auto& step : c.steps)
        for (StepBatch& b : step)
          for (float& g : b.grad) g = rng() % 4 ? g : (rng() % 2 ? 1000.f : -1000.f) + g;
    if (n % 3 == 0)
      c.specs[0].comm_precision =
          n % 2 ? embtrain::CommPrecision::kFp16 : embtrain::CommPrecision::kBf16;
    SCOPED_TRACE("case " + std::to_string(n) + " of " + std::to_string(cases) + ", " +
                 c.describe());
    ShardedEmbedding cpu(c.specs, &comm, local_rows(c, P, me));
    ShardedEmbedding gpu(c.specs, &comm, local_rows(c, P, me));
    gpu.use_cuda();
    step_both_and_compare(gpu, cpu, c);
    expect_gpu_shards_equal_cpu(gpu, cpu);
    if (!all_ranks(!::testing::Test::HasFailure())) break;
  }
}

TEST_F(ShardedEmbeddingTest, GpuStepEqualsTheCpuStepBitForBit) {
  SKIP_UNLESS_EVERY_RANK_HAS_GPU();
  const uint64_t seed = test_seed(141);
  SCOPED_TRACE(seed_trace(seed));
  check_gpu_equals_cpu(seed, 60);
}

// On a GPU the rows live in device memory only. Fresh tables are drawn
// there, never on the host, with the CPU's values bit for bit (scaled or
// zeroed by set_fresh_rows, the padding row zeroed, the optimizer state
// started); read_rows and write_rows move rows in chunks of
// transfer_chunk_bytes(), made small here (1 to 200 floats), so that a
// table spans many chunks and chunks split rows; and steps, reads and
// writes bring no host copy back.
TEST_F(ShardedEmbeddingTest, GpuStepKeepsTheRowsOnTheDeviceOnly) {
  SKIP_UNLESS_EVERY_RANK_HAS_GPU();
  const uint64_t seed = test_seed(151);
  SCOPED_TRACE(seed_trace(seed));
  Communicator& comm = world();
  const int P = comm.size();
  const size_t saved_chunk = embtrain::transfer_chunk_bytes();
  for (int n = 0; n < 20; ++n) {
    const Case c = random_case(embtrain::random_bits(seed, 151, static_cast<uint64_t>(n)), P);
    std::mt19937_64 rng(embtrain::random_bits(seed, 152, static_cast<uint64_t>(n)));
    const size_t chunk = 4 * (1 + rng() % 200);
    embtrain::set_transfer_chunk_bytes(chunk);
    SCOPED_TRACE("case " + std::to_string(n) + ", chunks of " + std::to_string(chunk) + " bytes, " +
                 c.describe());
    const uint64_t table_seed = rng();
    ShardedEmbedding cpu(c.specs, &comm, table_seed), gpu(c.specs, &comm, table_seed);
    for (int t = 0; t < c.num_tables(); ++t) {
      const auto scale = static_cast<float>(uniform(rng, 0.01, 2.0));
      const bool zeros = rng() % 4 == 0;
      cpu.set_fresh_rows(t, scale, zeros);
      gpu.set_fresh_rows(t, scale, zeros);
    }
    gpu.use_cuda();
    expect_gpu_shards_equal_cpu(gpu, cpu, "fresh");
    // A random row range written on both (state kept positive: Adagrad's
    // and Adam's second moments).
    std::normal_distribution<float> normal(0.f, 1.f);
    for (int t = 0; t < c.num_tables(); ++t) {
      const int64_t rows = cpu.shard(t).num_rows();
      if (rows == 0) continue;
      const int64_t first = static_cast<int64_t>(rng() % static_cast<uint64_t>(rows));
      const int64_t count = static_cast<int64_t>(rng() % static_cast<uint64_t>(rows - first + 1));
      for (const TablePart part : {TablePart::kWeights, TablePart::kState}) {
        std::vector<float> values(static_cast<size_t>(count * cpu.width(t, part)));
        for (float& x : values)
          x = part == TablePart::kWeights ? normal(rng) : std::abs(normal(rng));
        cpu.write_rows(t, part, first, count, values.data());
        gpu.write_rows(t, part, first, count, values.data());
      }
    }
    expect_gpu_shards_equal_cpu(gpu, cpu, "written");
    step_both_and_compare(gpu, cpu, c);
    expect_gpu_shards_equal_cpu(gpu, cpu, "stepped");
    if (!all_ranks(!::testing::Test::HasFailure())) break;
  }
  embtrain::set_transfer_chunk_bytes(saved_chunk);
}

// This rank's slice of step k's batches, as views, and its gradients.
struct Slices {
  std::vector<TypedIds> ids;
  std::vector<IdsView> views;
  std::vector<const float*> grads;
};
Slices slices(const Case& c, size_t k, int P, int me) {
  Slices s;
  for (int t = 0; t < c.num_tables(); ++t) {
    const StepBatch& b = c.steps[k][t];
    const ShardPlan split(b.samples, P);
    s.ids.push_back(b.slice(split.row_begin(me), split.row_end(me)));
    s.grads.push_back(b.grad.data() + split.row_begin(me) * b.per_sample * c.specs[t].dim);
  }
  for (const TypedIds& i : s.ids) s.views.push_back(i.view);
  return s;
}

// Whether steps a and b of `c` have the same batches (then a forward of
// a's batch takes up a prefetch of b's).
bool fingerprint_equal(const Case& c, size_t a, size_t b) {
  for (int t = 0; t < c.num_tables(); ++t) {
    const StepBatch& x = c.steps[a][t];
    const StepBatch& y = c.steps[b][t];
    if (x.ids != y.ids || x.samples != y.samples || x.per_sample != y.per_sample ||
        x.two_d != y.two_d || x.dtype != y.dtype)
      return false;
  }
  return true;
}

// Prefetched steps (each step's input distribution started during the step
// before) give the bits of the same steps without it; so does a prefetch
// dropped by a forward of another batch between (an evaluation), done alike
// on both sides.
void check_prefetch(uint64_t seed, int cases, bool on_gpu) {
  Communicator& comm = world();
  const int P = comm.size(), me = comm.rank();
  for (int n = 0; n < cases; ++n) {
    const Case c = random_case(embtrain::random_bits(seed, 131, static_cast<uint64_t>(n)), P);
    SCOPED_TRACE("case " + std::to_string(n) + ", " + c.describe());
    ShardedEmbedding plain(c.specs, &comm, local_rows(c, P, me));
    ShardedEmbedding piped(c.specs, &comm, local_rows(c, P, me));
    if (on_gpu) plain.use_cuda(), piped.use_cuda();
    const size_t K = c.steps.size();
    int64_t taken = 0;  // prefetches the next forward takes up
    for (size_t k = 0; k < K; ++k) {
      const Slices batch = slices(c, k, P, me);
      std::vector<std::vector<float>> out_plain, out_piped;
      std::vector<float*> ptr_plain, ptr_piped;
      for (int t = 0; t < c.num_tables(); ++t) {
        const size_t floats = static_cast<size_t>(batch.views[t].numel() * c.specs[t].dim);
        out_plain.emplace_back(floats, -1.f);
        out_piped.emplace_back(floats, -2.f);
      }
      for (int t = 0; t < c.num_tables(); ++t) {
        ptr_plain.push_back(out_plain[t].data());
        ptr_piped.push_back(out_piped[t].data());
      }
      plain.forward(batch.views, ptr_plain);
      piped.forward(batch.views, ptr_piped);
      for (int t = 0; t < c.num_tables(); ++t)
        ASSERT_EQ(bytes_cmp(out_plain[t].data(), out_piped[t].data(), out_plain[t].size() * 4), 0)
            << "step " << k << ", table " << t << ": outputs differ";
      const bool evaluate = (k + n) % 3 == 1;  // then a forward of step 0's batch in between
      if (k + 1 < K) piped.prefetch(slices(c, k + 1, P, me).views);
      // Step 0's batch may be the next one too (a one-step case has no next).
      if (k + 1 < K && (!evaluate || fingerprint_equal(c, 0, k + 1))) ++taken;
      plain.backward(batch.grads);
      piped.backward(batch.grads);
      plain.step();
      piped.step();
      if (evaluate) {
        const Slices other = slices(c, 0, P, me);
        std::vector<std::vector<float>> scratch;
        std::vector<float*> ptrs;
        for (int t = 0; t < c.num_tables(); ++t)
          scratch.emplace_back(static_cast<size_t>(other.views[t].numel() * c.specs[t].dim));
        for (auto& v : scratch) ptrs.push_back(v.data());
        plain.forward(other.views, ptrs);
        piped.forward(other.views, ptrs);
      }
    }
    EXPECT_EQ(piped.stats().prefetched_steps, taken) << "prefetches taken up";
    EXPECT_EQ(plain.stats().prefetched_steps, 0);
    for (int t = 0; t < c.num_tables(); ++t) {
      const std::vector<float> a = rows_of(plain, t, TablePart::kWeights),
                               b = rows_of(piped, t, TablePart::kWeights);
      const std::vector<float> sa = rows_of(plain, t, TablePart::kState),
                               sb = rows_of(piped, t, TablePart::kState);
      EXPECT_EQ(bytes_cmp(a.data(), b.data(), a.size() * 4), 0)
          << "table " << t << ": weights differ";
      EXPECT_EQ(bytes_cmp(sa.data(), sb.data(), sa.size() * 4), 0)
          << "table " << t << ": optimizer state differs";
    }
    if (!all_ranks(!::testing::Test::HasFailure())) break;
  }
}

TEST_F(ShardedEmbeddingTest, PrefetchedStepsAreBitwiseTheSame) {
  const uint64_t seed = test_seed(131);
  SCOPED_TRACE(seed_trace(seed));
  check_prefetch(seed, 60, /*on_gpu=*/false);
}

TEST_F(ShardedEmbeddingTest, GpuStepPrefetchedStepsAreBitwiseTheSame) {
  SKIP_UNLESS_EVERY_RANK_HAS_GPU();
  const uint64_t seed = test_seed(132);
  SCOPED_TRACE(seed_trace(seed));
  check_prefetch(seed, 30, /*on_gpu=*/true);
}

// This rank's shard of every table, weights and optimizer state, equal
// byte for byte in `a` and `b`.
void expect_same_shards(const ShardedEmbedding& a, const ShardedEmbedding& b) {
  for (int t = 0; t < a.num_tables(); ++t)
    for (const TablePart part : {TablePart::kWeights, TablePart::kState}) {
      const std::vector<float> x = rows_of(a, t, part), y = rows_of(b, t, part);
      ASSERT_EQ(x.size(), y.size());
      EXPECT_EQ(bytes_cmp(x.data(), y.data(), x.size() * 4), 0)
          << "table " << t << ": " << (part == TablePart::kWeights ? "weights" : "state")
          << " differ";
    }
}

// Overlapped exchanges (rows and gradients in K slices, the owner's
// gathers and updates between them) give the bits of whole exchanges:
// outputs at every step, then weights and optimizer state. K from 2 to
// more slices than a block has ids (empty slices); tables in fp32, bf16
// and fp16 on the wire (the CPU keeps 16-bit gradients packed; an fp32
// table beside them is unpacked slice by slice); every other case also
// prefetches each step's ids during the step before (its non-blocking ids
// exchange then travels beside the gradients' slices). Every step of the
// sliced twin moved in slices when there are peers (StepStats). On the GPU
// (on_gpu) the sliced twin runs on the device, the whole one on the CPU.
void check_overlap(uint64_t seed, int cases, bool on_gpu) {
  Communicator& comm = world();
  const int P = comm.size(), me = comm.rank();
  using embtrain::CommPrecision;
  const int kChunks[] = {2, 3, 5, 64};
  for (int n = 0; n < cases; ++n) {
    Case c = random_case(embtrain::random_bits(seed, 141, static_cast<uint64_t>(n)), P);
    if (n % 3 == 1) c.specs[0].comm_precision = CommPrecision::kBf16;
    if (n % 3 == 2) {
      c.specs[0].comm_precision = CommPrecision::kFp16;
      if (c.num_tables() > 1) c.specs[1].comm_precision = CommPrecision::kBf16;
    }
    const int chunks = kChunks[n % 4];
    const bool prefetch = n % 2 == 0;
    SCOPED_TRACE("case " + std::to_string(n) + ", " + std::to_string(chunks) + " slices" +
                 (prefetch ? ", prefetched" : "") + ", table 0 in " +
                 comm_precision_name(c.specs[0].comm_precision) + ", " + c.describe());
    ShardedEmbedding whole(c.specs, &comm, local_rows(c, P, me));
    ShardedEmbedding sliced(c.specs, &comm, local_rows(c, P, me));
    if (on_gpu) sliced.use_cuda();
    sliced.overlap_exchanges(chunks);
    for (size_t k = 0; k < c.steps.size(); ++k) {
      const Slices batch = slices(c, k, P, me);
      std::vector<std::vector<float>> out_whole, out_sliced;
      std::vector<float*> ptr_whole, ptr_sliced;
      for (int t = 0; t < c.num_tables(); ++t) {
        const size_t floats = static_cast<size_t>(batch.views[t].numel() * c.specs[t].dim);
        out_whole.emplace_back(floats, -1.f);
        out_sliced.emplace_back(floats, -2.f);
      }
      for (int t = 0; t < c.num_tables(); ++t) {
        ptr_whole.push_back(out_whole[t].data());
        ptr_sliced.push_back(out_sliced[t].data());
      }
      whole.forward(batch.views, ptr_whole);
      sliced.forward(batch.views, ptr_sliced);
      for (int t = 0; t < c.num_tables(); ++t)
        ASSERT_EQ(bytes_cmp(out_whole[t].data(), out_sliced[t].data(), out_whole[t].size() * 4), 0)
            << "step " << k << ", table " << t << ": outputs differ";
      whole.backward(batch.grads);
      sliced.backward(batch.grads);
      if (prefetch && k + 1 < c.steps.size()) sliced.prefetch(slices(c, k + 1, P, me).views);
      whole.step();
      sliced.step();
    }
    EXPECT_EQ(sliced.stats().sliced_steps, P > 1 ? static_cast<int64_t>(c.steps.size()) : 0);
    EXPECT_EQ(whole.stats().sliced_steps, 0);
    expect_same_shards(whole, sliced);
    if (!all_ranks(!::testing::Test::HasFailure())) break;
  }
}

// The calls K = 1 allows keep giving its bits with slices: a backward
// twice before the step (the second's gradients apply), a step twice, the
// slice count changed between backward and step (it takes effect at the
// next forward), a forward after a backward with no step. On the GPU the
// sliced twin runs on the device.
void check_overlap_call_orders(uint64_t seed, bool on_gpu) {
  Communicator& comm = world();
  const int P = comm.size(), me = comm.rank();
  for (int n = 0; n < 6; ++n) {
    const Case c = random_case(embtrain::random_bits(seed, 142, static_cast<uint64_t>(n)), P);
    SCOPED_TRACE("case " + std::to_string(n) + ", " + c.describe());
    ShardedEmbedding whole(c.specs, &comm, local_rows(c, P, me));
    ShardedEmbedding sliced(c.specs, &comm, local_rows(c, P, me));
    if (on_gpu) sliced.use_cuda();
    sliced.overlap_exchanges(3);
    for (size_t k = 0; k < c.steps.size(); ++k) {
      const Slices batch = slices(c, k, P, me);
      std::vector<std::vector<float>> out(static_cast<size_t>(c.num_tables())), doubled(out.size());
      std::vector<float*> ptrs;
      std::vector<const float*> other;  // twice the batch's gradient: dropped for the batch's
      for (int t = 0; t < c.num_tables(); ++t) {
        const size_t n = static_cast<size_t>(batch.views[t].numel() * c.specs[t].dim);
        out[t].resize(n);
        for (size_t i = 0; i < n; ++i) doubled[t].push_back(2 * batch.grads[t][i]);
        other.push_back(doubled[t].data());
      }
      for (auto& v : out) ptrs.push_back(v.data());
      for (ShardedEmbedding* e : {&whole, &sliced}) {
        e->forward(batch.views, ptrs);
        switch ((k + n) % 4) {
          case 0:  // a backward whose gradients are replaced by the next's
            e->backward(other);
            e->backward(batch.grads);
            e->step();
            break;
          case 1:  // the step twice
            e->backward(batch.grads);
            e->step();
            e->step();
            break;
          case 2:  // the slice count changed between backward and step
            e->backward(batch.grads);
            if (e == &sliced) e->overlap_exchanges(2 + static_cast<int>(k % 3));
            e->step();
            break;
          default:  // a backward with no step; the next forward drops it
            e->backward(batch.grads);
            break;
        }
      }
    }
    expect_same_shards(whole, sliced);
    if (!all_ranks(!::testing::Test::HasFailure())) break;
  }
}

TEST_F(ShardedEmbeddingTest, OverlappedExchangesTakeEveryCallOrder) {
  const uint64_t seed = test_seed(142);
  SCOPED_TRACE(seed_trace(seed));
  check_overlap_call_orders(seed, /*on_gpu=*/false);
}

TEST_F(ShardedEmbeddingTest, GpuStepOverlappedExchangesTakeEveryCallOrder) {
  SKIP_UNLESS_EVERY_RANK_HAS_GPU();
  const uint64_t seed = test_seed(145);
  SCOPED_TRACE(seed_trace(seed));
  check_overlap_call_orders(seed, /*on_gpu=*/true);
}

TEST_F(ShardedEmbeddingTest, OverlappedExchangesAreBitwiseTheSame) {
  const uint64_t seed = test_seed(141);
  SCOPED_TRACE(seed_trace(seed));
  check_overlap(seed, 40, /*on_gpu=*/false);
}

// The GPU step with sliced exchanges (kernels enqueued between the
// slices' transfers; on one GPU the MPI-staged communicator, whose slices
// travel in flight together) gives the CPU step's bits with whole ones.
TEST_F(ShardedEmbeddingTest, GpuStepOverlappedExchangesEqualTheCpuStepBitForBit) {
  SKIP_UNLESS_EVERY_RANK_HAS_GPU();
  const uint64_t seed = test_seed(146);
  SCOPED_TRACE(seed_trace(seed));
  check_overlap(seed, 24, /*on_gpu=*/true);
}

// Rows and gradients in 16 bits on the wire (comm_precision): the step
// stays within the format's rounding of one process's result. The case's
// gradients never cancel (see random_batch), so each row's summed gradient
// is off by at most the format's relative rounding u (2^-8 for bf16, 2^-11
// for fp16, whose gradients travel scaled and stay far below its
// saturation), and each forward row by u of its value; through at most 4
// steps of any optimizer that stays below 16 u of max(1, |value|). A table
// left in fp32 beside them goes through the wire buffers as a copy: its
// results are the bits of the all-fp32 run.
void check_half_precision(uint64_t seed, int cases, bool on_gpu) {
  Communicator& comm = world();
  const int P = comm.size(), me = comm.rank();
  using embtrain::CommPrecision;
  auto unit = [](CommPrecision p) { return p == CommPrecision::kBf16 ? 1.0 / 256 : 1.0 / 2048; };
  for (int n = 0; n < cases; ++n) {
    Case c = random_case(embtrain::random_bits(seed, 121, static_cast<uint64_t>(n)), P);
    Case exact = c;
    const auto precision = n % 2 ? CommPrecision::kBf16 : CommPrecision::kFp16;
    c.specs[0].comm_precision = precision;  // the others stay fp32 ...
    // ... but every third case, where there is a second table, that one
    // travels in the other 16-bit format: both formats and fp32 in one
    // step's wire buffers.
    if (n % 3 == 2 && c.num_tables() > 1)
      c.specs[1].comm_precision =
          precision == CommPrecision::kBf16 ? CommPrecision::kFp16 : CommPrecision::kBf16;
    std::string formats;
    for (const auto& spec : c.specs) formats += std::string(" ") + comm_precision_name(spec.comm_precision);
    SCOPED_TRACE("case " + std::to_string(n) + " (tables in" + formats + "), " + c.describe());
    ShardedEmbedding half(c.specs, &comm, local_rows(c, P, me));
    ShardedEmbedding fp32(exact.specs, &comm, local_rows(exact, P, me));
    if (on_gpu) half.use_cuda(), fp32.use_cuda();
    Reference ref(c);
    for (size_t k = 0; k < c.steps.size(); ++k) {
      const auto outs = sharded_step(half, c, k);
      const auto exact_outs = sharded_step(fp32, exact, k);
      const auto want = ref.step(c, k);
      for (int t = 0; t < c.num_tables(); ++t) {
        const CommPrecision pt = c.specs[t].comm_precision;
        if (pt == CommPrecision::kFp32) {
          EXPECT_TRUE(outs[t] == exact_outs[t] ||
                      bytes_cmp(outs[t].data(), exact_outs[t].data(), outs[t].size() * 4) == 0)
              << "step " << k << ": fp32 table " << t << " differs from the all-fp32 run";
          continue;
        }
        const StepBatch& b = c.steps[k][t];
        const int64_t offset =
            ShardPlan(b.samples, P).row_begin(me) * b.per_sample * c.specs[t].dim;
        EXPECT_TRUE(all_close(outs[t].data(), want[t].data() + offset,
                              static_cast<int64_t>(outs[t].size()), 16 * unit(pt)))
            << "forward output of step " << k << " of 16-bit table " << t;
        // Every row has made the trip, the rank's own rows too: each output
        // value is one the format can hold.
        if (P > 1)
          for (size_t i = 0; i < outs[t].size(); ++i) {
            const float x = outs[t][i];
            const float trip = embtrain::from_wire(embtrain::to_wire(x, pt), pt);
            ASSERT_EQ(bytes_cmp(&x, &trip, 4), 0)
                << "step " << k << ": table " << t << "'s output " << i << " = " << x
                << " is not a " << comm_precision_name(pt) << " value";
          }
      }
    }
    for (int t = 0; t < c.num_tables(); ++t) {
      const std::vector<float> got = rows_of(half, t, TablePart::kWeights);
      const CommPrecision pt = c.specs[t].comm_precision;
      if (pt == CommPrecision::kFp32) {
        EXPECT_EQ(
            bytes_cmp(got.data(), rows_of(fp32, t, TablePart::kWeights).data(), got.size() * 4), 0)
            << "fp32 table " << t << "'s shard differs from the all-fp32 run";
        continue;
      }
      std::vector<float> want(got.size());
      half.plan(t).take_shard(me, ref.tables[t]->table().weights().data(), c.specs[t].dim,
                              want.data());
      EXPECT_TRUE(all_close(got.data(), want.data(), static_cast<int64_t>(got.size()), 16 * unit(pt)))
          << "weights of 16-bit table " << t;
    }
    if (!all_ranks(!::testing::Test::HasFailure())) break;
  }
}

TEST_F(ShardedEmbeddingTest, HalfPrecisionOnTheWireStaysNearOneProcess) {
  const uint64_t seed = test_seed(121);
  SCOPED_TRACE(seed_trace(seed));
  check_half_precision(seed, 60, /*on_gpu=*/false);
}

TEST_F(ShardedEmbeddingTest, GpuStepHalfPrecisionOnTheWireStaysNearOneProcess) {
  SKIP_UNLESS_EVERY_RANK_HAS_GPU();
  const uint64_t seed = test_seed(122);
  SCOPED_TRACE(seed_trace(seed));
  check_half_precision(seed, 30, /*on_gpu=*/true);
}

// Without a GPU (or without CUDA in the build) asking for one is a clear
// error on every rank, and the tables stay usable on the CPU.
TEST_F(ShardedEmbeddingTest, UseCudaWithoutAGpuFailsOnEveryRank) {
  if (!all_ranks(gpu_count() == 0)) GTEST_SKIP() << "a rank has a GPU";
  Communicator& comm = world();
  const Case c = random_case(test_seed(112), comm.size());
  ShardedEmbedding se(c.specs, &comm, local_rows(c, comm.size(), comm.rank()));
  const std::string message = agreed_error_of([&] { se.use_cuda(); });
  EXPECT_NE(message.find("device cuda"), std::string::npos) << "got: '" << message << "'";
  EXPECT_EQ(rank0_string(comm, message), message) << "ranks report different errors";
  EXPECT_FALSE(se.on_gpu());
  sharded_step(se, c, 0);  // still steps on the CPU
}

TEST_F(ShardedEmbeddingTest, GatherTableToEveryRoot) {
  const uint64_t seed = test_seed(102);
  SCOPED_TRACE(seed_trace(seed));
  Communicator& comm = world();
  const int P = comm.size(), me = comm.rank();
  const Case c = random_case(seed, P);
  SCOPED_TRACE(c.describe());
  ShardedEmbedding se(c.specs, &comm, local_rows(c, P, me));
  for (int root = 0; root < P; ++root)
    for (int t = 0; t < c.num_tables(); ++t) {
      const std::vector<float> full = se.gather_table(t, root);
      if (me == root) {
        EXPECT_EQ(full, c.init[t]) << "gather_table(" << t << ", " << root << ")";
      } else {
        EXPECT_TRUE(full.empty());
      }
    }
}

TEST_F(ShardedEmbeddingTest, FreshTablesDoNotDependOnRankCount) {
  // The seed constructor draws rows by (seed, table, row): the job's tables
  // must equal those of a one-rank job with the same seed, row for row.
  const uint64_t seed = test_seed(103);
  SCOPED_TRACE(seed_trace(seed));
  Communicator& comm = world();
  const int P = comm.size(), me = comm.rank();
  std::mt19937_64 rng(seed);
  std::vector<TableSpec> specs;
  for (int t = 0; t < 4; ++t) specs.push_back(random_spec(rng, t, P));
  // Table 4 is a copy of table 0 under another index: its rows must differ.
  specs.push_back(specs[0]);
  specs.back().name = "table4";
  // And one big enough for the distribution to show.
  TableSpec big;
  big.name = "big";
  big.num_embeddings = 20011;
  big.dim = 8;
  big.padding_idx = -3;
  specs.push_back(big);

  const uint64_t table_seed = rng();
  ShardedEmbedding sharded(specs, &comm, table_seed);
  // The "P = 1" to compare against, built on every rank without MPI.
  const std::unique_ptr<Communicator> self = embtrain::make_self_communicator();
  ShardedEmbedding single(specs, self.get(), table_seed);
  ShardedEmbedding other_seed(specs, self.get(), table_seed + 1);

  for (int t = 0; t < static_cast<int>(specs.size()); ++t) {
    SCOPED_TRACE(specs[t].name + " rows " + std::to_string(specs[t].num_embeddings) + " dim " +
                 std::to_string(specs[t].dim));
    // The collective first, so that no failed check below can skip it.
    const std::vector<float> gathered = sharded.gather_table(t, 0);
    const int64_t dim = specs[t].dim, N = specs[t].num_embeddings;
    const auto& mine = sharded.shard(t).weights();
    const auto& all = single.shard(t).weights();
    const ShardPlan plan = ShardedEmbedding::table_plan(N, P);
    EXPECT_EQ(static_cast<int64_t>(all.size()), N * dim);
    EXPECT_EQ(static_cast<int64_t>(mine.size()), plan.shard_rows(me) * dim);
    if (static_cast<int64_t>(all.size()) != N * dim ||
        static_cast<int64_t>(mine.size()) != plan.shard_rows(me) * dim)
      continue;
    std::vector<float> want(mine.size());
    plan.take_shard(me, all.data(), dim, want.data());
    EXPECT_TRUE(mine.empty() ||
                bytes_cmp(mine.data(), want.data(), mine.size() * sizeof(float)) == 0)
        << "this rank's rows differ from the one-rank table's";
    // The padding row is zero, every other row is not.
    const int64_t pad = specs[t].padding_row();
    for (int64_t r = 0; r < N; ++r) {
      bool zero = true;
      for (int64_t j = 0; j < dim; ++j) zero &= all[r * dim + j] == 0.f;
      EXPECT_EQ(zero, r == pad) << "row " << r << " (padding row " << pad << ")";
    }
    // Another seed gives another table (unless its only row is padding).
    const auto& other = other_seed.shard(t).weights();
    if (!(N == 1 && pad == 0)) {
      EXPECT_NE(std::vector<float>(all.begin(), all.end()),
                std::vector<float>(other.begin(), other.end()));
    }
    // gather_table agrees with the one-rank table, bit for bit.
    if (me == 0) {
      EXPECT_TRUE(gathered.size() == all.size() &&
                  bytes_cmp(gathered.data(), all.data(), all.size() * sizeof(float)) == 0)
          << "gather_table(" << t << ", 0) differs from the one-rank table";
    }
  }
  // The table index enters the draw: tables 0 and 4 have the same shape but
  // not the same rows (unless a row is all padding: N = 1 with padding).
  const auto& t0 = single.shard(0).weights();
  const auto& t4 = single.shard(4).weights();
  if (!(specs[0].num_embeddings == 1 && specs[0].padding_row() == 0)) {
    EXPECT_NE(std::vector<float>(t0.begin(), t0.end()), std::vector<float>(t4.begin(), t4.end()));
  }
  // N(0, 1): mean and variance of 160k draws (standard errors 0.0025 and
  // 0.0035; the bounds are 8 of them).
  const auto& b = single.shard(5).weights();
  double sum = 0, sq = 0;
  for (float x : b) sum += x, sq += static_cast<double>(x) * x;
  const double n = static_cast<double>(b.size() - 8);  // less the padding row
  const double mean = sum / n, var = sq / n - mean * mean;
  EXPECT_NEAR(mean, 0.0, 0.02);
  EXPECT_NEAR(var, 1.0, 0.03);
}

// Runs a whole case on a fresh ShardedEmbedding and returns every output
// and the final weights and state of this rank's shards, as bytes.
std::vector<char> run_job(const Case& c, Communicator& comm) {
  const int P = comm.size(), me = comm.rank();
  ShardedEmbedding se(c.specs, &comm, local_rows(c, P, me));
  std::vector<char> bytes;
  auto append = [&](const float* p, size_t n) {
    const char* b = reinterpret_cast<const char*>(p);
    bytes.insert(bytes.end(), b, b + n * sizeof(float));
  };
  for (size_t k = 0; k < c.steps.size(); ++k)
    for (const auto& out : sharded_step(se, c, k)) append(out.data(), out.size());
  for (int t = 0; t < c.num_tables(); ++t) {
    append(se.shard(t).weights().data(), se.shard(t).weights().size());
    append(se.shard(t).state().data(), se.shard(t).state().size());
  }
  return bytes;
}

TEST_F(ShardedEmbeddingTest, SameJobTwiceIsBitwiseIdentical) {
  const uint64_t seed = test_seed(104);
  SCOPED_TRACE(seed_trace(seed));
  Communicator& comm = world();
  for (int n = 0; n < 10; ++n) {
    const Case c =
        random_case(embtrain::random_bits(seed, 104, static_cast<uint64_t>(n)), comm.size());
    SCOPED_TRACE(c.describe());
    const std::vector<char> first = run_job(c, comm);
    const std::vector<char> second = run_job(c, comm);
    EXPECT_EQ(first.size(), second.size());
    EXPECT_TRUE(first.size() == second.size() &&
                bytes_cmp(first.data(), second.data(), first.size()) == 0)
        << "the same job twice gave different bits";
    if (!all_ranks(!HasFailure())) break;
  }
}

TEST_F(ShardedEmbeddingTest, ResultDoesNotDependOnThreadCount) {
  // The kernels promise results independent of the OpenMP thread count
  // (segment_sum sums in position order whatever the chunking).
  const uint64_t seed = test_seed(105);
  SCOPED_TRACE(seed_trace(seed));
  Communicator& comm = world();
  const int threads = omp_get_max_threads();
  for (int n = 0; n < 6; ++n) {
    const Case c =
        random_case(embtrain::random_bits(seed, 105, static_cast<uint64_t>(n)), comm.size());
    SCOPED_TRACE(c.describe());
    omp_set_num_threads(1);
    const std::vector<char> one = run_job(c, comm);
    omp_set_num_threads(3);
    const std::vector<char> three = run_job(c, comm);
    omp_set_num_threads(threads);
    EXPECT_TRUE(one.size() == three.size() &&
                bytes_cmp(one.data(), three.data(), one.size()) == 0)
        << "1 and 3 OpenMP threads gave different bits";
    if (!all_ranks(!HasFailure())) break;
  }
}

// Every rank's copy of rank 0's string (a collective), to check that all
// ranks hold the same message.
std::string rank0_string(Communicator& comm, const std::string& mine) {
  int64_t length = static_cast<int64_t>(mine.size());
  comm.broadcast(&length, 1, CommType::kInt64, 0);
  std::string s = comm.rank() == 0 ? mine : std::string(static_cast<size_t>(length), '\0');
  comm.broadcast(&s[0], length, CommType::kByte, 0);
  return s;
}

TEST_F(ShardedEmbeddingTest, BadIdOnOneRankFailsOnEveryRank) {
  const uint64_t seed = test_seed(106);
  SCOPED_TRACE(seed_trace(seed));
  Communicator& comm = world();
  const int P = comm.size(), me = comm.rank();
  // A case with at least 2 steps; the bad batches go in between its steps.
  Case c = random_case(seed, P, 2, 4);
  while (c.steps.size() < 2) c.steps.push_back(c.steps.back());
  SCOPED_TRACE(c.describe());
  ShardedEmbedding se(c.specs, &comm, local_rows(c, P, me));
  Reference ref(c);

  struct Bad {
    int table;
    int64_t value;  // relative to num_embeddings when `past_end`
    bool past_end;
    DType dtype;
  };
  const std::vector<Bad> bads = {{0, 0, true, DType::kInt64},  // == N
                                 {0, -1, false, DType::kInt64},
                                 {c.num_tables() - 1, 12345, true, DType::kInt32},
                                 {c.num_tables() - 1, -54321, false, DType::kInt32},
                                 {0, 0, true, DType::kInt32}};
  size_t k = 0;  // the next good step
  for (int bad_rank = 0; bad_rank < P; ++bad_rank)
    for (const Bad& bad : bads) {
      const int64_t N = c.specs[bad.table].num_embeddings;
      const int64_t value = bad.past_end ? N + bad.value : bad.value;
      SCOPED_TRACE("id " + std::to_string(value) + " for " + c.specs[bad.table].name + " on rank " +
                   std::to_string(bad_rank));
      // Every rank has a small valid batch per table; the bad rank's has
      // one bad id among them.
      std::vector<std::vector<int64_t>> ids(static_cast<size_t>(c.num_tables()));
      std::vector<TypedIds> typed;
      std::vector<IdsView> views;
      std::vector<std::vector<float>> outs;
      std::vector<float*> out_ptrs;
      for (int t = 0; t < c.num_tables(); ++t) {
        const int64_t n = 4;
        for (int64_t i = 0; i < n; ++i)
          ids[t].push_back(static_cast<int64_t>(embtrain::random_bits(seed, 7, i) %
                                                static_cast<uint64_t>(c.specs[t].num_embeddings)));
        if (me == bad_rank && t == bad.table) ids[t][2] = value;
        typed.emplace_back(ids[t].data(), n, bad.dtype, std::vector<int64_t>{2, 2});
        outs.emplace_back(static_cast<size_t>(n * c.specs[t].dim));
      }
      for (int t = 0; t < c.num_tables(); ++t) {
        views.push_back(typed[t].view);
        out_ptrs.push_back(outs[t].data());
      }
      const std::string message = agreed_error_of([&] { se.forward(views, out_ptrs); });
      // The message names the value, the table and the valid range.
      const std::string range = "[0, " + std::to_string(N) + ")";
      EXPECT_NE(message.find(range), std::string::npos) << message;
      std::string without_range = message;
      if (message.find(range) != std::string::npos)
        without_range.erase(message.find(range), range.size());
      EXPECT_NE(without_range.find(std::to_string(value)), std::string::npos)
          << "the message should name the bad id " << value << ": " << message;
      EXPECT_NE(message.find(c.specs[bad.table].name), std::string::npos) << message;
      // Every rank holds the same message.
      EXPECT_EQ(rank0_string(comm, message), message) << "rank " << me << "'s message";

      // The next forward with good ids works: run the next good step and
      // compare it with the reference.
      const auto got = sharded_step(se, c, k);
      const auto want = ref.step(c, k);
      for (int t = 0; t < c.num_tables(); ++t) {
        const StepBatch& b = c.steps[k][t];
        const int64_t offset =
            ShardPlan(b.samples, P).row_begin(me) * b.per_sample * c.specs[t].dim;
        EXPECT_TRUE(all_close(got[t].data(), want[t].data() + offset,
                              static_cast<int64_t>(got[t].size()), kRtol))
            << "forward output after the failed forward, table " << t;
      }
      k = (k + 1) % c.steps.size();
      if (!all_ranks(!HasFailure())) return;
    }
  expect_shards_match(se, me, ref, c);
}

// Bad bags on one rank fail on every rank with the same message, both when
// the forward checks its own ids and when it takes up a prefetch (the bags
// are agreed on in that collective); the next good forward works.
TEST_F(ShardedEmbeddingTest, BadBagsOnOneRankFailOnEveryRank) {
  Communicator& comm = world();
  const int P = comm.size(), me = comm.rank();
  TableSpec spec;
  spec.name = "bags";
  spec.num_embeddings = 40;
  spec.dim = 4;
  ShardedEmbedding se({spec}, &comm, 3);
  std::vector<int64_t> ids = {1, 5, 7, 7, 30, 2};
  const IdsView view{ids.data(), DType::kInt64, {6}};
  std::vector<float> out(3 * spec.dim);
  for (int bad_rank = 0; bad_rank < P; ++bad_rank)
    for (bool prefetch : {false, true}) {
      SCOPED_TRACE(testing::Message() << "bad rank " << bad_rank << ", prefetch " << prefetch);
      std::vector<int64_t> offsets = {0, 2, 6};
      if (me == bad_rank) offsets[1] = 9;  // past the 6 ids
      const embtrain::BagsView bags{embtrain::PoolMode::kSum, offsets.data(), 2, nullptr};
      if (prefetch) se.prefetch({view});
      const std::string message =
          agreed_error_of([&] { se.forward({view}, {bags}, {out.data()}); });
      EXPECT_NE(message.find("offsets[1] = 9"), std::string::npos) << message;
      EXPECT_EQ(rank0_string(comm, message), message) << "rank " << me << "'s message";
      offsets[1] = 2;
      const embtrain::BagsView good{embtrain::PoolMode::kSum, offsets.data(), 2, nullptr};
      se.forward({view}, {good}, {out.data()});
      if (!all_ranks(!HasFailure())) return;
    }
}

TEST_F(ShardedEmbeddingTest, BadIdsOnTwoRanksReportTheLowestRank) {
  EMBTRAIN_REQUIRE_RANKS(2);
  const uint64_t seed = test_seed(107);
  SCOPED_TRACE(seed_trace(seed));
  Communicator& comm = world();
  const int P = comm.size(), me = comm.rank();
  TableSpec spec;
  spec.name = "clicks";
  spec.num_embeddings = 3 + static_cast<int64_t>(seed % 50);
  spec.dim = 3;
  ShardedEmbedding se({spec}, &comm, seed);
  // Ranks 1 and P - 1 (or 0 and 1 when P = 2) have different bad ids.
  const int low = P == 2 ? 0 : 1, high = P - 1;
  const int64_t low_value = spec.num_embeddings + 777, high_value = -888;
  std::vector<int64_t> ids = {0, 1, 2};
  if (me == low) ids[1] = low_value;
  if (me == high) ids[0] = high_value;
  std::vector<float> out(ids.size() * 3);
  const std::string message = agreed_error_of(
      [&] { se.forward({IdsView{ids.data(), DType::kInt64, {3}}}, {out.data()}); });
  EXPECT_NE(message.find(std::to_string(low_value)), std::string::npos) << message;
  EXPECT_EQ(message.find(std::to_string(high_value)), std::string::npos) << message;
  EXPECT_EQ(rank0_string(comm, message), message);
}

// Bags pooled at the owners (pool_at = owner) beside a table pooled at the
// requester and an unpooled one, all in one step: against the same job
// with every table pooled at the requester (which equals one process
// bitwise; tests/parity checks that against PyTorch), each rank's pooled
// output and shards within float rounding; every table not pooled at the
// owners bitwise the same; a prefetched twin and a second run bitwise the
// same as the first. Modes cycle through sum (with per-sample weights),
// mean and max; ids repeat within and across bags, with padding, empty
// and all-padding bags. Every other case sends the two tables not pooled
// at the owners in bf16 and fp16, and two of those the owner-pooled table
// in fp16 too (mean, then weighted sum; not max, whose winners rounding
// may change): its partial rows are rounded where the requester-pooled
// job rounds rows, so the two agree only within the format's rounding of
// the bag's terms, at most 2 u (9 entries x |weight| 2 x |row| 4) = 0.07
// for fp16's u = 2^-11, checked as 256 u = 0.125 of max(1, |value|)
// (the bitwise checks against the prefetched twin, the second run and the
// CPU engine hold for it as for any table).
void check_pooled_at_owners(uint64_t seed, bool on_gpu) {
  Communicator& comm = world();
  const int me = comm.rank();
  for (int n = 0; n < 6; ++n) {
    std::mt19937_64 rng(embtrain::random_bits(seed, 141, static_cast<uint64_t>(n)));
    const auto mode = static_cast<embtrain::PoolMode>(n % 3);
    std::vector<TableSpec> specs(3);
    for (int t = 0; t < 3; ++t) {
      specs[t].name = "t" + std::to_string(t);
      specs[t].num_embeddings = std::uniform_int_distribution<int64_t>(1, 60)(rng);
      specs[t].dim = std::uniform_int_distribution<int64_t>(1, 9)(rng);
      specs[t].optimizer.kind = n % 2 ? OptimizerKind::kAdagrad : OptimizerKind::kSgd;
      specs[t].optimizer.lr = 0.1;
      if (rng() % 2) specs[t].padding_idx = static_cast<int64_t>(rng() % specs[t].num_embeddings);
    }
    specs[0].scale_grad_by_freq = mode != embtrain::PoolMode::kMax && rng() % 2;
    if (n >= 3) specs[0].max_norm = 1.5;
    if (n % 2) {
      specs[1].comm_precision = embtrain::CommPrecision::kBf16;
      specs[2].comm_precision = embtrain::CommPrecision::kFp16;
      if (n < 5) specs[0].comm_precision = embtrain::CommPrecision::kFp16;
    }
    const double rtol0 =
        specs[0].comm_precision == embtrain::CommPrecision::kFp16 ? 256.0 / 2048 : kRtol;
    std::vector<TableSpec> owner_specs = specs;
    owner_specs[0].pool_at = embtrain::PoolAt::kOwner;
    SCOPED_TRACE(testing::Message() << "case " << n << ": mode " << embtrain::pool_mode_name(mode)
                                    << ", rows " << specs[0].num_embeddings << ", dim "
                                    << specs[0].dim);
    ShardedEmbedding want(specs, &comm, seed + n), got(owner_specs, &comm, seed + n),
        again(owner_specs, &comm, seed + n), piped(owner_specs, &comm, seed + n),
        on_cpu(owner_specs, &comm, seed + n);
    // On the GPU, on_cpu (the same job on the CPU engine) has its bits. On
    // the CPU, again and piped slice their exchanges (the table pooled at
    // the owners moves whole beside the others' slices): the same bits.
    if (on_gpu) want.use_cuda(), got.use_cuda(), again.use_cuda(), piped.use_cuda();
    if (!on_gpu) again.overlap_exchanges(3), piped.overlap_exchanges(2);
    const int num_jobs = on_gpu ? 5 : 4;
    struct Batch {
      std::vector<std::vector<int64_t>> ids;
      std::vector<int64_t> offsets0, offsets2;
      std::vector<float> weights;
      std::vector<std::vector<float>> grads;
    };
    // This rank's batch of step k, from (seed, case, step, rank).
    auto batch_of = [&](int k) {
      std::mt19937_64 r(
          embtrain::random_bits(seed, 142, static_cast<uint64_t>((n * 16 + k) * 64 + me)));
      Batch b;
      b.ids.resize(3);
      b.grads.resize(3);
      for (int t = 0; t < 3; t += 2) {
        std::vector<int64_t>& offsets = t == 0 ? b.offsets0 : b.offsets2;
        const int64_t bags = std::uniform_int_distribution<int64_t>(0, 7)(r);
        offsets.push_back(0);
        for (int64_t i = 0; i < bags; ++i)
          offsets.push_back(offsets.back() + std::uniform_int_distribution<int64_t>(0, 9)(r));
        const int64_t pool = std::uniform_int_distribution<int64_t>(1, specs[t].num_embeddings)(r);
        for (int64_t i = 0; i < offsets.back(); ++i) {
          int64_t id = static_cast<int64_t>(r() % pool);
          if (specs[t].padding_idx && r() % 5 == 0) id = *specs[t].padding_idx;
          b.ids[t].push_back(id);
        }
        b.grads[t].resize(static_cast<size_t>(bags * specs[t].dim));
      }
      for (int64_t i = 0; i < 5; ++i)
        b.ids[1].push_back(static_cast<int64_t>(r() % specs[1].num_embeddings));
      b.grads[1].resize(static_cast<size_t>(5 * specs[1].dim));
      for (auto& g : b.grads)
        for (float& x : g) x = std::normal_distribution<float>(0.f, 1.f)(r);
      for (size_t i = 0; i < b.ids[0].size(); ++i)
        b.weights.push_back(std::uniform_real_distribution<float>(-2.f, 2.f)(r));
      return b;
    };
    const int K = 3;
    for (int k = 0; k < K; ++k) {
      const Batch b = batch_of(k);
      std::vector<IdsView> views;
      for (int t = 0; t < 3; ++t)
        views.push_back(IdsView{b.ids[t].data(), DType::kInt64, {static_cast<int64_t>(b.ids[t].size())}});
      const bool weighted = mode == embtrain::PoolMode::kSum;
      const std::vector<embtrain::BagsView> bags = {
          {mode, b.offsets0.data(), static_cast<int64_t>(b.offsets0.size()) - 1,
           weighted ? b.weights.data() : nullptr},
          {},
          {embtrain::PoolMode::kMean, b.offsets2.data(), static_cast<int64_t>(b.offsets2.size()) - 1,
           nullptr}};
      std::vector<std::vector<float>> outs[5];
      ShardedEmbedding* jobs[5] = {&want, &got, &again, &piped, &on_cpu};
      for (int j = 0; j < num_jobs; ++j) {
        std::vector<float*> ptrs;
        for (int t = 0; t < 3; ++t) {
          const int64_t rows = t == 1 ? 5 : bags[t].num_bags;
          outs[j].emplace_back(static_cast<size_t>(rows * specs[t].dim), -7.f);
        }
        for (auto& o : outs[j]) ptrs.push_back(o.data());
        jobs[j]->forward(views, bags, ptrs);
        if (j == 3 && k + 1 < K) {
          const Batch next = batch_of(k + 1);
          std::vector<IdsView> next_views;
          for (int t = 0; t < 3; ++t)
            next_views.push_back(IdsView{next.ids[t].data(), DType::kInt64,
                                         {static_cast<int64_t>(next.ids[t].size())}});
          jobs[j]->prefetch(next_views);
        }
        jobs[j]->backward({b.grads[0].data(), b.grads[1].data(), b.grads[2].data()});
        jobs[j]->step();
      }
      EXPECT_TRUE(all_close(outs[1][0].data(), outs[0][0].data(),
                            static_cast<int64_t>(outs[0][0].size()), rtol0))
          << "step " << k << ": the bags pooled at the owners";
      for (int t = 1; t < 3; ++t)
        EXPECT_EQ(bytes_cmp(outs[1][t].data(), outs[0][t].data(), outs[0][t].size() * 4), 0)
            << "step " << k << ", table " << t << " (not pooled at the owners)";
      for (int j = 2; j < num_jobs; ++j)
        for (int t = 0; t < 3; ++t)
          EXPECT_EQ(bytes_cmp(outs[j][t].data(), outs[1][t].data(), outs[1][t].size() * 4), 0)
              << "step " << k << ", table " << t << ": run " << j << " differs from run 1";
    }
    if (!on_gpu) {
      EXPECT_EQ(again.stats().sliced_steps, comm.size() > 1 ? K : 0) << "sliced steps";
    }
    {
      const auto& a = got.shard(0).weights();
      const auto& w = want.shard(0).weights();
      EXPECT_TRUE(all_close(a.data(), w.data(), static_cast<int64_t>(a.size()), rtol0))
          << "table 0's shard";
    }
    for (int t = 0; t < 3; ++t) {
      const auto& a = got.shard(t).weights();
      for (ShardedEmbedding* other : {&again, &piped, &on_cpu}) {
        if (other == &on_cpu && !on_gpu) continue;
        const auto& o = other->shard(t).weights();
        EXPECT_EQ(bytes_cmp(a.data(), o.data(), a.size() * 4), 0)
            << "table " << t << " shard" << (other == &on_cpu ? " (the CPU engine's)" : "");
      }
    }
    if (!all_ranks(!::testing::Test::HasFailure())) return;
  }
}

TEST_F(ShardedEmbeddingTest, BagsPooledAtTheOwnersMatchTheRequester) {
  const uint64_t seed = test_seed(141);
  SCOPED_TRACE(seed_trace(seed));
  check_pooled_at_owners(seed, /*on_gpu=*/false);
}

// The same on the GPU engine, which also gives the CPU engine's bits.
TEST_F(ShardedEmbeddingTest, GpuStepBagsPooledAtTheOwnersMatchTheRequester) {
  SKIP_UNLESS_EVERY_RANK_HAS_GPU();
  const uint64_t seed = test_seed(143);
  SCOPED_TRACE(seed_trace(seed));
  check_pooled_at_owners(seed, /*on_gpu=*/true);
}

// A table pooled at the owners must be pooled the same way on every rank:
// otherwise every rank fails with the same message, naming the table; and
// a forward without its bags fails on every rank too.
TEST_F(ShardedEmbeddingTest, BagsPooledAtTheOwnersDifferentlyFailOnEveryRank) {
  EMBTRAIN_REQUIRE_RANKS(2);
  Communicator& comm = world();
  const int me = comm.rank();
  TableSpec spec;
  spec.name = "pooled";
  spec.num_embeddings = 40;
  spec.dim = 4;
  spec.pool_at = embtrain::PoolAt::kOwner;
  ShardedEmbedding se({spec}, &comm, 3);
  std::vector<int64_t> ids = {1, 5, 7, 7, 30, 2}, offsets = {0, 2, 6};
  const IdsView view{ids.data(), DType::kInt64, {6}};
  std::vector<float> out(2 * spec.dim);
  const auto mode = me == 1 ? embtrain::PoolMode::kMean : embtrain::PoolMode::kSum;
  for (const embtrain::BagsView& bags : {embtrain::BagsView{mode, offsets.data(), 2, nullptr},
                                         embtrain::BagsView{}}) {
    const std::string message =
        agreed_error_of([&] { se.forward({view}, {bags}, {out.data()}); });
    EXPECT_NE(message.find("'pooled'"), std::string::npos) << message;
    EXPECT_NE(message.find("pool_at = owner"), std::string::npos) << message;
    EXPECT_EQ(rank0_string(comm, message), message) << "rank " << me << "'s message";
  }
  // The same way on every rank: it works.
  const embtrain::BagsView good{embtrain::PoolMode::kSum, offsets.data(), 2, nullptr};
  se.forward({view}, {good}, {out.data()});
}

// Bags pooled at the requester on the GPU against the CPU at the same
// number of ranks, bit for bit: outputs, rows, optimizer state. Both steps
// pool straight from the rows and sum each position's gradient from its
// bag's (one shared row per bag for mean and unweighted sum, one per
// position for weighted sum and max) in sum_order.hpp's order. Modes cycle
// with weights, padding (empty and all-padding bags), max_norm,
// scale_grad_by_freq and every optimizer; every other case has cancelling
// gradients (a quarter of them +-1000), where any change in the order of
// the adds would show. Skips unless every rank has a GPU (the emulated
// device counts: mpi.emulated_gpu.np*).
TEST_F(ShardedEmbeddingTest, GpuStepWithBagsEqualsTheCpuStepBitForBit) {
  SKIP_UNLESS_EVERY_RANK_HAS_GPU();
  const uint64_t seed = test_seed(151);
  SCOPED_TRACE(seed_trace(seed));
  Communicator& comm = world();
  const int me = comm.rank();
  for (int n = 0; n < 12; ++n) {
    std::mt19937_64 rng(embtrain::random_bits(seed, 151, static_cast<uint64_t>(n)));
    const embtrain::PoolMode modes[2] = {static_cast<embtrain::PoolMode>(n % 3),
                                         embtrain::PoolMode::kMean};
    const bool weighted = modes[0] == embtrain::PoolMode::kSum && n % 2 == 0;
    std::vector<TableSpec> specs(2);
    for (int t = 0; t < 2; ++t) {
      specs[t].name = "bags" + std::to_string(t);
      specs[t].num_embeddings = std::uniform_int_distribution<int64_t>(1, 80)(rng);
      specs[t].dim = rng() % 2 ? std::uniform_int_distribution<int64_t>(1, 9)(rng) : 16;
      specs[t].optimizer.kind = static_cast<OptimizerKind>((n + t) % 4);
      specs[t].optimizer.lr = 0.05;
      if (rng() % 2) specs[t].padding_idx = static_cast<int64_t>(rng() % specs[t].num_embeddings);
      specs[t].scale_grad_by_freq = modes[t] != embtrain::PoolMode::kMax && rng() % 2;
      if (rng() % 3 == 0) specs[t].max_norm = 1.5;
    }
    SCOPED_TRACE(testing::Message() << "case " << n << ": modes "
                                    << embtrain::pool_mode_name(modes[0]) << "/mean, weighted "
                                    << weighted);
    ShardedEmbedding cpu(specs, &comm, seed + n), gpu(specs, &comm, seed + n);
    gpu.use_cuda();
    for (int k = 0; k < 3; ++k) {
      std::mt19937_64 r(
          embtrain::random_bits(seed, 152, static_cast<uint64_t>((n * 16 + k) * 64 + me)));
      std::vector<std::vector<int64_t>> ids(2), offsets(2);
      std::vector<std::vector<float>> grads(2);
      std::vector<float> weights;
      std::vector<embtrain::BagsView> bags;
      std::vector<IdsView> views;
      for (int t = 0; t < 2; ++t) {
        const int64_t num_bags = std::uniform_int_distribution<int64_t>(0, 8)(r);
        offsets[t].push_back(0);
        for (int64_t i = 0; i < num_bags; ++i)
          offsets[t].push_back(offsets[t].back() + std::uniform_int_distribution<int64_t>(0, 90)(r));
        // A few ids past the last bag (1-D ids with offsets allow them).
        const int64_t positions = offsets[t].back() + static_cast<int64_t>(r() % 3);
        const int64_t pool = std::uniform_int_distribution<int64_t>(1, specs[t].num_embeddings)(r);
        for (int64_t i = 0; i < positions; ++i) {
          int64_t id = static_cast<int64_t>(r() % pool);
          if (specs[t].padding_idx && r() % 5 == 0) id = *specs[t].padding_idx;
          ids[t].push_back(id);
        }
        grads[t].resize(static_cast<size_t>(num_bags * specs[t].dim));
        for (float& g : grads[t]) {
          g = std::normal_distribution<float>(0.f, 1.f)(r);
          if (n % 2 && r() % 4 == 0) g += r() % 2 ? 1000.f : -1000.f;
        }
        views.push_back(IdsView{ids[t].data(), DType::kInt64, {positions}});
      }
      for (size_t i = 0; i < ids[0].size(); ++i)
        weights.push_back(std::uniform_real_distribution<float>(-2.f, 2.f)(r));
      for (int t = 0; t < 2; ++t)
        bags.push_back({modes[t], offsets[t].data(), static_cast<int64_t>(offsets[t].size()) - 1,
                        t == 0 && weighted ? weights.data() : nullptr});
      std::vector<std::vector<float>> outs[2];
      ShardedEmbedding* jobs[2] = {&cpu, &gpu};
      for (int j = 0; j < 2; ++j) {
        std::vector<float*> ptrs;
        for (int t = 0; t < 2; ++t)
          outs[j].emplace_back(static_cast<size_t>(bags[t].num_bags * specs[t].dim), -7.f);
        for (auto& o : outs[j]) ptrs.push_back(o.data());
        jobs[j]->forward(views, bags, ptrs);
        jobs[j]->backward({grads[0].data(), grads[1].data()});
        jobs[j]->step();
      }
      for (int t = 0; t < 2; ++t)
        EXPECT_EQ(bytes_cmp(outs[1][t].data(), outs[0][t].data(), outs[0][t].size() * 4), 0)
            << "forward output of step " << k << ", table " << t;
    }
    expect_gpu_shards_equal_cpu(gpu, cpu);
    if (!all_ranks(!HasFailure())) return;
  }
}

}  // namespace
