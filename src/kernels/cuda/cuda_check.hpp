// Checking macro for the CUDA runtime: a failure throws SystemError with
// the file, line, failing expression and CUDA's own message.
#pragma once

#include <cuda_runtime.h>

#include "embtrain/errors.hpp"

#define EMBTRAIN_CUDA_CHECK(expr)                                                 \
  do {                                                                            \
    const cudaError_t embtrain_err_ = (expr);                                     \
    if (embtrain_err_ != cudaSuccess)                                             \
      throw ::embtrain::SystemError(::embtrain::detail::concat(                   \
          __FILE__, ":", __LINE__, ": ", #expr, " failed: ",                      \
          cudaGetErrorString(embtrain_err_)));                                    \
  } while (0)
