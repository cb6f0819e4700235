// cpu::pool_bags and cpu::unpool_bags against a reference written from
// shared/TORCH_SEMANTICS.md in double precision, one bag and column at a
// time, on random bags (bag_cases.hpp). The seed is printed;
// EMBTRAIN_TEST_SEED replays it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include "bag_cases.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "test_util.hpp"

namespace embtrain {
namespace {

using embtrain_test::BagBatch;
using embtrain_test::random_bags;
using embtrain_test::seed_trace;
using embtrain_test::test_seed;

struct Reference {
  std::vector<double> out;       // bags x dim
  std::vector<int64_t> winner;   // max: bags x dim, the position whose value is out, or -1
  std::vector<int64_t> count;    // non-padding positions per bag
};

Reference reference(const BagBatch& b, PoolMode mode) {
  Reference r;
  const int64_t dim = b.dim;
  for (int64_t k = 0; k < b.bags(); ++k) {
    int64_t count = 0;
    for (int64_t p = b.offsets[k]; p < b.offsets[k + 1]; ++p) count += b.ids[p] != b.pad;
    r.count.push_back(count);
    for (int64_t j = 0; j < dim; ++j) {
      double value = 0;
      int64_t winner = -1;
      for (int64_t p = b.offsets[k]; p < b.offsets[k + 1]; ++p) {
        if (b.ids[p] == b.pad) continue;
        const double x = b.rows[p * dim + j];
        if (mode == PoolMode::kMax) {
          if (winner < 0 || x > value) value = x, winner = p;  // the first of equals
        } else {
          value += x * (b.weights.empty() ? 1.0 : b.weights[p]);
        }
      }
      if (mode == PoolMode::kMean && count > 0) value /= static_cast<double>(count);
      r.out.push_back(value);
      r.winner.push_back(winner);
    }
  }
  return r;
}

TEST(PoolKernels, PoolAndUnpoolMatchTheReference) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (PoolMode mode : {PoolMode::kSum, PoolMode::kMean, PoolMode::kMax}) {
    for (int64_t dim : {1, 3, 16, 128}) {
      for (int trial = 0; trial < 4; ++trial) {
        const bool weighted = mode == PoolMode::kSum && trial % 2 == 1;
        const BagBatch b = random_bags(dim, weighted, rng);
        SCOPED_TRACE(testing::Message() << pool_mode_name(mode) << " dim " << dim << " bags "
                                        << b.bags() << " n " << b.n << " weighted " << weighted);
        std::vector<int32_t> counts(b.bags()), argmax(b.bags() * dim);
        BagPooling bags{mode, b.offsets.data(), b.bags(), weighted ? b.weights.data() : nullptr,
                        dim, counts.data(), mode == PoolMode::kMax ? argmax.data() : nullptr};
        std::vector<float> out(b.bags() * dim, -7.f);
        cpu::pool_bags(bags, PositionRows{b.rows.data()}, b.ids.data(), b.pad, out.data());
        const Reference want = reference(b, mode);
        for (int64_t k = 0; k < b.bags(); ++k) ASSERT_EQ(counts[k], want.count[k]) << "bag " << k;
        for (size_t i = 0; i < out.size(); ++i) {
          if (mode == PoolMode::kMax) {
            ASSERT_EQ(argmax[i], want.winner[i]) << "element " << i;
            ASSERT_EQ(out[i], want.winner[i] < 0 ? 0.f : static_cast<float>(want.out[i]));
          } else {
            ASSERT_NEAR(out[i], want.out[i], 1e-5 * (1 + std::fabs(want.out[i]) * 40))
                << "element " << i;
          }
        }
        // Backward: each position's gradient from its bag's.
        std::vector<float> grad(b.bags() * dim), grad_rows(b.n * dim, -7.f);
        std::normal_distribution<float> normal;
        for (float& g : grad) g = normal(rng);
        cpu::unpool_bags(bags, grad.data(), b.n, grad_rows.data());
        for (int64_t k = 0; k < b.bags(); ++k)
          for (int64_t p = b.offsets[k]; p < b.offsets[k + 1]; ++p) {
            if (b.ids[p] == b.pad) continue;  // the step drops padding positions
            for (int64_t j = 0; j < dim; ++j) {
              const float g = grad[k * dim + j];
              float w = g;
              if (mode == PoolMode::kSum && weighted) w = g * b.weights[p];
              if (mode == PoolMode::kMean) w = g / static_cast<float>(want.count[k]);
              if (mode == PoolMode::kMax) w = want.winner[k * dim + j] == p ? g : 0.f;
              ASSERT_EQ(grad_rows[p * dim + j], w) << "bag " << k << " position " << p;
            }
          }
        for (int64_t i = b.offsets.back() * dim; i < b.n * dim; ++i)
          ASSERT_EQ(grad_rows[i], 0.f) << "a position past the last bag got a gradient";
      }
    }
  }
}

// What the steps pool from and sum gradients of instead of one row per
// position: rows found through the batch's distinct ids (the table's rows,
// as one rank's step; rows at float offsets in a buffer of their own order,
// as the sharded step's arrived rows), and one gradient row per bag where
// its positions share it. Both must give the per-position kernels' bits.
TEST(PoolKernels, PoolingThroughDistinctIdsAndSharedGradsEqualPerPositionRows) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (PoolMode mode : {PoolMode::kSum, PoolMode::kMean, PoolMode::kMax}) {
    for (int64_t dim : {1, 4, 16, 128}) {
      for (int trial = 0; trial < 4; ++trial) {
        const bool weighted = mode == PoolMode::kSum && trial % 2 == 1;
        const BagBatch b = random_bags(dim, weighted, rng);
        SCOPED_TRACE(testing::Message() << pool_mode_name(mode) << " dim " << dim << " bags "
                                        << b.bags() << " n " << b.n << " weighted " << weighted);
        // The distinct ids, each position's slot among them, and a buffer
        // holding their rows in a shuffled order at float offsets.
        const auto [unique, slot] = embtrain_test::distinct_ids(b.ids);
        std::vector<int64_t> order(unique.size()), at(unique.size());
        for (size_t u = 0; u < order.size(); ++u) order[u] = static_cast<int64_t>(u);
        std::shuffle(order.begin(), order.end(), rng);
        std::vector<float> arrived(unique.size() * dim);
        for (size_t u = 0; u < unique.size(); ++u) {
          at[u] = order[u] * dim;
          std::copy_n(b.table.begin() + unique[u] * dim, dim, arrived.begin() + at[u]);
        }

        const size_t bags = static_cast<size_t>(b.bags());
        std::vector<int32_t> counts(bags), argmax(bags * dim), counts2(bags), argmax2(bags * dim);
        const float* weights = weighted ? b.weights.data() : nullptr;
        const bool max = mode == PoolMode::kMax;
        const BagPooling per_position{mode, b.offsets.data(), b.bags(), weights, dim,
                                      counts.data(), max ? argmax.data() : nullptr};
        const BagPooling through{mode, b.offsets.data(), b.bags(), weights, dim,
                                 counts2.data(), max ? argmax2.data() : nullptr};
        std::vector<float> want(bags * dim, -7.f), got(bags * dim, -9.f);
        cpu::pool_bags(per_position, PositionRows{b.rows.data()}, b.ids.data(), b.pad,
                       want.data());
        for (const PositionRows& rows :
             {PositionRows{b.table.data(), slot.data(), unique.data(), dim},
              PositionRows{arrived.data(), slot.data(), at.data(), 1}}) {
          cpu::pool_bags(through, rows, b.ids.data(), b.pad, got.data());
          ASSERT_EQ(got, want) << "stride " << rows.stride;
          ASSERT_EQ(counts2, counts);
          ASSERT_EQ(argmax2, argmax);
        }

        if (!bag_grads_shared(per_position)) continue;
        std::vector<float> grad(bags * dim), grad_rows(b.n * dim, -7.f);
        std::normal_distribution<float> normal;
        for (float& g : grad) g = normal(rng);
        cpu::unpool_bags(per_position, grad.data(), b.n, grad_rows.data());
        std::vector<float> shared((bags + 1) * dim, -9.f);
        std::vector<int64_t> src_offsets(b.n, -1);
        cpu::share_bag_grads(per_position, grad.data(), b.n, shared.data(), src_offsets.data());
        for (int64_t p = 0; p < b.n; ++p) {
          ASSERT_GE(src_offsets[p], 0) << "position " << p;
          ASSERT_LE(src_offsets[p], static_cast<int64_t>(bags) * dim) << "position " << p;
          for (int64_t j = 0; j < dim; ++j)
            ASSERT_EQ(shared[src_offsets[p] + j], grad_rows[p * dim + j])
                << "position " << p << " column " << j;
        }
      }
    }
  }
}

