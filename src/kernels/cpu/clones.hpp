// Kernels whose inner loops are element-wise float arithmetic are compiled
// for AVX-512, AVX2 and the baseline, and the CPU they run on picks one at
// load time. Element-wise IEEE operations give the same bits at every width
// (no FMA contraction: CMake passes -ffp-contract=off), so results do not
// depend on the clone. Internal to src/kernels/cpu.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define EMBTRAIN_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define EMBTRAIN_CPU_CLONES
#endif

// For helpers of cloned kernels: inlined, they are compiled for each clone's
// width (called, they would run the baseline's).
#if defined(__GNUC__)
#define EMBTRAIN_ALWAYS_INLINE __attribute__((always_inline))
#else
#define EMBTRAIN_ALWAYS_INLINE
#endif
