// The [skipgram] section of `embtrain train` and the workload's table
// defaults. Each key is declared once with its default, help and valid
// range, so an error names the key, where its value came from and the
// valid range.
#include <algorithm>
#include <filesystem>
#include <limits>

#include "embtrain/workloads/skipgram.hpp"
#include "workload_registry.hpp"

namespace embtrain {
namespace app {

namespace {

// "a, b,,c" -> {"a", "b", "c"}.
std::vector<std::string> comma_list(const std::string& text) {
  std::vector<std::string> items;
  std::string item;
  auto flush = [&] {
    const size_t b = item.find_first_not_of(" \t");
    if (b != std::string::npos)
      items.push_back(item.substr(b, item.find_last_not_of(" \t") - b + 1));
    item.clear();
  };
  for (char c : text) {
    if (c == ',')
      flush();
    else
      item += c;
  }
  flush();
  return items;
}

void read_corpus(SkipgramConfig& s, const std::string& path) {
  if (path.empty()) throw ValueError("a path to a text file is required");
  s.corpus = path;
}

// Defaults are SkipgramConfig's own.
OptionList<SkipgramConfig> skipgram_options() {
  using R = Rules<SkipgramConfig>;
  using L = SkipgramLimits;
  return {
      {"corpus", "text file to train on (required); a line is a sentence",
       R::text("", read_corpus)},
      {"min_count", "drop words seen fewer times (in the training part)",
       R::integer(1, std::numeric_limits<int64_t>::max(), &SkipgramConfig::min_count)},
      {"window", "largest context distance; each center draws its window from [1, window]",
       R::integer(1, L::kMaxWindow, &SkipgramConfig::window)},
      {"negatives", "negative samples per pair, from unigram counts^0.75",
       R::integer(1, L::kMaxNegatives, &SkipgramConfig::negatives)},
      {"subsample", "word2vec's frequent-word subsampling t (0 = off)",
       R::real(Range::closed(0, 1), &SkipgramConfig::subsample)},
      {"lowercase", "lowercase A-Z and the Latin-1 capitals (U+00C0-U+00DE) before counting",
       R::boolean(&SkipgramConfig::lowercase)},
      {"strip_punctuation",
       "strip punctuation at both ends of each word (ASCII; Unicode quotes, dashes, "
       "ellipsis, guillemets); inside a word it stays (don't, well-known)",
       R::boolean(&SkipgramConfig::strip_punctuation)},
      {"eval_fraction", "last share of the corpus's words held out for the loss (0 = none)",
       R::real(Range::closed(0, L::kMaxEvalFraction), &SkipgramConfig::eval_fraction)},
      {"neighbors", "words (comma-separated) whose nearest neighbours to print",
       R::text("", [](SkipgramConfig& s, const std::string& v) { s.neighbors = comma_list(v); })},
      {"neighbors_k", "neighbours printed per word",
       R::integer(1, L::kMaxNeighborsK, &SkipgramConfig::neighbors_k)},
      {"export", "write the input vectors here, word2vec text format",
       R::text("", &SkipgramConfig::export_path)},
  };
}

WorkloadEntry skipgram_entry() {
  WorkloadEntry e;
  e.name = "skipgram";
  e.summary = "word2vec skip-gram with negative sampling on a text file";
  e.tables = {"input", "output"};
  // As word2vec: 100-d vectors, small random input rows, zero output rows.
  // Row-wise AdaGrad rather than word2vec's SGD: a step sums each row's
  // gradient over the global batch, so with SGD a frequent word's step
  // grows with the batch (lr 0.05 diverges at 1024 centers per rank) and a
  // rate small enough for the largest batch starves rare words. Row-wise
  // AdaGrad scales each row's step by its own gradient history, which also
  // stands in for word2vec's linear rate decay (our rate is constant); on
  // bench/skipgram_vs_fasttext.py's corpus it learns equally well from 256
  // to 16384 centers per rank, best at lr 0.1.
  e.table_defaults = {{"dim", "100"},
                      {"optimizer", "rowwise_adagrad"},
                      {"lr", "0.1"},
                      {"scale_grad_by_freq", "false"}};
  e.per_table_defaults = {{"input", {{"init", "normal"}, {"init_std", "0.01"}}},
                          {"output", {{"init", "zeros"}}}};
  return e;
}

// What skipgram holds per rank (memory_plan.hpp): the corpus (its text
// while it is parsed, then 4 bytes per word) and per step each center's
// window and negatives, rows and gradients several times over. Its tables'
// rows are the vocabulary's, known once the corpus is read.
WorkloadEstimate estimate_skipgram(const SkipgramConfig& k, const WorkloadContext& c) {
  WorkloadEstimate e;
  std::error_code ec;
  const auto size = std::filesystem::file_size(k.corpus, ec);
  e.data_what = "corpus (2 x its size)";
  e.data_bytes = ec ? 0 : 2 * static_cast<double>(size);
  if (ec)
    e.data_problem = embtrain::detail::concat("config key 'skipgram.corpus' = '", k.corpus,
                                              "': cannot size it (", ec.message(), ")");
  double dim = 0;
  for (const auto& [table, d] : c.table_dims) dim = std::max(dim, static_cast<double>(d));
  e.step_bytes = static_cast<double>(c.batch_size) * static_cast<double>(2 * k.window + k.negatives + 1) *
                 dim * 4 * 6;
  // Each center's window and negatives look up `output`, the center `input`.
  const double batch = static_cast<double>(c.batch_size);
  e.step = {{"input", batch, 0},
            {"output", batch * static_cast<double>(2 * k.window + k.negatives), 0}};
  return e;
}

const WorkloadRegistration kRegistration(skipgram_entry(), skipgram_options(),
                                         make_skipgram_workload,
                                         WorkloadRegistration::Check<SkipgramConfig>{nullptr},
                                         estimate_skipgram);

}  // namespace

}  // namespace app
}  // namespace embtrain
