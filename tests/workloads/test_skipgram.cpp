// The skipgram workload under mpiexec (1 and 2 ranks): its text pipeline,
// its samplers against their formulas, its pairs against a brute-force
// enumeration, determinism of batches, its gradients against finite
// differences, a distributed step against a single-process reference, and
// learning on a corpus with planted topics.
//
// Every random input comes from the run's seed (printed by the test main;
// replay with EMBTRAIN_TEST_SEED), and every rank draws the same cases.
#include <gtest/gtest.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "embtrain/communicator.hpp"
#include "embtrain/embedding_table.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/random.hpp"
#include "embtrain/shard_plan.hpp"
#include "embtrain/sharded_embedding.hpp"
#include "embtrain/workloads/skipgram.hpp"
#include "mpi_test_util.hpp"

namespace {

namespace fs = std::filesystem;
using embtrain::CommType;
using embtrain::Corpus;
using embtrain::PairGenerator;
using embtrain::ShardedEmbedding;
using embtrain::ShardPlan;
using embtrain::SkipgramBatch;
using embtrain::SkipgramConfig;

// Text as it is: no lowercasing, no punctuation stripped.
const embtrain::TextOptions kRawText{false, false};
using embtrain::SkipgramKernel;
using embtrain::SkipgramPair;
using embtrain::SkipgramPass;
using embtrain::SkipgramWorkload;
using embtrain::TableSpec;
using embtrain::TokenStream;
using embtrain::UnigramSampler;
using embtrain::Vocabulary;
using embtrain::WorkloadContext;
using embtrain_mpi_test::all_close;
using embtrain_mpi_test::MpiTest;
using embtrain_mpi_test::seed_trace;
using embtrain_mpi_test::test_seed;
using embtrain_mpi_test::world;

// A uniform integer in [0, n) from (seed, stream, index).
int64_t uniform_int(uint64_t seed, uint64_t stream, uint64_t index, int64_t n) {
  return static_cast<int64_t>(embtrain::random_bits(seed, stream, index) %
                              static_cast<uint64_t>(n));
}

// A file private to this rank and test, removed with the object.
class TempFile {
 public:
  explicit TempFile(const std::string& tag, const std::string& text = "") {
    path_ = (fs::temp_directory_path() /
             ("embtrain_skipgram_" + std::to_string(::getpid()) + "_" + tag))
                .string();
    std::ofstream(path_) << text;
  }
  ~TempFile() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A folder private to this rank and test.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    path_ = (fs::temp_directory_path() /
             ("embtrain_skipgram_dir_" + std::to_string(::getpid()) + "_" + tag))
                .string();
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

WorkloadContext make_context(int64_t batch_size, int64_t dim, uint64_t seed,
                             const std::string& out_dir = "") {
  WorkloadContext c;
  c.comm = &world();
  c.seed = seed;
  c.batch_size = batch_size;
  c.table_dims = {{"input", dim}, {"output", dim}};
  c.out_dir = out_dir;
  return c;
}

// The tables as word2vec starts them: input rows N(0, init_std^2) drawn by
// (seed, row), so every number of ranks starts alike; output rows zero.
std::unique_ptr<ShardedEmbedding> make_tables(
    int64_t rows, int64_t dim, double lr, double init_std, uint64_t seed,
    embtrain::OptimizerKind optimizer = embtrain::OptimizerKind::kSgd) {
  std::vector<TableSpec> specs(2);
  specs[0].name = "input";
  specs[1].name = "output";
  for (TableSpec& s : specs) {
    s.num_embeddings = rows;
    s.dim = dim;
    s.optimizer.kind = optimizer;
    s.optimizer.lr = lr;
  }
  const ShardPlan plan = ShardedEmbedding::table_plan(rows, world().size());
  const int r = world().rank();
  std::vector<std::vector<float>> local(2);
  local[0].resize(static_cast<size_t>(plan.shard_rows(r) * dim));
  for (int64_t i = 0; i < plan.shard_rows(r); ++i)
    for (int64_t d = 0; d < dim; ++d)
      local[0][i * dim + d] =
          static_cast<float>(init_std) *
          embtrain::random_normal(seed, 0x1a1b, plan.global_row(r, i) * dim + d);
  local[1].assign(local[0].size(), 0.f);
  return std::make_unique<ShardedEmbedding>(specs, &world(), local);
}

// ---- Planted topics -------------------------------------------------------

// A corpus where topic words ("t3_w17") gather in lines of their topic and
// general words ("g5") fall anywhere, each drawn Zipf-like within its pool,
// so frequencies span a range as in real text and subsampling matters.
struct TopicCorpus {
  int topics = 8, words_per_topic = 60, general_words = 60;
  double topic_share = 0.3;  // chance that a word of a line comes from its topic
  int lines = 1500;

