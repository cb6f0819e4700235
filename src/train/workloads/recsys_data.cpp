// The recsys workload's samples: synthetic clicks from a hidden latent
// model, and click logs read from TSV files.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string_view>
#include <utility>

#include "embtrain/errors.hpp"
#include "embtrain/random.hpp"
#include "embtrain/workloads/recsys.hpp"

#include "common/fingerprint.hpp"

namespace embtrain {
namespace recsys {

namespace {

// Streams of the counter-based RNG (random.hpp); the sample streams are
// SyntheticClicks::Stream.
constexpr uint64_t kUserLatentStream = 0x05e7;
constexpr uint64_t kItemLatentStream = 0x17e7;
constexpr uint64_t kEpochOrderStream = 0x0dde;
// The draws of one sample, each from the sample's own key.
constexpr uint64_t kDrawUser = 1, kDrawCandidate = 2, kDrawLabel = 3, kDrawHistoryLength = 4,
                   kDrawHistory = 5;

std::string with_commas(int64_t v) {
  std::string digits = std::to_string(v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0 && digits[i - 1] != '-') out += ',';
    out += digits[i];
  }
  return out;
}

std::string percent(double share) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f%%", 100.0 * share);
  return text;
}

double click_rate(const Clicks& clicks) {
  double clicked = 0;
  for (float y : clicks.labels) clicked += y;
  return clicks.size() > 0 ? clicked / static_cast<double>(clicks.size()) : 0.0;
}

std::string_view trim(std::string_view s, const char* blanks = " \t") {
  const size_t b = s.find_first_not_of(blanks);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(blanks) - b + 1);
}

// An id field of a click log line, checked against [lo, hi].
int64_t parse_id(std::string_view text, const std::string& where, const std::string& what,
                 int64_t lo, int64_t hi, const std::string& range_note) {
  int64_t v = 0;
  const char* end = text.data() + text.size();
  const auto [stop, ec] = std::from_chars(text.data(), end, v);
  const bool integral = !text.empty() && stop == end;
  EMBTRAIN_REQUIRE(integral && ec != std::errc::invalid_argument, where, ": ", what, " '", text,
                   "' is not an integer");
  EMBTRAIN_REQUIRE(ec != std::errc::result_out_of_range && v >= lo && v <= hi, where, ": ", what,
                   " = ", text, " is out of range (valid: [", lo, ", ", hi, "]", range_note, ")");
  return v;
}

}  // namespace

void Clicks::resize(int64_t n, int64_t history_length) {
  history_len = history_length;
  users.resize(static_cast<size_t>(n));
  history.resize(static_cast<size_t>(n * history_length));
  candidates.resize(static_cast<size_t>(n));
  labels.resize(static_cast<size_t>(n));
}

void Clicks::copy_sample(int64_t to, const Clicks& from, int64_t index) {
  EMBTRAIN_ASSERT(from.history_len == history_len);
  users[to] = from.users[index];
  candidates[to] = from.candidates[index];
  labels[to] = from.labels[index];
  std::copy_n(from.history.begin() + index * history_len, history_len,
              history.begin() + to * history_len);
}

// ---- Synthetic clicks -----------------------------------------------------

namespace {
// Checked before the samplers are built, so that their own errors (which
// do not name our keys) never show.
const RecsysConfig& validated(const RecsysConfig& config) {
  config.validate();
  return config;
}
}  // namespace

SyntheticClicks::SyntheticClicks(const RecsysConfig& config, uint64_t seed)
    : config_(validated(config)),
      seed_(seed),
      user_popularity_(config.users + 1, config.zipf),  // draws 1..users: id + 1
      item_popularity_(config.items + 1, config.zipf) {
  const int64_t k = config_.latent_dim;
  // Entries of variance 1/sqrt(k): <U, V> then has variance 1 for any k.
  const double scale = std::pow(static_cast<double>(k), -0.25);
  const int64_t user_values = config_.users * k, item_values = (config_.items + 1) * k;
  user_latent_.resize(static_cast<size_t>(user_values));
  item_latent_.resize(static_cast<size_t>(item_values));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < user_values; ++i)
    user_latent_[i] = static_cast<float>(random_normal(seed_, kUserLatentStream, i) * scale);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < item_values; ++i)
    item_latent_[i] = static_cast<float>(random_normal(seed_, kItemLatentStream, i) * scale);

  const int64_t E = config_.eval_samples;
  eval_.resize(E, config_.history);
#pragma omp parallel for schedule(static)
  for (int64_t e = 0; e < E; ++e) sample(Stream::kEval, e, &eval_, e);

  // The hidden model itself on the held-out set: the best any model can do
  // in expectation.
  std::vector<double> logits(static_cast<size_t>(E));
  double loss = 0;
  for (int64_t e = 0; e < E; ++e) {
    logits[e] = true_logit(eval_.users[e], eval_.candidates[e]);
    loss += logistic_loss(logits[e], eval_.labels[e]);
  }
  reference_["loss"] = loss / static_cast<double>(E);
  reference_["auc"] = roc_auc(logits.data(), eval_.labels.data(), E);
}

