// embtrain export: one table of a checkpoint as a single .npy (readable by
// numpy and torch.nn.Embedding.from_pretrained) or as word2vec text.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include "commands.hpp"
#include "embtrain/checkpoint.hpp"
#include "embtrain/communicator.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/npy.hpp"
#include "embtrain/workloads/skipgram.hpp"
#include "table_options.hpp"
#include "train/durable_file.hpp"

namespace embtrain {
namespace app {

namespace fs = std::filesystem;

namespace {

// The export itself: one process writes the one file.
void export_table(const po::variables_map& vm) {
  std::string given = vm["checkpoint"].as<std::string>();
  if (const std::string at = checkpoints_at(given); !at.empty()) given = at;
  // A root's newest checkpoint that verifies, as resume = auto takes it.
  std::unique_ptr<Communicator> self = make_self_communicator();
  std::vector<std::string> notes;
  const std::string dir = find_checkpoint(*self, given, &notes);
  for (const std::string& note : notes)
    std::fprintf(stderr, "embtrain export: checkpoint: %s\n", note.c_str());
  std::error_code ec;
  EMBTRAIN_REQUIRE(fs::exists(given, ec), "option --checkpoint: ", given,
                   " does not exist (a run into the same log.dir with log.overwrite removes the "
                   "checkpoints of the run it replaces)");
  EMBTRAIN_REQUIRE(!dir.empty(), "option --checkpoint: ", given, " holds no checkpoint");
  const std::string out = vm["out"].as<std::string>();
  const std::string ext = fs::path(out).extension().string();
  EMBTRAIN_REQUIRE(ext == ".npy" || ext == ".txt" || ext == ".vec", "option --out: ", out,
                   " must end in .npy, .txt or .vec");
  require_output_folder("--out", out);  // made once the table is found

  int64_t rows = 0, dim = 0;
  if (ext == ".npy") {  // streamed: a chunk of rows in memory at a time
    std::unique_ptr<NpyWriter> npy;
    read_checkpoint_table(dir, vm["table"].as<std::string>(), &rows, &dim,
                          [&](int64_t, int64_t n, const float* data) {
                            if (!npy) {
                              make_output_folder(out);
                              npy = std::make_unique<NpyWriter>(out, DType::kFloat32,
                                                                std::vector<int64_t>{rows, dim});
                            }
                            npy->write(data, n * dim * static_cast<int64_t>(sizeof(float)));
                          });
    if (!npy) {
      make_output_folder(out);
      npy = std::make_unique<NpyWriter>(out, DType::kFloat32, std::vector<int64_t>{rows, dim});
    }
    npy->finish();
  } else {  // streamed too, once the vocabulary is known
    // The vocabulary: --vocab, else the checkpoint's own vocab.txt, else
    // (a checkpoint saved before it held one) the run folder's, two levels
    // above step_N, which a later run into that folder may have replaced.
    std::string vocab_name;
    Vocabulary words;
    std::string text;
    if (vm.count("vocab")) {
      vocab_name = vm["vocab"].as<std::string>();
      words = read_vocabulary(vocab_name);
    } else if (read_checkpoint_file(dir, "vocab.txt", &text)) {
      vocab_name = (fs::path(dir) / "vocab.txt").string();
      words = parse_vocabulary(text, vocab_name);
    } else if (const CheckpointInfo info = read_checkpoint_info(dir); !info.files.empty()) {
      // Saved with its text files, none a vocabulary: its rows are ids.
      throw make_error("checkpoint ", dir, " (workload '", info.workload,
                       "') holds no vocab.txt: its rows have no words; write --out FILE.npy, "
                       "or name the rows with --vocab FILE (one 'word count' line per row)");
    } else {
      const fs::path guess = fs::path(dir).parent_path().parent_path() / "vocab.txt";
      EMBTRAIN_REQUIRE(fs::exists(guess), "checkpoint ", dir,
                       " holds no vocabulary (saved before checkpoints held one), and there is "
                       "no ",
                       guess.string(), ": word2vec text needs --vocab");
      std::fprintf(stderr,
                   "embtrain export: checkpoint %s holds no vocabulary (saved before checkpoints "
                   "held one): using %s\n",
                   dir.c_str(), guess.c_str());
      vocab_name = guess.string();
      words = read_vocabulary(vocab_name);
    }
    std::unique_ptr<Word2VecWriter> text_out;
    auto start_text = [&] {
      EMBTRAIN_REQUIRE(words.size() == rows, vocab_name, ": has ", words.size(),
                       " words but the table has ", rows, " rows");
      make_output_folder(out);
      text_out = std::make_unique<Word2VecWriter>(out, words);
    };
    read_checkpoint_table(dir, vm["table"].as<std::string>(), &rows, &dim,
                          [&](int64_t first, int64_t n, const float* data) {
                            if (!text_out) start_text();
                            text_out->write(first, n, dim, data);
                          });
    if (!text_out) start_text();
    text_out->finish(dim);
  }
  std::fprintf(stderr, "embtrain export: table '%s' (%lld x %lld) of %s -> %s\n",
               vm["table"].as<std::string>().c_str(), static_cast<long long>(rows),
               static_cast<long long>(dim), dir.c_str(), out.c_str());
}

}  // namespace

int run_export(int argc, char** argv) {
  po::options_description options(
      "usage: embtrain export --checkpoint PATH --table NAME --out FILE [--vocab FILE]\n\n"
      "Writes one table of a checkpoint, assembled from its shards, as FILE.npy (float32,\n"
      "rows x dim) or, for FILE.txt / FILE.vec, word2vec text (needs the vocabulary: a\n"
      "'word count' line per row, in row order, as skipgram writes vocab.txt; default:\n"
      "the checkpoint's own vocab.txt). FILE's folder is made if need be.\n\noptions");
  // clang-format off
  options.add_options()
    ("help,h", "show this help")
    ("checkpoint", po::value<std::string>()->required(),
     "a checkpoint folder, a checkpoint root (its latest), or a run's log.dir (its checkpoints)")
    ("table", po::value<std::string>()->required(), "table name")
    ("out", po::value<std::string>()->required(), "output file: .npy, .txt or .vec")
    ("vocab", po::value<std::string>(), "vocabulary for word2vec text (default: the checkpoint's)");
  // clang-format on
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      std::cout << options << "\n";
      return 0;
    }
  const po::variables_map vm = parse_command_line(argc, argv, options, "export");
  // Under mpirun rank 0 writes the file (all writing it would race), and
  // every rank ends with its outcome.
  std::unique_ptr<Communicator> world = make_world_communicator();
  run_agreed(*world, [&] {
    if (world->rank() == 0) export_table(vm);
  });
  return 0;
}

}  // namespace app
}  // namespace embtrain
