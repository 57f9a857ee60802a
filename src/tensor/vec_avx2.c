/* vec_avx2.c — AVX2+FMA versions of the attention kernels in vec.h, bit-
 * identical to the scalar ones: the 16 lanes are two 8-wide registers. */
#include "tensor/vec.h"

#include <immintrin.h>

float mf_vec_dot16_avx2(int64_t n, const float *a, const float *b) {
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i += 16) {
        lo = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), lo);
        hi = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), hi);
    }
    float s = 0.0f;
    if (n16) {
        __m128 s8lo = _mm_add_ps(_mm256_castps256_ps128(lo), _mm256_castps256_ps128(hi));
        __m128 s8hi = _mm_add_ps(_mm256_extractf128_ps(lo, 1), _mm256_extractf128_ps(hi, 1));
        __m128 s4 = _mm_add_ps(s8lo, s8hi);                  /* lanes 0..3 */
        __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));    /* 0+2, 1+3 */
        s = _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
    }
    for (int64_t i = n16; i < n; i++) s = __builtin_fmaf(a[i], b[i], s);
    return s;
}

void mf_vec_fma_avx2(int64_t n, float *y, const float *x, float a) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] = __builtin_fmaf(a, x[i], y[i]);
}

/* mf_tree16 of every column at once: eight outputs per register, the same
 * additions in the same order per output. */
void mf_vec_reduce16_avx2(int64_t n, const float *lanes, float *out) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 s8[8], s4[4];
        for (int l = 0; l < 8; l++)
            s8[l] = _mm256_add_ps(_mm256_loadu_ps(lanes + l * n + i), _mm256_loadu_ps(lanes + (l + 8) * n + i));
        for (int l = 0; l < 4; l++) s4[l] = _mm256_add_ps(s8[l], s8[l + 4]);
        _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_add_ps(s4[0], s4[2]), _mm256_add_ps(s4[1], s4[3])));
    }
    for (; i < n; i++) {
        float v[16];
        for (int l = 0; l < 16; l++) v[l] = lanes[l * n + i];
        out[i] = mf_tree16(v);
    }
}
