// The [skipgram] section of `embtrain train` and the workload's table
// defaults. The keys are typed and range-checked here, so an error names
// the key, where its value came from and the valid range.
#include <limits>

#include "config.hpp"
#include "embtrain/workloads/skipgram.hpp"
#include "workload_registry.hpp"

namespace embtrain {
namespace app {

namespace {

constexpr int64_t kInf = std::numeric_limits<int64_t>::max();

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

void declare_skipgram(Config& c) {
  const SkipgramConfig d;
  c.declare("skipgram.corpus", "", "text file to train on (required); a line is a sentence");
  c.declare("skipgram.min_count", std::to_string(d.min_count),
            "drop words seen fewer times (in the training part)");
  c.declare("skipgram.window", std::to_string(d.window),
            "largest context distance; each center draws its window from [1, window]");
  c.declare("skipgram.negatives", std::to_string(d.negatives),
            "negative samples per pair, from unigram counts^0.75");
  c.declare("skipgram.subsample", "1e-3", "word2vec's frequent-word subsampling t (0 = off)");
  c.declare("skipgram.lowercase", "false", "lowercase ASCII letters before counting");
  c.declare("skipgram.eval_fraction", "0.05",
            "last share of the corpus's words held out for the loss (0 = none)");
  c.declare("skipgram.neighbors", "", "words (comma-separated) whose nearest neighbours to print");
  c.declare("skipgram.neighbors_k", std::to_string(d.neighbors_k), "neighbours printed per word");
  c.declare("skipgram.export", "", "write the input vectors here, word2vec text format");
}

std::unique_ptr<Workload> create_skipgram(const Config& c, const WorkloadContext& context) {
  using L = SkipgramLimits;
  SkipgramConfig s;
  s.corpus = c.str("skipgram.corpus");
  if (s.corpus.empty()) c.fail("skipgram.corpus", "a path to a text file is required");
  s.min_count = c.integer("skipgram.min_count", 1, kInf);
  s.window = c.integer("skipgram.window", 1, L::kMaxWindow);
  s.negatives = c.integer("skipgram.negatives", 1, L::kMaxNegatives);
  s.subsample = c.real("skipgram.subsample", 0.0, 1.0);
  s.lowercase = c.boolean("skipgram.lowercase");
  s.eval_fraction = c.real("skipgram.eval_fraction", 0.0, L::kMaxEvalFraction);
  s.neighbors = comma_list(c.str("skipgram.neighbors"));
  s.neighbors_k = c.integer("skipgram.neighbors_k", 1, L::kMaxNeighborsK);
  s.export_path = c.str("skipgram.export");
  return make_skipgram_workload(s, context);
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
  e.table_defaults = {
      {"table.input.dim", "100"},
      {"table.output.dim", "100"},
      {"table.input.init", "normal"},
      {"table.input.init_std", "0.01"},
      {"table.output.init", "zeros"},
      {"table.input.optimizer", "rowwise_adagrad"},
      {"table.output.optimizer", "rowwise_adagrad"},
      {"table.input.lr", "0.1"},
      {"table.output.lr", "0.1"},
      {"table.input.scale_grad_by_freq", "false"},
      {"table.output.scale_grad_by_freq", "false"},
  };
  e.declare = declare_skipgram;
  e.create = create_skipgram;
  return e;
}

}  // namespace

EMBTRAIN_REGISTER_WORKLOAD(skipgram_entry());

}  // namespace app
}  // namespace embtrain
