/*
 * ops/cpu/qgemm_avx512_internal.h — the helpers of qgemm_avx512.c's int8
 * product that sparse_avx512.c's sparse_qlinear uses unchanged (internal):
 * the float vector <-> dtype conversions of the C boundary, the lane masks,
 * the transpose-and-add reduction of the register tiles, the per-tile
 * correction into the block's int32 tile, the streaming path's activation
 * copy and the float epilogue. sparse_qlinear is the dense product with a
 * different weight source, and must give the same bits as
 * lv_qgemm_int8_rows on the decompressed weight, so these are one copy
 * rather than two kept in step by hand. Left in their files: the register
 * tiles, which read the weights differently (plain and masked loads in
 * qgemm_avx512.c; expansion, or aligned loads of an expanded copy, in
 * sparse_avx512.c) and come in different shapes, and the combination of
 * the groups, which goes through tacc with whole-vector loads and stores in
 * one and masked ones in the other.
 *
 * Included only by the AVX-512 files (qgemm_avx512.c, sparse_avx512.c),
 * which CMake compiles with -mavx512f/bw/vl/dq -mavx512vnni (sparse_avx512.c
 * also -mavx512vbmi2, which nothing here needs): the intrinsics below need no
 * target attributes, and no other file may include this header. Everything
 * is static inline, always_inline where the files' own copies were, so the
 * tiles compile as before (only qg_block / sq_block, which inline
 * qg_epilogue, allocate registers differently: once per block, not measurable).
 */
#ifndef LOWVRAM_CPU_QGEMM_AVX512_INTERNAL_H
#define LOWVRAM_CPU_QGEMM_AVX512_INTERNAL_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "lowvram/common.h"

#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || \
    !defined(__AVX512DQ__) || !defined(__AVX512VNNI__)
#error "qgemm_avx512_internal.h: only for files compiled with the AVX-512 flags"
#endif

#define LV_INLINE static inline __attribute__((always_inline))

/* ---- float vectors <-> the C boundary's dtypes (common.h's rules) -------- */

/* Lanes of mask m of x[i .. i + 16) as float32 (exact); other lanes 0. */
LV_INLINE __m512 lv512_load_f32(const void *row, lv_dtype dt, int64_t i, __mmask16 m) {
    switch (dt) {
    case LV_BF16: {
        const __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + i);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case LV_F16:
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)row + i));
    default: return _mm512_maskz_loadu_ps(m, (const float *)row + i);
    }
}

/* Stores the lanes of mask m into row[i .. i + 16) in dtype dt, rounded to
 * nearest even with convert.h's NaNs (bf16 0x7fc0, f16 0x7e00). */
LV_INLINE void lv512_store_f32(void *row, lv_dtype dt, int64_t i, __m512 v, __mmask16 m) {
    switch (dt) {
    case LV_BF16: {
        /* convert.h's integer rounding: u + 0x7fff + ((u >> 16) & 1), mod 2^32 */
        const __m512i u = _mm512_castps_si512(v);
        const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
        __m512i r = _mm512_srli_epi32(
            _mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
        r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q),
                                  _mm512_set1_epi32(0x7fc0));
        _mm256_mask_storeu_epi16((uint16_t *)row + i, m, _mm512_cvtepi32_epi16(r));
        break;
    }
    case LV_F16: {
        /* vcvtps2ph rounds like convert.h (RNE, subnormals, overflow to inf)
         * but keeps part of a NaN's payload; convert.h gives 0x7e00 */
        __m256i h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        h = _mm256_mask_mov_epi16(h, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q),
                                  _mm256_set1_epi16(0x7e00));
        _mm256_mask_storeu_epi16((uint16_t *)row + i, m, h);
        break;
    }
    default: _mm512_mask_storeu_ps((float *)row + i, m, v); break;
    }
}

/* Mask of the first n lanes (0 <= n; n >= 16 gives all). */
LV_INLINE __mmask16 lv512_mask16(int64_t n) {
    return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u);
}

LV_INLINE __mmask64 lv512_mask64(int64_t n) {
    return n >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1u);
}

/* ---- the register tiles' reduction --------------------------------------- */

/* Folding steps of a transpose-and-add reduction (128-bit chunks written
 * [c0 c1 c2 c3]). fold2: [a0+a2, a1+a3, b0+b2, b1+b3]. */
