// Checking macro for MPI calls: a failure throws SystemError with the file,
// line, failing expression and MPI's error string.
#pragma once

#include <mpi.h>

#include "embtrain/errors.hpp"

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