// Pooling at the owners, P simulated owners (id % P, as the cyclic plan):
// list_bag_entries, each owner's pool_partials and combine_partials give
// pool_bags' output (max bitwise, sum and mean within float rounding: they
// add in another order); split_bag_grads and each owner's unpool_partials
// give every id the sum of unpool_bags' position gradients in position
// order, chunked as sum_order.hpp says, bitwise (the same terms in the same
// order).
TEST(PoolKernels, PoolingAtTheOwnersMatchesPoolingAtTheRequester) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (PoolMode mode : {PoolMode::kSum, PoolMode::kMean, PoolMode::kMax}) {
    for (int64_t dim : {1, 3, 16}) {
      for (int trial = 0; trial < 6; ++trial) {
        const int P = 1 + static_cast<int>(rng() % 5);
        const bool weighted = mode == PoolMode::kSum && trial % 2 == 1;
        const BagBatch b = random_bags(dim, weighted, rng);
        SCOPED_TRACE(testing::Message() << pool_mode_name(mode) << " dim " << dim << " owners "
                                        << P << " bags " << b.bags() << " n " << b.n
                                        << " weighted " << weighted);
        // The batch's distinct ids in owner-major key order, and the inverse.
        auto key = [&](int64_t id) { return (id % P) * 1000 + id / P; };
        std::vector<int64_t> uniq(b.ids);
        std::sort(uniq.begin(), uniq.end(), [&](int64_t x, int64_t y) { return key(x) < key(y); });
        uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
        std::vector<int32_t> inverse;
        for (int64_t id : b.ids)
          inverse.push_back(static_cast<int32_t>(
              std::find(uniq.begin(), uniq.end(), id) - uniq.begin()));
        std::vector<int64_t> owner_slots;
        for (int d = 0; d <= P; ++d)
          owner_slots.push_back(std::count_if(uniq.begin(), uniq.end(),
                                              [&](int64_t id) { return id % P < d; }));
        std::map<int64_t, const float*> row_of;  // a lookup's row per id
        for (int64_t p = 0; p < b.n; ++p) row_of[b.ids[p]] = b.rows.data() + p * dim;

        std::vector<int32_t> counts(b.bags(), -1), want_counts(b.bags()), argmax(b.bags() * dim);
        const BagPooling bags{mode, b.offsets.data(), b.bags(),
                              weighted ? b.weights.data() : nullptr, dim, counts.data(),
                              nullptr};
        std::vector<int32_t> idx(b.n), slot(b.n), pos(b.n);
        std::vector<float> weight(b.n);
        std::vector<int64_t> partial_bag(b.n), entry_begin(P + 1), partial_begin(P + 1);
        BagEntries entries{idx.data(), slot.data(), pos.data(), weight.data(), partial_bag.data()};
        cpu::list_bag_entries(bags, b.ids.data(), b.pad, inverse.data(), owner_slots.data(), P,
                              &entries, entry_begin.data(), partial_begin.data());
        // Each owner: its kept rows (its distinct ids' rows), its partial rows.
        std::vector<std::vector<float>> kept(P), partial(P);
        std::vector<std::vector<int32_t>> arg(P);
        std::vector<OwnerBlock> blocks(P);
        for (int d = 0; d < P; ++d) {
          for (int64_t u = owner_slots[d]; u < owner_slots[d + 1]; ++u)
            kept[d].insert(kept[d].end(), row_of[uniq[u]], row_of[uniq[u]] + dim);
          const int64_t partials = partial_begin[d + 1] - partial_begin[d];
          partial[d].assign(partials * dim, -7.f);
          arg[d].assign(partials * dim, -7);
          OwnerBlock& ob = blocks[d];
          ob.mode = mode;
          ob.dim = dim;
          ob.idx = idx.data() + entry_begin[d];
          ob.slot = slot.data() + entry_begin[d];
          ob.weight = weight.data() + entry_begin[d];
          ob.entries = entry_begin[d + 1] - entry_begin[d];
          ob.num_ids = owner_slots[d + 1] - owner_slots[d];
          ob.kept = kept[d].data();
          ob.partial = partial[d].data();
          ob.arg = arg[d].data();
          cpu::pool_partials(ob);
        }
        std::vector<float*> rows;
        std::vector<const int32_t*> args;
        for (int d = 0; d < P; ++d) rows.push_back(partial[d].data()), args.push_back(arg[d].data());
        std::vector<int32_t> winner(b.bags() * dim);
        RequesterPartials rp;
        rp.mode = mode;
        rp.dim = dim;
        rp.num_bags = b.bags();
        rp.counts = counts.data();
        rp.num_owners = P;
        rp.partial_begin = partial_begin.data();
        rp.entry_begin = entry_begin.data();
        rp.partial_bag = partial_bag.data();
        rp.pos = pos.data();
        rp.rows = rows.data();
        rp.args = args.data();
        rp.winner = winner.data();
        std::vector<float> got(b.bags() * dim, -7.f), want(b.bags() * dim, -7.f);
        cpu::combine_partials(rp, got.data());
        const BagPooling at_requester{mode, b.offsets.data(), b.bags(), bags.weights, dim,
                                      want_counts.data(), argmax.data()};
        cpu::pool_bags(at_requester, PositionRows{b.rows.data()}, b.ids.data(), b.pad,
                       want.data());
        ASSERT_EQ(counts, want_counts);
        for (size_t i = 0; i < got.size(); ++i) {
          if (mode == PoolMode::kMax)
            ASSERT_EQ(got[i], want[i]) << "element " << i;
          else
            ASSERT_NEAR(got[i], want[i], 1e-5 * (1 + std::fabs(want[i]) * 40)) << "element " << i;
        }

        // Backward.
        std::vector<float> grad(b.bags() * dim), grad_rows(b.n * dim);
        std::normal_distribution<float> normal;
        for (float& g : grad) g = normal(rng);
        cpu::split_bag_grads(rp, grad.data());
        cpu::unpool_bags(at_requester, grad.data(), b.n, grad_rows.data());
        for (int d = 0; d < P; ++d) {
          cpu::unpool_partials(blocks[d]);
          for (int64_t u = owner_slots[d]; u < owner_slots[d + 1]; ++u) {
            const int64_t id = uniq[u];
            if (id == b.pad) continue;  // the step drops the padding row
            // sum_order.hpp: the positions in order, chunk by chunk past
            // kChunkPositions (id 5 has hundreds), then the chunks in order.
            std::vector<int64_t> at;
            for (int64_t p = 0; p < b.offsets.back(); ++p)
              if (b.ids[p] == id) at.push_back(p);
            for (int64_t j = 0; j < dim; ++j) {
              float sum = 0.f;
              for (size_t c = 0; c < at.size(); c += kChunkPositions) {
                float chunk = grad_rows[at[c] * dim + j];
                for (size_t k = c + 1; k < std::min(at.size(), c + kChunkPositions); ++k)
                  chunk += grad_rows[at[k] * dim + j];
                sum = c == 0 ? chunk : sum + chunk;
              }
              ASSERT_EQ(kept[d][(u - owner_slots[d]) * dim + j], sum)
                  << "owner " << d << " id " << id << " column " << j << " of " << at.size()
                  << " positions";
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace embtrain
