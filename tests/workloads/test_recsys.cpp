// The recsys workload under mpiexec (1 and 2 ranks): its data (synthetic
// samples as pure functions of their position, the click log reader and
// every one of its errors), its math (hand-written gradients against finite
// differences, AUC against a pairwise count), the distributed step against
// one process on the global batch, and learning on synthetic clicks and on
// the shipped sample log.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "embtrain/communicator.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/sharded_embedding.hpp"
#include "embtrain/workloads/recsys.hpp"
#include "mpi_test_util.hpp"

#ifndef EMBTRAIN_RECSYS_SAMPLE
#error "EMBTRAIN_RECSYS_SAMPLE must name configs/data/recsys_sample.tsv"
#endif

namespace {

namespace fs = std::filesystem;
using embtrain::AgreedError;
using embtrain::CommType;
using embtrain::Communicator;
using embtrain::Error;
using embtrain::OptimizerKind;
using embtrain::RecsysConfig;
using embtrain::ShardedEmbedding;
using embtrain::TableSpec;
using embtrain::Workload;
using embtrain::WorkloadContext;
using embtrain::recsys::ClickLog;
using embtrain::recsys::Clicks;
using embtrain::recsys::SyntheticClicks;
using embtrain_mpi_test::all_close;
using embtrain_mpi_test::MpiTest;
using embtrain_mpi_test::seed_trace;
using embtrain_mpi_test::test_seed;
using embtrain_mpi_test::world;

using RecsysData = MpiTest;
using RecsysLog = MpiTest;
using RecsysModel = MpiTest;
using RecsysWorkload = MpiTest;

// A small synthetic problem that trains in a few seconds.
RecsysConfig small_synthetic() {
  RecsysConfig c;
  c.users = 1000;
  c.items = 500;
  c.history = 10;
  c.latent_dim = 8;
  c.zipf = 0.8;
  c.train_samples = 1000000;
  c.eval_samples = 4001;  // odd: the ranks' parts differ in size
  return c;
}

WorkloadContext context_for(Communicator* comm, uint64_t seed, int64_t batch, int64_t dim) {
  WorkloadContext ctx;
  ctx.comm = comm;
  ctx.seed = seed;
  ctx.batch_size = batch;
  ctx.table_dims = {{"users", dim}, {"items", dim}};
  return ctx;
}

// The workload's tables as the trainer builds them: N(0, init_std^2) rows
// drawn by global row (the same for any number of ranks), padding row 0.
ShardedEmbedding make_tables(const Workload& w, int64_t dim, Communicator* comm, uint64_t seed,
                             OptimizerKind kind = OptimizerKind::kAdagrad, double lr = 0.1,
                             double init_std = 0.1) {
  std::vector<TableSpec> specs;
  for (const std::string& name : w.table_names()) {
    TableSpec s;
    s.name = name;
    s.num_embeddings = w.table_rows(name);
    s.dim = dim;
    s.optimizer.kind = kind;
    s.optimizer.lr = lr;
    if (name == "items") s.padding_idx = 0;
    specs.push_back(s);
  }
  ShardedEmbedding tables(specs, comm, seed);
  for (int t = 0; t < tables.num_tables(); ++t)
    for (float& x : tables.shard(t).weights()) x *= static_cast<float>(init_std);
  return tables;
}

// Clicks as comparable tuples.
bool same_sample(const Clicks& a, int64_t i, const Clicks& b, int64_t j) {
  if (a.history_len != b.history_len || a.users[i] != b.users[j] ||
      a.candidates[i] != b.candidates[j] || a.labels[i] != b.labels[j])
    return false;
  return std::equal(a.history.begin() + i * a.history_len,
                    a.history.begin() + (i + 1) * a.history_len,
                    b.history.begin() + j * b.history_len);
}

::testing::AssertionResult same_clicks(const Clicks& a, const Clicks& b) {
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << "sizes " << a.size() << " and " << b.size();
  for (int64_t i = 0; i < a.size(); ++i)
    if (!same_sample(a, i, b, i))
      return ::testing::AssertionFailure() << "sample " << i << " differs";
  return ::testing::AssertionSuccess();
}

// A scratch folder of this rank's own, removed at exit.
fs::path scratch_dir() {
  struct Scratch {
    fs::path path =
        fs::temp_directory_path() / ("embtrain_recsys_test_" + std::to_string(::getpid()));
    Scratch() { fs::create_directories(path); }
    ~Scratch() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  };
  static const Scratch dir;
  return dir.path;
}

std::string write_file(const std::string& name, const std::string& text) {
  const fs::path path = scratch_dir() / name;
  std::ofstream(path, std::ios::binary) << text;
  return path.string();
}

// The message of the embtrain::Error that `f` throws ("" if none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

::testing::AssertionResult mentions(const std::string& message,
                                    const std::vector<std::string>& parts) {
  if (message.empty()) return ::testing::AssertionFailure() << "no error was thrown";
  for (const std::string& p : parts)
    if (message.find(p) == std::string::npos)
      return ::testing::AssertionFailure() << "message '" << message << "' lacks '" << p << "'";
  return ::testing::AssertionSuccess();
}

// ---- Synthetic data --------------------------------------------------------

TEST_F(RecsysData, SyntheticSamplesArePureFunctionsOfTheirPosition) {
  const uint64_t seed = test_seed(1);
  SCOPED_TRACE(seed_trace(seed));
  RecsysConfig config = small_synthetic();
  config.train_samples = 1000;  // steps below wrap around the epoch
  config.eval_samples = 300;
  SyntheticClicks a(config, seed), b(config, seed);
  EXPECT_TRUE(same_clicks(a.eval_set(), b.eval_set()));

  // The same step asked for twice, in any order, by separate instances.
  Clicks x, y;
  a.train_batch(7, 1, 3, 64, &x);
  b.train_batch(2, 0, 3, 64, &y);
  b.train_batch(7, 1, 3, 64, &y);
  EXPECT_TRUE(same_clicks(x, y));

  // The global batch of a step does not depend on how it is cut into ranks.
  const int64_t global = 12;
  for (int64_t step : {0, 3, 90}) {  // 90 x 12 wraps past train_samples
    Clicks whole;
    a.train_batch(step, 0, 1, global, &whole);
    for (int ranks : {2, 3, 4}) {
      const int64_t batch = global / ranks;
      for (int r = 0; r < ranks; ++r) {
        Clicks part;
        b.train_batch(step, r, ranks, batch, &part);
        for (int64_t i = 0; i < batch; ++i)
          EXPECT_TRUE(same_sample(part, i, whole, r * batch + i))
              << "step " << step << " ranks " << ranks << " rank " << r << " sample " << i;
      }
    }
  }

  // Another seed gives other data; the held-out stream is not the training
  // stream.
  SyntheticClicks other(config, seed + 1);
  Clicks mine, theirs, first_train;
  a.train_batch(0, 0, 1, 300, &first_train);
  other.train_batch(0, 0, 1, 300, &theirs);
  EXPECT_FALSE(same_clicks(first_train, theirs));
  EXPECT_FALSE(same_clicks(first_train, a.eval_set()));
}

TEST_F(RecsysData, SyntheticHistoryIsTheUsersClicks) {
  const uint64_t seed = test_seed(2);
  SCOPED_TRACE(seed_trace(seed));
  RecsysConfig config = small_synthetic();
  config.eval_samples = 20000;
  const SyntheticClicks data(config, seed);
  const Clicks& s = data.eval_set();
  const int64_t H = config.history;

  // Ids in range, clicks first then padding, every history length 0..H.
  std::vector<int64_t> lengths(static_cast<size_t>(H + 1), 0);
  for (int64_t i = 0; i < s.size(); ++i) {
    ASSERT_GE(s.users[i], 0);
    ASSERT_LT(s.users[i], config.users);
    ASSERT_GE(s.candidates[i], 1);
    ASSERT_LE(s.candidates[i], config.items);
    ASSERT_TRUE(s.labels[i] == 0.0f || s.labels[i] == 1.0f);
    int64_t filled = 0;
    while (filled < H && s.history[i * H + filled] != 0) ++filled;
    for (int64_t j = filled; j < H; ++j) ASSERT_EQ(s.history[i * H + j], 0) << "sample " << i;
    for (int64_t j = 0; j < filled; ++j) ASSERT_LE(s.history[i * H + j], config.items);
    ++lengths[filled];
  }
  for (int64_t len = 0; len <= H; ++len)
    EXPECT_GT(lengths[len], 0) << "no history of length " << len;

  // The history is what the user clicks: its items score well above the
  // candidates (popular items the user was merely shown).
  double history_logit = 0, candidate_logit = 0, clicks = 0, expected_clicks = 0, variance = 0;
  int64_t history_items = 0;
  for (int64_t i = 0; i < s.size(); ++i) {
    for (int64_t j = 0; j < H && s.history[i * H + j] != 0; ++j, ++history_items)
      history_logit += data.true_logit(s.users[i], s.history[i * H + j]);
    const double logit = data.true_logit(s.users[i], s.candidates[i]);
    candidate_logit += logit;
    const double p = embtrain::recsys::sigmoid(logit);
    clicks += s.labels[i];
    expected_clicks += p;
    variance += p * (1 - p);
  }
  history_logit /= static_cast<double>(history_items);
  candidate_logit /= static_cast<double>(s.size());
  EXPECT_GT(history_logit, candidate_logit + 1.0)
      << "mean hidden logit: history " << history_logit << ", candidates " << candidate_logit;
  // Labels are Bernoulli(sigmoid(logit)): their count within 5 sigma.
  EXPECT_LT(std::fabs(clicks - expected_clicks), 5 * std::sqrt(variance))
      << clicks << " clicks, " << expected_clicks << " expected";

  // The best model is good but clearly imperfect on the default noise.
  const auto ref = data.reference_metrics();
  if (world().rank() == 0)
    std::printf("[ synthetic] reference auc %.4f loss %.4f, click rate %.3f\n", ref.at("auc"),
                ref.at("loss"), clicks / static_cast<double>(s.size()));
  EXPECT_GT(ref.at("auc"), 0.75);
  EXPECT_LT(ref.at("auc"), 0.95);
}

// ---- Click logs ------------------------------------------------------------

TEST_F(RecsysLog, ParsesSamplesCommentsAndPadding) {
  const std::string path =
      write_file("good.tsv",
                 "# a comment\n"
                 "\n"
                 "3\t1 2 3\t4\t1\n"
                 "   # an indented comment\n"
                 "0\t\t20\t0\r\n"                  // empty history, CRLF
                 "9\t 5  6 \t 7 \t1\n"             // spaces around ids
                 "  \t \n"                         // blank
                 "1\t11 12 13 14 15 16\t2\t0\n");  // longer than history: keeps the last 4
  const Clicks c = embtrain::recsys::read_click_log(path, 10, 20, 4);
  ASSERT_EQ(c.size(), 4);
  EXPECT_EQ(c.history_len, 4);
  EXPECT_EQ(c.users, (std::vector<int64_t>{3, 0, 9, 1}));
  EXPECT_EQ(c.candidates, (std::vector<int64_t>{4, 20, 7, 2}));
  EXPECT_EQ(c.labels, (std::vector<float>{1, 0, 1, 0}));
  EXPECT_EQ(c.history, (std::vector<int64_t>{1, 2, 3, 0, 0, 0, 0, 0, 5, 6, 0, 0, 13, 14, 15, 16}));
}

TEST_F(RecsysLog, EveryErrorNamesFileLineFieldAndRange) {
  // users 0..9, items 1..20; the bad line is line 4, after a comment, a
  // blank line and a good line.
  const std::string prefix = "# header\n\n2\t3 4\t5\t1\n";
  struct Case {
    std::string line;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases = {
      {"1\t2\t3", {"expected 4 tab-separated fields", "found 3"}},
      {"1\t2\t3\t1\t0", {"expected 4 tab-separated fields", "found 5"}},
      {"x\t2\t3\t1", {"user 'x' is not an integer"}},
      {"\t2\t3\t1", {"user '' is not an integer"}},
      {"-1\t2\t3\t1", {"user = -1 is out of range", "[0, 9]", "recsys.users = 10"}},
      {"10\t2\t3\t1", {"user = 10 is out of range", "[0, 9]"}},
      {"99999999999999999999\t2\t3\t1", {"user = 99999999999999999999 is out of range", "[0, 9]"}},
      {"1\t2 3a\t3\t1", {"history item 2 '3a' is not an integer"}},
      {"1\t2 0\t3\t1",
       {"history item 2 = 0 is out of range", "[1, 20]", "recsys.items = 20", "history padding"}},
      {"1\t21\t3\t1", {"history item 1 = 21 is out of range", "[1, 20]"}},
      {"1\t2\t0\t1", {"candidate = 0 is out of range", "[1, 20]"}},
      {"1\t2\t21\t1", {"candidate = 21 is out of range", "[1, 20]"}},
      {"1\t2\tc\t1", {"candidate 'c' is not an integer"}},
      {"1\t2\t3\t2", {"label '2' is not 0 or 1"}},
      {"1\t2\t3\tyes", {"label 'yes' is not 0 or 1"}},
      {"1\t2\t3\t", {"label '' is not 0 or 1"}},
  };
  for (size_t k = 0; k < cases.size(); ++k) {
    const std::string path =
        write_file("bad" + std::to_string(k) + ".tsv", prefix + cases[k].line + "\n3\t\t4\t0\n");
    std::vector<std::string> parts = cases[k].parts;
    parts.push_back(path + ":4: ");
    EXPECT_TRUE(
        mentions(error_of([&] { embtrain::recsys::read_click_log(path, 10, 20, 4); }), parts))
        << "line '" << cases[k].line << "'";
  }

  const std::string empty = write_file("empty.tsv", "# nothing\n\n   \n");
  EXPECT_TRUE(mentions(error_of([&] { embtrain::recsys::read_click_log(empty, 10, 20, 4); }),
                       {empty, "no samples"}));
  const std::string missing = (scratch_dir() / "missing.tsv").string();
  EXPECT_TRUE(mentions(error_of([&] { embtrain::recsys::read_click_log(missing, 10, 20, 4); }),
                       {missing, "cannot open"}));
  // A folder once escaped as "basic_filebuf::underflow" (issue 14).
  const std::string folder = scratch_dir().string();
  EXPECT_TRUE(mentions(error_of([&] { embtrain::recsys::read_click_log(folder, 10, 20, 4); }),
                       {folder, "is a folder", "TSV file"}));
}

// A log of n distinct samples (candidate i + 1 on line i).
std::string distinct_log(const std::string& name, int64_t n) {
  std::string text = "# distinct samples\n";
  for (int64_t i = 0; i < n; ++i)
    text += std::to_string(i % 7) + "\t" + std::to_string(i % 5 + 1) + "\t" +
            std::to_string(i + 1) + "\t" + std::to_string(i % 2) + "\n";
  return write_file(name, text);
}

TEST_F(RecsysLog, HeldOutSplitAndEpochOrder) {
  const uint64_t seed = test_seed(3);
  SCOPED_TRACE(seed_trace(seed));
  RecsysConfig config;
  config.users = 7;
  config.items = 100;
  config.history = 2;
  config.data = distinct_log("split.tsv", 23);
  config.eval_fraction = 0.2;  // round(4.6) = 5 held out: the last 5 lines
  ClickLog log(config, seed);
  ASSERT_EQ(log.train_size(), 18);
  ASSERT_EQ(log.eval_set().size(), 5);
  for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(log.eval_set().candidates[i], 19 + i);

  // An epoch's order is a permutation, the same for the same (seed, epoch).
  const std::vector<int64_t> order0 = log.epoch_order(0);
  std::vector<int64_t> sorted = order0;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 18; ++i) EXPECT_EQ(sorted[i], i);
  EXPECT_EQ(ClickLog(config, seed).epoch_order(0), order0);
  EXPECT_NE(log.epoch_order(1), order0);

  // B = 3 on 2 ranks: 3 steps make an epoch that visits every sample once,
  // in the epoch's order, the ranks' parts consecutive.
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    const std::vector<int64_t> order = log.epoch_order(epoch);
    for (int64_t t = 0; t < 3; ++t)
      for (int r = 0; r < 2; ++r) {
        Clicks part;
        log.train_batch(epoch * 3 + t, r, 2, 3, &part);
        for (int64_t i = 0; i < 3; ++i)
          EXPECT_TRUE(same_sample(part, i, log.train_set(), order[t * 6 + r * 3 + i]))
              << "epoch " << epoch << " step " << t << " rank " << r << " sample " << i;
      }
  }
  // G = 4 does not divide 18: the epoch's last step (t = 4) wraps around.
  Clicks last;
  log.train_batch(4, 0, 1, 4, &last);
  const int64_t wrapped[] = {16, 17, 0, 1};
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_TRUE(same_sample(last, i, log.train_set(), order0[wrapped[i]]));