  std::string text(uint64_t seed) const {
    std::ostringstream os;
    uint64_t draw = 0;
    auto zipf = [&](int n) {
      // P(j) ~ 1 / (j + 2) by inversion on a table would be exact; a
      // product of two uniforms skews toward small j enough for this.
      const double u = embtrain::random_uniform(seed, 1, draw++);
      const double v = embtrain::random_uniform(seed, 1, draw++);
      return std::min(n - 1, static_cast<int>(u * v * n * 2));
    };
    for (int l = 0; l < lines; ++l) {
      const int topic = static_cast<int>(uniform_int(seed, 2, l, topics));
      const int len = 8 + static_cast<int>(uniform_int(seed, 3, l, 13));
      for (int i = 0; i < len; ++i) {
        if (i) os << ' ';
        if (embtrain::random_uniform(seed, 4, draw++) < topic_share)
          os << 't' << topic << "_w" << zipf(words_per_topic);
        else
          os << 'g' << zipf(general_words);
      }
      os << '\n';
    }
    return os.str();
  }

  // The topic of a word, or -1 for a general word.
  static int topic_of(const std::string& word) {
    return word[0] == 't' ? std::stoi(word.substr(1, word.find('_') - 1)) : -1;
  }
};

// Mean share of a topic word's k nearest neighbours (by cosine, among all
// words) that are words of its topic.
double topic_share_of_neighbours(const Vocabulary& vocab, const std::vector<float>& table,
                                 int64_t dim, int64_t k) {
  const embtrain::CosineIndex index(table.data(), vocab.size(), dim);
  double sum = 0;
  int64_t queries = 0;
  for (int64_t r = 0; r < vocab.size(); ++r) {
    const int topic = TopicCorpus::topic_of(vocab.word(r));
    if (topic < 0) continue;
    int64_t same = 0;
    for (const auto& [row, sim] : index.nearest(r, k))
      same += TopicCorpus::topic_of(vocab.word(row)) == topic;
    sum += static_cast<double>(same) / static_cast<double>(k);
    ++queries;
  }
  return sum / static_cast<double>(queries);
}

// ---- Text and vocabulary ---------------------------------------------------

class SkipgramText : public MpiTest {};

TEST_F(SkipgramText, TokenizeSplitsOnWhitespaceAndLowercasesAsciiOnly) {
  EXPECT_EQ(embtrain::tokenize("  a\tbb \r\v\fccc  ", kRawText),
            (std::vector<std::string>{"a", "bb", "ccc"}));
  EXPECT_EQ(embtrain::tokenize("The CAT sat", {true, false}),
            (std::vector<std::string>{"the", "cat", "sat"}));
  EXPECT_EQ(embtrain::tokenize("The CAT", kRawText), (std::vector<std::string>{"The", "CAT"}));
  // "ÄRGER über ×" in UTF-8: the Latin-1 capital Ä (C3 84) lowers to ä
  // (C3 A4); ü stays, and so does × (C3 97), which is no letter.
  EXPECT_EQ(embtrain::tokenize("\xC3\x84RGER \xC3\xBC \xC3\x97", {true, false}),
            (std::vector<std::string>{"\xC3\xA4rger", "\xC3\xBC", "\xC3\x97"}));
  // Other scripts are kept as they are: Greek capital sigma (CE A3).
  EXPECT_EQ(embtrain::tokenize("\xCE\xA3"
                               "A",
                               {true, false}),
            (std::vector<std::string>{"\xCE\xA3"
                                      "a"}));
  EXPECT_TRUE(embtrain::tokenize(" \t ", {true, true}).empty());
}

// The default TextOptions: lowercase, and the punctuation at a word's ends
// stripped (ASCII, and Unicode quotes, dashes, ellipsis, guillemets), the
// punctuation inside it kept; a word of punctuation only is no word.
TEST_F(SkipgramText, TokenizeStripsPunctuationAtTheEndsOfWords) {
  const embtrain::TextOptions text;  // the defaults
  EXPECT_TRUE(text.lowercase && text.strip_punctuation);
  EXPECT_EQ(embtrain::tokenize("\"Hello, World!\" (she said) -- don't re-use e.g. 3.14.", text),
            (std::vector<std::string>{"hello", "world", "she", "said", "don't", "re-use", "e.g",
                                      "3.14"}));
  // \u201cQuoted\u201d \u2014 \u00abguillemets\u00bb \u00bfqu\u00e9? wait\u2026 don\u2019t
  EXPECT_EQ(
      embtrain::tokenize("\xE2\x80\x9CQuoted\xE2\x80\x9D \xE2\x80\x94 \xC2\xAB"
                         "guillemets\xC2\xBB \xC2\xBFqu\xC3\xA9? wait\xE2\x80\xA6 "
                         "don\xE2\x80\x99t",
                         text),
      (std::vector<std::string>{"quoted", "guillemets", "qu\xC3\xA9", "wait", "don\xE2\x80\x99t"}));
  EXPECT_EQ(embtrain::tokenize("_emphasis_ [1] ... ---", text),
            (std::vector<std::string>{"emphasis", "1"}));
  // Stripping off keeps the bytes as they are.
  EXPECT_EQ(embtrain::tokenize("warranty: (c)", {false, false}),
            (std::vector<std::string>{"warranty:", "(c)"}));
}

TEST_F(SkipgramText, VocabularyKeepsMinCountAndOrdersByCountThenWord) {
  const Vocabulary v = Vocabulary::from_counts(
      {{"pear", 3}, {"fig", 7}, {"apple", 3}, {"kiwi", 1}, {"date", 7}, {"lime", 2}}, 2);
  EXPECT_EQ(v.words(), (std::vector<std::string>{"date", "fig", "apple", "pear", "lime"}));
  EXPECT_EQ(v.counts(), (std::vector<int64_t>{7, 7, 3, 3, 2}));
  EXPECT_EQ(v.total_count(), 22);
  EXPECT_EQ(v.find("apple"), 2);
  EXPECT_EQ(v.find("kiwi"), -1);
}

TEST_F(SkipgramText, CorpusDropsRareWordsKeepsLinesAndHoldsOutTheLastWords) {
  // 20 words; eval_fraction 0.35 holds out the last 7, cutting line 4
  // after "c a b x1 a".
  const std::string text =
      "a b a c\n"
      "\n"
      "b a rare b\n"
      "c a b x1 a b c\n"
      "a b x2 c b\n";
  const Corpus c = embtrain::parse_corpus(text, "test", kRawText, 2, 0.35);
  EXPECT_EQ(c.words_read, 20);
  EXPECT_EQ(c.lines_read, 5);
  // Counted on the first 13 words only: a 5, b 4, c 2 (rare and x1 once).
  EXPECT_EQ(c.vocab.words(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(c.vocab.counts(), (std::vector<int64_t>{5, 4, 2}));
  const int32_t a = 0, b = 1, cc = 2;
  EXPECT_EQ(c.train.tokens, (std::vector<int32_t>{a, b, a, cc, b, a, b, cc, a, b, a}));
  EXPECT_EQ(c.train.line_begin, (std::vector<int64_t>{0, 4, 7, 11}));
  // The held-out part starts mid-line ("b c" of line 4) and keeps only
  // vocabulary words (x2 dropped).
  EXPECT_EQ(c.heldout.tokens, (std::vector<int32_t>{b, cc, a, b, cc, b}));
  EXPECT_EQ(c.heldout.line_begin, (std::vector<int64_t>{0, 2, 6}));
  EXPECT_EQ(c.train.line_of(0), 0);
  EXPECT_EQ(c.train.line_of(4), 1);
  EXPECT_EQ(c.train.line_of(10), 2);
}

TEST_F(SkipgramText, CorpusWithNoFrequentWordIsAClearError) {
  try {
    embtrain::parse_corpus("a b c\n", "tiny.txt", kRawText, 2, 0.0);
    FAIL() << "expected an error";
  } catch (const embtrain::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("tiny.txt"), std::string::npos) << m;
    EXPECT_NE(m.find("min_count"), std::string::npos) << m;
  }
}

// The message of the embtrain::Error that f throws, or "" after recording
// a failure when it throws nothing or something else.
template <typename F>
std::string corpus_error(F&& f) {
  try {
    f();
  } catch (const embtrain::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected embtrain::Error, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected an error, got none";
  return "";
}

bool has_all(const std::string& text, const std::vector<std::string>& parts) {
  for (const std::string& p : parts)
    if (text.find(p) == std::string::npos) return false;
  return true;
}

// Issue 14: what is no corpus at all is refused with what was wrong and
// what is needed, instead of a library exception or a run of 0 lookups.
TEST_F(SkipgramText, RefusesAFolderTooLittleTextAndBinaryData) {
  TempDir folder("corpus_folder_" + std::to_string(world().rank()));
  std::string m = corpus_error([&] { embtrain::read_corpus(folder.path(), kRawText, 1, 0.0); });
  EXPECT_TRUE(has_all(m, {folder.path(), "is a folder", "text file"})) << m;

  for (const std::string text : {"word\n", "word\nword\nword\n", "a\nb\nc\n"}) {
    m = corpus_error([&] { embtrain::parse_corpus(text, "short.txt", kRawText, 1, 0.0); });
    EXPECT_TRUE(has_all(m, {"short.txt", "too little text", "two words", "min_count"})) << m;
  }
  // Two words on a line are a pair: enough.
  EXPECT_NO_THROW(embtrain::parse_corpus("w w\n", "pair.txt", kRawText, 1, 0.0));

  // Random bytes from the seed: mostly invalid UTF-8.
  const uint64_t seed = test_seed(40);
  SCOPED_TRACE(seed_trace(seed));
  std::string binary(4096, '\0');
  for (size_t i = 0; i < binary.size(); ++i)
    binary[i] = static_cast<char>(embtrain::random_bits(seed, 40, i) & 0xff);
  m = corpus_error([&] { embtrain::parse_corpus(binary, "blob.bin", kRawText, 1, 0.0); });
  EXPECT_TRUE(has_all(m, {"blob.bin", "is not text", "UTF-8", "1%"})) << m;
  // NUL bytes are not text either, even where they are the only bad bytes.
  std::string nuls = "a b c a b c\n";
  nuls += std::string(8, '\0');
  m = corpus_error([&] { embtrain::parse_corpus(nuls, "nul.txt", kRawText, 1, 0.0); });
  EXPECT_TRUE(has_all(m, {"nul.txt", "is not text", "byte 12"})) << m;
}

// UTF-8 text of every sequence length passes, and so do a few stray bytes
// of another encoding (at most 1%).
TEST_F(SkipgramText, AcceptsUtf8AndAFewStrayBytes) {
  std::string text;
  for (int i = 0; i < 30; ++i) text += "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 word\n";
  EXPECT_NO_THROW(embtrain::parse_corpus(text, "utf8.txt", kRawText, 1, 0.0));
  text += "na\xefve\n";  // one Latin-1 byte in 700
  const Corpus c = embtrain::parse_corpus(text, "mixed.txt", kRawText, 1, 0.0);
  EXPECT_EQ(c.words_read, 121);
  // Overlong forms and surrogates are not UTF-8.
  const std::string bad = std::string("\xc0\xaf\xed\xa0\x80") + "a b a b\n";
  EXPECT_TRUE(has_all(corpus_error([&] { embtrain::parse_corpus(bad, "o.txt", kRawText, 1, 0.0); }),
                      {"o.txt", "byte 0"}));
}

TEST_F(SkipgramText, VocabularyFileRoundTripsAndRejectsMalformedLines) {
  const Vocabulary v = Vocabulary::from_counts({{"x", 4}, {"y", 9}, {"z", 4}}, 1);
  TempFile file("vocab_" + std::to_string(world().rank()) + ".txt");
  embtrain::write_vocabulary(v, file.path());
  const Vocabulary back = embtrain::read_vocabulary(file.path());
  EXPECT_EQ(back.words(), v.words());
  EXPECT_EQ(back.counts(), v.counts());

  std::ofstream(file.path()) << "x 4\ny\n";
  try {
    embtrain::read_vocabulary(file.path());
    FAIL() << "expected an error";
  } catch (const embtrain::Error& e) {
    EXPECT_NE(std::string(e.what()).find(file.path() + ":2"), std::string::npos) << e.what();
  }
}

// ---- Samplers ---------------------------------------------------------------

class SkipgramSampling : public MpiTest {};

TEST_F(SkipgramSampling, KeepProbabilityFollowsWord2vec) {
  // t * total = 1000: a word seen 10,000 times is kept with probability
  // (sqrt(10) + 1) / 10; one seen at most ~2,618 times (where
  // (sqrt(x) + 1) / x = 1, x = f / 1000) always.
  EXPECT_NEAR(embtrain::keep_probability(10000, 1000000, 1e-3), (std::sqrt(10.0) + 1) / 10, 1e-12);
  EXPECT_NEAR(embtrain::keep_probability(4000, 1000000, 1e-3), (std::sqrt(4.0) + 1) / 4, 1e-12);
  EXPECT_EQ(embtrain::keep_probability(2000, 1000000, 1e-3), 1.0);
  EXPECT_EQ(embtrain::keep_probability(999999, 1000000, 0.0), 1.0);

  // The per-position decisions keep that share, whatever the seed.
  const uint64_t seed = test_seed(11);
  SCOPED_TRACE(seed_trace(seed));
  const double p = embtrain::keep_probability(10000, 1000000, 1e-3);
  const SkipgramPass pass{seed, 3};
  const int64_t n = 200000;
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) kept += pass.kept(i, p);
  const double sd = std::sqrt(p * (1 - p) / static_cast<double>(n));
  EXPECT_NEAR(static_cast<double>(kept) / static_cast<double>(n), p, 5 * sd);
}

TEST_F(SkipgramSampling, UnigramSamplerDrawsCountsToThePower075) {
  const uint64_t seed = test_seed(12);
  SCOPED_TRACE(seed_trace(seed));
  // Random counts over three orders of magnitude.
  const int64_t V = 50;
  std::vector<int64_t> counts(V);
  for (int64_t i = 0; i < V; ++i)
    counts[i] = 1 + static_cast<int64_t>(std::pow(1000.0, embtrain::random_uniform(seed, 1, i)));
  const UnigramSampler sampler(counts, 0.75);
  double z = 0;
  for (int64_t c : counts) z += std::pow(static_cast<double>(c), 0.75);
  for (int64_t i = 0; i < V; ++i)
    EXPECT_NEAR(sampler.probability(i), std::pow(static_cast<double>(counts[i]), 0.75) / z, 1e-12);

  const int64_t n = 2000000;
  std::vector<int64_t> seen(V, 0);
  for (int64_t i = 0; i < n; ++i) ++seen[sampler.sample(embtrain::random_bits(seed, 2, i))];
  // Pearson's chi-square with V - 1 = 49 degrees of freedom: its 99.99th
  // percentile is about 96.
  double chi2 = 0;
  for (int64_t i = 0; i < V; ++i) {
    const double expected = static_cast<double>(n) * sampler.probability(i);
    chi2 += (static_cast<double>(seen[i]) - expected) * (static_cast<double>(seen[i]) - expected) /
            expected;
  }
  EXPECT_LT(chi2, 96.0);
}

// ---- Pairs ------------------------------------------------------------------

// A random stream of `lines` lines of 0..12 words over `vocab` rows.
TokenStream random_stream(uint64_t seed, int64_t lines, int32_t vocab) {
  TokenStream s;
  uint64_t k = 0;
  for (int64_t l = 0; l < lines; ++l) {
    const int64_t len = uniform_int(seed, 20, l, 13);
    if (len == 0) continue;  // the corpus records no empty line
    for (int64_t i = 0; i < len; ++i)
      s.tokens.push_back(static_cast<int32_t>(uniform_int(seed, 21, k++, vocab)));
    s.line_begin.push_back(s.size());
  }
  return s;
}

// The pairs by definition: for each kept center in [begin, end), the b
// nearest kept words on each side within its line, b = window_at(center).
std::vector<SkipgramPair> brute_force_pairs(const TokenStream& s, const std::vector<double>& keep,
                                            int64_t window, const SkipgramPass& pass, int64_t begin,
                                            int64_t end) {
  std::vector<SkipgramPair> out;
  for (int64_t p = begin; p < end; ++p) {
    if (!pass.kept(p, keep[s.tokens[p]])) continue;
    const int64_t line = s.line_of(p), b = pass.window_at(p, window);
    std::vector<int64_t> left, right;
    for (int64_t q = s.line_begin[line]; q < p; ++q)
      if (pass.kept(q, keep[s.tokens[q]])) left.push_back(q);
    for (int64_t q = p + 1; q < s.line_begin[line + 1]; ++q)
      if (pass.kept(q, keep[s.tokens[q]])) right.push_back(q);
    int32_t ordinal = 0;
    for (int64_t i = 0; i < b && i < static_cast<int64_t>(left.size()); ++i)
      out.push_back(SkipgramPair{p, left[left.size() - 1 - i], ordinal++});
    for (int64_t i = 0; i < b && i < static_cast<int64_t>(right.size()); ++i)
      out.push_back(SkipgramPair{p, right[i], ordinal++});
  }
  return out;
}

TEST_F(SkipgramSampling, PairsStayInTheirLineAndWindowAcrossSubsampledWords) {
  const uint64_t seed = test_seed(13);
  SCOPED_TRACE(seed_trace(seed));
  const TokenStream s = random_stream(seed, 300, 20);
  for (int variant = 0; variant < 3; ++variant) {
    // No subsampling, some, and heavy (long runs of discarded words make
    // windows reach past the generator's precomputed margin).
    std::vector<double> keep(20, 1.0);
    if (variant > 0)
      for (size_t w = 0; w < keep.size(); ++w)
        keep[w] = variant == 1 ? 0.3 + 0.7 * embtrain::random_uniform(seed, 22, w)
                               : (w < 16 ? 0.05 : 1.0);
    for (int64_t window : {1, 3, 6}) {
      PairGenerator gen(&s, &keep, window);
      const SkipgramPass pass{seed, static_cast<uint64_t>(variant * 10 + window)};
      for (int trial = 0; trial < 5; ++trial) {
        const int64_t begin = uniform_int(seed, 23, variant * 100 + trial * 10 + window, s.size());
        const int64_t end = std::min(s.size(), begin + uniform_int(seed, 24, trial, 400));
        std::vector<SkipgramPair> got;
        gen.generate(pass, begin, end, &got);
        const auto want = brute_force_pairs(s, keep, window, pass, begin, end);
        ASSERT_EQ(got.size(), want.size()) << "variant " << variant << " window " << window;
        for (size_t i = 0; i < got.size(); ++i) {
          ASSERT_EQ(got[i].center, want[i].center) << i;
          ASSERT_EQ(got[i].context, want[i].context) << i;
          ASSERT_EQ(got[i].ordinal, want[i].ordinal) << i;
          ASSERT_EQ(s.line_of(got[i].center), s.line_of(got[i].context));
        }
      }
    }
  }
  // window_at covers [1, window] uniformly.
  const SkipgramPass pass{seed, 0};
  std::vector<int64_t> hist(6, 0);
  for (int64_t p = 0; p < 60000; ++p) ++hist[pass.window_at(p, 5)];
  EXPECT_EQ(hist[0], 0);
  for (int b = 1; b <= 5; ++b) EXPECT_NEAR(hist[b], 12000, 600) << "b = " << b;
}

// ---- Workload ---------------------------------------------------------------

class SkipgramWorkloadTest : public MpiTest {};

// Two workloads on the same corpus: batches of a step do not depend on
// what ran before, nor on the object that makes them.
TEST_F(SkipgramWorkloadTest, BatchOfAStepDependsOnlyOnSeedStepAndRanks) {
  const uint64_t seed = test_seed(14);
  SCOPED_TRACE(seed_trace(seed));
  TopicCorpus tc;
  tc.lines = 300;
  TempFile corpus("resume_" + std::to_string(world().rank()) + ".txt", tc.text(seed));
  SkipgramConfig cfg;
  cfg.corpus = corpus.path();
  cfg.min_count = 2;
  const WorkloadContext ctx = make_context(64, 8, seed);
  SkipgramWorkload fresh(cfg, ctx), used(cfg, ctx);
  const int P = world().size(), r = world().rank();
  const int64_t spe = fresh.steps_per_epoch();
  EXPECT_EQ(spe, (fresh.corpus().train.size() + 64 * P - 1) / (64 * P));

  // `used` trains through some steps (a run interrupted at k) and makes
  // batches of random other steps; then both make step k's.
  auto tables = make_tables(fresh.table_rows("input"), 8, 0.05, 0.1, seed);
  const int64_t k = spe + 3;  // in the second epoch
  for (int64_t s = 0; s < 5; ++s) used.train_step(*tables, s);
  SkipgramBatch scratch, a, b;
  for (int i = 0; i < 7; ++i) used.make_batch(uniform_int(seed, 30, i, 3 * spe), r, P, &scratch);
  used.evaluate(*tables);
  used.make_batch(k, r, P, &a);
  fresh.make_batch(k, r, P, &b);
  EXPECT_EQ(a.begin, b.begin);
  EXPECT_EQ(a.end, b.end);
  EXPECT_EQ(a.centers, b.centers);
  EXPECT_EQ(a.targets, b.targets);
  EXPECT_GT(a.pairs(), 0);

  // Rank r's positions are slice r of the step's global range, and the
  // same position range in another epoch draws other windows and negatives.
  const int64_t within = k % spe;
  EXPECT_EQ(a.begin, std::min(fresh.corpus().train.size(), (within * P + r) * 64));
  SkipgramBatch other_epoch;
  fresh.make_batch(within, r, P, &other_epoch);
  EXPECT_EQ(other_epoch.begin, a.begin);
  EXPECT_NE(other_epoch.targets, a.targets);
}

TEST_F(SkipgramWorkloadTest, GradientsMatchFiniteDifferences) {
  const uint64_t seed = test_seed(15);
  SCOPED_TRACE(seed_trace(seed));
  // 4 input rows, 6 output rows, 7 pairs with 3 negatives each; rows repeat
  // across pairs and within one, and one negative is skipped.
  const int64_t dim = 5, num_in = 4, num_out = 6, per = 4, pairs = 7;
  std::vector<float> in(num_in * dim), out(num_out * dim);
  for (size_t i = 0; i < in.size(); ++i) in[i] = 0.6f * embtrain::random_normal(seed, 40, i);
  for (size_t i = 0; i < out.size(); ++i) out[i] = 0.6f * embtrain::random_normal(seed, 41, i);
  std::vector<int32_t> centers(pairs), targets(pairs * per);
  for (int64_t p = 0; p < pairs; ++p) {
    centers[p] = static_cast<int32_t>(uniform_int(seed, 42, p, num_in));
    for (int64_t j = 0; j < per; ++j)
      targets[p * per + j] = static_cast<int32_t>(uniform_int(seed, 43, p * per + j, num_out));
  }
  targets[2 * per + 1] = targets[2 * per + 2];  // a row twice in one pair
  targets[3 * per + 2] = -1;                    // a skipped negative

  // The loss in double, straight from its definition.
  auto loss_of = [&](const std::vector<float>& I, const std::vector<float>& O) {
    double sum = 0;
    for (int64_t p = 0; p < pairs; ++p)
      for (int64_t j = 0; j < per; ++j) {
        const int32_t o = targets[p * per + j];
        if (o < 0) continue;
        double s = 0;
        for (int64_t d = 0; d < dim; ++d)
          s += static_cast<double>(I[centers[p] * dim + d]) * O[o * dim + d];
        sum += std::log1p(std::exp(j == 0 ? -s : s));
      }
    return sum;
  };

  SkipgramKernel kernel;
  std::vector<float> gin(in.size()), gout(out.size());
  const double loss = kernel.run(in.data(), num_in, out.data(), num_out, dim, centers.data(),
                                 targets.data(), pairs, per, gin.data(), gout.data());
  EXPECT_NEAR(loss, loss_of(in, out), 1e-5 * loss_of(in, out));
  EXPECT_NEAR(kernel.run(in.data(), num_in, out.data(), num_out, dim, centers.data(),
                         targets.data(), pairs, per, nullptr, nullptr),
              loss, 1e-6 * loss);

  // Central differences in double around the float parameters.
  const double h = 1e-3;
  auto numeric = [&](std::vector<float>* param, size_t i) {
    std::vector<float> I = in, O = out;
    std::vector<float>& x = param == &in ? I : O;
    const float v = x[i];
    x[i] = static_cast<float>(v + h);
    const double hi = loss_of(I, O);
    const double step_up = static_cast<double>(x[i]) - v;
    x[i] = static_cast<float>(v - h);
    const double lo = loss_of(I, O);
    const double step_down = v - static_cast<double>(x[i]);
    return (hi - lo) / (step_up + step_down);
  };
  std::vector<double> want_in(in.size()), want_out(out.size());
  for (size_t i = 0; i < in.size(); ++i) want_in[i] = numeric(&in, i);
  for (size_t i = 0; i < out.size(); ++i) want_out[i] = numeric(&out, i);
  EXPECT_TRUE(all_close(gin.data(), want_in.data(), static_cast<int64_t>(gin.size()), 1e-3));
  EXPECT_TRUE(all_close(gout.data(), want_out.data(), static_cast<int64_t>(gout.size()), 1e-3));
}

// The kernel splits pairs over threads with a buffer per thread: the same
// sums as one thread, up to float summation order.
TEST_F(SkipgramWorkloadTest, KernelGivesTheSameGradientsOnAnyThreadCount) {
  const uint64_t seed = test_seed(20);
  SCOPED_TRACE(seed_trace(seed));
  const int64_t dim = 24, num_in = 50, num_out = 80, per = 6, pairs = 5000;
  std::vector<float> in(num_in * dim), out(num_out * dim);
  for (size_t i = 0; i < in.size(); ++i) in[i] = 0.3f * embtrain::random_normal(seed, 60, i);
  for (size_t i = 0; i < out.size(); ++i) out[i] = 0.3f * embtrain::random_normal(seed, 61, i);
  std::vector<int32_t> centers(pairs), targets(pairs * per);
  for (int64_t p = 0; p < pairs; ++p)
    centers[p] = static_cast<int32_t>(uniform_int(seed, 62, p, num_in));
  for (int64_t j = 0; j < pairs * per; ++j)
    targets[j] = static_cast<int32_t>(uniform_int(seed, 63, j, num_out + 1)) - 1;  // some -1

  const int saved = omp_get_max_threads();
  std::vector<float> gin1(in.size()), gout1(out.size()), gin3(in.size()), gout3(out.size());
  SkipgramKernel kernel;
  omp_set_num_threads(1);
  const double loss1 = kernel.run(in.data(), num_in, out.data(), num_out, dim, centers.data(),
                                  targets.data(), pairs, per, gin1.data(), gout1.data());
  omp_set_num_threads(3);
  const double loss3 = kernel.run(in.data(), num_in, out.data(), num_out, dim, centers.data(),
                                  targets.data(), pairs, per, gin3.data(), gout3.data());
  omp_set_num_threads(saved);
  EXPECT_NEAR(loss3, loss1, 1e-9 * loss1);
  EXPECT_TRUE(all_close(gin3.data(), gin1.data(), static_cast<int64_t>(gin1.size()), 1e-4));
  EXPECT_TRUE(all_close(gout3.data(), gout1.data(), static_cast<int64_t>(gout1.size()), 1e-4));
}

// One step on P ranks equals one process applying SGD to the summed
// gradient of the global batch (every rank's batch, in rank order).
TEST_F(SkipgramWorkloadTest, DistributedStepEqualsSingleProcessSgd) {
  const uint64_t seed = test_seed(16);
  SCOPED_TRACE(seed_trace(seed));
  TopicCorpus tc;
  tc.lines = 200;
  TempFile corpus("step_" + std::to_string(world().rank()) + ".txt", tc.text(seed));
  SkipgramConfig cfg;
  cfg.corpus = corpus.path();
  cfg.min_count = 1;
  cfg.negatives = 3;
  const int64_t dim = 6, B = 40;
  const double lr = 0.3;
  SkipgramWorkload w(cfg, make_context(B, dim, seed));
  const int64_t V = w.table_rows("input");
  auto tables = make_tables(V, dim, lr, 0.5, seed);
  // Non-zero output rows, so both tables' gradients matter: train a step.
  w.train_step(*tables, 0);
  std::vector<float> in = tables->gather_table(0, 0), out = tables->gather_table(1, 0);
  const int64_t step = 1 + uniform_int(seed, 50, 0, 2 * w.steps_per_epoch());
  w.train_step(*tables, step);
  const std::vector<float> got_in = tables->gather_table(0, 0),
                           got_out = tables->gather_table(1, 0);
  if (world().rank() != 0) return;

  // The reference, on rank 0: dense gradients over whole tables.
  const int P = world().size();
  std::vector<float> gin(in.size(), 0.f), gout(out.size(), 0.f), g1(in.size()), g2(out.size());
  SkipgramKernel kernel;
  for (int r = 0; r < P; ++r) {
    SkipgramBatch b;
    w.make_batch(step, r, P, &b);
    kernel.run(in.data(), V, out.data(), V, dim, b.centers.data(), b.targets.data(), b.pairs(),
               1 + cfg.negatives, g1.data(), g2.data());
    for (size_t i = 0; i < gin.size(); ++i) gin[i] += g1[i];
    for (size_t i = 0; i < gout.size(); ++i) gout[i] += g2[i];
  }
  for (size_t i = 0; i < in.size(); ++i) in[i] -= static_cast<float>(lr) * gin[i];
  for (size_t i = 0; i < out.size(); ++i) out[i] -= static_cast<float>(lr) * gout[i];
  EXPECT_TRUE(all_close(got_in.data(), in.data(), static_cast<int64_t>(in.size()), 1e-5));
  EXPECT_TRUE(all_close(got_out.data(), out.data(), static_cast<int64_t>(out.size()), 1e-5));
}

// Learning on planted topics: the held-out loss falls well below its start
// and a topic word's nearest neighbours are mostly of its topic.
TEST_F(SkipgramWorkloadTest, LearnsPlantedTopics) {
  const uint64_t seed = test_seed(17);
  SCOPED_TRACE(seed_trace(seed));
  TopicCorpus tc;
  TempFile corpus("learn_" + std::to_string(world().rank()) + ".txt", tc.text(seed));
  SkipgramConfig cfg;
  cfg.corpus = corpus.path();
  cfg.min_count = 3;
  cfg.eval_fraction = 0.1;
  const int64_t dim = 32, B = 128 / world().size();  // the same global batch at 1 and 2 ranks
  SkipgramWorkload w(cfg, make_context(B, dim, seed));
  const int64_t V = w.table_rows("input");
  // The workload's table defaults (src/app/options_skipgram.cpp).
  auto tables = make_tables(V, dim, 0.1, 0.01, seed, embtrain::OptimizerKind::kRowwiseAdagrad);

  const double before = w.evaluate(*tables).at("loss");
  const int64_t steps = 3 * w.steps_per_epoch();
  double train_loss = 0;
  int64_t train_pairs = 0;
  for (int64_t s = 0; s < steps; ++s) {
    const embtrain::StepOutput o = w.train_step(*tables, s);
    if (s >= steps - w.steps_per_epoch()) train_loss += o.loss_sum, train_pairs += o.examples;
  }
  const double after = w.evaluate(*tables).at("loss");
  const std::vector<float> table = tables->gather_table(0, 0);
  if (world().rank() != 0) return;

  const double share = topic_share_of_neighbours(w.corpus().vocab, table, dim, 10);
  // A word's topic has 59 other words among ~540: chance is about 0.11.
  std::printf(
      "[ skipgram ] %d rank(s): held-out loss %.4f -> %.4f, last-epoch train loss %.4f "
      "(rank 0), topic share of 10 nearest neighbours %.3f\n",
      world().size(), before, after, train_loss / static_cast<double>(train_pairs), share);
  EXPECT_LT(after, 0.75 * before);
  EXPECT_GT(share, 0.6);
}

TEST_F(SkipgramWorkloadTest, StartAndFinishWriteVocabularyVectorsAndNeighbours) {
  const uint64_t seed = test_seed(18);
  SCOPED_TRACE(seed_trace(seed));
  TopicCorpus tc;
  tc.lines = 200;
  TempFile corpus("finish_" + std::to_string(world().rank()) + ".txt", tc.text(seed));
  // Rank 0 writes; every rank names its own folder, only rank 0's is used.
  TempDir dir("finish_" + std::to_string(world().rank()));
  SkipgramConfig cfg;
  cfg.corpus = corpus.path();
  cfg.min_count = 2;
  // The most and the least frequent word of the vocabulary it will build.
  const Corpus probe =
      embtrain::parse_corpus(tc.text(seed), "probe", cfg.text(), cfg.min_count, cfg.eval_fraction);
  cfg.neighbors = {probe.vocab.word(0), probe.vocab.word(probe.vocab.size() - 1)};
  cfg.neighbors_k = 3;
  cfg.export_path = dir.path() + "/vectors.txt";
  const int64_t dim = 4;
  SkipgramWorkload w(cfg, make_context(32, dim, seed, dir.path()));
  auto tables = make_tables(w.table_rows("input"), dim, 0.05, 0.1, seed);
  if (world().rank() == 0) w.start(dir.path());  // as the trainer does (vocab.txt)
  w.train_step(*tables, 0);
  w.finish(*tables, dir.path());
  const std::vector<float> table = tables->gather_table(0, 0);
  if (world().rank() != 0) return;

  const Vocabulary& vocab = w.corpus().vocab;
  const Vocabulary saved = embtrain::read_vocabulary(dir.path() + "/vocab.txt");
  EXPECT_EQ(saved.words(), vocab.words());
  EXPECT_EQ(saved.counts(), vocab.counts());

  std::ifstream in(cfg.export_path);
  int64_t rows = 0, d = 0;
  in >> rows >> d;
  ASSERT_EQ(rows, vocab.size());
  ASSERT_EQ(d, dim);
  for (int64_t r = 0; r < rows; ++r) {
    std::string word;
    in >> word;
    ASSERT_EQ(word, vocab.word(r));
    for (int64_t k = 0; k < dim; ++k) {
      float v = 0;
      in >> v;
      ASSERT_EQ(v, table[r * dim + k]) << word << " [" << k << "]";  // exact round trip
    }
  }
  for (const auto& e : fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

TEST_F(SkipgramWorkloadTest, BadInputsAreClearErrorsOnEveryRank) {
  const uint64_t seed = test_seed(19);
  TopicCorpus tc;
  tc.lines = 50;
  TempFile corpus("errors_" + std::to_string(world().rank()) + ".txt", tc.text(seed));
  auto expect_error = [&](SkipgramConfig cfg, WorkloadContext ctx, const std::string& part) {
    try {
      SkipgramWorkload w(cfg, ctx);
      ADD_FAILURE() << "expected an error naming '" << part << "'";
    } catch (const embtrain::AgreedError& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  SkipgramConfig good;
  good.corpus = corpus.path();
  good.min_count = 1;
  const WorkloadContext ctx = make_context(16, 4, seed);

  SkipgramConfig c = good;
  c.corpus = corpus.path() + ".missing";
  expect_error(c, ctx, ".missing");
  c = good;
  c.window = 0;
  expect_error(c, ctx, "skipgram.window = 0 is invalid (valid: [1, 1000])");
  c = good;
  c.neighbors = {"no_such_word"};
  expect_error(c, ctx, "'no_such_word' is not in the vocabulary");
  c = good;
  c.export_path = corpus.path() + "/v.txt";  // a folder not there is made, a file is in the way
  expect_error(c, ctx, ".txt' is not a folder");  // rank 0's corpus on every rank
  WorkloadContext bad_dims = ctx;
  bad_dims.table_dims["output"] = 5;
  expect_error(good, bad_dims, "must have the same dim");
  // Only rank 0 fails to read the corpus: the others must not hang.
  c = good;
  if (world().rank() == 0) c.corpus = corpus.path() + ".rank0_missing";
  expect_error(c, ctx, ".rank0_missing");
}

}  // namespace
