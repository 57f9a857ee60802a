/*
 * ops/cpu/qgemm_avx2.c — the AVX2 (+ FMA, F16C) variant of the qgemm family
 * (lowvram/qgemm.h): row quantization, the int8 product, and the gradient to
 * the input. Compiled with -mavx2 -mfma -mf16c only, and called only after
 * lv_cpu_isa_supported(LV_ISA_AVX2). Bit-exact with qgemm_ref.c: every float
 * operation is the one the contract names, in its order (the build has
 * -ffp-contract=off; the only FMA is the gradient's explicit
 * _mm256_fmadd_ps, the contract's fmaf), and each output element is computed
 * the same way whatever tile it falls in. Quantization and gradient follow
 * qgemm_avx512.c's structure at half the width; AVX2 has no byte or halfword
 * masks, so partial vectors at the ends of rows go through small zero-padded
 * stack copies.
 *
 * Product: AVX2 has no vpdpbusd, and vpmaddubsw (uint8 x int8 pairs summed to
 * int16) saturates for codes + 128 up to 255 times weights up to 127. So both
 * operands are widened to int16 — the activation back to its signed code
 * (xu ^ 0x80) — and vpmaddwd sums pairs into int32: exact for every int8,
 * -128 included, and no correction term is needed. A register tile of
 * 2 activation rows x 4 weight rows keeps one ymm of eight int32 partial sums
 * per pair over 16-byte k steps; it runs through the groups in order and
 * keeps the float sums of the groups in registers, so each weight row is read
 * from start to end and nothing goes through memory tiles (the AVX-512
 * variant's stack tiles serve its larger register tiles and its two paths).
 * Measured on Zen 4, K = 4096, N = 11008, one thread: M = 1 at about 15 GB/s
 * of weights, M = 512 at about 115 GOP/s.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "lowvram/convert.h"
#include "qgemm_avx2_internal.h" /* LV_INLINE, qg2_x16, qg2_hsum4 */
#include "qgemm_internal.h"

/* ---- float vectors <-> the C boundary's dtypes (common.h's rules) -------- */

/* x[i .. i + n) as float32 (exact), 0 <= n <= 8; lanes past n are 0. */
LV_INLINE __m256 lv256_load_f32(const void *row, lv_dtype dt, int64_t i, int n) {
    if (dt == LV_F32) {
        if (n >= 8) return _mm256_loadu_ps((const float *)row + i);
        float t[8] = {0};
        memcpy(t, (const float *)row + i, sizeof(float) * (size_t)n);
        return _mm256_loadu_ps(t);
    }
    __m128i h;
    if (n >= 8) {
        h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + i));
    } else {
        uint16_t t[8] = {0};
        memcpy(t, (const uint16_t *)row + i, sizeof(uint16_t) * (size_t)n);
        h = _mm_loadu_si128((const __m128i *)t);
    }
    if (dt == LV_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

/* Stores lanes [0, n) of v into row[i .. i + n) in dtype dt, rounded to
 * nearest even with convert.h's NaNs (bf16 0x7fc0, f16 0x7e00). */
LV_INLINE void lv256_store_f32(void *row, lv_dtype dt, int64_t i, __m256 v, int n) {
    if (dt == LV_F32) {
        if (n >= 8) {
            _mm256_storeu_ps((float *)row + i, v);
        } else {
            float t[8];
            _mm256_storeu_ps(t, v);
            memcpy((float *)row + i, t, sizeof(float) * (size_t)n);
        }
        return;
    }
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    __m128i h;
    if (dt == LV_BF16) {
        /* convert.h's integer rounding: u + 0x7fff + ((u >> 16) & 1), mod 2^32 */
        const __m256i u = _mm256_castps_si256(v);
        const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
        __m256i r = _mm256_srli_epi32(
            _mm256_add_epi32(u, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff))), 16);
        r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7fc0), nan);
        /* values < 2^16: the unsigned-saturating pack keeps them */
        h = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    } else {
        /* vcvtps2ph rounds like convert.h (RNE, subnormals, overflow to inf)
         * but keeps part of a NaN's payload; convert.h gives 0x7e00 */
        h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m128i nan16 =
            _mm_packs_epi32(_mm256_castsi256_si128(nan), _mm256_extracti128_si256(nan, 1));
        h = _mm_blendv_epi8(h, _mm_set1_epi16(0x7e00), nan16);
    }
    if (n >= 8) {
        _mm_storeu_si128((__m128i *)((uint16_t *)row + i), h);
    } else {
        uint16_t t[8];
        _mm_storeu_si128((__m128i *)t, h);
        memcpy((uint16_t *)row + i, t, sizeof(uint16_t) * (size_t)n);
    }
}

