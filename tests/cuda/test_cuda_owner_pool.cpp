// The CUDA kernels of bags pooled at the owners (owner_pool.cu) against the
// CPU ones (cpu/owner_pool.cpp) on random bags (tests/unit/bag_cases.hpp)
// split over 1 to 5 simulated owners, stage by stage, compared with ==:
// both build each value in one order, so a GPU pools at the owners to the
// CPU's bits. On the emulated device unpool_partials runs the transcribed
// segment_sum (the GPU's loops), so there it checks that the CPU adds in the
// GPU's order. Without a GPU every test skips; EMBTRAIN_TEST_SEED replays
// the printed seed.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <vector>

#include "../unit/bag_cases.hpp"
#include "../unit/test_util.hpp"
#include "cuda_test_util.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cuda/cuda_kernels.hpp"

namespace embtrain {
namespace {

using embtrain_test::BagBatch;
using embtrain_test::DeviceArray;
using embtrain_test::download;
using embtrain_test::random_bags;
using embtrain_test::seed_trace;
using embtrain_test::test_seed;

template <typename T>
std::vector<T> slice(const std::vector<T>& v, int64_t begin, int64_t end) {
  return std::vector<T>(v.begin() + begin, v.begin() + end);
}

TEST(CudaOwnerPool, EveryStageEqualsTheCpu) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  cuda::OwnerPoolWorkspace ws;  // one for every call, as the backend's
  for (PoolMode mode : {PoolMode::kSum, PoolMode::kMean, PoolMode::kMax}) {
    for (int64_t dim : {1, 3, 4, 40}) {
      for (int trial = 0; trial < 3; ++trial) {
        const int P = 1 + static_cast<int>(rng() % 5);
        const bool weighted = mode == PoolMode::kSum && trial != 1;
        const bool max = mode == PoolMode::kMax;
        const BagBatch b = random_bags(dim, weighted, rng);
        const int64_t B = b.bags(), n = b.n;
        SCOPED_TRACE(testing::Message() << pool_mode_name(mode) << " dim " << dim << " owners "
                                        << P << " bags " << B << " n " << n);
        // The batch's distinct ids, owner-major (owner id % P), and the inverse.
        auto key = [&](int64_t id) { return (id % P) * 1000 + id / P; };
        std::vector<int64_t> uniq(b.ids);
        std::sort(uniq.begin(), uniq.end(), [&](int64_t x, int64_t y) { return key(x) < key(y); });
        uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
        std::vector<int32_t> inverse;
        for (int64_t id : b.ids)
          inverse.push_back(
              static_cast<int32_t>(std::find(uniq.begin(), uniq.end(), id) - uniq.begin()));
        std::vector<int64_t> owner_slots;
        for (int d = 0; d <= P; ++d)
          owner_slots.push_back(
              std::count_if(uniq.begin(), uniq.end(), [&](int64_t id) { return id % P < d; }));
        std::map<int64_t, const float*> row_of;
        for (int64_t p = 0; p < n; ++p) row_of[b.ids[p]] = b.rows.data() + p * dim;

        // list_bag_entries.
        std::vector<int32_t> counts(B), idx(n), slot(n), pos(n);
        std::vector<float> weight(n);
        std::vector<int64_t> partial_bag(n), entry_begin(P + 1), partial_begin(P + 1);
        const BagPooling bags{mode, b.offsets.data(), B, weighted ? b.weights.data() : nullptr,
                              dim, counts.data(), nullptr};
        BagEntries entries{idx.data(), slot.data(), pos.data(), weight.data(), partial_bag.data()};
        cpu::list_bag_entries(bags, b.ids.data(), b.pad, inverse.data(), owner_slots.data(), P,
                              &entries, entry_begin.data(), partial_begin.data());

        DeviceArray<int64_t> d_offsets(b.offsets), d_ids(b.ids);
        DeviceArray<float> d_weights(weighted ? b.weights : std::vector<float>(1));
        DeviceArray<int32_t> d_inverse(inverse), d_counts(B + 1, -7), d_idx(n + 1, -7),
            d_slot(n + 1, -7), d_pos(n + 1, -7);
        DeviceArray<float> d_weight(n + 1, -7.f);
        DeviceArray<int64_t> d_partial_bag(n + 1, -7);
        std::vector<int64_t> got_entry_begin(P + 1, -7), got_partial_begin(P + 1, -7);
        const BagPooling d_bags{mode, d_offsets.get(), B, weighted ? d_weights.get() : nullptr,
                                dim, d_counts.get(), nullptr};
        BagEntries d_entries{d_idx.get(), d_slot.get(), d_pos.get(), d_weight.get(),
                             d_partial_bag.get()};
        cuda::list_bag_entries(d_bags, d_ids.get(), b.pad, d_inverse.get(), owner_slots.data(), P,
                               &d_entries, got_entry_begin.data(), got_partial_begin.data(), &ws,
                               nullptr);
        ASSERT_EQ(got_entry_begin, entry_begin);
        ASSERT_EQ(got_partial_begin, partial_begin);
        const int64_t E = entry_begin[P], K = partial_begin[P];
        ASSERT_EQ(download(d_counts.get(), B), counts);
        ASSERT_EQ(download(d_idx.get(), E), slice(idx, 0, E));
        ASSERT_EQ(download(d_slot.get(), E), slice(slot, 0, E));
        ASSERT_EQ(download(d_pos.get(), E), slice(pos, 0, E));
        ASSERT_EQ(download(d_weight.get(), E), slice(weight, 0, E));
        ASSERT_EQ(download(d_partial_bag.get(), K), slice(partial_bag, 0, K));

        // pool_partials at each owner, from its kept rows.
        std::vector<std::vector<float>> kept(P), partial(P);
        std::vector<std::vector<int32_t>> arg(P);
        std::vector<OwnerBlock> blocks(P), d_blocks(P);
        std::vector<std::unique_ptr<DeviceArray<float>>> d_kept, d_partial;
        std::vector<std::unique_ptr<DeviceArray<int32_t>>> d_arg;
        for (int d = 0; d < P; ++d) {
          for (int64_t u = owner_slots[d]; u < owner_slots[d + 1]; ++u)
            kept[d].insert(kept[d].end(), row_of[uniq[u]], row_of[uniq[u]] + dim);
          const int64_t rows = partial_begin[d + 1] - partial_begin[d];
          partial[d].assign(rows * dim, -7.f);
          arg[d].assign(rows * dim, -7);
          d_kept.push_back(std::make_unique<DeviceArray<float>>(kept[d]));
          d_partial.push_back(std::make_unique<DeviceArray<float>>(rows * dim + 1, -7.f));
          d_arg.push_back(std::make_unique<DeviceArray<int32_t>>(rows * dim + 1, -7));
          for (OwnerBlock* ob : {&blocks[d], &d_blocks[d]}) {
            const bool gpu = ob == &d_blocks[d];
            ob->mode = mode;
            ob->dim = dim;
            ob->idx = (gpu ? d_idx.get() : idx.data()) + entry_begin[d];
            ob->slot = (gpu ? d_slot.get() : slot.data()) + entry_begin[d];
            ob->weight = (gpu ? d_weight.get() : weight.data()) + entry_begin[d];
            ob->entries = entry_begin[d + 1] - entry_begin[d];
            ob->rows = rows;
            ob->num_ids = owner_slots[d + 1] - owner_slots[d];
            ob->kept = gpu ? d_kept[d]->get() : kept[d].data();
            ob->partial = gpu ? d_partial[d]->get() : partial[d].data();
            ob->arg = max ? (gpu ? d_arg[d]->get() : arg[d].data()) : nullptr;
          }
          cpu::pool_partials(blocks[d]);
          cuda::pool_partials(d_blocks[d], &ws, nullptr);
          ASSERT_EQ(download(d_partial[d]->get(), rows * dim), partial[d]) << "owner " << d;
          if (max) {
            ASSERT_EQ(download(d_arg[d]->get(), rows * dim), arg[d]) << "owner " << d;
          }
        }

        // combine_partials at the requester.
        std::vector<float*> rows, d_rows;
        std::vector<const int32_t*> args, d_args;
        for (int d = 0; d < P; ++d) {
          rows.push_back(partial[d].data());
          d_rows.push_back(d_partial[d]->get());
          args.push_back(max ? arg[d].data() : nullptr);
          d_args.push_back(max ? d_arg[d]->get() : nullptr);
        }
        std::vector<int32_t> winner(B * dim, -7);
        DeviceArray<int32_t> d_winner(B * dim + 1, -7);
        RequesterPartials rp, d_rp;
        for (RequesterPartials* r : {&rp, &d_rp}) {
          const bool gpu = r == &d_rp;
          r->mode = mode;
          r->dim = dim;
          r->num_bags = B;
          r->counts = gpu ? d_counts.get() : counts.data();
          r->num_owners = P;
          r->partial_begin = partial_begin.data();
          r->entry_begin = entry_begin.data();
          r->partial_bag = gpu ? d_partial_bag.get() : partial_bag.data();
          r->pos = gpu ? d_pos.get() : pos.data();
          r->rows = gpu ? d_rows.data() : rows.data();
          r->args = gpu ? d_args.data() : args.data();
          r->winner = max ? (gpu ? d_winner.get() : winner.data()) : nullptr;
        }
        std::vector<float> out(B * dim, -7.f);
        DeviceArray<float> d_out(B * dim + 1, -7.f);
        cpu::combine_partials(rp, out.data());
        cuda::combine_partials(d_rp, d_out.get(), &ws, nullptr);
        ASSERT_EQ(download(d_out.get(), B * dim), out);
        if (max) {
          ASSERT_EQ(download(d_winner.get(), B * dim), winner);
        }

        // Backward: split_bag_grads, then unpool_partials at each owner.
        std::vector<float> grad(B * dim);
        std::normal_distribution<float> normal;
        for (float& g : grad) g = normal(rng);
        DeviceArray<float> d_grad(grad);
        cpu::split_bag_grads(rp, grad.data());
        cuda::split_bag_grads(d_rp, d_grad.get(), nullptr);
        for (int d = 0; d < P; ++d) {
          ASSERT_EQ(download(d_partial[d]->get(), static_cast<int64_t>(partial[d].size())),
                    partial[d])
              << "owner " << d << "'s gradient rows";
          cpu::unpool_partials(blocks[d]);
          cuda::unpool_partials(d_blocks[d], &ws, nullptr);
          ASSERT_EQ(download(d_kept[d]->get(), static_cast<int64_t>(kept[d].size())), kept[d])
              << "owner " << d << "'s kept gradients";
        }
      }
    }
  }
}

}  // namespace
}  // namespace embtrain
