#include "engine/exchange_layout.hpp"

#include "embtrain/errors.hpp"

namespace embtrain {

namespace {

int64_t round_up(int64_t floats, int64_t align) { return (floats + align - 1) / align * align; }

using Field = int64_t ExchangeLayout::Block::*;

// Elements of every (peer, table) block, peer-major: block.*start and
// block.*count, and the per-peer totals. Returns the total.
int64_t lay_out_ids(const std::vector<int64_t>& counts, int T,
                    std::vector<ExchangeLayout::Block>* blocks, std::vector<int64_t>* per_peer,
                    Field start = &ExchangeLayout::Block::id,
                    Field count = &ExchangeLayout::Block::count) {
  const int P = static_cast<int>(counts.size()) / T;
  blocks->resize(counts.size());
  per_peer->assign(P, 0);
  int64_t at = 0;
  for (int p = 0; p < P; ++p)
    for (int t = 0; t < T; ++t) {
      ExchangeLayout::Block& b = (*blocks)[p * T + t];
      b.*start = at;
      b.*count = counts[p * T + t];
      at += b.*count;
      (*per_peer)[p] += b.*count;
    }
  return at;
}

// Rows of every block of peers other than `rank`, peer-major from `at`:
// block.row and the per-peer floats. Returns the end of the region.
int64_t lay_out_rows(int rank, const std::vector<int64_t>& dims, int64_t align, int64_t at,
                     std::vector<ExchangeLayout::Block>* blocks, std::vector<int64_t>* per_peer) {
  const int T = static_cast<int>(dims.size());
  const int P = static_cast<int>(blocks->size()) / T;
  per_peer->assign(P, 0);
  for (int p = 0; p < P; ++p) {
    if (p == rank) continue;
    for (int t = 0; t < T; ++t) {
      ExchangeLayout::Block& b = (*blocks)[p * T + t];
      const int64_t floats = round_up(b.rows * dims[t], align);
      b.row = at;
      at += floats;
      (*per_peer)[p] += floats;
    }
  }
  return at;
}

// The wire bytes of every block of peers other than `rank`, peer-major
// from 0: block.wire and the per-peer bytes; then, after them (so the
// peers' blocks stay one range), the self blocks of the tables `self` marks
// (empty: none). Returns the buffer's size.
int64_t lay_out_wire(int rank, const std::vector<int64_t>& dims, const std::vector<int>& bytes,
                     const std::vector<char>& self, std::vector<ExchangeLayout::Block>* blocks,
                     std::vector<int64_t>* per_peer) {
  constexpr int64_t kAlign = 16;
  const int T = static_cast<int>(dims.size());
  const int P = static_cast<int>(blocks->size()) / T;
  per_peer->assign(P, 0);
  int64_t at = 0;
  auto place = [&](ExchangeLayout::Block* b, int t) {
    b->wire = at;
    const int64_t size = round_up(b->rows * dims[t] * bytes[t], kAlign);
    at += size;
    return size;
  };
  for (int p = 0; p < P; ++p) {
    if (p == rank) continue;
    for (int t = 0; t < T; ++t) (*per_peer)[p] += place(&(*blocks)[p * T + t], t);
  }
  for (int t = 0; t < T && !self.empty(); ++t)
    if (self[t]) place(&(*blocks)[rank * T + t], t);
  return at;
}

}  // namespace

void ExchangeLayout::assign(int rank, const std::vector<int64_t>& dims, int64_t row_align,
                            const std::vector<int64_t>& requested,
                            const std::vector<int64_t>& served, const std::vector<int>& wire_bytes,
                            const Pooled& pooled, bool self_grads_on_wire) {
  const int T = static_cast<int>(dims.size());
  const int P = static_cast<int>(requested.size()) / T;
  EMBTRAIN_ASSERT(T > 0 && row_align >= 1 && requested.size() == served.size() &&
                  requested.size() % T == 0);
  dims_ = dims;
  requested_.assign(requested.size(), Block{});
  served_.assign(served.size(), Block{});
  num_requested_ = lay_out_ids(requested, T, &requested_, &ids_to_owners_);
  num_served_ = lay_out_ids(served, T, &served_, &ids_from_requesters_);
  // The rows that travel: one per id, or the partial rows of a pooled table.
  at_owner_ = pooled.at_owner;
  const bool any_pooled = !at_owner_.empty();
  EMBTRAIN_ASSERT(!any_pooled || (static_cast<int>(at_owner_.size()) == T &&
                                  pooled.requested_rows.size() == requested.size() &&
                                  pooled.served_rows.size() == served.size() &&
                                  pooled.requested_entries.size() == requested.size() &&
                                  pooled.served_entries.size() == served.size()));
  for (size_t i = 0; i < requested.size(); ++i) {
    const bool at_owner = any_pooled && at_owner_[i % T];
    requested_[i].rows = at_owner ? pooled.requested_rows[i] : requested[i];
    served_[i].rows = at_owner ? pooled.served_rows[i] : served[i];
  }
  // Entries: only pooled tables have them.
  std::vector<int64_t> requested_entries(requested.size(), 0), served_entries(served.size(), 0);
  for (size_t i = 0; i < requested.size() && any_pooled; ++i)
    if (at_owner_[i % T]) {
      requested_entries[i] = pooled.requested_entries[i];
      served_entries[i] = pooled.served_entries[i];
    }
  num_requested_entries_ = lay_out_ids(requested_entries, T, &requested_, &entries_to_owners_,
                                       &Block::entry, &Block::entries);
  num_served_entries_ = lay_out_ids(served_entries, T, &served_, &entries_from_requesters_,
                                    &Block::entry, &Block::entries);
  requested_rows_ = lay_out_rows(rank, dims, row_align, 0, &served_, &rows_to_requesters_);
  int64_t at = lay_out_rows(rank, dims, row_align, requested_rows_, &requested_,
                            &rows_from_owners_);
  // The self region: one block per table, shared by both roles.
  for (int t = 0; t < T; ++t) {
    Block& asked = requested_[rank * T + t];
    Block& given = served_[rank * T + t];
    EMBTRAIN_ASSERT(asked.count == given.count && asked.rows == given.rows);
    asked.row = given.row = at;
    at += round_up(asked.rows * dims[t], row_align);
  }
  // The kept region: the served ids' rows of pooled tables, every peer's.
  kept_rows_ = at;
  for (int p = 0; p < P; ++p)
    for (int t = 0; t < T; ++t) {
      if (!at_owner(t)) continue;
      Block& given = served_[p * T + t];
      given.kept = at;
      at += round_up(given.count * dims[t], row_align);
    }
  rows_floats_ = at;
  has_wire_ = !wire_bytes.empty();
  self_on_wire_.clear();
  if (!has_wire_) return;
  EMBTRAIN_ASSERT(static_cast<int>(wire_bytes.size()) == T);
  self_on_wire_.assign(static_cast<size_t>(T), 0);
  for (int t = 0; t < T && self_grads_on_wire; ++t)
    self_on_wire_[t] = wire_bytes[t] < 4 && !at_owner(t);
  served_wire_bytes_ =
      lay_out_wire(rank, dims, wire_bytes, self_on_wire_, &served_, &wire_to_requesters_);
  requested_wire_bytes_ =
      lay_out_wire(rank, dims, wire_bytes, {}, &requested_, &wire_from_owners_);
}

}  // namespace embtrain
