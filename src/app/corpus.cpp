// embtrain corpus: writes a synthetic text with planted topics, the corpus
// that shows what skipgram learns (configs/skipgram.ini trains on it). A
// sentence (a line) has a topic; each word is a word of that topic with
// probability --topic-share, of a random topic with probability --noise,
// else a function word. Words are Zipf-distributed (P ~ 1/k) within their
// pool, so rare topic words get few occurrences. Words of topic t are
// t<t>_w<j>, function words g<j>: a word's topic can be read off its name,
// and neighbours of t0_w0 should be t0_* words. The same model as
// bench/skipgram_vs_fasttext.py's corpus, drawn with embtrain's counter-based
// generator (so not the same bytes); deterministic in --seed.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <limits>
#include <string>

#include "commands.hpp"
#include "embtrain/communicator.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/random.hpp"
#include "embtrain/zipf.hpp"
#include "table_options.hpp"

namespace embtrain {
namespace app {

namespace {

struct CorpusShape {
  int64_t words = 500000;
  int64_t topics = 40, words_per_topic = 500, general = 400;
  double topic_share = 0.25, noise = 0.3;
  uint64_t seed = 1;
};

// Streams of the generator: one per kind of draw.
enum : uint64_t { kLength = 1, kTopic, kKind, kTopicWord, kGeneralWord, kRandomTopic };

// Writes the corpus; returns (words, lines).
std::pair<int64_t, int64_t> write_topic_corpus(const std::string& path, const CorpusShape& c) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  EMBTRAIN_REQUIRE(!ec, "option --out: cannot create folder '", parent.string(), "': ",
                   ec.message());
  std::FILE* f = std::fopen(path.c_str(), "w");
  EMBTRAIN_REQUIRE(f, "option --out: cannot create '", path, "': ", std::strerror(errno));
  const ZipfSampler topic_word(c.words_per_topic + 1, 1.0), general_word(c.general + 1, 1.0);
  int64_t words = 0, lines = 0;
  uint64_t draw = 0;  // one index per word, shared by the word's streams
  std::string line;
  while (words < c.words) {
    const uint64_t s = static_cast<uint64_t>(lines);
    const int64_t length = 8 + static_cast<int64_t>(random_uniform(c.seed, kLength, s) * 17 - 1e-9);
    const int64_t topic = static_cast<int64_t>(
        random_uniform(c.seed, kTopic, s) * static_cast<double>(c.topics) - 1e-9);
    line.clear();
    for (int64_t i = 0; i < length; ++i, ++draw) {
      if (i) line += ' ';
      const double kind = random_uniform(c.seed, kKind, draw);
      if (kind <= c.topic_share + c.noise) {
        const int64_t t = kind <= c.topic_share
                              ? topic
                              : static_cast<int64_t>(random_uniform(c.seed, kRandomTopic, draw) *
                                                         static_cast<double>(c.topics) -
                                                     1e-9);
        const int64_t j = topic_word.id_for(random_uniform(c.seed, kTopicWord, draw)) - 1;
        line += "t" + std::to_string(t) + "_w" + std::to_string(j);
      } else {
        const int64_t j = general_word.id_for(random_uniform(c.seed, kGeneralWord, draw)) - 1;
        line += "g" + std::to_string(j);
      }
    }
    line += '\n';
    std::fwrite(line.data(), 1, line.size(), f);
    words += length;
    ++lines;
  }
  const bool ok = !std::ferror(f);
  const bool closed = std::fclose(f) == 0;
  EMBTRAIN_REQUIRE(ok && closed, "option --out: cannot write '", path, "' (disk full?)");
  return {words, lines};
}

}  // namespace

int run_corpus(int argc, char** argv) {
  CorpusShape c;
  double words = static_cast<double>(c.words);
  int64_t seed = static_cast<int64_t>(c.seed);
  po::options_description options(
      "usage: embtrain corpus --out FILE [--words N] [--topics T] ...\n\n"
      "Writes a synthetic text with planted topics for the skipgram workload: each line a\n"
      "sentence of 8 to 24 words about one topic; topic t's words are t<t>_w<j>, function\n"
      "words g<j>, Zipf-distributed within their pool. Then, for example:\n"
      "  launch/mpirun.sh -n 2 -- train --config configs/skipgram.ini \\\n"
      "      --skipgram.corpus=FILE --skipgram.neighbors=t0_w0,t1_w0,g0\n"
      "shows that t0_w0's nearest neighbours are words of topic 0.\n\noptions");
  // clang-format off
  options.add_options()
    ("help,h", "show this help")
    ("out", po::value<std::string>()->required(), "the text file to write (folders are created)")
    ("words", po::value<double>(&words)->default_value(words, "500000"),
     "about this many words (whole sentences), in [100, 1e10]")
    ("topics", po::value<int64_t>(&c.topics)->default_value(c.topics), "topics, in [1, 100000]")
    ("words-per-topic", po::value<int64_t>(&c.words_per_topic)->default_value(c.words_per_topic),
     "words of each topic, in [1, 1000000]")
    ("general", po::value<int64_t>(&c.general)->default_value(c.general),
     "function words (of no topic), in [1, 1000000]")
    ("topic-share", po::value<double>(&c.topic_share)->default_value(c.topic_share, "0.25"),
     "chance a word is of its sentence's topic")
    ("noise", po::value<double>(&c.noise)->default_value(c.noise, "0.3"),
     "chance a word is of a random topic (topic-share + noise <= 1)")
    ("seed", po::value<int64_t>(&seed)->default_value(seed), "seed of every draw, >= 0");
  // clang-format on
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      std::cout << options << "\n";
      return 0;
    }
  const po::variables_map vm = parse_command_line(argc, argv, options, "corpus");
  EMBTRAIN_REQUIRE(words >= 100 && words <= 1e10, "option --words: ", words,
                   " is out of range (valid: [100, 1e10])");
  c.words = static_cast<int64_t>(words);
  EMBTRAIN_REQUIRE(c.topics >= 1 && c.topics <= 100000, "option --topics: ", c.topics,
                   " is out of range (valid: [1, 100000])");
  EMBTRAIN_REQUIRE(c.words_per_topic >= 1 && c.words_per_topic <= 1000000,
                   "option --words-per-topic: ", c.words_per_topic,
                   " is out of range (valid: [1, 1000000])");
  EMBTRAIN_REQUIRE(c.general >= 1 && c.general <= 1000000, "option --general: ", c.general,
                   " is out of range (valid: [1, 1000000])");
  // (read signed: boost reads "-1" as a uint64_t of 2^64 - 1)
  EMBTRAIN_REQUIRE(seed >= 0, "option --seed: ", seed, " is out of range (valid: >= 0, as "
                   "train.seed)");
  c.seed = static_cast<uint64_t>(seed);
  EMBTRAIN_REQUIRE(c.topic_share >= 0 && c.noise >= 0 && c.topic_share + c.noise <= 1,
                   "options --topic-share = ", c.topic_share, " and --noise = ", c.noise,
                   ": each must be >= 0 and their sum <= 1");
  const std::string out = vm["out"].as<std::string>();
  std::unique_ptr<Communicator> world = make_world_communicator();
  int64_t written[2] = {0, 0};
  run_agreed(*world, [&] {
    if (world->rank() != 0) return;  // under mpirun, rank 0 writes
    const auto [n, lines] = write_topic_corpus(out, c);
    written[0] = n;
    written[1] = lines;
  });
  if (world->rank() == 0)
    std::printf(
        "wrote %s: %lld words in %lld lines (%lld topics of %lld words t<t>_w<j>, %lld "
        "function words g<j>)\nnext: launch/mpirun.sh -n 2 -- train --config "
        "configs/skipgram.ini --skipgram.corpus=%s --skipgram.neighbors=t0_w0,t1_w0,g0\n",
        out.c_str(), static_cast<long long>(written[0]), static_cast<long long>(written[1]),
        static_cast<long long>(c.topics), static_cast<long long>(c.words_per_topic),
        static_cast<long long>(c.general), out.c_str());
  return 0;
}

}  // namespace app
}  // namespace embtrain
