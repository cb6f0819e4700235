// EMBTRAIN_HD marks a function that both the CPU and the CUDA backend call:
// __host__ __device__ under nvcc, a plain inline function elsewhere.
#pragma once

#if defined(__CUDACC__)
#define EMBTRAIN_HD __host__ __device__ __forceinline__
#else
#define EMBTRAIN_HD inline
#endif
