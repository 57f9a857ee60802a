/*
 * ops/cpu/qgemm_avx2_grad.h — the AVX2 register tiles of the gradient to the
 * input (internal), shared by qgemm_avx2.c (qlinear_grad_input on the int8
 * weight) and sparse_avx2.c (both sparse gradients, on 16-column strips it
 * expands from the compressed rows). One copy, so that the sparse gradients
 * give qlinear_grad_input's bits by construction: the contract's fmaf chain
 * over n in order (lowvram/qgemm.h), the scaled products s = gy * wscale
 * rounded first.
 *
 * Included by those two files only, after their lv256_load_f32 /
 * lv256_store_f32 (their dtype loads and stores, which differ in short-vector
 * paths but give the same bytes for every call made here, see sparse_avx2.c)
 * and qgemm_avx2_internal.h (LV_INLINE, lv256_mask8); compiled with their
 * -mavx2 -mfma -mf16c -ffp-contract=off.
 */
#ifndef LOWVRAM_CPU_QGEMM_AVX2_GRAD_H
#define LOWVRAM_CPU_QGEMM_AVX2_GRAD_H

#include <immintrin.h>
#include <string.h>

#include "lowvram/convert.h"

#define GR2_MT 6   /* gy rows per register tile: 6 x 2 ymm accumulators */
#define GR2_MB 48  /* rows per block: a k strip of w (N x 16 bytes) is reused by them */
#define GR2_NC 256 /* n per chunk of precomputed products */

/* s[i * GR2_NC + j] = gy[m + i, n0 + j] * wscale[n0 + j, g] for i < mt,
 * j < nc: the contract's rounded product, eight at a time, so that the
 * tile's loop over n is fused multiply-adds with broadcast loads.
 * wscale == NULL (float weights): s = gy, no product. */
static void gr2_products(const void *gy, lv_dtype gdt, int64_t ldg, int64_t m, int mt,
                         const float *wscale, int64_t G, int64_t g, int64_t n0, int nc,
                         float *s) {
    const size_t gsz = (size_t)lv_dtype_size(gdt);
    const __m256i gidx =
        _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)G));
    for (int j = 0; j < nc; j += 8) {
        const int n = nc - j < 8 ? nc - j : 8;
        const __m256i mk = lv256_mask8(n);
        const __m256 ws = !wscale  ? _mm256_setzero_ps()
                          : G == 1 ? _mm256_maskload_ps(wscale + n0 + j, mk)
                                   : _mm256_mask_i32gather_ps(_mm256_setzero_ps(),
                                                              wscale + (n0 + j) * G + g, gidx,
                                                              _mm256_castsi256_ps(mk), 4);
        for (int i = 0; i < mt; i++) {
            const char *row = (const char *)gy + (size_t)((m + i) * ldg) * gsz;
            const __m256 gv = lv256_load_f32(row, gdt, n0 + j, n);
            _mm256_storeu_ps(s + i * GR2_NC + j, wscale ? _mm256_mul_ps(gv, ws) : gv);
        }
    }
}

/* Rows m + i (i < MT) of the strip kv .. kv + 16 over n in [n0, n0 + nc),
 * its weights read from wp (row n0's first lane, rows ldw elements apart):
 * int8 codes (WF = 0), of which wn < 16 are readable at the end of a dense
 * weight row (read through a zero-padded copy), or float32 (WF = 1: expanded
 * strips, always 16 wide, wscale NULL). acc = fma(gy[m+i, n] * wscale[n, g],
 * w[n, k], acc) in order of n — the contract's fmaf chain, eight k at a
 * time; the 16 k of the strip lie in group g. acc comes from and goes back
 * to park (row stride 16 floats) between chunks of n; after the last chunk
 * it is scaled by act_scale and lanes [lo, hi) are stored into gx. MT and
 * WF are constants. */
LV_INLINE void gr2_tile(const void *gy, lv_dtype gdt, int64_t ldg, int64_t m, const int MT,
                        const int WF, const void *wp, int64_t ldw, int wn, const float *wscale,
                        int64_t G, int64_t g, int64_t N, int64_t n0, int nc, int64_t kv, int lo,
                        int hi, float *park, const float *act_scale, void *gx, lv_dtype xdt,
                        int64_t ldgx) {
    float s[GR2_MT * GR2_NC];
    gr2_products(gy, gdt, ldg, m, MT, wscale, G, g, n0, nc, s);
    __m256 acc[GR2_MT][2];
#pragma GCC unroll 6
    for (int i = 0; i < MT; i++)
#pragma GCC unroll 2
        for (int v = 0; v < 2; v++)
            acc[i][v] = n0 == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(park + i * 16 + 8 * v);
    const int8_t *w8 = (const int8_t *)wp;
    const float *w32 = (const float *)wp;
    for (int j = 0; j < nc; j++, w8 += ldw, w32 += ldw) {
        __m256 w0, w1;
        if (WF) {
            w0 = _mm256_loadu_ps(w32);
            w1 = _mm256_loadu_ps(w32 + 8);
        } else {
            __m128i wb;
            if (wn == 16) {
                wb = _mm_loadu_si128((const __m128i *)w8);
            } else {
                int8_t t[16] = {0};
                memcpy(t, w8, (size_t)wn);
                wb = _mm_loadu_si128((const __m128i *)t);
            }
            w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(wb));
            w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(wb, 8)));
        }