LV_INLINE __m512i qg_fold2(__m512i a, __m512i b) {
    return _mm512_add_epi32(_mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                            _mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
}
/* Two fold2 results -> one chunk per input vector: [a, b, c, d]. */
LV_INLINE __m512i qg_fold4(__m512i ab, __m512i cd) {
    return _mm512_add_epi32(_mm512_shuffle_i64x2(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i64x2(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
}
/* Within each chunk: [x0+x2, y0+y2, x1+x3, y1+y3]. */
LV_INLINE __m512i qg_fold8(__m512i x, __m512i y) {
    return _mm512_add_epi32(_mm512_unpacklo_epi32(x, y), _mm512_unpackhi_epi32(x, y));
}
LV_INLINE __m512i qg_fold16(__m512i s, __m512i t) {
    return _mm512_add_epi32(_mm512_unpacklo_epi64(s, t), _mm512_unpackhi_epi64(s, t));
}

/* Lane j of the result is the sum (mod 2^32) of the sixteen lanes of a[j],
 * for j < n; lanes j >= n are 0. n is a constant after inlining, so the folds
 * of missing vectors disappear. After the folds lane 4c + r holds vector
 * 4r + c; one permutation puts vector j in lane j. */
LV_INLINE __m512i qg_hsum16(const __m512i *a, const int n) {
    const __m512i z = _mm512_setzero_si512();
    __m512i v[16];
#pragma GCC unroll 16
    for (int j = 0; j < 16; j++) v[j] = j < n ? a[j] : z;
    const __m512i f0 = qg_fold4(qg_fold2(v[0], v[1]), qg_fold2(v[2], v[3]));
    const __m512i f1 = n > 4 ? qg_fold4(qg_fold2(v[4], v[5]), qg_fold2(v[6], v[7])) : z;
    const __m512i s = qg_fold8(f0, f1);
    __m512i t = z;
    if (n > 8) {
        const __m512i f2 = qg_fold4(qg_fold2(v[8], v[9]), qg_fold2(v[10], v[11]));
        const __m512i f3 =
            n > 12 ? qg_fold4(qg_fold2(v[12], v[13]), qg_fold2(v[14], v[15])) : z;
        t = qg_fold8(f2, f3);
    }
    const __m512i idx =
        _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    return _mm512_permutexvar_epi32(idx, qg_fold16(s, t));
}

/* ---- from tile sums to the block's int32 tile ----------------------------- */

/* One tile's sums into the block's int32 tile (row stride ld): iacc[i][j]
 * (+)= out[i * NR + j] - 128 * (cs[j] or rs[i]) for i < mr, j < nr — the
 * correction by the column sums of the weights (blocked path, cs) or the row
 * sums of the codes (streaming path, rs = NULL there); vector lanes wrap
 * around mod 2^32. */
static inline void qg_sums_into(const int32_t *out, int NR, int mr, int nr, const int32_t *cs,
                                const int32_t *rs, int first, uint32_t *iacc, int ld) {
    const __mmask16 mj = (__mmask16)((1u << nr) - 1u);
    const __m512i c = cs ? _mm512_slli_epi32(_mm512_maskz_loadu_epi32(mj, cs), 7)
                         : _mm512_setzero_si512();
    for (int i = 0; i < mr; i++) {
        uint32_t *row = iacc + i * ld;
        __m512i v = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(mj, out + i * NR),
                                     cs ? c : _mm512_set1_epi32((int32_t)((uint32_t)rs[i] << 7)));
        if (!first) v = _mm512_add_epi32(v, _mm512_maskz_loadu_epi32(mj, row));
        _mm512_mask_storeu_epi32(row, mj, v);
    }
}

/* The streaming path's copy of rows [0, mbn) of x, bytes [kb, kb + len), as
 * signed codes (xu ^ 0x80) zero-padded to whole vectors (row stride ldq, no
 * multiple of 4 KiB, so that the rows do not share an L1 set), and each
 * row's sum of codes (vpdpbusd of a vector of ones by the codes). */
static inline void qg_stream_copy(const uint8_t *x, int64_t ldx, int mbn, int64_t kb,
                                  int64_t len, uint8_t *xq, int64_t ldq, int32_t *rs) {
    const __m512i ones = _mm512_set1_epi8(1), flip = _mm512_set1_epi8((char)0x80);
    for (int i = 0; i < mbn; i++) {
        const uint8_t *src = x + i * ldx + kb;
        __m512i acc = _mm512_setzero_si512();
        for (int64_t k = 0; k < len; k += 64) {
            const __mmask64 mk = lv512_mask64(len - k);
            const __m512i q = _mm512_maskz_mov_epi8(
                mk, _mm512_xor_si512(_mm512_maskz_loadu_epi8(mk, src + k), flip));
            _mm512_store_si512(xq + i * ldq + k, q);
            acc = _mm512_dpbusd_epi32(acc, ones, q);
        }
        rs[i] = _mm512_reduce_add_epi32(acc);
    }
}

/* ---- the float epilogue ---------------------------------------------------- */

/* y[mb0 + i, nb0 + j] = t * xscale[mb0 + i] (+ bias[nb0 + j]) for i < mbn,
 * j < nbn, stored in y's dtype (row stride ldy), in the contract's order:
 * t = (float)iacc * wscale[n] when G == 1, else the group sums already in
 * tacc. iacc and tacc are the block's tiles, row stride ld. */
LV_INLINE void qg_epilogue(const uint32_t *iacc, const float *tacc, int ld, int64_t G,
                           const float *wscale, const float *xscale, const float *bias,
                           void *y, lv_dtype ydt, int64_t ldy, int64_t mb0, int mbn,
                           int64_t nb0, int nbn) {
    const size_t esz = (size_t)lv_dtype_size(ydt);
    for (int i = 0; i < mbn; i++) {
        const int64_t m = mb0 + i;
        const __m512 xs = _mm512_set1_ps(xscale[m]);
        void *yr = (char *)y + (size_t)(m * ldy) * esz;
        for (int jn = 0; jn < nbn; jn += 16) {
            const __mmask16 mk = lv512_mask16(nbn - jn);
            const int64_t n = nb0 + jn;
            __m512 t;
            if (G == 1)
                t = _mm512_mul_ps(
                    _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(mk, iacc + i * ld + jn)),
                    _mm512_maskz_loadu_ps(mk, wscale + n));
            else
                t = _mm512_maskz_loadu_ps(mk, tacc + i * ld + jn);
            __m512 v = _mm512_mul_ps(t, xs);
            if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, bias + n));
            lv512_store_f32(yr, ydt, n, v, mk);
        }
    }
}

