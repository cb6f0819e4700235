// The skipgram workload: batches of corpus positions, one sharded lookup of
// both tables per step, the loss and gradients by hand.
//
// A step, on each rank:
//  1. Batch: rank r of P takes the corpus positions
//     [(s·P + r)·B, (s·P + r + 1)·B) of the epoch (s = step within the
//     epoch, B = batch_size centers per rank), subsamples, draws windows and
//     forms (center, context) pairs, each with `negatives` negatives.
//  2. Index: the distinct center words become the input table's lookups,
//     the distinct context and negative words the output table's. Looking
//     up each distinct row once (rather than once per use, which the engine
//     would also coalesce) keeps the exchanged rows and the expanded
//     activations as small as the batch's vocabulary.
//  3. Forward both tables in one ShardedEmbedding call; the kernel computes
//     the loss and the gradient of every looked-up row; backward, step.
// The gradient of a row is summed over its uses in the global batch and the
// optimizer applies it once. word2vec instead updates after every pair
// (Hogwild), so a frequent word moves a little many times, each move seeing
// the last. Summing is what makes the step equal on any number of ranks; its
// price is that a frequent row's step grows with the batch, which plain SGD
// survives only with small batches or rates. Hence the workload's default
// optimizer, row-wise AdaGrad (see src/app/options_skipgram.cpp), which
// learns as well as fastText at 256 to 16384 centers per rank (the tests
// and bench/skipgram_vs_fasttext.py check the quality).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "embtrain/errors.hpp"
#include "embtrain/workloads/skipgram.hpp"

#include "common/fingerprint.hpp"
#include "train/durable_file.hpp"