#pragma GCC unroll 6
        for (int i = 0; i < MT; i++) {
            const __m256 sv = _mm256_broadcast_ss(s + i * GR2_NC + j);
            acc[i][0] = _mm256_fmadd_ps(sv, w0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(sv, w1, acc[i][1]);
        }
    }
    if (n0 + nc < N) {
#pragma GCC unroll 6
        for (int i = 0; i < MT; i++)
#pragma GCC unroll 2
            for (int v = 0; v < 2; v++) _mm256_storeu_ps(park + i * 16 + 8 * v, acc[i][v]);
        return;
    }
    const size_t xsz = (size_t)lv_dtype_size(xdt);
#pragma GCC unroll 6
    for (int i = 0; i < MT; i++) {
        void *xr = (char *)gx + (size_t)((m + i) * ldgx) * xsz;
        float r[16];
        _mm256_storeu_ps(r, acc[i][0]);
        _mm256_storeu_ps(r + 8, acc[i][1]);
        if (lo == 0 && hi == 16) {
#pragma GCC unroll 2
            for (int v = 0; v < 2; v++) {
                __m256 o = _mm256_loadu_ps(r + 8 * v);
                if (act_scale) o = _mm256_mul_ps(o, _mm256_loadu_ps(act_scale + kv + 8 * v));
                lv256_store_f32(xr, xdt, kv + 8 * v, o, 8);
            }
        } else { /* a partial strip at either end of [k0, k1): element by element */
            for (int l = lo; l < hi; l++) {
                float o = r[l];
                if (act_scale) o = o * act_scale[kv + l];
                lv_store_f32(xr, xdt, kv + l, o);
            }
        }
    }
}

/* One function per tile height and weight type: inlined together, the
 * heights make GCC spill the accumulators (as in qgemm_avx512.c). The int8
 * ones (gr2_tile_MT) are made here; sparse_avx2.c makes the float ones with
 * GR2_TILE_FN(gr2_ftile, MT, 1). */
typedef void (*gr2_tile_fn)(const void *gy, lv_dtype gdt, int64_t ldg, int64_t m,
                            const void *wp, int64_t ldw, int wn, const float *wscale, int64_t G,
                            int64_t g, int64_t N, int64_t n0, int nc, int64_t kv, int lo, int hi,
                            float *park, const float *act_scale, void *gx, lv_dtype xdt,
                            int64_t ldgx);
#define GR2_TILE_FN(name, MT, WF)                                                             \
    static __attribute__((noinline)) void name##_##MT(                                        \
        const void *gy, lv_dtype gdt, int64_t ldg, int64_t m, const void *wp, int64_t ldw,    \
        int wn, const float *wscale, int64_t G, int64_t g, int64_t N, int64_t n0, int nc,     \
        int64_t kv, int lo, int hi, float *park, const float *act_scale, void *gx,            \
        lv_dtype xdt, int64_t ldgx) {                                                         \
        gr2_tile(gy, gdt, ldg, m, MT, WF, wp, ldw, wn, wscale, G, g, N, n0, nc, kv, lo, hi,   \
                 park, act_scale, gx, xdt, ldgx);                                             \
    }
GR2_TILE_FN(gr2_tile, 1, 0)
GR2_TILE_FN(gr2_tile, 2, 0)
GR2_TILE_FN(gr2_tile, 3, 0)
GR2_TILE_FN(gr2_tile, 4, 0)
GR2_TILE_FN(gr2_tile, 5, 0)
GR2_TILE_FN(gr2_tile, 6, 0)

static const gr2_tile_fn gr2_tiles[GR2_MT + 1] = {NULL,       gr2_tile_1, gr2_tile_2, gr2_tile_3,
                                                  gr2_tile_4, gr2_tile_5, gr2_tile_6};

#endif /* LOWVRAM_CPU_QGEMM_AVX2_GRAD_H */