/* ---- quantization ------------------------------------------------------- */

/* x[k] (* act_scale[k]) for k in [k, k + n), as the contract's v[k]. */
LV_INLINE __m256 lv256_quant_v(const void *xr, lv_dtype xdt, const float *act_scale,
                               int64_t k, int n) {
    __m256 v = lv256_load_f32(xr, xdt, k, n);
    if (act_scale) v = _mm256_mul_ps(v, lv256_load_f32(act_scale, LV_F32, k, n));
    return v;
}

lv_status lv_quantize_int8_rows_avx2(const void *x, lv_dtype xdt, int64_t ldx, int64_t K,
                                     const float *act_scale, int64_t group_size, int64_t r0,
                                     int64_t r1, void *q, int64_t ldq, float *scale,
                                     int offset128) {
    lv_status st = lv_check_quantize(x, ldx, K, group_size, r0, r1, q, ldq, scale);
    if (st != LV_OK) return st;
    const int64_t G = lv_qgemm_groups(K, group_size);
    const int64_t gs = K / G;
    const size_t esz = (size_t)lv_dtype_size(xdt);
    const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
    const __m256i flip = _mm256_set1_epi8(offset128 ? (char)0x80 : 0);
    for (int64_t r = r0; r < r1; r++) {
        const char *xr = (const char *)x + (size_t)(r * ldx) * esz;
        int8_t *qr = (int8_t *)q + r * ldq;
        for (int64_t g = 0; g < G; g++) {
            const int64_t k0 = g * gs, k1 = k0 + gs;
            /* |v| as bits: for non-negative floats the integer order is the
             * float order, and any NaN or Inf lands at or above 0x7f800000,
             * so one unsigned max finds both absmax and non-finite values. */
            __m256i mx0 = _mm256_setzero_si256(), mx1 = _mm256_setzero_si256();
            int64_t k = k0;
            for (; k + 16 <= k1; k += 16) {
                const __m256 a = lv256_quant_v(xr, xdt, act_scale, k, 8);
                const __m256 b = lv256_quant_v(xr, xdt, act_scale, k + 8, 8);
                mx0 = _mm256_max_epu32(mx0, _mm256_and_si256(_mm256_castps_si256(a), absmask));
                mx1 = _mm256_max_epu32(mx1, _mm256_and_si256(_mm256_castps_si256(b), absmask));
            }
            for (; k < k1; k += 8) {
                const __m256 a = lv256_quant_v(xr, xdt, act_scale, k, (int)(k1 - k));
                mx0 = _mm256_max_epu32(mx0, _mm256_and_si256(_mm256_castps_si256(a), absmask));
            }
            __m256i mx = _mm256_max_epu32(mx0, mx1);
            __m128i m4 = _mm_max_epu32(_mm256_castsi256_si128(mx), _mm256_extracti128_si256(mx, 1));
            m4 = _mm_max_epu32(m4, _mm_shuffle_epi32(m4, _MM_SHUFFLE(1, 0, 3, 2)));
            m4 = _mm_max_epu32(m4, _mm_shuffle_epi32(m4, _MM_SHUFFLE(2, 3, 0, 1)));
            const uint32_t amax = (uint32_t)_mm_cvtsi128_si32(m4);
            float s;
            if (amax >= 0x7f800000u || lv_bits_f32(amax) < LV_QUANT_MIN_ABSMAX) {
                s = amax >= 0x7f800000u ? NAN : 0.0f;
                memset(qr + k0, offset128 ? 0x80 : 0, (size_t)gs);
            } else {
                const float absmax = lv_bits_f32(amax);
                s = absmax / 127.0f;
                const __m256 inv = _mm256_set1_ps(127.0f / absmax);
                const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
                for (k = k0; k < k1; k += 16) {
                    const int n = (int)(k1 - k < 16 ? k1 - k : 16);
                    __m256i c[2];
                    for (int h = 0; h < 2; h++) {
                        const int nh = n - 8 * h;
                        const __m256 v = nh > 0 ? lv256_quant_v(xr, xdt, act_scale, k + 8 * h, nh)
                                                : _mm256_setzero_ps();
                        /* round half even explicitly, then an exact conversion */
                        const __m256 rv = _mm256_round_ps(_mm256_mul_ps(v, inv),
                                                          _MM_FROUND_TO_NEAREST_INT |
                                                              _MM_FROUND_NO_EXC);
                        c[h] = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvttps_epi32(rv), lo), hi);
                    }
                    /* int32 -> int16 -> int8 (values within +-127, no saturation);
                     * packs work per 128-bit lane, the permute restores the order */
                    __m256i p16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(c[0], c[1]),
                                                           _MM_SHUFFLE(3, 1, 2, 0));
                    __m128i b = _mm_packs_epi16(_mm256_castsi256_si128(p16),
                                                _mm256_extracti128_si256(p16, 1));
                    /* codes + 128 as uint8 is the code's byte with its top bit flipped */
                    b = _mm_xor_si128(b, _mm256_castsi256_si128(flip));
                    if (n == 16) {
                        _mm_storeu_si128((__m128i *)(qr + k), b);
                    } else {
                        int8_t t[16];
                        _mm_storeu_si128((__m128i *)t, b);
                        memcpy(qr + k, t, (size_t)n);
                    }
                }
            }
            scale[r * G + g] = s;
        }
    }
    return LV_OK;
}