  // A separate held-out file: all of data trains.
  config.eval_data = distinct_log("eval.tsv", 4);
  ClickLog with_eval(config, seed);
  EXPECT_EQ(with_eval.train_size(), 23);
  EXPECT_EQ(with_eval.eval_set().size(), 4);

  // Splits that leave a part empty.
  config.eval_data.clear();
  config.eval_fraction = 0.0;
  EXPECT_TRUE(mentions(error_of([&] { ClickLog bad(config, seed); }),
                       {config.data, "23 samples", "recsys.eval_fraction = 0", "holds out 0"}));
  config.data = distinct_log("one.tsv", 1);
  config.eval_fraction = 0.5;
  EXPECT_TRUE(mentions(error_of([&] { ClickLog bad(config, seed); }),
                       {config.data, "1 samples", "leaves 0 for training"}));
  // Errors in the held-out file name it.
  config.data = distinct_log("split.tsv", 23);
  config.eval_data = write_file("bad_eval.tsv", "1\t\t101\t0\n");
  EXPECT_TRUE(mentions(error_of([&] { ClickLog bad(config, seed); }),
                       {config.eval_data + ":1: ", "candidate = 101 is out of range", "[1, 100]"}));
}

// ---- The model -------------------------------------------------------------

// A batch of 4 samples whose histories (3 slots) are full, partly padded,
// empty and one item, with random labels and random rows of dim 5.
struct ModelCase {
  static constexpr int64_t n = 4, H = 3, dim = 5;
  Clicks batch;
  std::vector<double> users, history, candidates;
};

