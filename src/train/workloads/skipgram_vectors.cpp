// skipgram's outputs: the vocabulary file, word2vec text vectors and
// nearest neighbours by cosine.
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "embtrain/errors.hpp"
#include "embtrain/workloads/skipgram.hpp"

namespace embtrain {

namespace {

// A file is written through a temporary one in the same folder and a
// rename, so a reader (or a crash) never sees half a file: open_temporary
// creates it, commit_temporary closes it and renames it into place (on
// failure it removes it and throws; `what` names the file's kind).
std::FILE* open_temporary(const std::string& path, const std::string& what, std::string* tmp) {
  *tmp = path + ".tmp." + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp->c_str(), "wb");
  EMBTRAIN_REQUIRE(f, what, " '", path, "': cannot create '", *tmp,
                   "' (does the folder exist and is it writable?)");
  return f;
}

void commit_temporary(std::FILE* f, const std::string& tmp, const std::string& path,
                      const std::string& what) {
  const bool ok = !std::ferror(f);
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed) {
    std::remove(tmp.c_str());
    throw make_error(what, " '", path, "': write failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw make_error(what, " '", path, "': cannot rename '", tmp, "' into place");
  }
}

}  // namespace

std::string vocabulary_text(const Vocabulary& vocab) {
  std::string text;
  for (int64_t r = 0; r < vocab.size(); ++r)
    text += vocab.word(r) + " " + std::to_string(vocab.count(r)) + "\n";
  return text;
}

void write_vocabulary(const Vocabulary& vocab, const std::string& path) {
  const std::string text = vocabulary_text(vocab);
  std::string tmp;
  std::FILE* f = open_temporary(path, "vocabulary file", &tmp);
  std::fwrite(text.data(), 1, text.size(), f);
  commit_temporary(f, tmp, path, "vocabulary file");
}

Vocabulary parse_vocabulary(const std::string& text, const std::string& name) {
  std::vector<std::string> words;
  std::vector<int64_t> counts;
  std::istringstream in(text);
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    std::istringstream fields(line);
    std::string word, rest;
    long long count = -1;
    fields >> word >> count;
    const bool ok = !word.empty() && !fields.fail() && count >= 1 && !(fields >> rest);
    EMBTRAIN_REQUIRE(ok, name, ":", n,
                     ": expected 'word count' (a word without spaces and a count >= 1), got '",
                     line, "'");
    words.push_back(word);
    counts.push_back(count);
  }
  return Vocabulary(std::move(words), std::move(counts));
}

Vocabulary read_vocabulary(const std::string& path) {
  std::error_code ec;
  EMBTRAIN_REQUIRE(!std::filesystem::is_directory(path, ec), "vocabulary file '", path,
                   "': is a folder (valid: a text file)");
  std::ifstream in(path, std::ios::binary);
  EMBTRAIN_REQUIRE(in, "vocabulary file '", path, "': cannot open for reading");
  std::ostringstream all;
  all << in.rdbuf();
  return parse_vocabulary(all.str(), path);
}

Word2VecWriter::Word2VecWriter(const std::string& path, const Vocabulary& vocab)
    : path_(path), vocab_(vocab) {
  file_ = open_temporary(path, "word2vec file", &tmp_);
}

Word2VecWriter::~Word2VecWriter() {
  if (!file_) return;
  std::fclose(file_);
  std::remove(tmp_.c_str());
}

void Word2VecWriter::header(int64_t dim) {
  dim_ = dim;
  std::fprintf(file_, "%lld %lld\n", static_cast<long long>(vocab_.size()),
               static_cast<long long>(dim));
}

void Word2VecWriter::write(int64_t first, int64_t n, int64_t dim, const float* rows) {
  EMBTRAIN_ASSERT(file_ && first == next_ && (dim_ < 0 || dim == dim_));
  EMBTRAIN_REQUIRE(first + n <= vocab_.size(), "word2vec file '", path_, "': the table has more ",
                   "rows than the vocabulary's ", vocab_.size(), " words");
  if (dim_ < 0) header(dim);
  char number[32];
  for (int64_t r = 0; r < n; ++r) {
    line_ = vocab_.word(first + r);
    for (int64_t d = 0; d < dim; ++d) {
      // The shortest decimal that reads back as the same float.
      const auto res = std::to_chars(number, number + sizeof number, rows[r * dim + d]);
      line_ += ' ';
      line_.append(number, res.ptr);
    }
    line_ += '\n';
    std::fwrite(line_.data(), 1, line_.size(), file_);
  }
  next_ = first + n;
}

void Word2VecWriter::finish(int64_t dim) {
  EMBTRAIN_ASSERT(file_);
  EMBTRAIN_REQUIRE(next_ == vocab_.size(), "word2vec file '", path_, "': the vocabulary has ",
                   vocab_.size(), " words but the table ", next_, " rows");
  if (dim_ < 0) header(dim);
  std::FILE* f = file_;
  file_ = nullptr;  // closed by the commit, whatever happens
  commit_temporary(f, tmp_, path_, "word2vec file");
}

void write_word2vec_text(const std::string& path, const Vocabulary& vocab, const float* table,
                         int64_t dim) {
  Word2VecWriter out(path, vocab);
  out.write(0, vocab.size(), dim, table);
  out.finish(dim);
}

CosineIndex::CosineIndex(const float* table, int64_t rows, int64_t dim)
    : table_(table), rows_(rows), dim_(dim), inv_norm_(static_cast<size_t>(rows)) {
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t d = 0; d < dim; ++d)
      ss += static_cast<double>(table[r * dim + d]) * table[r * dim + d];
    inv_norm_[r] = ss > 0 ? static_cast<float>(1.0 / std::sqrt(ss)) : 0.f;
  }
}

std::vector<std::pair<int64_t, float>> CosineIndex::nearest(int64_t row, int64_t k) const {
  EMBTRAIN_ASSERT(row >= 0 && row < rows_);
  std::vector<std::pair<int64_t, float>> all;
  all.reserve(static_cast<size_t>(rows_));
  const float* q = table_ + row * dim_;
  for (int64_t r = 0; r < rows_; ++r) {
    if (r == row) continue;
    const float* v = table_ + r * dim_;
    double s = 0;
    for (int64_t d = 0; d < dim_; ++d) s += static_cast<double>(q[d]) * v[d];
    all.emplace_back(r, static_cast<float>(s) * inv_norm_[row] * inv_norm_[r]);
  }
  const size_t keep = std::min(all.size(), static_cast<size_t>(std::max<int64_t>(k, 0)));
  std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(keep), all.end(),
                    [](const auto& a, const auto& b) {
                      return a.second != b.second ? a.second > b.second : a.first < b.first;
                    });
  all.resize(keep);
  return all;
}

}  // namespace embtrain
