// skipgram: word2vec's skip-gram with negative sampling (Mikolov et al.,
// 2013) on any text file, with the input and output tables row-sharded.
//
// The pieces, in the order the data flows through them:
//   text -> tokens (whitespace split; by default lowercased, with the
//           punctuation around each word stripped: TextOptions)
//        -> Vocabulary (words with count >= min_count, by descending count)
//        -> TokenStream (rows of the words, line bounds; the last
//           eval_fraction of the words is the held-out part)
//   step -> a contiguous range of corpus positions per rank
//        -> PairGenerator (frequent-word subsampling, dynamic window,
//           (center, context) pairs inside one line)
//        -> UnigramSampler (negatives from counts^0.75)
//        -> SkipgramBatch (words) -> distinct rows -> ShardedEmbedding
//        -> SkipgramKernel (logistic loss and its gradients, by hand).
//
// Every random choice is a counter-based draw from (seed, pass, position),
// so the batch of a step is a pure function of (seed, step, ranks): a
// resumed run sees exactly the batches of the uninterrupted one.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "embtrain/random.hpp"
#include "embtrain/workload.hpp"

namespace embtrain {

// How text becomes words. A word is a run of bytes between whitespace
// (space, tab, CR, LF, VT, FF), then:
// - lowercase: A-Z and the Latin-1 capitals (U+00C0-U+00DE but U+00D7:
//   À-Þ) become lowercase; every other byte (other scripts) stays.
// - strip_punctuation: the punctuation at either end of a word goes: ASCII
//   punctuation (!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~), the dashes, quotes and
//   ellipsis U+2010-U+201F and U+2026, and « » ¡ ¿. Inside a word it stays
//   ("don't", "well-known", "e.g", "3.14"); a word of punctuation alone
//   ("--", "...") is no word.
struct TextOptions {
  bool lowercase = true;
  bool strip_punctuation = true;
};

struct SkipgramConfig {
  std::string corpus;                  // text file; a line is a sentence
  int64_t min_count = 5;               // words seen fewer times are dropped
  int64_t window = 5;                  // largest distance of a context word
  int64_t negatives = 5;               // negative samples per (center, context) pair
  double subsample = 1e-3;             // word2vec's t; 0 keeps every word
  bool lowercase = true;               // TextOptions
  bool strip_punctuation = true;       // TextOptions
  double eval_fraction = 0.05;         // last share of the corpus's words held out
  std::vector<std::string> neighbors;  // words whose neighbours finish() prints
  int64_t neighbors_k = 10;
  std::string export_path;  // word2vec text file finish() writes ("" = none)

  // Throws embtrain::Error naming the first key ("skipgram.window") that
  // is out of its valid range.
  void validate() const;
  TextOptions text() const { return {lowercase, strip_punctuation}; }
};

// Valid ranges of the keys (shared by validate() and the config parser).
struct SkipgramLimits {
  static constexpr int64_t kMaxWindow = 1000;
  static constexpr int64_t kMaxNegatives = 1000;
  static constexpr double kMaxEvalFraction = 0.5;
  static constexpr int64_t kMaxNeighborsK = 1000;
  // The share of a corpus's bytes that may be NUL or invalid UTF-8 (a few
  // stray bytes of another encoding); more, and it is not text.
  static constexpr double kMaxNonTextShare = 0.01;
};

// ---- Text and vocabulary ----------------------------------------------

// The words of `line` as TextOptions makes them.
std::vector<std::string> tokenize(const std::string& line, const TextOptions& options);

class Vocabulary {
 public:
  Vocabulary() = default;
  // The words of `counts` seen at least min_count times, ordered by
  // descending count, ties by ascending word (byte order), so the row of a
  // word does not depend on hash order or on the order words appear.
  static Vocabulary from_counts(const std::vector<std::pair<std::string, int64_t>>& counts,
                                int64_t min_count);
  // Words and counts already in row order (as vocab.txt holds them).
  Vocabulary(std::vector<std::string> words, std::vector<int64_t> counts);

  int64_t size() const { return static_cast<int64_t>(words_.size()); }
  const std::string& word(int64_t row) const { return words_[row]; }
  int64_t count(int64_t row) const { return counts_[row]; }
  const std::vector<std::string>& words() const { return words_; }
  const std::vector<int64_t>& counts() const { return counts_; }
  int64_t total_count() const { return total_; }  // sum of the counts
  // The row of `word`, or -1.
  int32_t find(const std::string& word) const;

