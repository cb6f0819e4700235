#include "engine/cuda_backend.hpp"

#include <algorithm>
#include <cstring>

#include "embtrain/errors.hpp"
#include "embtrain/sharded_embedding.hpp"  // transfer_chunk_bytes

namespace embtrain {

CudaBackend::CudaBackend(std::vector<EmbeddingTable>* shards, std::unique_ptr<cuda::Stream> stream,
                         std::unique_ptr<Communicator> data, std::string description)
    : shards_(shards),
      owned_stream_(std::move(stream)),
      data_(std::move(data)),
      stream_(owned_stream_->get()),
      description_(std::move(description)),
      tables_(shards->size()) {
  for (int t = 0; t < num_tables(); ++t) place(t);
  synchronize();
  // Only now that every table is on the device: no host copy is kept.
  for (int t = 0; t < num_tables(); ++t) host(t).release_rows();
}

void CudaBackend::place(int t) {
  const EmbeddingTable& shard = host(t);
  const int64_t rows = shard.num_rows(), dim = shard.dim(), width = shard.state_width();
  float* d_weights = tables_[t].weights.reserve(rows * dim);
  float* d_state = width > 0 ? tables_[t].state.reserve(rows * width) : nullptr;
  if (shard.placed_on_host()) {  // given rows (from_pretrained), or stepped on the CPU
    upload(d_weights, shard.weights().data(), rows * dim);
    if (width > 0) upload(d_state, shard.state().data(), rows * width);
    return;
  }
  const FreshRows& fresh = shard.fresh();
  if (fresh.zeros) {
    cuda::memset_device(d_weights, 0, static_cast<size_t>(rows * dim) * sizeof(float), stream_);
  } else if (rows > 0) {
    const ShardPlan& plan = shard.plan();
    cuda::draw_normal_rows(fresh.seed, plan.global_row(shard.rank(), 0), plan.row_stride(), rows,
                           dim, fresh.scale, d_weights, stream_);
    const int64_t pad = shard.spec().padding_row();
    if (pad >= 0 && shard.owns(pad))
      cuda::memset_device(d_weights + shard.plan().local_row(pad) * dim, 0,
                          static_cast<size_t>(dim) * sizeof(float), stream_);
  }
  if (width > 0) cuda::fill_floats(d_state, rows * width, shard.initial_state(), stream_);
}

void CudaBackend::synchronize() { cuda::synchronize(stream_); }

void CudaBackend::read_rows(int t, TablePart p, int64_t first, int64_t count, float* out) {
  const int64_t w = width(t, p);
  const auto* src = reinterpret_cast<const char*>(part(t, p) + first * w);
  auto* dst = reinterpret_cast<char*>(out);
  const size_t bytes = static_cast<size_t>(count * w) * sizeof(float);
  const size_t chunk = transfer_chunk_bytes();
  for (size_t at = 0; at < bytes; at += chunk)
    download_bytes(dst + at, src + at, std::min(chunk, bytes - at));
}

void CudaBackend::write_rows(int t, TablePart p, int64_t first, int64_t count, const float* in) {
  const int64_t w = width(t, p);
  auto* dst = reinterpret_cast<char*>(part(t, p) + first * w);
  const auto* src = reinterpret_cast<const char*>(in);
  const size_t bytes = static_cast<size_t>(count * w) * sizeof(float);
  const size_t chunk = transfer_chunk_bytes();
  for (size_t at = 0; at < bytes; at += chunk) {
    const size_t n = std::min(chunk, bytes - at);
    pinned_.reserve(n);
    std::memcpy(pinned_.data(), src + at, n);
    cuda::copy_to_device(dst + at, pinned_.data(), n, stream_);
    synchronize();  // the pinned buffer is reused by the next chunk
  }
}

IdSpan CudaBackend::stage_ids(int t, const IdsView& ids) {
  Table& tab = tables_[t];
  const int64_t n = ids.numel();
  int64_t* d = tab.ids.reserve(n);
  if (ids.dtype == DType::kInt64) {
    upload(d, static_cast<const int64_t*>(ids.data), n);
  } else {  // int32 ids cross as they are and widen on the device
    int32_t* narrow = tab.ids32.reserve(n);
    upload(narrow, static_cast<const int32_t*>(ids.data), n);
    cuda::widen_ids(narrow, n, d, stream_);
  }
  return IdSpan{d, n};
}

float* CudaBackend::stage_output(int t, float*, int64_t floats) {
  return tables_[t].out.reserve(floats);
}

void CudaBackend::finish_output(int, float* out, const float* d_out, int64_t floats) {
  cuda::copy_to_host(out, d_out, static_cast<size_t>(floats) * sizeof(float), stream_);
}

const float* CudaBackend::stage_grad(int t, const float* grad, int64_t floats) {
  float* d = tables_[t].grad.reserve(floats);
  upload(d, grad, floats);
  return d;
}

std::pair<int64_t, int64_t> CudaBackend::find_bad_id(const IdSpan& ids, int64_t bound) {
  int64_t* d_bad = bad_.reserve(2);
  cuda::find_bad_id(ids.data, ids.n, bound, d_bad, stream_);
  int64_t bad[2];
  download(bad, d_bad, 2);
  return {bad[0], bad[1]};
}

void CudaBackend::download_bytes(void* host, const void* d_src, size_t bytes) {
  if (bytes == 0) return;
  pinned_.reserve(bytes);
  cuda::copy_to_host(pinned_.data(), d_src, bytes, stream_);
  synchronize();
  std::memcpy(host, pinned_.data(), bytes);
}

void CudaBackend::block_offsets(const std::vector<int64_t>& starts,
                                const std::vector<int64_t>& base, int64_t dim, int64_t n,
                                int64_t* d_out) {
  const int64_t blocks = static_cast<int64_t>(base.size());
  int64_t* d_small = small_.reserve(2 * blocks + 1);
  upload(d_small, starts.data(), blocks + 1);
  upload(d_small + blocks + 1, base.data(), blocks);
  cuda::block_offsets(d_small, d_small + blocks + 1, blocks, dim, n, d_out, stream_);
}

void CudaBackend::renorm_rows(int t, const int64_t* d_rows, int64_t n) {
  const TableSpec& s = spec(t);
  if (!s.max_norm) return;
  cuda::renorm_rows(weights(t), s.dim, d_rows, n, /*row_offset=*/0,
                    static_cast<float>(*s.max_norm), static_cast<float>(s.norm_type), stream_);
}

void CudaBackend::update(int t, const StepScalars& scalars, const Grads& grads) {
  if (!grads.index || grads.index->num_unique == 0) return;
  EMBTRAIN_ASSERT(!grads.wire);  // kUpdatesFromWire
  SegmentLayout layout;
  layout.src_offsets = grads.src_offsets;
  layout.weights = grads.weights;
  const TableSpec& s = spec(t);
  cuda::segment_sum_update(s.optimizer.kind, scalars, weights(t),
                           host(t).state_width() > 0 ? state(t) : nullptr, s.dim,
                           /*row_offset=*/0, grads.src, *grads.index, layout,
                           grads.scale_by_count, grads.skip_row, &segment_ws_, stream_);
}

}  // namespace embtrain