ModelCase model_case(std::mt19937_64& rng, std::normal_distribution<double>& normal) {
  ModelCase c;
  c.batch.resize(ModelCase::n, ModelCase::H);
  c.batch.history = {3, 1, 4, 2, 5, 0, 0, 0, 0, 6, 0, 0};
  for (int64_t i = 0; i < ModelCase::n; ++i) {
    c.batch.users[i] = i;
    c.batch.candidates[i] = i + 1;
    c.batch.labels[i] = static_cast<float>(rng() % 2);
  }
  c.users.resize(ModelCase::n * ModelCase::dim);
  c.history.resize(ModelCase::n * ModelCase::H * ModelCase::dim);
  c.candidates.resize(ModelCase::n * ModelCase::dim);
  for (std::vector<double>* v : {&c.users, &c.history, &c.candidates})
    for (double& x : *v) x = normal(rng);
  return c;
}

TEST_F(RecsysModel, GradientsMatchFiniteDifferences) {
  const uint64_t seed = test_seed(4);
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 0.7);
  const int64_t n = ModelCase::n, H = ModelCase::H, dim = ModelCase::dim;
  ModelCase c = model_case(rng, normal);
  Clicks& batch = c.batch;
  std::vector<double>&users = c.users, &history = c.history, &candidates = c.candidates;
  double bias = normal(rng);
  const double scale = 1.0 / 7;  // as 1 / global batch

  auto loss = [&] {
    embtrain::recsys::ClickRows<double> rows{users.data(), history.data(), candidates.data()};
    return scale * embtrain::recsys::click_model(
                       batch, dim, rows, bias, 0.0, nullptr,
                       static_cast<embtrain::recsys::ClickGrads<double>*>(nullptr));
  };
  std::vector<double> gu(users.size()), gh(history.size()), gc(candidates.size());
  embtrain::recsys::ClickGrads<double> grads{gu.data(), gh.data(), gc.data(), 0.0};
  std::vector<double> scores(n);
  embtrain::recsys::ClickRows<double> rows{users.data(), history.data(), candidates.data()};
  const double summed =
      embtrain::recsys::click_model(batch, dim, rows, bias, scale, scores.data(), &grads);
  EXPECT_NEAR(summed * scale, loss(), 1e-15);

  // Central differences: error O(eps^2) ~ 1e-12 with eps = 1e-6.
  const double eps = 1e-6, tol = 1e-8;
  auto check = [&](std::vector<double>& params, const std::vector<double>& grad, const char* what) {
    for (size_t k = 0; k < params.size(); ++k) {
      const double saved = params[k];
      params[k] = saved + eps;
      const double up = loss();
      params[k] = saved - eps;
      const double down = loss();
      params[k] = saved;
      EXPECT_NEAR(grad[k], (up - down) / (2 * eps), tol) << what << " [" << k << "]";
    }
  };
  check(users, gu, "user rows");
  check(history, gh, "history rows");
  check(candidates, gc, "candidate rows");
  const double saved = bias;
  bias = saved + eps;
  const double up = loss();
  bias = saved - eps;
  const double down = loss();
  bias = saved;
  EXPECT_NEAR(grads.bias, (up - down) / (2 * eps), tol) << "bias";

  // Padding entries get exactly zero, and so does everything of the empty
  // history.
  for (int64_t p = 0; p < n * H; ++p) {
    if (batch.history[p] != 0) continue;
    for (int64_t d = 0; d < dim; ++d) EXPECT_EQ(gh[p * dim + d], 0.0) << "padding entry " << p;
  }
}

