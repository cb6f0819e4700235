// ExchangeLayout: where every (peer, table) block of one sharded step's
// exchanges lives. Computed once per step from the counts; every stage on
// both backends reads its offsets here, and nothing else computes them.
//
// A step moves three things between every pair of ranks, all tables in one
// all-to-all each: the distinct ids a requester asks of each owner, the rows
// the owners send back, and the requester's gradient sums, which travel the
// way the ids went and land where the rows left. Each buffer is laid out
// peer-major, table-minor: the block of (peer p, table t) follows those of
// (p, t - 1), and peer p's blocks follow peer p - 1's.
//
// Ids (and, for scale_grad_by_freq, their counts, one int32 per id) use two
// buffers: the ids this rank requests (sent to their owners) and the ids it
// serves (received from requesters). Rows use one buffer of three regions:
//
//   [ rows served to other ranks | rows requested from other ranks | self ]
//
// Rows a rank asks of itself never go through the communicator: the owner
// gathers them into the self region, where the requester reads them, and
// the requester's gradient sums stay there for the owner (or go to the
// served wire, see below). The all-to-alls of rows and gradients therefore
// count 0 floats for the rank itself.
//
// Every block of rows starts on a multiple of `row_align` floats: 1 on the
// CPU, 4 on the GPU, whose kernels move 16 bytes at a time when dim % 4 ==
// 0 (a dim-8 row behind a block of dim-3 rows would otherwise be
// misaligned). Sender and receiver pad alike, from the same counts; the
// padding is never read.
//
// When a table's rows travel in 16 bits (TableSpec::comm_precision), rows
// and gradients go through two wire buffers instead, one per side, laid out
// the same way in bytes (`wire` offsets, 2 or 4 bytes per element as each
// table's precision says, blocks on 16 bytes): the served rows are packed
// into the owner's wire, the requested ones unpacked from the requester's,
// and the gradients go back the same way. Self blocks stay in the rows
// buffer, except with `self_grads_on_wire` (a backend whose update reads
// the gradients in their wire format): then the served side has a self
// block for each 16-bit table not pooled at the owner (self_on_wire(t)),
// after the peers' blocks, where the rank packs its own gradient sums,
// beside those the peers sent.
//
// Tables pooled at the owners (pool_at = owner, given as Pooled): their ids
// travel as any table's, but what comes back is not a row per id: it is one
// partial row per (bag, owner touched). So a block has two counts: `count`
// ids and `rows` rows that travel (ids for other tables, partial rows for
// these), and the rows regions above are laid out by `rows`. The owner keeps
// the rows of the ids it serves such a table in a fourth region, which no
// exchange moves (`kept`; the gradients of those rows gather there too):
//
//   [ served | requested | self | kept (pooled tables' served ids' rows) ]
//
// and a third pair of buffers carries the bags' entries (one per pooled
// position: which of the block's ids, which partial row, its weight; laid
// out as the ids, by `entries`, at `entry`).
#pragma once

#include <cstdint>
#include <vector>

namespace embtrain {

class ExchangeLayout {
 public:
  // One (peer, table) block.
  struct Block {
    int64_t id = 0;     // its first id in the requested or served id buffer
    int64_t count = 0;  // ids in it
    int64_t row = 0;    // float offset of its first row in the rows buffer
    int64_t wire = 0;   // byte offset of its first row in its side's wire buffer
    int64_t rows = 0;     // rows that travel: count, or partial rows for a pooled table
    int64_t kept = 0;     // served blocks of pooled tables: float offset of the ids' rows
    int64_t entry = 0;    // pooled tables: its first entry in the entries buffers
    int64_t entries = 0;  // entries in it
  };

  // The tables pooled at the owners and, per (peer, table) as the id
  // counts, their partial rows and entries; empty vectors: none.
  struct Pooled {
    std::vector<char> at_owner;  // per table
    std::vector<int64_t> requested_rows, served_rows;
    std::vector<int64_t> requested_entries, served_entries;
  };

