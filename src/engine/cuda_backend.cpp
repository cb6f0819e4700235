#include "engine/cuda_backend.hpp"

#include <cstring>

#include "embtrain/errors.hpp"

namespace embtrain {

CudaBackend::CudaBackend(std::vector<EmbeddingTable>* shards, std::unique_ptr<cuda::Stream> stream,
                         std::unique_ptr<Communicator> data, std::string description)
    : shards_(shards),
      owned_stream_(std::move(stream)),
      data_(std::move(data)),
      stream_(owned_stream_->get()),
      description_(std::move(description)),
      tables_(shards->size()) {
  device_stale_ = true;
  refresh_device();
}

void CudaBackend::synchronize() { cuda::synchronize(stream_); }

void CudaBackend::refresh_device() {
  if (!device_stale_) return;
  for (int t = 0; t < num_tables(); ++t) {
    const EmbeddingTable& shard = host(t);
    const int64_t rows = shard.num_rows(), width = shard.state_width();
    upload(tables_[t].weights.reserve(rows * shard.dim()), shard.weights().data(),
           rows * shard.dim());
    if (width > 0) upload(tables_[t].state.reserve(rows * width), shard.state().data(), rows * width);
  }
  synchronize();
  device_stale_ = false;
}

void CudaBackend::refresh_host() {
  if (!host_stale_) return;
  for (int t = 0; t < num_tables(); ++t) {
    EmbeddingTable& shard = host(t);
    const int64_t rows = shard.num_rows(), width = shard.state_width();
    cuda::copy_to_host(shard.weights().data(), weights(t),
                       static_cast<size_t>(rows * shard.dim()) * sizeof(float), stream_);
    if (width > 0)
      cuda::copy_to_host(shard.state().data(), tables_[t].state.data(),
                         static_cast<size_t>(rows * width) * sizeof(float), stream_);
  }
  synchronize();
  host_stale_ = false;
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