// With the items table pooling the histories (table.items.kind = bag),
// the model takes each history's mean as given: its scores are those of
// the lookup path on the same rows, and the gradient of a mean is what
// central differences give, which the table then spreads over the rows.
TEST_F(RecsysModel, PooledHistoryMatchesTheLookupPath) {
  const uint64_t seed = test_seed(5);
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 0.7);
  const int64_t n = ModelCase::n, H = ModelCase::H, dim = ModelCase::dim;
  ModelCase c = model_case(rng, normal);
  const Clicks& batch = c.batch;
  std::vector<double>&users = c.users, &history = c.history, &candidates = c.candidates;
  // The means, as the table pools them: padding left out, empty bags 0.
  std::vector<double> means(n * dim, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t m = 0;
    for (int64_t j = 0; j < H; ++j) {
      if (batch.history[i * H + j] == 0) continue;
      ++m;
      for (int64_t d = 0; d < dim; ++d) means[i * dim + d] += history[(i * H + j) * dim + d];
    }
    for (int64_t d = 0; d < dim && m > 0; ++d) means[i * dim + d] /= static_cast<double>(m);
  }
  const double bias = normal(rng), scale = 1.0 / 7;
  using embtrain::recsys::ClickGrads;
  using embtrain::recsys::ClickRows;
  std::vector<double> want(n), got(n);
  ClickRows<double> lookup{users.data(), history.data(), candidates.data()};
  embtrain::recsys::click_model(batch, dim, lookup, bias, 0.0, want.data(),
                                static_cast<ClickGrads<double>*>(nullptr));
  ClickRows<double> pooled{users.data(), nullptr, candidates.data(), means.data()};
  std::vector<double> gu(users.size()), gc(candidates.size()), gp(means.size());
  ClickGrads<double> grads{gu.data(), nullptr, gc.data(), 0.0, gp.data()};
  embtrain::recsys::click_model(batch, dim, pooled, bias, scale, got.data(), &grads);
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(got[i], want[i], 1e-12) << "sample " << i;

  auto loss = [&] {
    return scale * embtrain::recsys::click_model(batch, dim, pooled, bias, 0.0, nullptr,
                                                 static_cast<ClickGrads<double>*>(nullptr));
  };
  const double eps = 1e-6;
  for (size_t k = 0; k < means.size(); ++k) {
    const double saved = means[k];
    means[k] = saved + eps;
    const double up = loss();
    means[k] = saved - eps;
    const double down = loss();
    means[k] = saved;
    EXPECT_NEAR(gp[k], (up - down) / (2 * eps), 1e-8) << "mean [" << k << "]";
  }
}

