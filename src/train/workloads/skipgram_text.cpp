// skipgram's text side: tokens, the vocabulary and the corpus as rows.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string_view>

#include "embtrain/errors.hpp"
#include "embtrain/workloads/skipgram.hpp"

namespace embtrain {

namespace {

// word2vec and fastText split on the same bytes (fastText adds \0).
inline bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f' || c == '\n';
}

// A-Z, and in UTF-8 the Latin-1 capitals U+00C0-U+00DE but U+00D7 (C3 80
// to C3 9E, lowercase 0x20 above), in place: the length stays.
void lowercase_text(std::string* text) {
  const size_t n = text->size();
  for (size_t i = 0; i < n; ++i) {
    char& c = (*text)[i];
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    } else if (static_cast<unsigned char>(c) == 0xc3 && i + 1 < n) {
      const auto next = static_cast<unsigned char>((*text)[i + 1]);
      if (next >= 0x80 && next <= 0x9e && next != 0x97) {
        (*text)[i + 1] = static_cast<char>(next + 0x20);
        ++i;
      }
    }
  }
}

// The length of the punctuation (TextOptions) that starts at w[i], or 0.
size_t punctuation_at(std::string_view w, size_t i) {
  const auto c = static_cast<unsigned char>(w[i]);
  if (c < 0x80)
    return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') ||
                   (c >= '{' && c <= '~')
               ? 1
               : 0;
  const size_t left = w.size() - i;
  const auto b1 = left >= 2 ? static_cast<unsigned char>(w[i + 1]) : 0;
  if (c == 0xc2 && (b1 == 0xab || b1 == 0xbb || b1 == 0xa1 || b1 == 0xbf)) return 2;  // « » ¡ ¿
  if (c == 0xe2 && b1 == 0x80 && left >= 3) {
    const auto b2 = static_cast<unsigned char>(w[i + 2]);
    if ((b2 >= 0x90 && b2 <= 0x9f) || b2 == 0xa6) return 3;  // U+2010-U+201F, U+2026
  }
  return 0;
}

// The length of the punctuation that ends w, or 0 (the UTF-8 marks are two
// or three bytes long).
size_t punctuation_before_end(std::string_view w) {
  for (const size_t n : {size_t{1}, size_t{2}, size_t{3}})
    if (w.size() >= n && punctuation_at(w, w.size() - n) == n) return n;
  return 0;
}

// w without the punctuation at either end ("" when it is all punctuation).
std::string_view strip_punctuation(std::string_view w) {
  while (!w.empty()) {
    const size_t n = punctuation_at(w, 0);
    if (n == 0) break;
    w.remove_prefix(n);
  }
  while (!w.empty()) {
    const size_t n = punctuation_before_end(w);
    if (n == 0) break;
    w.remove_suffix(n);
  }
  return w;
}

// Calls on_word(word) for each word of text and on_line() at the end of
// each line (also after the last one), in order. With `strip`, each word
// loses the punctuation at its ends, and one that is all punctuation is
// no word.
template <typename OnWord, typename OnLine>
void scan_words(const std::string& text, bool strip, OnWord&& on_word, OnLine&& on_line) {
  const char* p = text.data();
  const char* const end = p + text.size();
  while (p < end) {
    if (*p == '\n') {
      on_line();
      ++p;
      continue;
    }
    if (is_space(*p)) {
      ++p;
      continue;
    }
    const char* start = p;
    while (p < end && !is_space(*p)) ++p;
    std::string_view word(start, static_cast<size_t>(p - start));
    if (strip) word = strip_punctuation(word);
    if (!word.empty()) on_word(word);
  }
  if (!text.empty() && text.back() != '\n') on_line();
}

// Length of the valid UTF-8 sequence at p (1 to 4 bytes, no overlong
// forms, no surrogates, at most U+10FFFF), or 0 when none starts there.
// NUL is valid UTF-8 but never text, so it counts as 0 too.
size_t utf8_length(const unsigned char* p, const unsigned char* end) {
  const unsigned char c = p[0];
  if (c == 0) return 0;
  if (c < 0x80) return 1;
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xbf;  // the range of the second byte
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c == 0xe0) lo = 0xa0;  // overlong
    if (c == 0xed) hi = 0x9f;  // surrogates
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c == 0xf0) lo = 0x90;  // overlong
    if (c == 0xf4) hi = 0x8f;  // beyond U+10FFFF
  } else {
    return 0;
  }
  if (static_cast<size_t>(end - p) < n || p[1] < lo || p[1] > hi) return 0;
  for (size_t i = 2; i < n; ++i)
    if (p[i] < 0x80 || p[i] > 0xbf) return 0;
  return n;
}