/* ---- product ------------------------------------------------------------ */

#define QG2_MR 2  /* activation rows per register tile */
#define QG2_NR 4  /* weight rows per register tile: 8 accumulators + 2 + 1 of 16 */
#define QG2_MB 64 /* activation rows per block (64 x K bytes meant for L2) */

/* qg2_hsum4 (four horizontal sums) and qg2_x16 (16 activation codes as
 * int16) are in qgemm_avx2_internal.h, shared with sparse_avx2.c. */

/* 16 weight bytes as int16. */
LV_INLINE __m256i qg2_w16(const int8_t *p) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p));
}

/* The register tile's integer part: sums[i] = [sum over k in [kb, kb + len)
 * of (x[i * ldx + k] - 128) * wp[j][k] for j < 4] for i < MR. The last
 * len % 16 bytes go through zero-padded copies (activation padding 0x80 is
 * code 0). MR is a constant at every call site. */
LV_INLINE void qg2_dot(const uint8_t *x, int64_t ldx, const int8_t *const *wp, int64_t kb,
                       int64_t len, const int MR, __m128i *sums) {
    __m256i acc[QG2_MR][QG2_NR];
#pragma GCC unroll 2
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < QG2_NR; j++) acc[i][j] = _mm256_setzero_si256();
    const int64_t ke = kb + len;
    int64_t k = kb;
    for (; k + 16 <= ke; k += 16) {
        __m256i xv[QG2_MR];
#pragma GCC unroll 2
        for (int i = 0; i < MR; i++) xv[i] = qg2_x16(x + i * ldx + k);
#pragma GCC unroll 4
        for (int j = 0; j < QG2_NR; j++) {
            const __m256i wv = qg2_w16(wp[j] + k);
#pragma GCC unroll 2
            for (int i = 0; i < MR; i++)
                acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(xv[i], wv));
        }
    }
    if (k < ke) {
        const size_t rem = (size_t)(ke - k);
        uint8_t xt[QG2_MR][16];
        int8_t wt[16] = {0};
        __m256i xv[QG2_MR];
#pragma GCC unroll 2
        for (int i = 0; i < MR; i++) {
            memset(xt[i], 0x80, 16);
            memcpy(xt[i], x + i * ldx + k, rem);
            xv[i] = qg2_x16(xt[i]);
        }
#pragma GCC unroll 4
        for (int j = 0; j < QG2_NR; j++) {
            memcpy(wt, wp[j] + k, rem);
            const __m256i wv = qg2_w16(wt);
#pragma GCC unroll 2
            for (int i = 0; i < MR; i++)
                acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(xv[i], wv));
        }
    }
