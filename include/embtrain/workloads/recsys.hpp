// recsys: a click model over two row-sharded tables, "users" and "items".
//
// A sample is (user, history, candidate, label): the items the user clicked
// before (a padded list), an item shown to them, and whether they clicked
// it. The model scores
//
//     s = <u, c> + <mean(h), c> + b
//
// with u the user's row, c the candidate's row, mean(h) the mean of the
// history's rows over its non-padding entries (zero for an empty history)
// and b a dense scalar bias, and minimises the logistic loss
// log(1 + e^s) - y s, averaged over the global batch (all ranks' samples).
//
// Ids: users are 0..users-1 (table "users" has `users` rows); items are
// 1..items and 0 is the history padding (table "items" has items + 1 rows,
// padding_idx 0). One forward looks up both tables at once, the items table
// with the history ids and then the candidate ids in one list.
//
// Data is either synthetic or a click log:
//  - SyntheticClicks: a hidden latent model (user and item vectors drawn by
//    counter-based RNG) decides clicks, so the best achievable AUC and loss
//    on the held-out set are known (reference_metrics()). Sample k of a
//    stream is a pure function of (seed, stream, k); step t's global batch
//    is samples [t G, (t + 1) G) of the training stream (mod train_samples,
//    G = batch_size x ranks), rank r taking its contiguous part. Every rank
//    holds the hidden vectors, (users + items) x latent_dim floats.
//  - ClickLog: a TSV file, one sample per line:
//        user<TAB>item item ...<TAB>candidate<TAB>label
//    with a space-separated history (possibly empty), label 0 or 1, and `#`
//    comment lines and blank lines skipped. Every rank reads the whole
//    file. Each epoch visits the training samples in a permutation drawn
//    from (seed, epoch): step t of the epoch takes positions
//    [t G, (t + 1) G) of it, wrapping around at its end so that every batch
//    is full, rank r taking its contiguous part.
//
// Either way a batch is a pure function of (seed, step, rank, ranks): no
// data cursor to checkpoint. The one dense parameter, b, is trained with
// plain SGD (no optimizer state) and is identical on every rank.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "embtrain/workload.hpp"
#include "embtrain/zipf.hpp"

namespace embtrain {

struct RecsysConfig {
  std::string data;            // click log (TSV); empty: synthetic data
  std::string eval_data;       // held-out click log; empty: the last eval_fraction of `data`
  double eval_fraction = 0.1;  // click log only
  int64_t users = 10000;       // user ids 0..users-1
  int64_t items = 5000;        // item ids 1..items (0 is the history padding)
  int64_t history = 10;        // history slots per sample; longer logged histories keep their last
  // Synthetic data only.
  int64_t latent_dim = 16;           // dimension of the hidden user and item vectors
  double zipf = 1.0;                 // popularity exponent of users and items (0: uniform)
  double temperature = 0.5;          // hidden logit = <U, V> / temperature - 1: higher is noisier
  int64_t train_samples = 10000000;  // samples in one epoch
  int64_t eval_samples = 20000;      // held-out samples
  // Learning rate of plain SGD on the bias; unset: the items table's lr.
  std::optional<double> bias_lr;

  // Throws embtrain::Error naming the first key ("recsys.users") out of its
  // valid range (RecsysLimits).
  void validate() const;
};

// Valid ranges of the keys, shared by validate() and the config parser.
struct RecsysLimits {
  static constexpr int64_t kMaxIds = int64_t{1} << 40;
  static constexpr int64_t kMaxHistory = 10000;
  static constexpr int64_t kMaxLatentDim = 4096;
  static constexpr double kMaxZipf = 10;
  static constexpr double kMinTemperature = 1e-3, kMaxTemperature = 1e3;
  static constexpr int64_t kMaxSamples = int64_t{1} << 40;
  static constexpr int64_t kMaxEvalSamples = int64_t{1} << 28;
  // Samples per lookup during evaluation: bounds the memory of a forward.
  static constexpr int64_t kEvalChunk = 8192;
  static constexpr double kMaxEvalFraction = 0.5;
  static constexpr double kMaxBiasLr = 1e6;
};

// Builds the workload: reads the click log(s) or sets up the synthetic
// data. `context.table_dims` must hold "users" and "items" with the same
// dimension. A collective (ranks agree on any error in the data).
std::unique_ptr<Workload> make_recsys_workload(const RecsysConfig& config,
                                               const WorkloadContext& context);

namespace recsys {

constexpr int64_t kPaddingItem = 0;

// Samples in columns, as the model and the lookups read them.
struct Clicks {
  int64_t history_len = 0;
  std::vector<int64_t> users;       // n
  std::vector<int64_t> history;     // n x history_len item ids, padding (0) after the clicks
  std::vector<int64_t> candidates;  // n
  std::vector<float> labels;        // n, 0 or 1