// Refuses what is not text: more than SkipgramLimits::kMaxNonTextShare of
// the bytes NUL or outside valid UTF-8. A few stray bytes (a Latin-1 name
// in a UTF-8 file) pass; a binary file, whose bytes are mostly invalid
// UTF-8, does not.
void check_is_text(const std::string& text, const std::string& name) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* const end = p + text.size();
  int64_t bad = 0, first_bad = -1;
  for (const auto* q = p; q < end;) {
    const size_t n = utf8_length(q, end);
    if (n > 0) {
      q += n;
      continue;
    }
    if (first_bad < 0) first_bad = q - p;
    ++bad;
    ++q;
  }
  const double share = text.empty() ? 0 : static_cast<double>(bad) / text.size();
  EMBTRAIN_REQUIRE(share <= SkipgramLimits::kMaxNonTextShare, "corpus ", name, " is not text: ",
                   bad, " of its ", text.size(), " bytes are NUL or not valid UTF-8, the first at ",
                   "byte ", first_bad, " (valid: at most ",
                   100 * SkipgramLimits::kMaxNonTextShare, "% of the bytes; give a UTF-8 text file)");
}

// Skip-gram learns from (word, context) pairs, two vocabulary words on one
// line: a training part without one would train nothing at loss 0.
void check_has_pairs(const Corpus& corpus, const std::string& name, int64_t cut) {
  const TokenStream& s = corpus.train;
  for (int64_t line = 0; line < s.lines(); ++line)
    if (s.line_begin[line + 1] - s.line_begin[line] >= 2) return;
  throw make_error("corpus ", name, ": too little text to train on: its training part (", cut,
                   " of ", corpus.words_read, " words) has no line with two words that occur ",
                   "skipgram.min_count times (valid: at least one such line, so that there is a ",
                   "(word, context) pair; give more text or lower skipgram.min_count)");
}

}  // namespace

void SkipgramConfig::validate() const {
  using L = SkipgramLimits;
  EMBTRAIN_REQUIRE(!corpus.empty(), "skipgram.corpus: a path to a text file is required");
  EMBTRAIN_REQUIRE(min_count >= 1, "skipgram.min_count = ", min_count, " is invalid (valid: >= 1)");
  EMBTRAIN_REQUIRE(window >= 1 && window <= L::kMaxWindow, "skipgram.window = ", window,
                   " is invalid (valid: [1, ", L::kMaxWindow, "])");
  EMBTRAIN_REQUIRE(negatives >= 1 && negatives <= L::kMaxNegatives,
                   "skipgram.negatives = ", negatives, " is invalid (valid: [1, ", L::kMaxNegatives,
                   "])");
  EMBTRAIN_REQUIRE(subsample >= 0 && subsample <= 1, "skipgram.subsample = ", subsample,
                   " is invalid (valid: [0, 1]; 0 turns subsampling off)");
  EMBTRAIN_REQUIRE(eval_fraction >= 0 && eval_fraction <= L::kMaxEvalFraction,
                   "skipgram.eval_fraction = ", eval_fraction, " is invalid (valid: [0, ",
                   L::kMaxEvalFraction, "])");
  EMBTRAIN_REQUIRE(neighbors_k >= 1 && neighbors_k <= L::kMaxNeighborsK,
                   "skipgram.neighbors_k = ", neighbors_k, " is invalid (valid: [1, ",
                   L::kMaxNeighborsK, "])");
}

std::vector<std::string> tokenize(const std::string& line, const TextOptions& options) {
  std::string text = line;
  if (options.lowercase) lowercase_text(&text);
  std::vector<std::string> words;
  scan_words(
      text, options.strip_punctuation, [&](std::string_view w) { words.emplace_back(w); }, [] {});
  return words;
}

Vocabulary::Vocabulary(std::vector<std::string> words, std::vector<int64_t> counts)
    : words_(std::move(words)), counts_(std::move(counts)) {
  EMBTRAIN_ASSERT(words_.size() == counts_.size());
  EMBTRAIN_REQUIRE(words_.size() <= static_cast<size_t>(std::numeric_limits<int32_t>::max()),
                   "vocabulary of ", words_.size(), " words is too large (valid: < 2^31)");
  rows_.reserve(words_.size());
  for (size_t i = 0; i < words_.size(); ++i) {
    const bool inserted = rows_.emplace(words_[i], static_cast<int32_t>(i)).second;
    EMBTRAIN_REQUIRE(inserted, "vocabulary: word '", words_[i], "' appears twice (rows ",
                     rows_[words_[i]], " and ", i, ")");
    total_ += counts_[i];
  }
}