 private:
  std::vector<std::string> words_;
  std::vector<int64_t> counts_;
  std::unordered_map<std::string, int32_t> rows_;
  int64_t total_ = 0;
};

// Writes "word count" per line, in row order, atomically (temporary name,
// then rename). `embtrain export` reads it back with read_vocabulary to
// name the rows of a checkpoint's table.
void write_vocabulary(const Vocabulary& vocab, const std::string& path);
Vocabulary read_vocabulary(const std::string& path);
// The same as text ("word count\n" per row; what checkpoints hold as
// vocab.txt), and read back from text (`name` starts its errors).
std::string vocabulary_text(const Vocabulary& vocab);
Vocabulary parse_vocabulary(const std::string& text, const std::string& name);

// Words as table rows, with out-of-vocabulary words dropped; a line is a
// sentence, and no window reaches across a line's end.
struct TokenStream {
  std::vector<int32_t> tokens;
  // line_begin[i] is the position of line i's first token; the last entry
  // is tokens.size(). Lines left empty by the vocabulary are not recorded.
  std::vector<int64_t> line_begin{0};

  int64_t size() const { return static_cast<int64_t>(tokens.size()); }
  int64_t lines() const { return static_cast<int64_t>(line_begin.size()) - 1; }
  // The index of the line that holds position `pos`.
  int64_t line_of(int64_t pos) const;
};

struct Corpus {
  Vocabulary vocab;        // counted on the training part only
  TokenStream train;       // the first (1 - eval_fraction) of the words
  TokenStream heldout;     // the rest, cut at a word (the cut ends a line)
  int64_t words_read = 0;  // words in the text (TextOptions), in or out of the vocabulary
  int64_t lines_read = 0;  // lines in the text
};

// Builds the corpus from `text`; `name` is what errors call it (a path).
// Throws embtrain::Error when the text is not text (more than
// SkipgramLimits::kMaxNonTextShare of its bytes NUL or invalid UTF-8) or
// when its training part has no line with two vocabulary words (no pair
// to train on).
// The held-out part is the last eval_fraction of the words rather than of
// the lines, so a corpus that is one long line (text8) still has one.
Corpus parse_corpus(std::string text, const std::string& name, const TextOptions& options,
                    int64_t min_count, double eval_fraction);
// Reads the whole file: every rank holds every word (4 bytes each), which is
// simple and deterministic and fine for corpora of up to a few billion
// words; sharding the text is left for when a corpus outgrows one host.
Corpus read_corpus(const std::string& path, const TextOptions& options, int64_t min_count,
                   double eval_fraction);

// ---- Sampling -----------------------------------------------------------

// word2vec's probability of keeping an occurrence of a word seen `count`
// times among `total` words: (sqrt(f / (t total)) + 1) (t total) / f,
// capped at 1; subsample t <= 0 keeps every word.
double keep_probability(int64_t count, int64_t total, double subsample);

// Negatives with P(w) proportional to count(w)^power, by Walker's alias
// method: O(1) per draw from one 64-bit random word, exact up to 2^-32.
class UnigramSampler {
 public:
  explicit UnigramSampler(const std::vector<int64_t>& counts, double power = 0.75);
  int32_t sample(uint64_t bits) const {
    // High 32 bits pick a column (multiply-shift, no modulo bias to speak
    // of), low 32 bits decide between the column and its alias.
    const uint64_t column = ((bits >> 32) * static_cast<uint64_t>(columns_.size())) >> 32;
    const Column& c = columns_[column];
    return static_cast<uint32_t>(bits) < c.threshold ? static_cast<int32_t>(column) : c.alias;
  }
  // The probability the sampler is built to give `row`.
  double probability(int64_t row) const { return probability_[row]; }

 private:
  // One cache line access per draw. A full column is its own alias.
  struct Column {
    uint32_t threshold;  // keep the column when the low bits are below this
    int32_t alias;
  };
  std::vector<Column> columns_;
  std::vector<double> probability_;
};

// One pass over a token stream: an epoch of training, or the fixed pass
// that evaluation makes over the held-out words. Its random choices are
// draws from (seed, pass, position).
struct SkipgramPass {
  uint64_t seed = 0;
  uint64_t pass = 0;  // the epoch; kHeldOut for evaluation
  static constexpr uint64_t kHeldOut = ~0ull;

