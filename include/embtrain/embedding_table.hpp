// One embedding table with torch.nn.Embedding's semantics: its options
// (TableSpec) and the storage of a block of its rows with their optimizer
// state and step counter (EmbeddingTable).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "embtrain/errors.hpp"
#include "embtrain/huge_pages.hpp"
#include "embtrain/ids.hpp"
#include "embtrain/optimizer.hpp"

namespace embtrain {

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

// Rows [row_begin, row_begin + num_rows) of a table, with their optimizer
// state and the table's step counter. The whole table is one block on one
// process; a sharded table has one block per rank.
class EmbeddingTable {
 public:
  // Fresh rows drawn from N(0, 1) by (seed, global row), so a row's initial
  // value does not depend on how the table is split; the padding row is 0.
  EmbeddingTable(const TableSpec& spec, int64_t row_begin, int64_t num_rows, uint64_t seed);
  // Given rows (from_pretrained): `rows` holds num_rows x dim floats, used as
  // they are (the padding row is not zeroed).
  EmbeddingTable(const TableSpec& spec, int64_t row_begin, int64_t num_rows,
                 const std::vector<float>& rows);

  const TableSpec& spec() const { return spec_; }
  int64_t row_begin() const { return row_begin_; }
  int64_t num_rows() const { return num_rows_; }
  int64_t dim() const { return spec_.dim; }
  int64_t step() const { return step_; }
  bool owns(int64_t row) const { return row >= row_begin_ && row < row_begin_ + num_rows_; }

  const RowBuffer& weights() const { return weights_; }
  RowBuffer& weights() { return weights_; }
  const RowBuffer& state() const { return state_; }
  RowBuffer& state() { return state_; }
  // Floats of optimizer state per row (0 for SGD and for frozen tables).
  int64_t state_width() const;
  // The optimizer's step counter: advanced by every step (also of a frozen
  // table) and restored from checkpoints.
  void set_step(int64_t step) { step_ = step; }

 private:
  void init_state();

  TableSpec spec_;
  int64_t row_begin_;
  int64_t num_rows_;
  int64_t step_ = 0;
  RowBuffer weights_;
  RowBuffer state_;
};

}  // namespace embtrain
