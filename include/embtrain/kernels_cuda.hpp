// CUDA kernels for the local stages of a step. Same contracts as
// kernels_cpu.hpp, on device pointers (d_ prefix) and a stream; the per-row
// math is row_math.hpp, shared with the CPU. Declared only when the CUDA
// backend is built (EMBTRAIN_HAVE_CUDA).
#pragma once

#include <cstdint>
#include <string>

#include "embtrain/row_math.hpp"

namespace embtrain {
namespace cuda {

// Number of usable CUDA devices; 0 when there is no device or no driver
// (never throws, so callers can skip GPU work cleanly).
int device_count();
// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)"-style description of a device.
std::string device_description(int device);

// out[i] = table[index[i] - row_offset]: one warp per row, 16-byte loads
// when dim is a multiple of 4.
void gather_rows(const float* d_table, int64_t dim, const int64_t* d_index, int64_t n,
                 int64_t row_offset, float* d_out, void* stream);

// Optimizer update of rows d_rows[k] - row_offset with gradient d_grads[k];
// one warp per row.
void update_rows(OptimizerKind kind, const StepScalars& scalars, float* d_table, float* d_state,
                 int64_t dim, const int64_t* d_rows, const float* d_grads, int64_t n,
                 int64_t row_offset, void* stream);

}  // namespace cuda
}  // namespace embtrain