  // Whether position `pos` survives subsampling.
  bool kept(int64_t pos, double keep_prob) const;
  // The dynamic window of the center at `pos`, uniform in [1, window].
  int64_t window_at(int64_t pos, int64_t window) const;
  // The key of the negatives of context `ordinal` of the center at `pos`.
  uint64_t pair_key(int64_t pos, int64_t ordinal) const;
  // The random word that draws negative k of the pair with `key`: word k
  // of a SplitMix64 stream started at the key, one mix per negative.
  static uint64_t negative_bits(uint64_t key, int64_t k) {
    return mix64(key + static_cast<uint64_t>(k) * 0x9e3779b97f4a7c15ull);
  }
};

struct SkipgramPair {
  int64_t center;   // corpus position
  int64_t context;  // corpus position, in the same line
  int32_t ordinal;  // the context's index among its center's contexts
};

// The (center, context) pairs of centers in [begin, end), as word2vec forms
// them: subsampled words are removed first (so a window spans them), then
// each kept center pairs with up to b kept words on each side within its
// line, b = window_at(center). Pairs come center by center, left contexts
// (nearest first) before right ones.
class PairGenerator {
 public:
  PairGenerator(const TokenStream* stream, const std::vector<double>* keep_prob, int64_t window)
      : stream_(stream), keep_prob_(keep_prob), window_(window) {}
  void generate(const SkipgramPass& pass, int64_t begin, int64_t end,
                std::vector<SkipgramPair>* out);

 private:
  bool kept(const SkipgramPass& pass, int64_t pos) const;

  const TokenStream* stream_;
  const std::vector<double>* keep_prob_;
  int64_t window_;
  // Subsampling decisions of positions [mask_begin_, mask_begin_ + mask_.size()),
  // computed once per call; positions outside are decided on demand.
  std::vector<uint8_t> mask_;
  int64_t mask_begin_ = 0;
};

// One rank's share of one step, in words.
struct SkipgramBatch {
  int64_t begin = 0, end = 0;    // corpus positions of its centers
  std::vector<int32_t> centers;  // per pair: the center's row
  // Per pair, 1 + negatives rows of the output table: the context, then
  // the negatives; -1 marks a negative that drew the context itself,
  // which word2vec skips.
  std::vector<int32_t> targets;

  int64_t pairs() const { return static_cast<int64_t>(centers.size()); }
};

// ---- Model math ---------------------------------------------------------

// The skip-gram loss of a batch over looked-up rows, and its gradients.
// Pair p scores its center's input row in_rows[centers[p]] against output
// rows out_rows[targets[p * per_pair + j]]: j = 0 is the context (label 1),
// j > 0 the negatives (label 0), -1 a target to skip. The loss is the sum
// over pairs of log(1 + exp(-s_ctx)) + sum_neg log(1 + exp(s_neg)), as
// word2vec minimises it pair by pair.
class SkipgramKernel {
 public:
  // Returns the summed loss. With grads, also writes the loss's gradient
  // with respect to every input and output row into grad_in (in_rows x dim)
  // and grad_out (out_rows x dim), which it overwrites. OpenMP spreads the
  // pairs over threads; each thread sums into its own buffers, reduced in
  // thread order, so results depend on the thread count only through float
  // summation order.
  double run(const float* in_rows, int64_t num_in, const float* out_rows, int64_t num_out,
             int64_t dim, const int32_t* centers, const int32_t* targets, int64_t pairs,
             int64_t per_pair, float* grad_in, float* grad_out);

 private:
  std::vector<float> scratch_;  // per thread: gradient buffers past thread 0's, then a row
  std::vector<double> thread_loss_;
};

// ---- Vectors --------------------------------------------------------------

// Cosine similarity over the rows of a table.
class CosineIndex {
 public:
  CosineIndex(const float* table, int64_t rows, int64_t dim);
  // The k rows most similar to `row` (itself excluded), best first, ties by
  // row; a zero row has similarity 0 to everything.
  std::vector<std::pair<int64_t, float>> nearest(int64_t row, int64_t k) const;

 private:
  const float* table_;
  int64_t rows_, dim_;
  std::vector<float> inv_norm_;
};

// word2vec's text format: "V D", then "word v1 ... vD" per row (shortest
// round-trip decimal of each float). Atomic: temporary name, then rename.
void write_word2vec_text(const std::string& path, const Vocabulary& vocab, const float* table,
                         int64_t dim);

// The same a chunk of rows at a time (a table streamed from a checkpoint
// holds one chunk in memory): write() the rows in order, then finish(),
// which checks that every word got its row and renames the file into
// place. Until then the file is a temporary one, removed if the writer
// is destroyed unfinished (an error on the way leaves nothing behind).
class Word2VecWriter {
 public:
  Word2VecWriter(const std::string& path, const Vocabulary& vocab);
  ~Word2VecWriter();
  Word2VecWriter(const Word2VecWriter&) = delete;
  Word2VecWriter& operator=(const Word2VecWriter&) = delete;
  // Rows [first, first + n) of `dim` floats; first must be the next row.
  void write(int64_t first, int64_t n, int64_t dim, const float* rows);
  // `dim` names the width when no row was written (an empty table).
  void finish(int64_t dim);