TEST_F(RecsysModel, LogisticLossAndSigmoidAreStable) {
  using embtrain::recsys::logistic_loss;
  using embtrain::recsys::sigmoid;
  // Where the naive formulas are still accurate.
  for (double s : {-8.0, -3.0, -0.5, 0.0, 0.25, 4.0, 8.0})
    for (double y : {0.0, 1.0}) {
      const double p = 1 / (1 + std::exp(-s));
      EXPECT_NEAR(logistic_loss(s, y), -(y * std::log(p) + (1 - y) * std::log(1 - p)), 1e-9)
          << "s " << s << " y " << y;
      EXPECT_NEAR(sigmoid(s), p, 1e-15);
    }
  // Far out, where the naive formulas overflow or lose everything.
  EXPECT_NEAR(logistic_loss(1000, 0), 1000, 1e-9);
  EXPECT_NEAR(logistic_loss(-1000, 1), 1000, 1e-9);
  EXPECT_EQ(logistic_loss(1000, 1), 0.0);
  EXPECT_EQ(sigmoid(-1000), 0.0);
  EXPECT_EQ(sigmoid(1000), 1.0);
}

TEST_F(RecsysModel, AucMatchesPairwiseCount) {
  const uint64_t seed = test_seed(5);
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 50; ++trial) {
    const int64_t n = 2 + static_cast<int64_t>(rng() % 300);
    // Few distinct scores, so ties are common (within and across classes).
    const int levels = 1 + static_cast<int>(rng() % 12);
    std::vector<double> scores(n);
    std::vector<float> labels(n);
    for (int64_t i = 0; i < n; ++i) {
      scores[i] = static_cast<double>(rng() % levels) - levels / 2.0;
      labels[i] = static_cast<float>(rng() % 3 == 0);
    }
    labels[0] = 1;
    labels[1] = 0;
    double wins = 0, pairs = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        if (labels[i] == 1 && labels[j] == 0) {
          pairs += 1;
          wins += scores[i] > scores[j] ? 1.0 : scores[i] == scores[j] ? 0.5 : 0.0;
        }
    EXPECT_NEAR(embtrain::recsys::roc_auc(scores.data(), labels.data(), n), wins / pairs, 1e-12)
        << "trial " << trial << ", n " << n << ", " << levels << " levels";
  }
  const double scores[] = {0.1, 0.4, 0.2};
  const float all_clicks[] = {1, 1, 1};
  EXPECT_TRUE(std::isnan(embtrain::recsys::roc_auc(scores, all_clicks, 3)));
  const double with_nan[] = {0.1, std::nan(""), 0.2};
  const float mixed[] = {1, 0, 1};
  EXPECT_TRUE(std::isnan(embtrain::recsys::roc_auc(with_nan, mixed, 3)));
}