Vocabulary Vocabulary::from_counts(const std::vector<std::pair<std::string, int64_t>>& counts,
                                   int64_t min_count) {
  std::vector<std::pair<std::string, int64_t>> kept;
  for (const auto& wc : counts)
    if (wc.second >= min_count) kept.push_back(wc);
  std::sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  std::vector<std::string> words;
  std::vector<int64_t> c;
  words.reserve(kept.size());
  c.reserve(kept.size());
  for (auto& wc : kept) {
    words.push_back(std::move(wc.first));
    c.push_back(wc.second);
  }
  return Vocabulary(std::move(words), std::move(c));
}

int32_t Vocabulary::find(const std::string& word) const {
  const auto it = rows_.find(word);
  return it == rows_.end() ? -1 : it->second;
}

int64_t TokenStream::line_of(int64_t pos) const {
  return std::upper_bound(line_begin.begin(), line_begin.end(), pos) - line_begin.begin() - 1;
}

Corpus parse_corpus(std::string text, const std::string& name, const TextOptions& options,
                    int64_t min_count, double eval_fraction) {
  check_is_text(text, name);
  if (options.lowercase) lowercase_text(&text);
  const bool strip = options.strip_punctuation;
  Corpus corpus;

  // 1. Count the words, to place the held-out cut.
  scan_words(
      text, strip, [&](std::string_view) { ++corpus.words_read; }, [&] { ++corpus.lines_read; });
  const int64_t heldout_words =
      static_cast<int64_t>(std::floor(eval_fraction * static_cast<double>(corpus.words_read)));
  const int64_t cut = corpus.words_read - heldout_words;

  // 2. Count the training part's words. The keys view `text`, which lives
  // until the end of this function; afterwards each value becomes the
  // word's row (or -1), so step 3 looks every word up once.
  std::unordered_map<std::string_view, int64_t> rows;
  {
    int64_t seen = 0;
    scan_words(
        text, strip,
        [&](std::string_view w) {
          if (seen++ < cut) ++rows[w];
        },
        [] {});
  }
  {
    std::vector<std::pair<std::string, int64_t>> counts;
    counts.reserve(rows.size());
    for (const auto& [w, c] : rows) counts.emplace_back(std::string(w), c);
    corpus.vocab = Vocabulary::from_counts(counts, min_count);
  }
  EMBTRAIN_REQUIRE(corpus.vocab.size() > 0, "corpus ", name, ": no word occurs at least ",
                   min_count, " times in its training part (", cut, " of ", corpus.words_read,
                   " words); lower skipgram.min_count or give a larger corpus");
  for (auto& [w, value] : rows) value = corpus.vocab.find(std::string(w));

  // 3. The words as rows, line by line; the cut ends a line.
  int64_t seen = 0;
  TokenStream* out = &corpus.train;
  auto end_line = [&] {
    if (out->tokens.size() > static_cast<size_t>(out->line_begin.back()))
      out->line_begin.push_back(out->size());
  };
  scan_words(
      text, strip,
      [&](std::string_view w) {
        if (seen++ == cut) {
          end_line();
          out = &corpus.heldout;
        }
        const auto it = rows.find(w);
        if (it != rows.end() && it->second >= 0)
          out->tokens.push_back(static_cast<int32_t>(it->second));
      },
      end_line);
  end_line();
  check_has_pairs(corpus, name, cut);
  return corpus;
}

Corpus read_corpus(const std::string& path, const TextOptions& options, int64_t min_count,
                   double eval_fraction) {
  std::error_code ec;
  // A folder opens as a stream whose first read throws an opaque
  // std::ios_base::failure; name it instead.
  EMBTRAIN_REQUIRE(!std::filesystem::is_directory(path, ec), "skipgram.corpus: '", path,
                   "' is a folder (valid: a text file)");
  std::ifstream in(path, std::ios::binary);
  EMBTRAIN_REQUIRE(in, "skipgram.corpus: cannot open '", path, "' for reading");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EMBTRAIN_REQUIRE(!in.bad(), "skipgram.corpus: error while reading '", path, "'");
  EMBTRAIN_REQUIRE(!text.empty(), "skipgram.corpus: '", path, "' is empty");
  return parse_corpus(std::move(text), path, options, min_count, eval_fraction);
}

}  // namespace embtrain