#pragma GCC unroll 2
    for (int i = 0; i < MR; i++) sums[i] = qg2_hsum4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
}

/* One call's operands. */
typedef struct {
    const uint8_t *xu;
    int64_t ldx;
    const float *xscale;
    const int8_t *w;
    int64_t ldw;
    const float *wscale, *bias;
    int64_t G, gs;
    void *y;
    lv_dtype ydt;
    int64_t ldy;
} qg2_call;

/* y[m + i, n + j] for i < MR, j < nr: the groups in order, each an exact
 * int32 sum (qg2_dot) turned into t = (float)acc_0 * ws_0, then
 * t + (float)acc_g * ws_g, kept in registers; then t * xscale (+ bias).
 * Weight rows past nr repeat row nr - 1; their lanes are not stored. */
LV_INLINE void qg2_tile(const qg2_call *c, int64_t m, const int MR, int64_t n, int nr) {
    const int8_t *wp[QG2_NR];
    for (int j = 0; j < QG2_NR; j++) wp[j] = c->w + (n + (j < nr ? j : nr - 1)) * c->ldw;
    const uint8_t *x = c->xu + m * c->ldx;
    const __m128i lanes = _mm_setr_epi32(0, 1, 2, 3);
    const __m128i valid = _mm_cmpgt_epi32(_mm_set1_epi32(nr), lanes);
    const __m128i gidx = _mm_mullo_epi32(lanes, _mm_set1_epi32((int)c->G));
    __m128 t[QG2_MR] = {_mm_setzero_ps(), _mm_setzero_ps()}; /* set by group 0 */
    for (int64_t g = 0; g < c->G; g++) {
        __m128i sums[QG2_MR];
        qg2_dot(x, c->ldx, wp, g * c->gs, c->gs, MR, sums);
        const __m128 ws = _mm_mask_i32gather_ps(_mm_setzero_ps(), c->wscale + n * c->G + g, gidx,
                                                _mm_castsi128_ps(valid), 4);
#pragma GCC unroll 2
        for (int i = 0; i < MR; i++) {
            const __m128 p = _mm_mul_ps(_mm_cvtepi32_ps(sums[i]), ws);
            t[i] = g == 0 ? p : _mm_add_ps(t[i], p);
        }
    }
    const size_t esz = (size_t)lv_dtype_size(c->ydt);
    const __m128 b = c->bias ? _mm_maskload_ps(c->bias + n, valid) : _mm_setzero_ps();
#pragma GCC unroll 2
    for (int i = 0; i < MR; i++) {
        __m128 v = _mm_mul_ps(t[i], _mm_set1_ps(c->xscale[m + i]));
        if (c->bias) v = _mm_add_ps(v, b);
        void *yr = (char *)c->y + (size_t)((m + i) * c->ldy) * esz;
        lv256_store_f32(yr, c->ydt, n, _mm256_castps128_ps256(v), nr);
    }
}