// ---- The workload ----------------------------------------------------------

TEST_F(RecsysWorkload, ConfigAndTableErrors) {
  Communicator& comm = world();
  RecsysConfig config = small_synthetic();
  WorkloadContext ctx = context_for(&comm, 1, 8, 16);

  ctx.table_dims["items"] = 8;
  EXPECT_TRUE(mentions(error_of([&] { embtrain::make_recsys_workload(config, ctx); }),
                       {"table.users.dim = 16", "table.items.dim = 8", "must be equal"}));
  ctx.table_dims["items"] = 16;

  config.users = 0;
  EXPECT_TRUE(mentions(error_of([&] { embtrain::make_recsys_workload(config, ctx); }),
                       {"recsys.users = 0", "[1, "}));
  config = small_synthetic();
  config.temperature = 0;
  EXPECT_TRUE(mentions(error_of([&] { embtrain::make_recsys_workload(config, ctx); }),
                       {"recsys.temperature = 0", "out of range"}));
  config = small_synthetic();
  config.eval_data = "x.tsv";
  EXPECT_TRUE(mentions(error_of([&] { embtrain::make_recsys_workload(config, ctx); }),
                       {"recsys.eval_data", "needs recsys.data"}));
  config = small_synthetic();
  config.data = (scratch_dir() / "missing.tsv").string();
  const std::string missing = error_of([&] { embtrain::make_recsys_workload(config, ctx); });
  EXPECT_TRUE(mentions(missing, {"missing.tsv", "cannot open"}));
  // Errors from the data reach every rank together.
  try {
    embtrain::make_recsys_workload(config, ctx);
  } catch (const AgreedError&) {
  } catch (...) {
    ADD_FAILURE() << "not an AgreedError";
  }

  // Tables that do not fit the workload: a real item as padding, wrong rows.
  config = small_synthetic();
  config.eval_samples = 10;
  auto w = embtrain::make_recsys_workload(config, ctx);
  EXPECT_EQ(w->table_rows("users"), config.users);
  EXPECT_EQ(w->table_rows("items"), config.items + 1);
  EXPECT_TRUE(mentions(error_of([&] { w->table_rows("words"); }), {"'words'", "users, items"}));
  std::vector<TableSpec> specs(2);
  specs[0].name = "users";
  specs[0].num_embeddings = config.users;
  specs[0].dim = 16;
  specs[1].name = "items";
  specs[1].num_embeddings = config.items + 1;
  specs[1].dim = 16;
  specs[1].padding_idx = 3;
  {
    ShardedEmbedding tables(specs, &comm, 1);
    EXPECT_TRUE(mentions(error_of([&] { w->train_step(tables, 0); }),
                         {"table.items.padding_idx", "row 3", "valid: 0"}));
  }
  specs[1].padding_idx = 0;
  specs[1].num_embeddings = config.items;
  {
    ShardedEmbedding tables(specs, &comm, 1);
    EXPECT_TRUE(mentions(error_of([&] { w->evaluate(tables); }),
                         {"'items' (500 x 16)", "needs 'items' (501 x 16)"}));
  }
}