std::string SyntheticClicks::describe() const {
  char zipf[32], temperature[32];
  std::snprintf(zipf, sizeof(zipf), "%g", config_.zipf);
  std::snprintf(temperature, sizeof(temperature), "%g", config_.temperature);
  return detail::concat("synthetic clicks: ", with_commas(config_.users), " users, ",
                        with_commas(config_.items), " items (Zipf ", zipf, "), history up to ",
                        config_.history, ", hidden dim ", config_.latent_dim, ", temperature ",
                        temperature, "; ", with_commas(config_.train_samples),
                        " training samples per epoch, ", with_commas(config_.eval_samples),
                        " held out (click rate ", percent(click_rate(eval_)), ")");
}

double SyntheticClicks::true_logit(int64_t user, int64_t item) const {
  const int64_t k = config_.latent_dim;
  const float* u = user_latent_.data() + user * k;
  const float* v = item_latent_.data() + item * k;
  double dot = 0;
  for (int64_t d = 0; d < k; ++d) dot += static_cast<double>(u[d]) * v[d];
  return dot / config_.temperature + kTrueBias;
}

void SyntheticClicks::sample(Stream stream, int64_t index, Clicks* out, int64_t slot) const {
  const uint64_t key =
      random_bits(seed_, static_cast<uint64_t>(stream), static_cast<uint64_t>(index));
  const int64_t user = user_popularity_.id_for(random_uniform(key, kDrawUser, 0)) - 1;
  const int64_t candidate = item_popularity_.id_for(random_uniform(key, kDrawCandidate, 0));
  // uniform in (0, 1]: P(uniform <= p) = p.
  const bool clicked = random_uniform(key, kDrawLabel, 0) <= sigmoid(true_logit(user, candidate));
  out->users[slot] = user;
  out->candidates[slot] = candidate;
  out->labels[slot] = clicked ? 1.0f : 0.0f;

  const int64_t H = config_.history;
  const int64_t slots =
      static_cast<int64_t>(random_bits(key, kDrawHistoryLength, 0) % static_cast<uint64_t>(H + 1));
  int64_t* hist = out->history.data() + slot * H;
  int64_t filled = 0;
  for (int64_t s = 0; s < slots; ++s)
    for (int t = 0; t < kHistoryTries; ++t) {
      const uint64_t draw = 2 * (static_cast<uint64_t>(s) * kHistoryTries + t);
      const int64_t item = item_popularity_.id_for(random_uniform(key, kDrawHistory, draw));
      if (random_uniform(key, kDrawHistory, draw + 1) <= sigmoid(true_logit(user, item))) {
        hist[filled++] = item;
        break;
      }
    }
  std::fill(hist + filled, hist + H, kPaddingItem);
}

void SyntheticClicks::train_batch(int64_t step, int rank, int ranks, int64_t batch, Clicks* out) {
  out->resize(batch, config_.history);
  // The global position of this rank's first sample: the ranks' parts of a
  // step are consecutive, so the global batch does not depend on the cut.
  const int64_t first = (step * ranks + rank) * batch;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < batch; ++i)
    sample(Stream::kTrain, (first + i) % config_.train_samples, out, i);
}

// ---- Click logs -----------------------------------------------------------

namespace {

uint64_t clicks_fingerprint(const Clicks& c, uint64_t h) {
  h = fnv1a(c.users, h);
  h = fnv1a(c.history, h);
  h = fnv1a(c.candidates, h);
  return fnv1a(c.labels, h);
}

}  // namespace

std::string ClickLog::identity() const {
  return detail::concat(config_.data, ": ", train_.size(), " training and ", eval_.size(),
                        " held-out samples, fingerprint ",
                        fingerprint_hex(clicks_fingerprint(eval_, clicks_fingerprint(train_, kFnvBasis))));
}

