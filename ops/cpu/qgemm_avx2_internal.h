/*
 * ops/cpu/qgemm_avx2_internal.h — the pieces of qgemm_avx2.c's int8 product
 * that sparse_avx2.c's sparse_qlinear uses unchanged (internal): the
 * activation widening and the four-way horizontal sum. sparse_qlinear runs
 * the dense AVX2 product on expanded weights and must give the same bits, so
 * these are one copy rather than two kept in step by hand. Left in their
 * files: the dot-product tiles, which read the weights differently
 * (unaligned loads and a zero-padded tail copy in qgemm_avx2.c; aligned
 * loads of an expanded, zero-padded chunk or shuffled codes in
 * sparse_avx2.c), the epilogues (a gather of the weight scales and a masked
 * bias load against scalar fills), and the dtype loads and stores, which
 * differ in their short-vector paths (see sparse_avx2.c).
 *
 * Included only by the AVX2 files (qgemm_avx2.c, sparse_avx2.c), which
 * CMake compiles with -mavx2 -mfma -mf16c: the intrinsics below need no
 * target attributes, and no other file may include this header. Both are
 * static inline and always_inline, as the files' own copies were.
 */
#ifndef LOWVRAM_CPU_QGEMM_AVX2_INTERNAL_H
#define LOWVRAM_CPU_QGEMM_AVX2_INTERNAL_H

#include <immintrin.h>
#include <stdint.h>

#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "qgemm_avx2_internal.h: only for files compiled with the AVX2 flags"
#endif

#define LV_INLINE static inline __attribute__((always_inline))

/* Sums of the eight lanes of each of a0..a3 -> [a0, a1, a2, a3]. */
LV_INLINE __m128i qg2_hsum4(__m256i a0, __m256i a1, __m256i a2, __m256i a3) {
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* 16 bytes as int16: activations back to their signed codes (xu ^ 0x80). */
LV_INLINE __m256i qg2_x16(const uint8_t *p) {
    return _mm256_cvtepi8_epi16(
        _mm_xor_si128(_mm_loadu_si128((const __m128i *)p), _mm_set1_epi8((char)0x80)));
}

/* A vector mask of the first n lanes (for maskload / gathers). */
LV_INLINE __m256i lv256_mask8(int64_t n) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 8 ? n : 8)), lane);
}

#endif /* LOWVRAM_CPU_QGEMM_AVX2_INTERNAL_H */