// P ranks with batch B each must train as one process with batch P x B.
TEST_F(RecsysWorkload, DistributedStepsEqualOneProcessOnTheGlobalBatch) {
  const uint64_t seed = test_seed(6);
  SCOPED_TRACE(seed_trace(seed));
  Communicator& comm = world();
  const int P = comm.size();
  const int64_t B = 24, dim = 8;
  RecsysConfig config = small_synthetic();
  config.eval_samples = 999;
  config.bias_lr = 0.5;  // so that the bias moves visibly in a few steps

  auto dist = embtrain::make_recsys_workload(config, context_for(&comm, seed, B, dim));
  // The one-process reference, run by every rank by itself.
  const std::unique_ptr<Communicator> self_comm = embtrain::make_self_communicator();
  Communicator& self = *self_comm;
  auto one = embtrain::make_recsys_workload(config, context_for(&self, seed, B * P, dim));
  // SGD: the update is linear in the gradient, so the two runs' different
  // summation orders stay at float rounding (Adagrad's first step divides a
  // gradient by its own size, which turns the rounding of a gradient that
  // sums to almost zero into a full step of either sign).
  ShardedEmbedding dist_tables = make_tables(*dist, dim, &comm, seed, OptimizerKind::kSgd, 0.5);
  ShardedEmbedding one_tables = make_tables(*one, dim, &self, seed, OptimizerKind::kSgd, 0.5);
  // An epoch is train_samples samples of the global batch.
  const int64_t global = B * P;
  EXPECT_EQ(dist->steps_per_epoch(), (config.train_samples + global - 1) / global);
  EXPECT_EQ(one->steps_per_epoch(), dist->steps_per_epoch());

  for (int64_t step = 0; step < 4; ++step) {
    const embtrain::StepOutput d = dist->train_step(dist_tables, step);
    const embtrain::StepOutput o = one->train_step(one_tables, step);
    double sums[2] = {d.loss_sum, static_cast<double>(d.examples)};
    comm.allreduce_sum(sums, 2, CommType::kFloat64);
    EXPECT_NEAR(sums[0], o.loss_sum, 1e-5 * std::fabs(o.loss_sum)) << "step " << step;
    EXPECT_EQ(sums[1], static_cast<double>(o.examples));
    EXPECT_EQ(d.lookups, B * (config.history + 2));
  }
  const float dist_bias = (*dist->dense_parameters())[0];
  const float one_bias = (*one->dense_parameters())[0];
  EXPECT_NE(one_bias, 0.0f);
  EXPECT_TRUE(all_close(&dist_bias, &one_bias, 1, 1e-5));
  // The bias is the same bits on every rank.
  double bias_range[2] = {dist_bias, -static_cast<double>(dist_bias)};
  comm.allreduce_max(bias_range, 2, CommType::kFloat64);
  EXPECT_EQ(bias_range[0], -bias_range[1]);

  ShardedEmbedding fresh = make_tables(*one, dim, &self, seed);
  for (int t = 0; t < 2; ++t) {
    const std::vector<float> got = dist_tables.gather_table(t, 0);
    if (comm.rank() != 0) continue;
    const std::vector<float> want = one_tables.gather_table(t, 0);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_TRUE(all_close(got.data(), want.data(), static_cast<int64_t>(got.size()), 1e-5))
        << "table " << t;
    // The steps moved the rows far beyond that tolerance.
    const std::vector<float> start = fresh.gather_table(t, 0);
    double moved = 0;
    for (size_t k = 0; k < want.size(); ++k)
      moved = std::max(moved, std::fabs(static_cast<double>(want[k]) - start[k]));
    EXPECT_GT(moved, 1e-3) << "table " << t;
  }
  const auto d = dist->evaluate(dist_tables);
  const auto o = one->evaluate(one_tables);
  EXPECT_NEAR(d.at("loss"), o.at("loss"), 1e-5);
  EXPECT_NEAR(d.at("auc"), o.at("auc"), 1e-3);
  EXPECT_EQ(dist->reference_metrics(), one->reference_metrics());
}

