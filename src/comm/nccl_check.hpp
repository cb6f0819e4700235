// Checking macro for NCCL calls: a failure throws SystemError with the file,
// line, failing expression, NCCL's error string and, when NCCL has one, its
// more detailed last-error message.
#pragma once

#include <nccl.h>

#include <string>

#include "embtrain/errors.hpp"

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