  // `rank` of the job's ranks; dims[t] of each table; requested[p * T + t]:
  // the distinct ids of table t this rank asks rank p for; served[p * T +
  // t]: the ids rank p asks this rank for (requested and served of the rank
  // itself must be equal); wire_bytes[t]: bytes per element of table t on
  // the wire (empty: 4 for every table, and no wire buffers); pooled and
  // self_grads_on_wire: see above.
  void assign(int rank, const std::vector<int64_t>& dims, int64_t row_align,
              const std::vector<int64_t>& requested, const std::vector<int64_t>& served,
              const std::vector<int>& wire_bytes = {}, const Pooled& pooled = {},
              bool self_grads_on_wire = false);

  int num_peers() const { return static_cast<int>(ids_to_owners_.size()); }
  int num_tables() const { return static_cast<int>(dims_.size()); }
  int64_t dim(int t) const { return dims_[t]; }

  // What this rank asks owner p for, and what it serves requester p.
  const Block& requested(int p, int t) const { return requested_[p * num_tables() + t]; }
  const Block& served(int p, int t) const { return served_[p * num_tables() + t]; }

  // Per-peer element counts of the all-to-alls: ids go to owners and come
  // from requesters; rows (floats, 0 for this rank) go to requesters and
  // come from owners, and the gradients the other way.
  const std::vector<int64_t>& ids_to_owners() const { return ids_to_owners_; }
  const std::vector<int64_t>& ids_from_requesters() const { return ids_from_requesters_; }
  const std::vector<int64_t>& rows_to_requesters() const { return rows_to_requesters_; }
  const std::vector<int64_t>& rows_from_owners() const { return rows_from_owners_; }

  // Whether rows and gradients travel through the wire buffers, the bytes
  // per peer they move there (0 for this rank), and the buffers' sizes.
  bool has_wire() const { return has_wire_; }
  // Whether table t's served side has a self block on the wire (above).
  bool self_on_wire(int t) const { return !self_on_wire_.empty() && self_on_wire_[t]; }
  const std::vector<int64_t>& wire_to_requesters() const { return wire_to_requesters_; }
  const std::vector<int64_t>& wire_from_owners() const { return wire_from_owners_; }
  int64_t served_wire_bytes() const { return served_wire_bytes_; }
  int64_t requested_wire_bytes() const { return requested_wire_bytes_; }

  int64_t num_requested() const { return num_requested_; }  // ids, self included
  int64_t num_served() const { return num_served_; }
  int64_t served_rows() const { return 0; }  // float offsets of the regions
  int64_t requested_rows() const { return requested_rows_; }
  int64_t rows_floats() const { return rows_floats_; }  // the whole rows buffer
  int64_t kept_rows() const { return kept_rows_; }      // float offset of the kept region

  // Pooled tables: whether table t is one, and the per-peer entry counts
  // (to owners, from requesters) and totals of the entries buffers.
  bool at_owner(int t) const { return !at_owner_.empty() && at_owner_[t]; }
  const std::vector<int64_t>& entries_to_owners() const { return entries_to_owners_; }
  const std::vector<int64_t>& entries_from_requesters() const { return entries_from_requesters_; }
  int64_t num_requested_entries() const { return num_requested_entries_; }
  int64_t num_served_entries() const { return num_served_entries_; }

 private:
  std::vector<int64_t> dims_;
  std::vector<Block> requested_, served_;
  std::vector<int64_t> ids_to_owners_, ids_from_requesters_;
  std::vector<int64_t> rows_to_requesters_, rows_from_owners_;
  int64_t num_requested_ = 0, num_served_ = 0;
  int64_t requested_rows_ = 0, rows_floats_ = 0, kept_rows_ = 0;
  std::vector<char> at_owner_;
  std::vector<int64_t> entries_to_owners_, entries_from_requesters_;
  int64_t num_requested_entries_ = 0, num_served_entries_ = 0;
  bool has_wire_ = false;
  std::vector<char> self_on_wire_;  // per table, or empty
  std::vector<int64_t> wire_to_requesters_, wire_from_owners_;
  int64_t served_wire_bytes_ = 0, requested_wire_bytes_ = 0;
};

}  // namespace embtrain
