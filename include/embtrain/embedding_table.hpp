// One embedding table with torch.nn.Embedding's semantics: its options
// (TableSpec) and the storage of a block of its rows with their optimizer
// state and step counter (EmbeddingTable).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "embtrain/bags.hpp"
#include "embtrain/comm_precision.hpp"
#include "embtrain/errors.hpp"
#include "embtrain/huge_pages.hpp"
#include "embtrain/ids.hpp"
#include "embtrain/optimizer.hpp"
#include "embtrain/shard_plan.hpp"

namespace embtrain {

// The most elements (rows x dim) a table may have: its weights and optimizer
// state (3 x 4 bytes per element at most) then stay below 2^63 bytes.
constexpr int64_t kMaxTableElements = int64_t{1} << 59;

struct TableSpec {
  std::string name = "table";
  int64_t num_embeddings = 0;
  int64_t dim = 0;
  // As given by the user: negative values count from the end. Use
  // padding_row() for the resolved row.
  std::optional<int64_t> padding_idx;
  std::optional<double> max_norm;
  double norm_type = 2.0;
  bool scale_grad_by_freq = false;
  bool freeze = false;
  OptimizerConfig optimizer;
  // The format this table's rows and gradients travel in between ranks
  // (comm_precision.hpp): fp32 is exact; bf16 and fp16 halve the bytes.
  CommPrecision comm_precision = CommPrecision::kFp32;
  // Where this table's bags are pooled when it is given bags (bags.hpp).
  // Every forward of a table pooled at the owner must give it bags.
  PoolAt pool_at = PoolAt::kRequester;

  // Throws embtrain::Error naming the table and the first invalid setting.
  void validate() const;
  // The padding row in [0, num_embeddings), or -1 when there is none.
  int64_t padding_row() const;
};

// check_ids (ids.hpp) against a table.
inline std::string check_ids(const IdsView& ids, const TableSpec& spec) {
  return check_ids(ids, spec.name, spec.num_embeddings);
}
// check_ids, throwing embtrain::Error, then the ids as int64.
inline std::vector<int64_t> validate_ids(const IdsView& ids, const TableSpec& spec) {
  const std::string error = check_ids(ids, spec);
  if (!error.empty()) throw Error(error);
  std::vector<int64_t> out;
  ids_to_int64(ids, &out);
  return out;
}

// A shard's rows or their optimizer state (ShardedEmbedding::read_rows).
enum class TablePart { kWeights, kState };

// Floats per row of `part` of a table: its dim, or its optimizer state's
// (0 for SGD and for a frozen table, which keeps none).
int64_t part_width(const TableSpec& spec, TablePart part);

// How a fresh table's rows start: N(0, 1) drawn by (seed, global row,
// column) times `scale`, or zeros; the padding row is 0 either way. The
// same values wherever they are drawn (random.hpp: the host, or a GPU's
// kernel) and however the table is split.
struct FreshRows {
  uint64_t seed = 0;
  float scale = 1.f;
  bool zeros = false;
};

// Local rows [first, first + n) of `rank`'s shard of a fresh table, drawn
// on the host into `out` (n x dim floats), the padding row included.
void draw_fresh_rows(const FreshRows& fresh, const TableSpec& spec, const ShardPlan& plan, int rank,
                     int64_t first, int64_t n, float* out);

// One rank's shard of a table (the rows `plan` gives `rank`, in local
// order), with their optimizer state and the table's step counter. The
// whole table is the one shard of a plan of one rank.
//
// A shard may hold no rows in host memory: before it is placed (a fresh
// table whose rows are drawn where it will live, placed_on_host() false)
// and once a GPU holds them (ShardedEmbedding::use_cuda releases them).
// weights() and state() are then empty.
class EmbeddingTable {
 public:
  // Fresh rows drawn from N(0, 1) by (seed, global row), so a row's initial
  // value does not depend on how the table is split; the padding row is 0.
  EmbeddingTable(const TableSpec& spec, const ShardPlan& plan, int rank, uint64_t seed);
  // A fresh shard not drawn yet: place_on_host() draws it, or a GPU engine
  // draws it in device memory.
  static EmbeddingTable unplaced(const TableSpec& spec, const ShardPlan& plan, int rank,
                                 const FreshRows& fresh);
  // Given rows (from_pretrained): `rows` holds the shard's rows, num_rows()
  // x dim floats in local order, used as they are (the padding row is not
  // zeroed).
  EmbeddingTable(const TableSpec& spec, const ShardPlan& plan, int rank,
                 const std::vector<float>& rows);

  const TableSpec& spec() const { return spec_; }
  const ShardPlan& plan() const { return plan_; }
  int rank() const { return rank_; }
  int64_t num_rows() const { return plan_.shard_rows(rank_); }
  int64_t dim() const { return spec_.dim; }
  int64_t step() const { return step_; }
  // Global row of local row `local`; whether global row `row` is here.
  int64_t global_row(int64_t local) const { return plan_.global_row(rank_, local); }
  bool owns(int64_t row) const { return plan_.owner(row) == rank_; }

  const RowBuffer& weights() const { return weights_; }
  RowBuffer& weights() { return weights_; }
  const RowBuffer& state() const { return state_; }
  RowBuffer& state() { return state_; }
  // Floats of optimizer state per row (0 for SGD and for frozen tables).
  int64_t state_width() const;
  // The value every optimizer state float starts at.
  float initial_state() const;

  // Whether the rows are in host memory; how an unplaced shard starts.
  bool placed_on_host() const { return placed_; }
  const FreshRows& fresh() const { return fresh_; }
  void set_fresh(const FreshRows& fresh) { fresh_ = fresh; }
  // Draws an unplaced shard's rows and state in host memory (nothing when
  // placed already).
  void place_on_host();
  // Frees the host rows and state (a GPU holds them now): placed nowhere on
  // the host, and never drawn again.
  void release_rows();
  // The optimizer's step counter: advanced by every step (also of a frozen
  // table) and restored from checkpoints.
  void set_step(int64_t step) { step_ = step; }

 private:
  EmbeddingTable(const TableSpec& spec, const ShardPlan& plan, int rank);
  void init_state();

  TableSpec spec_;
  ShardPlan plan_;
  int rank_;
  int64_t step_ = 0;
  bool placed_ = true;
  FreshRows fresh_;
  RowBuffer weights_;
  RowBuffer state_;
};

}  // namespace embtrain