struct LearningResult {
  std::map<std::string, double> start, end, reference;
  double base_rate_loss = 0;  // the loss of always predicting the click rate
  double seconds = 0;
};

// Trains `steps` steps of a global batch of `global_batch` samples on the
// job's ranks, evaluating before and after.
LearningResult train_and_evaluate(const RecsysConfig& config, uint64_t seed, int64_t global_batch,
                                  int64_t steps, int64_t dim) {
  Communicator& comm = world();
  const int64_t B = std::max<int64_t>(1, global_batch / comm.size());
  auto w = embtrain::make_recsys_workload(config, context_for(&comm, seed, B, dim));
  ShardedEmbedding tables = make_tables(*w, dim, &comm, seed);
  if (comm.rank() == 0) std::printf("[ learning ] %s\n", w->describe().c_str());
  LearningResult r;
  r.reference = w->reference_metrics();
  r.start = w->evaluate(tables);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < steps; ++step) w->train_step(tables, step);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.end = w->evaluate(tables);
  return r;
}

double base_rate_loss(const Clicks& eval) {
  double rate = 0;
  for (float y : eval.labels) rate += y;
  rate /= static_cast<double>(eval.size());
  return -(rate * std::log(rate) + (1 - rate) * std::log(1 - rate));
}

void print_learning(const char* what, const LearningResult& r) {
  std::printf("[ learning ] %s: auc %.4f -> %.4f, loss %.4f -> %.4f (base rate %.4f) in %.1f s",
              what, r.start.at("auc"), r.end.at("auc"), r.start.at("loss"), r.end.at("loss"),
              r.base_rate_loss, r.seconds);
  if (!r.reference.empty())
    std::printf("; reference auc %.4f loss %.4f", r.reference.at("auc"), r.reference.at("loss"));
  std::printf(" (%d ranks)\n", world().size());
  std::fflush(stdout);
}

TEST_F(RecsysWorkload, LearnsSyntheticClicks) {
  const uint64_t seed = test_seed(7);
  SCOPED_TRACE(seed_trace(seed));
  const RecsysConfig config = small_synthetic();
  LearningResult r = train_and_evaluate(config, seed, 256, 800, 16);
  r.base_rate_loss = base_rate_loss(SyntheticClicks(config, seed).eval_set());
  if (world().rank() == 0) print_learning("synthetic", r);

  // The hidden model leaves room to learn; chance is 0.5.
  EXPECT_GT(r.reference.at("auc"), 0.8);
  EXPECT_NEAR(r.start.at("auc"), 0.5, 0.1);
  EXPECT_GT(r.end.at("auc"), 0.7);
  EXPECT_LT(r.end.at("loss"), r.start.at("loss"));
  EXPECT_LT(r.end.at("loss"), r.base_rate_loss);
  EXPECT_GE(r.end.at("loss"), r.reference.at("loss") - 0.02);  // no model beats the truth by much
}

TEST_F(RecsysWorkload, LearnsTheShippedSampleLog) {
  const uint64_t seed = test_seed(8);
  SCOPED_TRACE(seed_trace(seed));
  // The sizes the generator wrote into the file's header
  // (configs/data/make_recsys_sample.py).
  RecsysConfig config;
  config.data = EMBTRAIN_RECSYS_SAMPLE;
  config.users = 40;
  config.items = 60;
  config.history = 8;
  config.eval_fraction = 0.2;
  const ClickLog log(config, seed);
  // 4 epochs of 480 samples: the log is small, and more epochs overfit it.
  LearningResult r = train_and_evaluate(config, seed, 32, 60, 16);
  r.base_rate_loss = base_rate_loss(log.eval_set());
  if (world().rank() == 0) print_learning("sample log", r);

  EXPECT_GT(r.end.at("auc"), 0.7);
  EXPECT_LT(r.end.at("loss"), r.start.at("loss"));
  EXPECT_LT(r.end.at("loss"), r.base_rate_loss);
}

}  // namespace