lv_status lv_qgemm_int8_rows_avx2(const uint8_t *xu, int64_t ldx, const float *xscale,
                                  const int8_t *w, int64_t ldw, const float *wscale,
                                  int64_t group_size, const float *bias, int64_t K, int64_t m0,
                                  int64_t m1, int64_t n0, int64_t n1, void *y, lv_dtype ydt,
                                  int64_t ldy) {
    lv_status st = lv_check_qgemm(xu, ldx, xscale, w, ldw, wscale, group_size, K, m0, m1, n0,
                                  n1, y, ldy);
    if (st != LV_OK) return st;
    qg2_call c;
    c.xu = xu, c.ldx = ldx, c.xscale = xscale, c.w = w, c.ldw = ldw, c.wscale = wscale;
    c.bias = bias, c.G = lv_qgemm_groups(K, group_size), c.gs = K / c.G;
    c.y = y, c.ydt = ydt, c.ldy = ldy;
    /* blocks of rows outside (meant to stay in L2), weight tiles next (each
     * read once per block, then from L1 by every row tile of the block),
     * and along k each tile reads its rows from start to end */
    for (int64_t mb0 = m0; mb0 < m1; mb0 += QG2_MB) {
        const int64_t mb1 = mb0 + QG2_MB < m1 ? mb0 + QG2_MB : m1;
        for (int64_t n = n0; n < n1; n += QG2_NR) {
            const int nr = (int)(n1 - n < QG2_NR ? n1 - n : QG2_NR);
            int64_t m = mb0;
            for (; m + 2 <= mb1; m += 2) qg2_tile(&c, m, 2, n, nr);
            if (m < mb1) qg2_tile(&c, m, 1, n, nr);
        }
    }
    return LV_OK;
}

/* ---- gradient to the input ---------------------------------------------- */

/* The register tiles (gr2_tile_1 .. 6) are in qgemm_avx2_grad.h, shared with
 * sparse_avx2.c, which runs them on strips it expands from compressed rows. */
#include "qgemm_avx2_grad.h"

lv_status lv_qlinear_grad_input_rows_avx2(const void *gy, lv_dtype gdt, int64_t ldg,
                                          const int8_t *w, int64_t ldw, const float *wscale,
                                          int64_t group_size, const float *act_scale, int64_t N,
                                          int64_t K, int64_t m0, int64_t m1, int64_t k0,
                                          int64_t k1, void *gx, lv_dtype xdt, int64_t ldgx) {
    lv_status st = lv_check_grad_input(gy, ldg, w, ldw, wscale, group_size, N, K, m0, m1, k0,
                                       k1, gx, ldgx);
    if (st != LV_OK) return st;
    const int64_t G = lv_qgemm_groups(K, group_size);
    const int64_t gs = K / G;
    float park[GR2_MB * 16]; /* a block's accumulators between chunks of n */
    for (int64_t mb = m0; mb < m1; mb += GR2_MB) {
        const int64_t me = mb + GR2_MB < m1 ? mb + GR2_MB : m1;
        /* strips start at multiples of 16 in absolute k, so each lies in one
         * group (group sizes are multiples of 64) */
        for (int64_t kv = k0 & ~(int64_t)15; kv < k1; kv += 16) {
            const int lo = (int)(k0 > kv ? k0 - kv : 0);
            const int hi = (int)(k1 - kv < 16 ? k1 - kv : 16);
            const int wn = (int)(K - kv < 16 ? K - kv : 16); /* readable bytes of a row */
            /* chunks of n outside the row tiles: a chunk's weight lines serve
             * every row tile of the block */
            for (int64_t n0 = 0; n0 < N; n0 += GR2_NC) {
                const int nc = (int)(N - n0 < GR2_NC ? N - n0 : GR2_NC);
                for (int64_t m = mb; m < me; m += GR2_MT)
                    gr2_tiles[me - m < GR2_MT ? me - m : GR2_MT](
                        gy, gdt, ldg, m, w + n0 * ldw + kv, ldw, wn, wscale, G, kv / gs, N, n0,
                        nc, kv, lo, hi, park + (m - mb) * 16, act_scale, gx, xdt, ldgx);
            }
        }
    }
    return LV_OK;
}
