/* kernels_avx512.h — helpers shared by the AVX-512 kernel files (internal;
 * included only by *_avx512.c, which are built with the AVX-512 flags). */
#ifndef MF_KERNELS_AVX512_H
#define MF_KERNELS_AVX512_H

#include "tensor/kernels.h"

#include <immintrin.h>

/* Kernels inlined into their callers, so that constant arguments (token
 * counts, flags) unroll and select at compile time. */
#define BLOCK_FN static inline __attribute__((always_inline))

/* Per 128-bit lane: [a0+a1, a2+a3, b0+b1, b2+b3] (AVX2's hadd, 4 lanes). */
static inline __m512i hadd32(__m512i a, __m512i b) {
    __m512 fa = _mm512_castsi512_ps(a), fb = _mm512_castsi512_ps(b);
    __m512i e = _mm512_castps_si512(_mm512_shuffle_ps(fa, fb, _MM_SHUFFLE(2, 0, 2, 0)));
    __m512i o = _mm512_castps_si512(_mm512_shuffle_ps(fa, fb, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_epi32(e, o);
}

#endif
