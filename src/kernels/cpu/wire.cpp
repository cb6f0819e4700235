// Rows and gradients to and from the number format they travel in
// (comm_precision.hpp): what exchange_rows and exchange_grads do at their
// edges when a table's comm_precision is not fp32, and the owner's gather
// that writes its rows in that format straight away.
#include <cstring>

#include "kernels/cpu/clones.hpp"
#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cpu/prefetch.hpp"

namespace embtrain {
namespace cpu {

namespace {

// One loop per format (no branch in the loop body), cloned per vector
// width like the other element-wise kernels: the conversions are integer
// and IEEE operations, the same bits at every width.
template <uint16_t (*kTo)(float)>
EMBTRAIN_CPU_CLONES void pack(const float* __restrict__ src, int64_t n, float scale,
                              uint16_t* __restrict__ out) {
  for (int64_t i = 0; i < n; ++i) out[i] = kTo(src[i] * scale);
}

template <float (*kFrom)(uint16_t)>
EMBTRAIN_CPU_CLONES void unpack(const uint16_t* __restrict__ in, int64_t n, float scale,
                                float* __restrict__ dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = kFrom(in[i]) * scale;
}

// round_trip with scale 1 from one row to another (gather_rows_rounded's).
template <uint16_t (*kTo)(float), float (*kFrom)(uint16_t)>
EMBTRAIN_CPU_CLONES void round_copy(const float* __restrict__ src, int64_t n,
                                    float* __restrict__ dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = kFrom(kTo(src[i]));
}

template <uint16_t (*kTo)(float), float (*kFrom)(uint16_t)>
EMBTRAIN_CPU_CLONES void round_trip(float* __restrict__ data, int64_t n, float scale,
                                    float inverse) {
  for (int64_t i = 0; i < n; ++i) data[i] = kFrom(kTo(data[i] * scale)) * inverse;
}

// Rows by id straight to where they travel from: row i of `dim` floats,
// table[index[i] - row_offset], through `convert(src, dst_row i)`, on all
// threads, the rows ahead prefetched.
template <typename Convert>
void gather_converted(const float* table, int64_t dim, const int64_t* index, int64_t n,
                      int64_t row_offset, Convert convert) {
  auto row_of = [=](int64_t i) { return table + (index[i] - row_offset) * dim; };
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    if (i + kPrefetchDistance < n) prefetch_row(row_of(i + kPrefetchDistance), dim, false);
    convert(row_of(i), i);
  }
}

}  // namespace

void gather_rows_packed(const float* table, int64_t dim, const int64_t* index, int64_t n,
                        int64_t row_offset, CommPrecision p, void* wire) {
  if (n <= 0) return;
  auto* out = static_cast<uint16_t*>(wire);
  switch (p) {
    case CommPrecision::kFp32:
      gather_rows(table, dim, index, n, row_offset, static_cast<float*>(wire));
      break;
    case CommPrecision::kBf16:
      gather_converted(table, dim, index, n, row_offset, [=](const float* row, int64_t i) {
        pack<float_to_bf16>(row, dim, 1.f, out + i * dim);
      });
      break;
    case CommPrecision::kFp16:
      gather_converted(table, dim, index, n, row_offset, [=](const float* row, int64_t i) {
        pack<float_to_fp16>(row, dim, 1.f, out + i * dim);
      });
      break;
  }
}

void gather_rows_rounded(const float* table, int64_t dim, const int64_t* index, int64_t n,
                         int64_t row_offset, CommPrecision p, float* out) {
  if (n <= 0) return;
  switch (p) {
    case CommPrecision::kFp32: gather_rows(table, dim, index, n, row_offset, out); break;
    case CommPrecision::kBf16:
      gather_converted(table, dim, index, n, row_offset, [=](const float* row, int64_t i) {
        round_copy<float_to_bf16, bf16_to_float>(row, dim, out + i * dim);
      });
      break;
    case CommPrecision::kFp16:
      gather_converted(table, dim, index, n, row_offset, [=](const float* row, int64_t i) {
        round_copy<float_to_fp16, fp16_to_float>(row, dim, out + i * dim);
      });
      break;
  }
}

void pack_wire(const float* src, int64_t n, CommPrecision p, float scale, void* wire) {
  if (n <= 0) return;
  auto* out = static_cast<uint16_t*>(wire);
  switch (p) {
    case CommPrecision::kFp32:
      std::memcpy(wire, src, static_cast<size_t>(n) * sizeof(float));
      break;
    case CommPrecision::kBf16: pack<float_to_bf16>(src, n, scale, out); break;
    case CommPrecision::kFp16: pack<float_to_fp16>(src, n, scale, out); break;
  }
}

void unpack_wire(const void* wire, int64_t n, CommPrecision p, float scale, float* dst) {
  if (n <= 0) return;
  const auto* in = static_cast<const uint16_t*>(wire);
  switch (p) {
    case CommPrecision::kFp32:
      std::memcpy(dst, wire, static_cast<size_t>(n) * sizeof(float));
      break;
    case CommPrecision::kBf16: unpack<bf16_to_float>(in, n, scale, dst); break;
    case CommPrecision::kFp16: unpack<fp16_to_float>(in, n, scale, dst); break;
  }
}

void round_wire(float* data, int64_t n, CommPrecision p, float scale) {
  if (n <= 0) return;
  switch (p) {
    case CommPrecision::kFp32: break;
    case CommPrecision::kBf16:
      round_trip<float_to_bf16, bf16_to_float>(data, n, scale, 1.f / scale);
      break;
    case CommPrecision::kFp16:
      round_trip<float_to_fp16, fp16_to_float>(data, n, scale, 1.f / scale);
      break;
  }
}

}  // namespace cpu
}  // namespace embtrain
