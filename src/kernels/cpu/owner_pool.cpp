// Bags pooled at the owners (pool_at = owner): the requester's entries, the
// owner's partial rows and their gradients, the requester's combination.
// Each output value is written by one thread, its terms added in one fixed
// order (entry order at the owner, owner order at the requester), so the
// results do not depend on the thread count; the CUDA kernels
// (cuda/owner_pool.cu) add in the same orders, so they give the same bits.
#include <algorithm>
#include <vector>

#include "kernels/cpu/cpu_kernels.hpp"

namespace embtrain {
namespace cpu {

void list_bag_entries(const BagPooling& bags, const int64_t* ids, int64_t skip_id,
                      const int32_t* inverse, const int64_t* owner_slots, int owners,
                      BagEntries* out, int64_t* entry_begin, int64_t* partial_begin) {
  const int64_t* slots_end = owner_slots + owners + 1;
  // The owner of position p: the bucket of its distinct key.
  auto owner_of = [&](int64_t p) {
    return static_cast<int>(std::upper_bound(owner_slots, slots_end, inverse[p]) - owner_slots) - 1;
  };
  // Counts per owner first, so that each owner's entries start in place.
  std::vector<int64_t> entries(static_cast<size_t>(owners), 0), partials(entries);
  std::vector<int64_t> last_bag(static_cast<size_t>(owners), -1);
  for (int64_t b = 0; b < bags.num_bags; ++b) {
    int32_t count = 0;
    for (int64_t p = bags.offsets[b]; p < bags.offsets[b + 1]; ++p) {
      if (ids[p] == skip_id) continue;
      ++count;
      const int d = owner_of(p);
      ++entries[d];
      if (last_bag[d] != b) {
        last_bag[d] = b;
        ++partials[d];
      }
    }
    bags.counts[b] = count;
  }
  entry_begin[0] = partial_begin[0] = 0;
  for (int d = 0; d < owners; ++d) {
    entry_begin[d + 1] = entry_begin[d] + entries[d];
    partial_begin[d + 1] = partial_begin[d] + partials[d];
  }
  std::vector<int64_t> e(entry_begin, entry_begin + owners), k(partial_begin, partial_begin + owners);
  std::fill(last_bag.begin(), last_bag.end(), -1);
  for (int64_t b = 0; b < bags.num_bags; ++b)
    for (int64_t p = bags.offsets[b]; p < bags.offsets[b + 1]; ++p) {
      if (ids[p] == skip_id) continue;
      const int d = owner_of(p);
      if (last_bag[d] != b) {
        last_bag[d] = b;
        out->partial_bag[k[d]++] = b;
      }
      const int64_t at = e[d]++;
      out->idx[at] = static_cast<int32_t>(inverse[p] - owner_slots[d]);
      out->slot[at] = static_cast<int32_t>(k[d] - 1 - partial_begin[d]);
      out->pos[at] = static_cast<int32_t>(p);
      out->weight[at] = bags.weights ? bags.weights[p] : 1.f;
    }
}

void pool_partials(const OwnerBlock& block) {
  const int64_t dim = block.dim;
  if (block.entries == 0) return;
  // Each partial row's entries are one run (slots ascend in entry order).
  const int64_t rows = block.slot[block.entries - 1] + 1;
  std::vector<int64_t> first(static_cast<size_t>(rows) + 1, block.entries);
  for (int64_t e = block.entries - 1; e >= 0; --e) first[block.slot[e]] = e;
  const bool max = block.mode == PoolMode::kMax;
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < rows; ++k) {
    float* acc = block.partial + k * dim;
    int32_t* arg = max ? block.arg + k * dim : nullptr;
    std::fill(acc, acc + dim, 0.f);
    for (int64_t e = first[k]; e < first[k + 1]; ++e) {
      const float* x = block.kept + block.idx[e] * dim;
      if (max) {
        for (int64_t j = 0; j < dim; ++j)
          pool_column(PoolMode::kMax, x[j], 1.f, static_cast<int32_t>(e), e == first[k], acc + j,
                      arg + j);
      } else {
        const float w = block.weight ? block.weight[e] : 1.f;
        for (int64_t j = 0; j < dim; ++j) acc[j] += x[j] * w;  // pool_column's sum, vectorised
      }
    }
  }
}

// Each entry's gradient row (its partial row's gradient times its weight;
// max: only the columns it won; without weights the partial row itself, read
// in place), then the segment sum over the entries' ids,
// an id's entries in entry order (sum_order.hpp: chunked past
// kChunkPositions), which cuda::unpool_partials runs too: the same bits.
void unpool_partials(const OwnerBlock& block) {
  const int64_t dim = block.dim, n = block.entries;
  std::fill(block.kept, block.kept + block.num_ids * dim, 0.f);  // ids without entries
  if (n == 0) return;
  // Kept between calls, so a step does not fault in fresh pages.
  thread_local std::vector<float> terms;
  thread_local std::vector<int64_t> keys, dst, src_offsets;
  thread_local UniqueWorkspace ws;
  keys.resize(static_cast<size_t>(n));
  // The calling thread's arrays (each OpenMP thread has its own thread_locals).
  int64_t* const ids = keys.data();
  const bool max = block.mode == PoolMode::kMax;
  // Unweighted sums (and mean, a sum here) give every entry its partial
  // row's gradient as it is: the segment sum reads that row in place.
  // Otherwise each entry gets its own row (times its weight; max: only
  // the columns it won).
  const bool shared = !max && !block.weight;
  SegmentLayout layout;
  const float* src = block.partial;
  if (shared) {
    src_offsets.resize(static_cast<size_t>(n));
    for (int64_t e = 0; e < n; ++e) {
      src_offsets[e] = block.slot[e] * dim;
      ids[e] = block.idx[e];
    }
    layout.src_offsets = src_offsets.data();
  } else {
    terms.resize(static_cast<size_t>(n * dim));
    float* const rows = terms.data();
#pragma omp parallel for schedule(static) if (n * dim > 4096)
    for (int64_t e = 0; e < n; ++e) {
      const float* g = block.partial + block.slot[e] * dim;
      float* y = rows + e * dim;
      if (max) {
        const int32_t* arg = block.arg + block.slot[e] * dim;
        for (int64_t j = 0; j < dim; ++j) y[j] = arg[j] == e ? g[j] : 0.f;
      } else {
        for (int64_t j = 0; j < dim; ++j) y[j] = g[j] * block.weight[e];
      }
      ids[e] = block.idx[e];
    }
    src = rows;
  }
  const UniqueIndex index = unique_ids(ids, n, block.num_ids, &ws);
  dst.resize(static_cast<size_t>(index.num_unique));
  for (int64_t u = 0; u < index.num_unique; ++u) dst[u] = index.unique[u] * dim;
  layout.dst_offsets = dst.data();
  segment_sum(src, dim, index, layout, /*scale_by_count=*/false, block.kept);
}

void combine_partials(const RequesterPartials& p, float* out) {
  const int64_t dim = p.dim;
  std::fill(out, out + p.num_bags * dim, 0.f);
  std::vector<int32_t> win_pos;
  if (p.mode == PoolMode::kMax) {
    std::fill(p.winner, p.winner + p.num_bags * dim, -1);
    win_pos.assign(static_cast<size_t>(p.num_bags * dim), 0);
  }
  // Owner by owner: each bag's row gets its owners' partials in rank order.
  for (int d = 0; d < p.num_owners; ++d) {
    const int64_t begin = p.partial_begin[d], n = p.partial_begin[d + 1] - begin;
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < n; ++k) {  // an owner's partial rows have distinct bags
      const int64_t b = p.partial_bag[begin + k];
      const float* x = p.rows[d] + k * dim;
      float* acc = out + b * dim;
      if (p.mode != PoolMode::kMax) {
        for (int64_t j = 0; j < dim; ++j) acc[j] += x[j];
        continue;
      }
      // The greatest value; of equal ones, the first position (PyTorch's).
      const int32_t* arg = p.args[d] + k * dim;
      int32_t* winner = p.winner + b * dim;
      int32_t* wpos = win_pos.data() + b * dim;
      for (int64_t j = 0; j < dim; ++j) {
        const int32_t pos = p.pos[p.entry_begin[d] + arg[j]];
        if (winner[j] < 0 || x[j] > acc[j] || (x[j] == acc[j] && pos < wpos[j])) {
          acc[j] = x[j];
          winner[j] = d;
          wpos[j] = pos;
        }
      }
    }
  }
  if (p.mode == PoolMode::kMean) {
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < p.num_bags; ++b)
      for (int64_t j = 0; j < dim; ++j)
        out[b * dim + j] = finish_column(PoolMode::kMean, out[b * dim + j], p.counts[b]);
  }
}

void split_bag_grads(const RequesterPartials& p, const float* grad) {
  const int64_t dim = p.dim;
  for (int d = 0; d < p.num_owners; ++d) {
    const int64_t begin = p.partial_begin[d], n = p.partial_begin[d + 1] - begin;
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < n; ++k) {
      const int64_t b = p.partial_bag[begin + k];
      const float* g = grad + b * dim;
      float* y = p.rows[d] + k * dim;
      switch (p.mode) {
        case PoolMode::kSum: std::copy(g, g + dim, y); break;
        case PoolMode::kMean: {
          const auto c = static_cast<float>(p.counts[b]);  // > 0: the bag has a partial row
          for (int64_t j = 0; j < dim; ++j) y[j] = g[j] / c;
          break;
        }
        case PoolMode::kMax: {
          const int32_t* winner = p.winner + b * dim;
          for (int64_t j = 0; j < dim; ++j) y[j] = winner[j] == d ? g[j] : 0.f;
          break;
        }
      }
    }
  }
}

}  // namespace cpu
}  // namespace embtrain