 private:
  void header(int64_t dim);
  std::string path_, tmp_;
  const Vocabulary& vocab_;
  std::FILE* file_ = nullptr;
  int64_t next_ = 0, dim_ = -1;
  std::string line_;
};

// ---- The workload ---------------------------------------------------------

class SkipgramWorkload : public Workload {
 public:
  // Reads the corpus (a collective: ranks agree on any error).
  SkipgramWorkload(const SkipgramConfig& config, const WorkloadContext& context);
  ~SkipgramWorkload() override;

  std::string name() const override { return "skipgram"; }
  std::string describe() const override;
  std::string data_identity() const override;
  std::vector<std::string> table_names() const override { return {"input", "output"}; }
  int64_t table_rows(const std::string& name) const override;
  int64_t steps_per_epoch() const override { return steps_per_epoch_; }
  int64_t epoch_samples() const override { return corpus_.train.size(); }
  int64_t global_batch() const override { return context_.batch_size * context_.comm->size(); }
  // vocab.txt: the word of every row of both tables.
  std::map<std::string, std::string> checkpoint_files() const override {
    return {{"vocab.txt", vocabulary_text(corpus_.vocab)}};
  }
  StepOutput train_step(ShardedEmbedding& tables, int64_t step) override;
  std::map<std::string, double> evaluate(ShardedEmbedding& tables) override;
  void start(const std::string& out_dir) override;  // vocab.txt
  void finish(ShardedEmbedding& tables, const std::string& out_dir) override;

  const Corpus& corpus() const { return corpus_; }
  const SkipgramConfig& config() const { return config_; }
  // Rank `rank`'s batch of `step` out of `ranks` (a pure function of
  // (seed, step, rank, ranks)).
  void make_batch(int64_t step, int rank, int ranks, SkipgramBatch* batch);
  // The held-out loss per pair over this rank's share, unreduced: returns
  // the summed loss and sets *pairs. A collective (looks rows up).
  double heldout_loss(ShardedEmbedding& tables, int64_t* pairs);

 private:
  // Batch of `pass` over `stream`'s positions [begin, end).
  void fill_batch(const TokenStream& stream, PairGenerator& generator, const SkipgramPass& pass,
                  int64_t begin, int64_t end, SkipgramBatch* batch);
  // A batch with its words mapped to distinct rows per table
  // (first-appearance order) and its pairs to slots in those lists.
  struct IndexedBatch {
    SkipgramBatch batch;
    std::vector<int32_t> in_ids, out_ids;  // distinct rows looked up, per table
    std::vector<int32_t> center_slots, target_slots;
    int64_t step = -1;  // the training step it is the batch of; -1: held out
  };
  void index_batch(IndexedBatch* indexed);
  void check_tables(const ShardedEmbedding& tables) const;
  void forward(ShardedEmbedding& tables, const IndexedBatch& indexed);
  // The summed loss of the batch whose rows the last forward looked up,
  // and with grad_in/grad_out non-null its gradients.
  double run_kernel(const IndexedBatch& indexed, float* grad_in, float* grad_out);

  SkipgramConfig config_;
  WorkloadContext context_;
  Corpus corpus_;
  int64_t dim_ = 0;
  int64_t steps_per_epoch_ = 0;
  std::vector<double> keep_prob_;  // per row
  std::unique_ptr<UnigramSampler> negatives_;
  std::unique_ptr<PairGenerator> train_pairs_, heldout_pairs_;
  SkipgramKernel kernel_;

  // Step buffers, reused so a step does not allocate once warm.
  IndexedBatch current_;  // the batch of the step (or held-out round) in progress
  IndexedBatch next_;     // the batch a prefetch has started distributing
  std::vector<SkipgramPair> pairs_;
  std::vector<int32_t> in_slot_, out_slot_;  // per row: its slot this step, or -1
  std::vector<float> in_rows_, out_rows_, grad_in_, grad_out_;
};

std::unique_ptr<Workload> make_skipgram_workload(const SkipgramConfig& config,
                                                 const WorkloadContext& context);

}  // namespace embtrain
