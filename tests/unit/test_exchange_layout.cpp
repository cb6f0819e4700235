// ExchangeLayout against a simulated all-to-all: P layouts built from one
// random count matrix, rows written by every owner into its served blocks
// and moved as MPI_Alltoallv would move them (per-peer counts, rank order),
// must arrive in exactly the requested blocks of the right requester; the
// self blocks must be one place; every block must start on the alignment.
// With tables pooled at the owners, the rows that travel are their partial
// rows (counted apart from the ids), the kept blocks of the served ids'
// rows lie beyond every travelling region without overlapping, and the
// entries are laid out as the ids are.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "engine/exchange_layout.hpp"
#include "test_util.hpp"

namespace {

using embtrain::ExchangeLayout;

// counts[(r * P + p) * T + t]: ids of table t that rank r requests of rank p;
// for a table pooled at the owners (at_owner[t]), partials[...] rows come
// back instead and entries[...] entries go with the ids.
struct Problem {
  int P = 0, T = 0;
  std::vector<int64_t> dims, counts;
  std::vector<char> at_owner;  // empty: no table pooled at the owners
  std::vector<int64_t> partials, entries;

  size_t at(int requester, int owner, int t) const {
    return (static_cast<size_t>(requester) * P + owner) * T + t;
  }
  int64_t count(int requester, int owner, int t) const { return counts[at(requester, owner, t)]; }
  bool pooled(int t) const { return !at_owner.empty() && at_owner[t]; }
  // Rows that travel between them: one per id, or the partial rows.
  int64_t rows(int requester, int owner, int t) const {
    return pooled(t) ? partials[at(requester, owner, t)] : count(requester, owner, t);
  }
  int64_t num_entries(int requester, int owner, int t) const {
    return pooled(t) ? entries[at(requester, owner, t)] : 0;
  }
  ExchangeLayout layout(int rank, int64_t align, const std::vector<int>& wire_bytes = {},
                        bool self_grads_on_wire = false) const {
    std::vector<int64_t> requested, served;
    ExchangeLayout::Pooled p;
    if (!at_owner.empty()) p.at_owner = at_owner;
    for (int q = 0; q < P; ++q)
      for (int t = 0; t < T; ++t) {
        requested.push_back(count(rank, q, t));
        served.push_back(count(q, rank, t));
        if (at_owner.empty()) continue;
        p.requested_rows.push_back(partials[at(rank, q, t)]);
        p.served_rows.push_back(partials[at(q, rank, t)]);
        p.requested_entries.push_back(entries[at(rank, q, t)]);
        p.served_entries.push_back(entries[at(q, rank, t)]);
      }
    ExchangeLayout l;
    l.assign(rank, dims, align, requested, served, wire_bytes, p, self_grads_on_wire);
    return l;
  }
};

Problem random_problem(std::mt19937_64& rng) {
  Problem pr;
  pr.P = std::uniform_int_distribution<int>(1, 5)(rng);
  pr.T = std::uniform_int_distribution<int>(1, 4)(rng);
  std::uniform_int_distribution<int64_t> dim(1, 9), count(0, 6);
  for (int t = 0; t < pr.T; ++t) pr.dims.push_back(dim(rng));
  pr.counts.resize(static_cast<size_t>(pr.P) * pr.P * pr.T);
  for (int64_t& c : pr.counts) c = std::bernoulli_distribution(0.2)(rng) ? 0 : count(rng);
  return pr;
}

// random_problem with some tables pooled at the owners.
Problem random_pooled_problem(std::mt19937_64& rng) {
  Problem pr = random_problem(rng);
  for (int t = 0; t < pr.T; ++t) pr.at_owner.push_back(std::bernoulli_distribution(0.6)(rng));
  std::uniform_int_distribution<int64_t> count(0, 9);
  for (auto* v : {&pr.partials, &pr.entries}) {
    v->resize(pr.counts.size());
    for (int64_t& c : *v) c = count(rng);
  }
  return pr;
}

// A value no two (owner, requester, table, id, column) share.
float tag(int owner, int requester, int t, int64_t k, int64_t j) {
  return static_cast<float>((((owner * 8 + requester) * 8 + t) * 64 + k) * 16 + j);
}

void check_problem(const Problem& pr, int64_t align) {
  const int P = pr.P, T = pr.T;
  std::vector<ExchangeLayout> layouts;
  for (int r = 0; r < P; ++r) layouts.push_back(pr.layout(r, align));
  const float kUnwritten = -1.f;
  std::vector<std::vector<float>> rows(P);
  for (int r = 0; r < P; ++r) rows[r].assign(static_cast<size_t>(layouts[r].rows_floats()), kUnwritten);

  // Owners write their served blocks (the self block included).
  for (int o = 0; o < P; ++o)
    for (int q = 0; q < P; ++q)
      for (int t = 0; t < T; ++t) {
        const ExchangeLayout::Block& b = layouts[o].served(q, t);
        ASSERT_EQ(b.count, pr.count(q, o, t));
        ASSERT_EQ(b.rows, pr.rows(q, o, t));
        ASSERT_EQ(b.row % align, 0) << "served block (" << q << ", " << t << ") of rank " << o;
        for (int64_t k = 0; k < b.rows; ++k)
          for (int64_t j = 0; j < pr.dims[t]; ++j)
            rows[o][b.row + k * pr.dims[t] + j] = tag(o, q, t, k, j);
      }

  // The all-to-all of rows: from [served region, per-peer counts] of each
  // owner into [requested region, per-peer counts] of each requester.
  std::vector<std::vector<float>> received = rows;
  for (int q = 0; q < P; ++q) {
    const ExchangeLayout& lq = layouts[q];
    ASSERT_EQ(lq.rows_from_owners()[q], 0) << "rank " << q << " receives rows from itself";
    int64_t at = lq.requested_rows();
    for (int o = 0; o < P; ++o) {
      const ExchangeLayout& lo = layouts[o];
      ASSERT_EQ(lo.rows_to_requesters()[q], lq.rows_from_owners()[o]) << o << " -> " << q;
      int64_t from = lo.served_rows();
      for (int p = 0; p < q; ++p) from += lo.rows_to_requesters()[p];
      for (int64_t f = 0; f < lq.rows_from_owners()[o]; ++f) received[q][at + f] = rows[o][from + f];
      at += lq.rows_from_owners()[o];
    }
  }

  // Every requested block holds its owner's rows, in id order.
  for (int q = 0; q < P; ++q)
    for (int o = 0; o < P; ++o)
      for (int t = 0; t < T; ++t) {
        const ExchangeLayout::Block& b = layouts[q].requested(o, t);
        ASSERT_EQ(b.count, pr.count(q, o, t));
        ASSERT_EQ(b.rows, pr.rows(q, o, t));
        ASSERT_EQ(b.row % align, 0);
        if (o == q) {
          EXPECT_EQ(b.row, layouts[q].served(q, t).row) << "self block of rank " << q;
        }
        for (int64_t k = 0; k < b.rows; ++k)
          for (int64_t j = 0; j < pr.dims[t]; ++j)
            ASSERT_EQ(received[q][b.row + k * pr.dims[t] + j], tag(o, q, t, k, j))
                << "rank " << q << " table " << t << " id " << k << " col " << j << " from " << o;
      }

  // Ids: peer-major, table-minor, contiguous, with matching per-peer counts.
  for (int r = 0; r < P; ++r) {
    int64_t at = 0;
    for (int p = 0; p < P; ++p) {
      int64_t peer = 0;
      for (int t = 0; t < T; ++t) {
        EXPECT_EQ(layouts[r].requested(p, t).id, at);
        at += layouts[r].requested(p, t).count;
        peer += layouts[r].requested(p, t).count;
      }
      EXPECT_EQ(layouts[r].ids_to_owners()[p], peer);
      EXPECT_EQ(layouts[r].ids_to_owners()[p], layouts[p].ids_from_requesters()[r]);
    }
    EXPECT_EQ(layouts[r].num_requested(), at);
  }

  // Entries: laid out as the ids, by their own counts.
  for (int r = 0; r < P; ++r) {
    int64_t at = 0;
    for (int p = 0; p < P; ++p) {
      int64_t peer = 0;
      for (int t = 0; t < T; ++t) {
        EXPECT_EQ(layouts[r].at_owner(t), pr.pooled(t));
        const ExchangeLayout::Block& b = layouts[r].requested(p, t);
        EXPECT_EQ(b.entry, at);
        EXPECT_EQ(b.entries, pr.num_entries(r, p, t));
        EXPECT_EQ(layouts[r].served(p, t).entries, pr.num_entries(p, r, t));
        at += b.entries;
        peer += b.entries;
      }
      EXPECT_EQ(layouts[r].entries_to_owners()[p], peer);
      EXPECT_EQ(layouts[r].entries_to_owners()[p], layouts[p].entries_from_requesters()[r]);
    }
    EXPECT_EQ(layouts[r].num_requested_entries(), at);
  }

  // Kept blocks (the served ids' rows of pooled tables, every peer's, self
  // included): aligned, past every travelling row, none overlapping.
  for (int r = 0; r < P; ++r) {
    const ExchangeLayout& l = layouts[r];
    std::vector<char> used(static_cast<size_t>(l.rows_floats()), 0);
    for (int p = 0; p < P; ++p)
      for (int t = 0; t < T; ++t) {
        const ExchangeLayout::Block& b = l.served(p, t);
        ASSERT_GE(b.row + b.rows * pr.dims[t], 0);
        ASSERT_LE(b.row + b.rows * pr.dims[t], l.kept_rows());
        if (!pr.pooled(t)) continue;
        ASSERT_EQ(b.kept % align, 0);
        ASSERT_GE(b.kept, l.kept_rows());
        ASSERT_LE(b.kept + b.count * pr.dims[t], l.rows_floats());
        for (int64_t f = b.kept; f < b.kept + b.count * pr.dims[t]; ++f) {
          ASSERT_EQ(used[f], 0) << "rank " << r << ": kept blocks overlap at float " << f;
          used[f] = 1;
        }
      }
  }
}

TEST(ExchangeLayout, RowsArriveInTheRequestedBlocks) {
  const uint64_t seed = embtrain_test::test_seed();
  SCOPED_TRACE(embtrain_test::seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int n = 0; n < 300; ++n) {
    const Problem pr = random_problem(rng);
    for (int64_t align : {1, 4}) {
      SCOPED_TRACE("case " + std::to_string(n) + ": P " + std::to_string(pr.P) + ", T " +
                   std::to_string(pr.T) + ", align " + std::to_string(align));
      check_problem(pr, align);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

TEST(ExchangeLayout, PooledTablesMovePartialRowsAndKeepTheirRows) {
  const uint64_t seed = embtrain_test::test_seed();
  SCOPED_TRACE(embtrain_test::seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int n = 0; n < 300; ++n) {
    const Problem pr = random_pooled_problem(rng);
    for (int64_t align : {1, 4}) {
      SCOPED_TRACE("case " + std::to_string(n) + ": P " + std::to_string(pr.P) + ", T " +
                   std::to_string(pr.T) + ", align " + std::to_string(align));
      check_problem(pr, align);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

// The wire buffers (tables in 16 bits, or 32 through the wire): blocks on
// 16 bytes holding rows x dim x bytes, each peer's blocks one range in
// peer-major, table-minor order whose size is the per-peer count, a
// requested block at the same place in its peer's range as the owner's
// served block in its own (so a byte all-to-all lands each where it
// belongs), no self block on the requested side, and on the served side,
// with self_grads_on_wire, a self block for each 16-bit table not pooled
// at the owner, past the peers' ranges; no two blocks overlapping.
TEST(ExchangeLayout, WireBlocksLineUpAcrossRanks) {
  const uint64_t seed = embtrain_test::test_seed();
  SCOPED_TRACE(embtrain_test::seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (int n = 0; n < 300; ++n) {
    const Problem pr = n % 2 ? random_pooled_problem(rng) : random_problem(rng);
    const int P = pr.P, T = pr.T;
    std::vector<int> bytes;
    for (int t = 0; t < T; ++t) bytes.push_back(rng() % 3 ? 2 : 4);
    const bool self_on_wire = rng() % 2;
    SCOPED_TRACE("case " + std::to_string(n) + ": P " + std::to_string(P) + ", T " +
                 std::to_string(T) + ", self grads on wire " + std::to_string(self_on_wire));
    std::vector<ExchangeLayout> ls;
    for (int r = 0; r < P; ++r) ls.push_back(pr.layout(r, 1, bytes, self_on_wire));
    // Per rank and side: each block's bytes, checked for place and overlap.
    for (int r = 0; r < P; ++r)
      for (bool served : {false, true}) {
        const ExchangeLayout& l = ls[r];
        const std::vector<int64_t>& per_peer = served ? l.wire_to_requesters() : l.wire_from_owners();
        const int64_t size = served ? l.served_wire_bytes() : l.requested_wire_bytes();
        std::vector<char> used(static_cast<size_t>(size), 0);
        int64_t at = 0;
        for (int p = 0; p < P; ++p) {
          if (p == r) {
            EXPECT_EQ(per_peer[p], 0) << "rank " << r << " sends itself wire bytes";
            continue;
          }
          int64_t peer = 0;
          for (int t = 0; t < T; ++t) {
            const ExchangeLayout::Block& b = served ? l.served(p, t) : l.requested(p, t);
            const int64_t len = b.rows * pr.dims[t] * bytes[t];
            ASSERT_EQ(b.wire % 16, 0);
            ASSERT_EQ(b.wire, at + peer) << "rank " << r << " block (" << p << ", " << t << ")";
            // The other side's block of this pair, at the same place in its range.
            const ExchangeLayout& lp = ls[p];
            const ExchangeLayout::Block& other = served ? lp.requested(r, t) : lp.served(r, t);
            int64_t other_start = 0;
            for (int q = 0; q < r; ++q)
              other_start += served ? lp.wire_from_owners()[q] : lp.wire_to_requesters()[q];
            EXPECT_EQ(other.wire - other_start, peer) << "ranks " << r << ", " << p << ", table " << t;
            for (int64_t f = b.wire; f < b.wire + len; ++f) {
              ASSERT_LT(f, size);
              ASSERT_EQ(used[f], 0) << "rank " << r << ": wire blocks overlap at byte " << f;
              used[f] = 1;
            }
            peer += (len + 15) / 16 * 16;
          }
          EXPECT_EQ(per_peer[p], peer) << "rank " << r << ", peer " << p;
          at += peer;
        }
        for (int t = 0; t < T; ++t) {
          const bool self_block = served && self_on_wire && bytes[t] == 2 && !pr.pooled(t);
          if (served) {
            EXPECT_EQ(l.self_on_wire(t), self_block) << "rank " << r << ", table " << t;
          }
          const ExchangeLayout::Block& b = served ? l.served(r, t) : l.requested(r, t);
          const int64_t len = b.rows * pr.dims[t] * bytes[t];
          if (!self_block) continue;
          ASSERT_EQ(b.wire % 16, 0);
          ASSERT_GE(b.wire, at) << "rank " << r << "'s self block of table " << t
                                << " inside the peers' ranges";
          for (int64_t f = b.wire; f < b.wire + len; ++f) {
            ASSERT_LT(f, size);
            ASSERT_EQ(used[f], 0) << "rank " << r << ": self block overlaps at byte " << f;
            used[f] = 1;
          }
          at = b.wire + (len + 15) / 16 * 16;
        }
        EXPECT_EQ(size, at) << "rank " << r << (served ? " served" : " requested")
                            << " wire: bytes no block uses";
      }
    if (::testing::Test::HasFatalFailure()) return;
  }
}

// With alignment 1 the rows are packed: the buffer holds exactly the rows.
TEST(ExchangeLayout, UnalignedRowsArePacked) {
  Problem pr;
  pr.P = 3;
  pr.T = 2;
  pr.dims = {3, 5};
  pr.counts = {1, 2, 0, 1, 4, 0, 2, 2, 1, 1, 3, 0, 0, 0, 2, 1, 1, 1};
  for (int r = 0; r < pr.P; ++r) {
    const ExchangeLayout l = pr.layout(r, 1);
    int64_t floats = 0;
    for (int p = 0; p < pr.P; ++p)
      for (int t = 0; t < pr.T; ++t)
        floats += (pr.count(p, r, t) + (p == r ? 0 : pr.count(r, p, t))) * pr.dims[t];
    EXPECT_EQ(l.rows_floats(), floats) << "rank " << r;
  }
}

}  // namespace