/* ---- gradient to the input: the register tiles ------------------------- */

#define GR_MT 6   /* gy rows per register tile: 6 x 4 zmm accumulators */
#define GR_MB 48  /* rows per block: a k strip of w (N x 64 bytes) is reused by them */
#define GR_NC 256 /* n per chunk of precomputed products */

/* s[i * GR_NC + j] = gy[m + i, n0 + j] * wscale[n0 + j, g] for i < mt,
 * j < nc: the contract's rounded product, sixteen at a time, so that the
 * tile's loop over n is fused multiply-adds with broadcast operands.
 * wscale == NULL (float weights): s = gy, no product. */
static void gr_products(const void *gy, lv_dtype gdt, int64_t ldg, int64_t m, int mt,
                        const float *wscale, int64_t G, int64_t g, int64_t n0, int nc,
                        float *s) {
    const size_t gsz = (size_t)lv_dtype_size(gdt);
    const __m512i gidx =
        _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                           _mm512_set1_epi32((int)G));
    for (int j = 0; j < nc; j += 16) {
        const __mmask16 mk = lv512_mask16(nc - j);
        const __m512 ws = !wscale  ? _mm512_setzero_ps()
                          : G == 1 ? _mm512_maskz_loadu_ps(mk, wscale + n0 + j)
                                   : _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mk, gidx,
                                                              wscale + (n0 + j) * G + g, 4);
        for (int i = 0; i < mt; i++) {
            const char *row = (const char *)gy + (size_t)((m + i) * ldg) * gsz;
            const __m512 gv = lv512_load_f32(row, gdt, n0 + j, mk);
            _mm512_storeu_ps(s + i * GR_NC + j, wscale ? _mm512_mul_ps(gv, ws) : gv);
        }
    }
}

/* Rows m + i (i < MT) of the strip kv .. kv + 64 (lanes of mk) over n in
 * [n0, n0 + nc), the strip's weights read from wp (row n0's lane 0, rows ldw
 * elements apart): int8 codes (WF = 0: the weight itself in qgemm_avx512.c,
 * a strip expanded from the compressed weight in sparse_avx512.c) or float32
 * (WF = 1: sparse_linear's strips, wscale NULL). acc = fma(gy[m+i, n] *
 * wscale[n, g], w[n, k], acc) in order of n — the contract's fmaf chain,
 * sixteen k at a time; the 64 k of the strip lie in group g. acc comes from
 * and goes back to park (row stride 64 floats) between chunks of n; after
 * the last chunk (n0 + nc == N) it is scaled by act_scale and stored into
 * gx. MT and WF are constants at every call. */
