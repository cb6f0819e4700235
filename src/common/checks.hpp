// One checking macro per foreign API: a failed call throws SystemError with
// the file, line, failing expression and the library's own message (the
// project's own errors are embtrain::Error; see errors.hpp). The macros name
// the APIs' types and functions but include none of their headers: a file
// that checks CUDA, NCCL or MPI calls includes that library's header itself
// (cuda_runtime.h, nccl.h, mpi.h), so a CPU-only file can include this one.
#pragma once

#include <string>

#include "embtrain/errors.hpp"

// The CUDA runtime: cudaError_t and cudaGetErrorString.
#define EMBTRAIN_CUDA_CHECK(expr)                                                 \
  do {                                                                            \
    const cudaError_t embtrain_err_ = (expr);                                     \
    if (embtrain_err_ != cudaSuccess)                                             \
      throw ::embtrain::SystemError(::embtrain::detail::concat(                   \
          __FILE__, ":", __LINE__, ": ", #expr, " failed: ",                      \
          cudaGetErrorString(embtrain_err_)));                                    \
  } while (0)

// NCCL: its error string and, when NCCL has one, its more detailed last error.
#define EMBTRAIN_NCCL_CHECK(expr)                                                         \
  do {                                                                                    \
    const ncclResult_t embtrain_nccl_rc_ = (expr);                                        \
    if (embtrain_nccl_rc_ != ncclSuccess) {                                               \
      const char* embtrain_last_ = ncclGetLastError(nullptr);                             \
      const std::string embtrain_detail_ = embtrain_last_ && *embtrain_last_              \
                                               ? std::string(" (") + embtrain_last_ + ")" \
                                               : std::string();                           \
      throw ::embtrain::SystemError(::embtrain::detail::concat(                           \
          __FILE__, ":", __LINE__, ": ", #expr,                                           \
          " failed: ", ncclGetErrorString(embtrain_nccl_rc_), embtrain_detail_));         \
    }                                                                                     \
  } while (0)

// MPI: the return code's error string.
#define EMBTRAIN_MPI_CHECK(expr)                                                  \
  do {                                                                            \
    const int embtrain_rc_ = (expr);                                              \
    if (embtrain_rc_ != MPI_SUCCESS) {                                            \
      char embtrain_msg_[MPI_MAX_ERROR_STRING];                                   \
      int embtrain_len_ = 0;                                                      \
      MPI_Error_string(embtrain_rc_, embtrain_msg_, &embtrain_len_);              \
      throw ::embtrain::SystemError(::embtrain::detail::concat(                   \
          __FILE__, ":", __LINE__, ": ", #expr, " failed: ", embtrain_msg_));     \
    }                                                                             \
  } while (0)
