/* vec.h — f32 vector kernels of attention, in llama.cpp's summation order.
 *
 * llama.cpp's CPU backend multiplies f32 matrices whose rows are a multiple
 * of 16 long with 16-lane FMA accumulators (its AVX-512 tinyBLAS path): lane
 * l sums the terms i = l, l+16, l+32, ... in order, then the lanes are added
 * as a tree (l + l+8, then + l+4, + l+2, + l+1). Attention scores q·k and the
 * attention output Σ p_j v_j are computed in that order here, so that values
 * that are later rounded to f16 or int8 round the same way as in llama.cpp. */
#ifndef MF_TENSOR_VEC_H
#define MF_TENSOR_VEC_H

#include <stdint.h>

/* dot(a, b): 16-lane FMA over the first n & ~15 terms, tree-reduced; the
 * remaining n % 16 terms are then added one by one. */
float mf_vec_dot16(int64_t n, const float *a, const float *b);
/* y[i] = fma(a, x[i], y[i]) for i < n */
void mf_vec_fma(int64_t n, float *y, const float *x, float a);
/* out[i] = tree-sum over l < 16 of lanes[l * n + i] */
void mf_vec_reduce16(int64_t n, const float *lanes, float *out);

/* out[j] = mf_vec_dot16(n, q, rows + j * stride) for j < n_rows: the
 * attention scores of one query against a run of cached keys. */
void mf_vec_dot16_rows(int64_t n, const float *q, const float *rows, int64_t stride, int64_t n_rows,
                       float *out);
/* The 16-lane weighted sum of value rows: lanes[l * n + i] = the chain
 * acc = fma(p[j], v[j * stride + i], acc) from 0 over the positions j < n_pos
 * with j % 16 == l, in increasing j (what mf_vec_fma into lane j % 16 gives
 * position by position); mf_vec_reduce16 then finishes the sum. */
void mf_vec_fma_lanes16(int64_t n, const float *v, int64_t stride, const float *p, int64_t n_pos,
                        float *lanes);

/* Reference (scalar, fmaf) and AVX2 versions; the dispatching ones above
 * pick AVX2 when the CPU has it and MF_FORCE_REF is unset. */
float mf_vec_dot16_ref(int64_t n, const float *a, const float *b);
void mf_vec_fma_ref(int64_t n, float *y, const float *x, float a);
float mf_vec_dot16_avx2(int64_t n, const float *a, const float *b);
void mf_vec_fma_avx2(int64_t n, float *y, const float *x, float a);
void mf_vec_reduce16_ref(int64_t n, const float *lanes, float *out);
void mf_vec_reduce16_avx2(int64_t n, const float *lanes, float *out);
void mf_vec_dot16_rows_avx2(int64_t n, const float *q, const float *rows, int64_t stride, int64_t n_rows,
                            float *out);
void mf_vec_fma_lanes16_ref(int64_t n, const float *v, int64_t stride, const float *p, int64_t n_pos,
                            float *lanes);
void mf_vec_fma_lanes16_avx2(int64_t n, const float *v, int64_t stride, const float *p, int64_t n_pos,
                             float *lanes);

/* Tree-sum of 16 lanes in llama.cpp's order (shared by the kernels). */
static inline float mf_tree16(const float *v) {
    float s8[8], s4[4];
    for (int i = 0; i < 8; i++) s8[i] = v[i] + v[i + 8];
    for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

#endif
