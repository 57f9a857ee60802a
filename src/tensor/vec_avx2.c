/* vec_avx2.c — AVX2+FMA versions of the attention kernels in vec.h, bit-
 * identical to the scalar ones: the 16 lanes are two 8-wide registers. */
#include "tensor/vec.h"

#include <immintrin.h>

/* mf_tree16 of the 16 lanes held as lo (0..7) and hi (8..15). */
static inline float tree16(__m256 lo, __m256 hi) {
    __m128 s8lo = _mm_add_ps(_mm256_castps256_ps128(lo), _mm256_castps256_ps128(hi));
    __m128 s8hi = _mm_add_ps(_mm256_extractf128_ps(lo, 1), _mm256_extractf128_ps(hi, 1));
    __m128 s4 = _mm_add_ps(s8lo, s8hi);                  /* lanes 0..3 */
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));    /* 0+2, 1+3 */
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

float mf_vec_dot16_avx2(int64_t n, const float *a, const float *b) {
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i += 16) {
        lo = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), lo);
        hi = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), hi);
    }
    float s = n16 ? tree16(lo, hi) : 0.0f;
    for (int64_t i = n16; i < n; i++) s = __builtin_fmaf(a[i], b[i], s);
    return s;
}

/* Four rows at a time (independent chains), each as mf_vec_dot16_avx2. */
void mf_vec_dot16_rows_avx2(int64_t n, const float *q, const float *rows, int64_t stride, int64_t n_rows,
                            float *out) {
    int64_t j = 0, n16 = n & ~(int64_t)15;
    for (; j + 4 <= n_rows; j += 4) {
        __m256 lo[4], hi[4];
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) lo[k] = hi[k] = _mm256_setzero_ps();
        for (int64_t i = 0; i < n16; i += 16) {
            const __m256 q0 = _mm256_loadu_ps(q + i), q1 = _mm256_loadu_ps(q + i + 8);
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                const float *r = rows + (j + k) * stride + i;
                lo[k] = _mm256_fmadd_ps(q0, _mm256_loadu_ps(r), lo[k]);
                hi[k] = _mm256_fmadd_ps(q1, _mm256_loadu_ps(r + 8), hi[k]);
            }
        }
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            float s = n16 ? tree16(lo[k], hi[k]) : 0.0f;
            for (int64_t i = n16; i < n; i++) s = __builtin_fmaf(q[i], rows[(j + k) * stride + i], s);
            out[j + k] = s;
        }
    }
    for (; j < n_rows; j++) out[j] = mf_vec_dot16_avx2(n, q, rows + j * stride);
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

/* Four lanes at a time (positions 16g + l .. 16g + l + 3: adjacent rows),
 * 16 floats of each in registers over all groups g: eight independent FMA
 * chains, each element's chain the same as mf_vec_fma_lanes16_ref's. */
void mf_vec_fma_lanes16_avx2(int64_t n, const float *v, int64_t stride, const float *p, int64_t n_pos,
                             float *lanes) {
    int64_t n16 = n & ~(int64_t)15;
    for (int l0 = 0; l0 < 16; l0 += 4) {
        for (int64_t i = 0; i < n16; i += 16) {
            __m256 a[4][2];
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) a[k][0] = a[k][1] = _mm256_setzero_ps();
            int64_t g = 0;
            for (; 16 * g + l0 + 3 < n_pos; g++) {
                const int64_t j = 16 * g + l0;
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                    const float *vj = v + (j + k) * stride + i;
                    const __m256 pj = _mm256_set1_ps(p[j + k]);
                    a[k][0] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj), a[k][0]);
                    a[k][1] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 8), a[k][1]);
                }
            }
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                const int64_t j = 16 * g + l0 + k; /* the last group, partly filled */
                if (j < n_pos) {
                    const __m256 pj = _mm256_set1_ps(p[j]);
                    a[k][0] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + j * stride + i), a[k][0]);
                    a[k][1] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + j * stride + i + 8), a[k][1]);
                }
                _mm256_storeu_ps(lanes + (l0 + k) * n + i, a[k][0]);
                _mm256_storeu_ps(lanes + (l0 + k) * n + i + 8, a[k][1]);
            }
        }
        for (int64_t i = n16; i < n; i++)
            for (int k = 0; k < 4; k++) {
                float acc = 0.0f;
                for (int64_t j = l0 + k; j < n_pos; j += 16) acc = __builtin_fmaf(p[j], v[j * stride + i], acc);
                lanes[(l0 + k) * n + i] = acc;
            }
    }
}
