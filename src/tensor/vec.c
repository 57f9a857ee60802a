/* vec.c — the scalar attention kernels (the spec) and their dispatch. */
#include "tensor/vec.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

float mf_vec_dot16_ref(int64_t n, const float *a, const float *b) {
    float lanes[16] = {0};
    int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i += 16)
        for (int l = 0; l < 16; l++) lanes[l] = fmaf(a[i + l], b[i + l], lanes[l]);
    float s = n16 ? mf_tree16(lanes) : 0.0f;
    for (int64_t i = n16; i < n; i++) s = fmaf(a[i], b[i], s);
    return s;
}

void mf_vec_fma_ref(int64_t n, float *y, const float *x, float a) {
    for (int64_t i = 0; i < n; i++) y[i] = fmaf(a, x[i], y[i]);
}

void mf_vec_reduce16_ref(int64_t n, const float *lanes, float *out) {
    for (int64_t i = 0; i < n; i++) {
        float v[16];
        for (int l = 0; l < 16; l++) v[l] = lanes[l * n + i];
        out[i] = mf_tree16(v);
    }
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int use_avx2; /* set once, then only read */

static void pick(void) {
#if defined(__x86_64__)
    const char *f = getenv("MF_FORCE_REF");
    use_avx2 = !(f && *f && *f != '0') && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma");
#endif
}

float mf_vec_dot16(int64_t n, const float *a, const float *b) {
    pthread_once(&once, pick);
    return use_avx2 ? mf_vec_dot16_avx2(n, a, b) : mf_vec_dot16_ref(n, a, b);
}

void mf_vec_fma(int64_t n, float *y, const float *x, float a) {
    pthread_once(&once, pick);
    if (use_avx2) mf_vec_fma_avx2(n, y, x, a);
    else mf_vec_fma_ref(n, y, x, a);
}

void mf_vec_reduce16(int64_t n, const float *lanes, float *out) {
    pthread_once(&once, pick);
    if (use_avx2) mf_vec_reduce16_avx2(n, lanes, out);
    else mf_vec_reduce16_ref(n, lanes, out);
}

void mf_vec_dot16_rows(int64_t n, const float *q, const float *rows, int64_t stride, int64_t n_rows,
                       float *out) {
    pthread_once(&once, pick);
    if (use_avx2) {
        mf_vec_dot16_rows_avx2(n, q, rows, stride, n_rows, out);
        return;
    }
    for (int64_t j = 0; j < n_rows; j++) out[j] = mf_vec_dot16_ref(n, q, rows + j * stride);
}

void mf_vec_fma_lanes16_ref(int64_t n, const float *v, int64_t stride, const float *p, int64_t n_pos,
                            float *lanes) {
    memset(lanes, 0, sizeof(float) * 16 * (size_t)n);
    for (int64_t j = 0; j < n_pos; j++) mf_vec_fma_ref(n, lanes + (j % 16) * n, v + j * stride, p[j]);
}

void mf_vec_fma_lanes16(int64_t n, const float *v, int64_t stride, const float *p, int64_t n_pos,
                        float *lanes) {
    pthread_once(&once, pick);
    if (use_avx2) mf_vec_fma_lanes16_avx2(n, v, stride, p, n_pos, lanes);
    else mf_vec_fma_lanes16_ref(n, v, stride, p, n_pos, lanes);
}