  int64_t size() const { return static_cast<int64_t>(users.size()); }
  void resize(int64_t n, int64_t history_len);
  // Sample `index` of `from` into slot `to` (same history_len).
  void copy_sample(int64_t to, const Clicks& from, int64_t index);
};

// Where the samples come from: training batches by step and a held-out set.
class ClickSource {
 public:
  virtual ~ClickSource() = default;
  virtual std::string describe() const = 0;
  // What identifies data read from files (Workload::data_identity); "" for
  // synthetic data.
  virtual std::string identity() const { return ""; }
  // Samples in one epoch.
  virtual int64_t train_size() const = 0;
  // Rank `rank`'s `batch` samples of step `step`'s global batch of
  // batch x ranks samples, the ranks' parts in rank order.
  virtual void train_batch(int64_t step, int rank, int ranks, int64_t batch, Clicks* out) = 0;
  // The whole held-out set (every rank holds it; each evaluates a part).
  virtual const Clicks& eval_set() const = 0;
  // Metrics of the best model on the held-out set where known.
  virtual std::map<std::string, double> reference_metrics() const { return {}; }
};

// Synthetic clicks from a hidden latent model:
//  - user u has vector U_u, item i vector V_i, normal entries of variance
//    1/sqrt(k), so that <U, V> has variance 1 for any k; the click logit is
//    <U_u, V_i> / temperature + kTrueBias;
//  - a sample's user and candidate follow Zipf popularity laws; its label is
//    Bernoulli(sigmoid(logit(user, candidate)));
//  - its history holds a uniform 0..history number of slots, each filled by
//    the first of kHistoryTries popular-by-Zipf items the user clicks (drawn
//    with the same click probability), or left as padding when none is:
//    the history is the user's past clicks and so carries their taste.
class SyntheticClicks final : public ClickSource {
 public:
  enum class Stream : uint64_t { kTrain = 0x7a11, kEval = 0xe7a1 };
  static constexpr double kTrueBias = -1.0;  // about a third of the samples are clicks
  static constexpr int kHistoryTries = 8;

  SyntheticClicks(const RecsysConfig& config, uint64_t seed);

  std::string describe() const override;
  int64_t train_size() const override { return config_.train_samples; }
  void train_batch(int64_t step, int rank, int ranks, int64_t batch, Clicks* out) override;
  const Clicks& eval_set() const override { return eval_; }
  std::map<std::string, double> reference_metrics() const override { return reference_; }

  // The hidden model's click logit.
  double true_logit(int64_t user, int64_t item) const;
  // Sample `index` of `stream`, written to slot `slot` of `out` (already
  // sized; history_len == config.history).
  void sample(Stream stream, int64_t index, Clicks* out, int64_t slot) const;

 private:
  RecsysConfig config_;
  uint64_t seed_;
  ZipfSampler user_popularity_, item_popularity_;
  std::vector<float> user_latent_, item_latent_;  // users x k, (items + 1) x k (row 0 unused)
  Clicks eval_;
  std::map<std::string, double> reference_;
};

// A click log: config.data (and config.eval_data, or the last
// config.eval_fraction of config.data as the held-out set).
class ClickLog final : public ClickSource {
 public:
  ClickLog(const RecsysConfig& config, uint64_t seed);

  std::string describe() const override;
  std::string identity() const override;
  int64_t train_size() const override { return train_.size(); }
  void train_batch(int64_t step, int rank, int ranks, int64_t batch, Clicks* out) override;
  const Clicks& eval_set() const override { return eval_; }

  const Clicks& train_set() const { return train_; }
  // The order in which epoch `epoch` visits the training samples.
  std::vector<int64_t> epoch_order(int64_t epoch) const;

 private:
  RecsysConfig config_;
  uint64_t seed_;
  std::string eval_origin_;  // for describe()
  Clicks train_, eval_;
  int64_t order_epoch_ = -1;  // the epoch whose order is cached
  std::vector<int64_t> order_;
};

// Reads a click log (format above). Ids must lie in [0, users) and
// [1, items]; a history longer than `history` keeps its last `history`
// items (the most recent, when the log lists them oldest first). Errors
// name the file, the line, the field and the valid range.
Clicks read_click_log(const std::string& path, int64_t users, int64_t items, int64_t history);

// ---- The model ----------------------------------------------------------

double sigmoid(double s);
// log(1 + e^s) - y s, without overflow for large |s|.
double logistic_loss(double score, double label);

// The looked-up rows of a batch, dim floats each, in the batch's order.
template <typename T>
struct ClickRows {
  const T* users = nullptr;       // n rows
  const T* history = nullptr;     // n x history_len rows (padding rows unread)
  const T* candidates = nullptr;  // n rows
  // n rows, each history's mean already pooled (bags); then `history` is unread.
  const T* pooled_history = nullptr;
};

// The gradients of grad_scale x (summed loss), laid out as ClickRows.
template <typename T>
struct ClickGrads {
  T* users = nullptr;
  T* history = nullptr;  // padding entries get zeros
  T* candidates = nullptr;
  double bias = 0;
  // With ClickRows::pooled_history: the gradient of each history's mean
  // (n rows), and `history` is not written.
  T* pooled_history = nullptr;
};

// Scores the batch and returns its summed logistic loss. Writes each
// sample's score to `scores` when not null, and the gradients to `grads`
// when not null. Sums run in a fixed order, so the result does not depend
// on the number of threads.
template <typename T>
double click_model(const Clicks& batch, int64_t dim, const ClickRows<T>& rows, T bias,
                   double grad_scale, double* scores, ClickGrads<T>* grads);

// Area under the ROC curve: the probability that a random positive
// (label > 0.5) scores above a random negative, ties counting one half.
// NaN when either class is empty or a score is NaN.
double roc_auc(const double* scores, const float* labels, int64_t n);

}  // namespace recsys
}  // namespace embtrain