namespace embtrain {

namespace {

// Held-out pairs are drawn with a seed of their own, so runs with different
// training seeds are judged on the same pairs.
constexpr uint64_t kHeldOutSeed = 0x6865'6c64'6f75'7431ull;

// 1234567 -> "1,234,567", for the start-up line.
std::string grouped(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

int64_t table_dim(const WorkloadContext& context, const std::string& name) {
  const auto it = context.table_dims.find(name);
  EMBTRAIN_REQUIRE(it != context.table_dims.end(), "skipgram: the trainer gave no dim for table '",
                   name, "' (the workload's tables are 'input' and 'output')");
  return it->second;
}

// A skipgram.neighbors entry as the vocabulary spells it (lowercased and
// stripped when the corpus is).
std::string query_word(const std::string& word, const TextOptions& options) {
  const std::vector<std::string> tokens = tokenize(word, options);
  EMBTRAIN_REQUIRE(tokens.size() == 1, "skipgram.neighbors: '", word,
                   "' is not one word (valid: words separated by commas)");
  return tokens[0];
}

// The rows of `ids` as a 1-d int32 view. An empty batch still passes a
// non-null pointer.
IdsView view_of(const std::vector<int32_t>& ids) {
  static const int32_t kNone = 0;
  return IdsView{
      ids.empty() ? &kNone : ids.data(), DType::kInt32, {static_cast<int64_t>(ids.size())}};
}

}  // namespace

SkipgramWorkload::SkipgramWorkload(const SkipgramConfig& config, const WorkloadContext& context)
    : config_(config), context_(context) {
  EMBTRAIN_ASSERT(context_.comm != nullptr);
  Communicator& comm = *context_.comm;
  run_agreed(comm, [&] {
    config_.validate();
    EMBTRAIN_REQUIRE(context_.batch_size >= 1, "skipgram: train.batch_size = ", context_.batch_size,
                     " is invalid (valid: >= 1 corpus positions per rank)");
    dim_ = table_dim(context_, "input");
    const int64_t out_dim = table_dim(context_, "output");
    EMBTRAIN_REQUIRE(dim_ == out_dim, "skipgram: tables 'input' (dim ", dim_,
                     ") and 'output' (dim ", out_dim, ") must have the same dim");
    for (const auto& [table, mode] : context_.table_bags)
      EMBTRAIN_REQUIRE(false, "skipgram: table.", table, ".kind = bag, but skipgram looks up one "
                       "word per row, it has no bags (valid: embedding)");
    if (!config_.export_path.empty()) {  // its folder is made when it is written
      const std::string problem = output_folder_problem(config_.export_path);
      EMBTRAIN_REQUIRE(problem.empty(), "config key 'skipgram.export' = '", config_.export_path,
                       "'", key_place(context_.key_source, "skipgram.export"), ": ", problem);
    }
    corpus_ = read_corpus(config_.corpus, config_.text(), config_.min_count, config_.eval_fraction);
    // A typo in a query word should end the run now, not after training.
    for (const std::string& w : config_.neighbors) {
      EMBTRAIN_REQUIRE(corpus_.vocab.find(query_word(w, config_.text())) >= 0,
                       "skipgram.neighbors: '", w, "' is not in the vocabulary of ", config_.corpus,
                       " (", corpus_.vocab.size(),
                       " words seen at least min_count = ", config_.min_count, " times)");
    }
  });

  const Vocabulary& vocab = corpus_.vocab;
  const int64_t V = vocab.size();
  keep_prob_.resize(static_cast<size_t>(V));
  for (int64_t r = 0; r < V; ++r)
    keep_prob_[r] = keep_probability(vocab.count(r), vocab.total_count(), config_.subsample);
  negatives_ = std::make_unique<UnigramSampler>(vocab.counts(), 0.75);
  train_pairs_ = std::make_unique<PairGenerator>(&corpus_.train, &keep_prob_, config_.window);
  heldout_pairs_ = std::make_unique<PairGenerator>(&corpus_.heldout, &keep_prob_, config_.window);
  const int64_t global_batch = context_.batch_size * comm.size();
  steps_per_epoch_ = std::max<int64_t>(1, (corpus_.train.size() + global_batch - 1) / global_batch);
  in_slot_.assign(static_cast<size_t>(V), -1);
  out_slot_.assign(static_cast<size_t>(V), -1);
}

SkipgramWorkload::~SkipgramWorkload() = default;

std::string SkipgramWorkload::describe() const {
  std::ostringstream os;
  os << "corpus " << config_.corpus << ": " << grouped(corpus_.words_read) << " words in "
     << grouped(corpus_.lines_read) << " lines; vocabulary " << grouped(corpus_.vocab.size())
     << " words (min_count " << config_.min_count << "); training " << grouped(corpus_.train.size())
     << " words, held out " << grouped(corpus_.heldout.size()) << " (last "
     << config_.eval_fraction * 100 << "%); window " << config_.window << ", negatives "
     << config_.negatives << ", subsample " << config_.subsample;
  return os.str();
}

int64_t SkipgramWorkload::table_rows(const std::string& name) const {
  EMBTRAIN_REQUIRE(name == "input" || name == "output", "skipgram: no table '", name,
                   "' (the workload's tables are 'input' and 'output')");
  return corpus_.vocab.size();
}

void SkipgramWorkload::fill_batch(const TokenStream& stream, PairGenerator& generator,
                                  const SkipgramPass& pass, int64_t begin, int64_t end,
                                  SkipgramBatch* batch) {
  batch->begin = begin;
  batch->end = end;
  generator.generate(pass, begin, end, &pairs_);
  const int64_t n = static_cast<int64_t>(pairs_.size()), K = config_.negatives, per = 1 + K;
  batch->centers.resize(static_cast<size_t>(n));
  batch->targets.resize(static_cast<size_t>(n * per));
  const int32_t* tokens = stream.tokens.data();
#pragma omp parallel for schedule(static) if (n > 4096)
  for (int64_t i = 0; i < n; ++i) {
    const SkipgramPair& pair = pairs_[i];
    const int32_t context = tokens[pair.context];
    int32_t* t = batch->targets.data() + i * per;
    batch->centers[i] = tokens[pair.center];
    t[0] = context;
    const uint64_t key = pass.pair_key(pair.center, pair.ordinal);
    for (int64_t k = 0; k < K; ++k) {
      const int32_t w = negatives_->sample(SkipgramPass::negative_bits(key, k));
      t[1 + k] = w == context ? -1 : w;
    }
  }
}

void SkipgramWorkload::make_batch(int64_t step, int rank, int ranks, SkipgramBatch* batch) {
  EMBTRAIN_ASSERT(step >= 0 && rank >= 0 && rank < ranks);
  const int64_t B = context_.batch_size, N = corpus_.train.size();
  const int64_t spe = std::max<int64_t>(1, (N + B * ranks - 1) / (B * ranks));
  const int64_t epoch = step / spe, within = step % spe;
  const int64_t begin = std::min(N, (within * ranks + rank) * B);
  const int64_t end = std::min(N, begin + B);
  fill_batch(corpus_.train, *train_pairs_,
             SkipgramPass{context_.seed, static_cast<uint64_t>(epoch)}, begin, end, batch);
}

void SkipgramWorkload::index_batch(IndexedBatch* indexed) {
  const SkipgramBatch& batch = indexed->batch;
  const int64_t n = batch.pairs(), per = 1 + config_.negatives;
  std::vector<int32_t>& in_ids = indexed->in_ids;
  std::vector<int32_t>& out_ids = indexed->out_ids;
  in_ids.clear();
  out_ids.clear();
  indexed->center_slots.resize(static_cast<size_t>(n));
  indexed->target_slots.resize(static_cast<size_t>(n * per));
  for (int64_t i = 0; i < n; ++i) {
    const int32_t w = batch.centers[i];
    int32_t& slot = in_slot_[w];
    if (slot < 0) {
      slot = static_cast<int32_t>(in_ids.size());
      in_ids.push_back(w);
    }
    indexed->center_slots[i] = slot;
  }
  for (int64_t j = 0; j < n * per; ++j) {
    const int32_t w = batch.targets[j];
    if (w < 0) {
      indexed->target_slots[j] = -1;
      continue;
    }
    int32_t& slot = out_slot_[w];
    if (slot < 0) {
      slot = static_cast<int32_t>(out_ids.size());
      out_ids.push_back(w);
    }
    indexed->target_slots[j] = slot;
  }
  for (int32_t w : in_ids) in_slot_[w] = -1;
  for (int32_t w : out_ids) out_slot_[w] = -1;
}

void SkipgramWorkload::check_tables(const ShardedEmbedding& tables) const {
  EMBTRAIN_REQUIRE(tables.num_tables() == 2 && tables.spec(0).dim == dim_ &&
                       tables.spec(1).dim == dim_ &&
                       tables.spec(0).num_embeddings == corpus_.vocab.size() &&
                       tables.spec(1).num_embeddings == corpus_.vocab.size(),
                   "skipgram: expects tables input and output of ", corpus_.vocab.size(),
                   " rows x ", dim_, ", in that order");
}

void SkipgramWorkload::forward(ShardedEmbedding& tables, const IndexedBatch& indexed) {
  check_tables(tables);
  in_rows_.resize(indexed.in_ids.size() * static_cast<size_t>(dim_));
  out_rows_.resize(indexed.out_ids.size() * static_cast<size_t>(dim_));
  tables.forward({view_of(indexed.in_ids), view_of(indexed.out_ids)},
                 {in_rows_.data(), out_rows_.data()});
}

double SkipgramWorkload::run_kernel(const IndexedBatch& indexed, float* grad_in,
                                    float* grad_out) {
  return kernel_.run(in_rows_.data(), static_cast<int64_t>(indexed.in_ids.size()),
                     out_rows_.data(), static_cast<int64_t>(indexed.out_ids.size()), dim_,
                     indexed.center_slots.data(), indexed.target_slots.data(),
                     indexed.batch.pairs(), 1 + config_.negatives, grad_in, grad_out);
}

// The corpus as read and cut: its words in order and the vocabulary's.
std::string SkipgramWorkload::data_identity() const {
  uint64_t h = fnv1a(corpus_.train.tokens);
  h = fnv1a(corpus_.heldout.tokens, h);
  for (int64_t r = 0; r < corpus_.vocab.size(); ++r) h = fnv1a(corpus_.vocab.word(r), h);
  return detail::concat(config_.corpus, ": ", corpus_.words_read, " words, fingerprint ",
                        fingerprint_hex(h));
}

StepOutput SkipgramWorkload::train_step(ShardedEmbedding& tables, int64_t step) {
  Communicator& comm = *context_.comm;
  if (next_.step == step) {
    std::swap(current_, next_);
  } else {
    make_batch(step, comm.rank(), comm.size(), &current_.batch);
    index_batch(&current_);
    current_.step = step;
  }
  forward(tables, current_);
  if (prefetch_step() >= 0) {  // the next batch's ids travel during this step's math
    make_batch(prefetch_step(), comm.rank(), comm.size(), &next_.batch);
    index_batch(&next_);
    next_.step = prefetch_step();
    tables.prefetch({view_of(next_.in_ids), view_of(next_.out_ids)});
  }
  grad_in_.resize(in_rows_.size());
  grad_out_.resize(out_rows_.size());
  StepOutput out;
  out.loss_sum = run_kernel(current_, grad_in_.data(), grad_out_.data());
  if (apply_step(out.loss_sum)) {
    tables.backward({grad_in_.data(), grad_out_.data()});
    tables.step();
  }
  out.examples = current_.batch.pairs();
  // The distinct rows this rank looked up: what the engine moved.
  out.lookups = static_cast<int64_t>(current_.in_ids.size() + current_.out_ids.size());
  out.words = current_.batch.end - current_.batch.begin;
  return out;
}

double SkipgramWorkload::heldout_loss(ShardedEmbedding& tables, int64_t* pairs) {
  Communicator& comm = *context_.comm;
  const int64_t P = comm.size(), r = comm.rank(), n = corpus_.heldout.size();
  const int64_t share_begin = n * r / P, share_end = n * (r + 1) / P;
  // Every rank makes the same number of lookups (a collective each), enough
  // for the largest share.
  const int64_t chunk = context_.batch_size, largest = (n + P - 1) / P;
  const int64_t rounds = (largest + chunk - 1) / chunk;
  const SkipgramPass pass{kHeldOutSeed, SkipgramPass::kHeldOut};
  double loss = 0;
  *pairs = 0;
  for (int64_t k = 0; k < rounds; ++k) {
    const int64_t begin = std::min(share_end, share_begin + k * chunk);
    const int64_t end = std::min(share_end, begin + chunk);
    fill_batch(corpus_.heldout, *heldout_pairs_, pass, begin, end, &current_.batch);
    index_batch(&current_);
    current_.step = -1;
    forward(tables, current_);
    loss += run_kernel(current_, nullptr, nullptr);
    *pairs += current_.batch.pairs();
  }
  return loss;
}

std::map<std::string, double> SkipgramWorkload::evaluate(ShardedEmbedding& tables) {
  int64_t pairs = 0;
  double sums[2] = {heldout_loss(tables, &pairs), 0};
  sums[1] = static_cast<double>(pairs);
  context_.comm->allreduce_sum(sums, 2, CommType::kFloat64);
  if (sums[1] == 0) return {};  // nothing held out (eval_fraction 0, or a tiny corpus)
  return {{"loss", sums[0] / sums[1]}};
}

// Words whose neighbours finish() prints when skipgram.neighbors names none.
constexpr int64_t kDefaultNeighbors = 5;

// vocab.txt names the tables' rows; every checkpoint holds its own copy
// (checkpoint_files), this one is for the user and other tools.
void SkipgramWorkload::start(const std::string& out_dir) {
  if (out_dir.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  EMBTRAIN_REQUIRE(!ec, "output folder '", out_dir, "': cannot create (", ec.message(), ")");
  write_vocabulary(corpus_.vocab, out_dir + "/vocab.txt");
}

void SkipgramWorkload::finish(ShardedEmbedding& tables, const std::string& out_dir) {
  (void)out_dir;  // vocab.txt went to the run's folder at start (and into each checkpoint)
  Communicator& comm = *context_.comm;
  const std::vector<float> table = tables.gather_table(0, 0);  // the input vectors
  run_agreed(comm, [&] {
    if (comm.rank() != 0) return;
    const Vocabulary& vocab = corpus_.vocab;
    // None named: the most frequent words, which every text has.
    std::vector<std::string> words = config_.neighbors;
    if (words.empty())
      for (int64_t r = 0; r < std::min<int64_t>(kDefaultNeighbors, vocab.size()); ++r)
        words.push_back(vocab.word(r));
    if (!words.empty()) {
      const CosineIndex index(table.data(), vocab.size(), dim_);
      std::printf("skipgram: nearest neighbours by cosine of the input vectors%s\n",
                  config_.neighbors.empty() ? " (of the most frequent words: set skipgram.neighbors "
                                              "for others)"
                                            : "");
      for (const std::string& w : words) {
        const std::string key = query_word(w, config_.text());
        std::printf("  %s:", key.c_str());
        const auto near = index.nearest(vocab.find(key), config_.neighbors_k);
        for (size_t i = 0; i < near.size(); ++i)
          std::printf("%s %s %.3f", i ? "," : "", vocab.word(near[i].first).c_str(),
                      static_cast<double>(near[i].second));
        std::printf("\n");
      }
      std::fflush(stdout);
    }
    if (!config_.export_path.empty()) {
      make_output_folder(config_.export_path);
      write_word2vec_text(config_.export_path, vocab, table.data(), dim_);
      std::printf("skipgram: wrote %lld vectors of dim %lld to %s\n",
                  static_cast<long long>(vocab.size()), static_cast<long long>(dim_),
                  config_.export_path.c_str());
      std::fflush(stdout);
    }
  });
}

std::unique_ptr<Workload> make_skipgram_workload(const SkipgramConfig& config,
                                                 const WorkloadContext& context) {
  return std::make_unique<SkipgramWorkload>(config, context);
}

}  // namespace embtrain