Clicks read_click_log(const std::string& path, int64_t users, int64_t items, int64_t history) {
  std::error_code ec;
  // A folder opens as a stream whose first read throws an opaque
  // std::ios_base::failure; name it instead.
  EMBTRAIN_REQUIRE(!std::filesystem::is_directory(path, ec), "click log ", path,
                   ": is a folder (valid: a TSV file)");
  std::ifstream in(path);
  EMBTRAIN_REQUIRE(in, "click log ", path, ": cannot open for reading");
  const std::string user_note = detail::concat("; recsys.users = ", users);
  const std::string item_note =
      detail::concat("; recsys.items = ", items, ", item 0 is the history padding");

  Clicks out;
  out.history_len = history;
  std::string line;
  std::vector<std::string_view> fields;
  std::vector<int64_t> clicked;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();  // CRLF files
    const std::string_view content = trim(line);
    if (content.empty() || content.front() == '#') continue;
    const std::string where = detail::concat(path, ":", line_no);
    // Split the line as it is, so that an empty first or last field is seen.
    const std::string_view text = line;

    fields.clear();
    for (size_t begin = 0;;) {
      const size_t tab = text.find('\t', begin);
      fields.push_back(
          trim(text.substr(begin, tab == std::string_view::npos ? tab : tab - begin), " "));
      if (tab == std::string_view::npos) break;
      begin = tab + 1;
    }
    EMBTRAIN_REQUIRE(fields.size() == 4, where,
                     ": expected 4 tab-separated fields (user, history, ",
                     "candidate, label), found ", fields.size());

    out.users.push_back(parse_id(fields[0], where, "user", 0, users - 1, user_note));
    clicked.clear();
    const std::string_view hist = fields[1];
    for (size_t begin = 0; begin < hist.size();) {
      const size_t end = std::min(hist.find_first_of(" \t", begin), hist.size());
      if (end > begin)
        clicked.push_back(parse_id(hist.substr(begin, end - begin), where,
                                   detail::concat("history item ", clicked.size() + 1), 1, items,
                                   item_note));
      begin = end + 1;
    }
    out.candidates.push_back(parse_id(fields[2], where, "candidate", 1, items, item_note));
    EMBTRAIN_REQUIRE(fields[3] == "0" || fields[3] == "1", where, ": label '", fields[3],
                     "' is not 0 or 1");
    out.labels.push_back(fields[3] == "1" ? 1.0f : 0.0f);

    // The last `history` clicks, then padding.
    const size_t keep = std::min(clicked.size(), static_cast<size_t>(history));
    out.history.insert(out.history.end(), clicked.end() - keep, clicked.end());
    out.history.insert(out.history.end(), static_cast<size_t>(history) - keep, kPaddingItem);
  }
  EMBTRAIN_REQUIRE(!in.bad(), "click log ", path, ": read error");
  EMBTRAIN_REQUIRE(out.size() > 0, "click log ", path,
                   ": no samples (only comments and blank lines)");
  return out;
}

ClickLog::ClickLog(const RecsysConfig& config, uint64_t seed) : config_(config), seed_(seed) {
  config_.validate();
  EMBTRAIN_REQUIRE(!config_.data.empty(), "recsys: a click log needs recsys.data");
  Clicks all = read_click_log(config_.data, config_.users, config_.items, config_.history);
  if (!config_.eval_data.empty()) {
    train_ = std::move(all);
    eval_ = read_click_log(config_.eval_data, config_.users, config_.items, config_.history);
    eval_origin_ = config_.eval_data;
    return;
  }
  const int64_t n = all.size();
  const int64_t held_out = std::llround(static_cast<double>(n) * config_.eval_fraction);
  EMBTRAIN_REQUIRE(held_out >= 1 && held_out < n, "click log ", config_.data, ": ", n,
                   " samples, of which recsys.eval_fraction = ", config_.eval_fraction,
                   " holds out ", held_out, " and leaves ", n - held_out,
                   " for training (each part needs at least one sample: change "
                   "recsys.eval_fraction or give recsys.eval_data)");
  train_.resize(n - held_out, config_.history);
  eval_.resize(held_out, config_.history);
  for (int64_t i = 0; i < n - held_out; ++i) train_.copy_sample(i, all, i);
  for (int64_t i = 0; i < held_out; ++i) eval_.copy_sample(i, all, n - held_out + i);
  eval_origin_ = detail::concat("its last ", percent(config_.eval_fraction));
}

std::string ClickLog::describe() const {
  return detail::concat("click log ", config_.data, ": ", with_commas(train_.size()),
                        " training samples (click rate ", percent(click_rate(train_)), "), ",
                        with_commas(eval_.size()), " held out (", eval_origin_, "); ",
                        with_commas(config_.users), " users, ", with_commas(config_.items),
                        " items, history up to ", config_.history);
}

std::vector<int64_t> ClickLog::epoch_order(int64_t epoch) const {
  const int64_t n = train_.size();
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  // Fisher-Yates from counter-based draws; the modulo's bias is below
  // n / 2^64, far under anything a training run could notice.
  const uint64_t key = random_bits(seed_, kEpochOrderStream, static_cast<uint64_t>(epoch));
  for (int64_t i = n - 1; i > 0; --i)
    std::swap(order[i],
              order[random_bits(key, 0, static_cast<uint64_t>(i)) % static_cast<uint64_t>(i + 1)]);
  return order;
}

void ClickLog::train_batch(int64_t step, int rank, int ranks, int64_t batch, Clicks* out) {
  const int64_t n = train_.size(), global = batch * ranks;
  const int64_t steps_per_epoch = (n + global - 1) / global;
  const int64_t epoch = step / steps_per_epoch;
  if (epoch != order_epoch_) {
    order_ = epoch_order(epoch);
    order_epoch_ = epoch;
  }
  // Step t of an epoch takes positions [t G, (t + 1) G) of the epoch's
  // order, wrapping around at its end so that every batch is full.
  const int64_t first = (step % steps_per_epoch) * global + rank * batch;
  out->resize(batch, config_.history);
  for (int64_t i = 0; i < batch; ++i) out->copy_sample(i, train_, order_[(first + i) % n]);
}

}  // namespace recsys
}  // namespace embtrain