LV_INLINE void gr_tile(const void *gy, lv_dtype gdt, int64_t ldg, int64_t m, const int MT,
                       const int WF, const void *wp, int64_t ldw, const float *wscale,
                       int64_t G, int64_t g, int64_t N, int64_t n0, int nc, int64_t kv,
                       __mmask64 mk, float *park, const float *act_scale, void *gx,
                       lv_dtype xdt, int64_t ldgx) {
    float s[GR_MT * GR_NC];
    gr_products(gy, gdt, ldg, m, MT, wscale, G, g, n0, nc, s);
    __m512 acc[GR_MT][4];
#pragma GCC unroll 6
    for (int i = 0; i < MT; i++)
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++)
            acc[i][v] = n0 == 0 ? _mm512_setzero_ps() : _mm512_loadu_ps(park + i * 64 + 16 * v);
    const int8_t *w8 = (const int8_t *)wp;
    const float *w32 = (const float *)wp;
    for (int j = 0; j < nc; j++, w8 += ldw, w32 += ldw) {
        __m512 wf[4];
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++)
            wf[v] = WF ? _mm512_maskz_loadu_ps((__mmask16)(mk >> (16 * v)), w32 + 16 * v)
                       : _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                             _mm_maskz_loadu_epi8((__mmask16)(mk >> (16 * v)), w8 + 16 * v)));
#pragma GCC unroll 6
        for (int i = 0; i < MT; i++) {
            const __m512 sv = _mm512_set1_ps(s[i * GR_NC + j]);
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) acc[i][v] = _mm512_fmadd_ps(sv, wf[v], acc[i][v]);
        }
    }
    if (n0 + nc < N) {
#pragma GCC unroll 6
        for (int i = 0; i < MT; i++)
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) _mm512_storeu_ps(park + i * 64 + 16 * v, acc[i][v]);
        return;
    }
    const size_t xsz = (size_t)lv_dtype_size(xdt);
#pragma GCC unroll 6
    for (int i = 0; i < MT; i++) {
        void *xr = (char *)gx + (size_t)((m + i) * ldgx) * xsz;
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) {
            const __mmask16 m16 = (__mmask16)(mk >> (16 * v));
            if (!m16) continue;
            __m512 r = acc[i][v];
            if (act_scale)
                r = _mm512_mul_ps(r, _mm512_maskz_loadu_ps(m16, act_scale + kv + 16 * v));
            lv512_store_f32(xr, xdt, kv + 16 * v, r, m16);
        }
    }
}

/* One function per tile height and weight type (see QG_TILE_FN): gr_tile_MT
 * for int8 weights, here; sparse_avx512.c makes the float ones with
 * GR_TILE_FN(name, MT, 1). */
typedef void (*gr_tile_fn)(const void *gy, lv_dtype gdt, int64_t ldg, int64_t m,
                           const void *wp, int64_t ldw, const float *wscale, int64_t G,
                           int64_t g, int64_t N, int64_t n0, int nc, int64_t kv, __mmask64 mk,
                           float *park, const float *act_scale, void *gx, lv_dtype xdt,
                           int64_t ldgx);
#define GR_TILE_FN(name, MT, WF)                                                              \
    static __attribute__((noinline)) void name##_##MT(                                        \
        const void *gy, lv_dtype gdt, int64_t ldg, int64_t m, const void *wp, int64_t ldw,    \
        const float *wscale, int64_t G, int64_t g, int64_t N, int64_t n0, int nc, int64_t kv, \
        __mmask64 mk, float *park, const float *act_scale, void *gx, lv_dtype xdt,            \
        int64_t ldgx) {                                                                       \
        gr_tile(gy, gdt, ldg, m, MT, WF, wp, ldw, wscale, G, g, N, n0, nc, kv, mk, park,      \
                act_scale, gx, xdt, ldgx);                                                    \
    }
GR_TILE_FN(gr_tile, 1, 0)
GR_TILE_FN(gr_tile, 2, 0)
GR_TILE_FN(gr_tile, 3, 0)
GR_TILE_FN(gr_tile, 4, 0)
GR_TILE_FN(gr_tile, 5, 0)
GR_TILE_FN(gr_tile, 6, 0)

static const gr_tile_fn gr_tiles[GR_MT + 1] = {NULL,      gr_tile_1, gr_tile_2, gr_tile_3,
                                               gr_tile_4, gr_tile_5, gr_tile_6};

#endif /* LOWVRAM_CPU_QGEMM_AVX512_INTERNAL_H */
