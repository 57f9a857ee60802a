/*
 * ops/cpu/sparse_avx2.c — the AVX2 (+ FMA, F16C) variant of the sparse family
 * (lowvram/sparse.h): the two products and their input gradients on
 * compressed weights. Masks and compression forward to the reference. Compiled
 * with -mavx2 -mfma -mf16c only (and -ffp-contract=off), called only after
 * the dispatcher has checked the CPU. Bit-exact with sparse_ref.c.
 *
 * AVX2 has no expand instruction (vpexpandb is AVX512_VBMI2), so kept values
 * are put back in place with a byte shuffle: for a mask byte b, sx_tab[b]
 * holds eight pshufb controls — the rank of each kept lane among the kept
 * lanes (popcount of the lower bits), 0x80 (a zero lane) for pruned ones —
 * and sx_pc[b] the number of values consumed. Two mask bytes make one
 * 16-byte pshufb: the second byte's controls are offset by the first byte's
 * count (0x80 + count still has the top bit set, so zero lanes stay zero).
 * Vector loads of values never pass the end of a row: fewer than 16 (or 8)
 * values left go through a zero-padded stack copy. Masks are validated
 * (lv_check_sparse_*) before any value is read, so the counts can be trusted.
 *
 * sparse_qlinear: a tile of 4 weight rows is expanded, a chunk of k at a time
 * (at most SQ_KC bytes, inside one group), into a small int8 buffer that
 * stays in L1, and the dense AVX2 product of qgemm_avx2.c runs on it: codes
 * widened to int16 (the activation back to its signed code, xu ^ 0x80) and
 * vpmaddwd pairs summed into int32 — exact for every int8, -128 included.
 * The chunk sums are added in int32 (exact, the contract's bound holds), and
 * each group's sum goes through the contract's float epilogue in group order,
 * so the bits equal the reference's. A block of SQ_MB activation rows reuses
 * each expanded chunk. With one activation row per block (batch-1 decoding)
 * nothing would reuse a chunk, so the shuffled codes go straight into
 * vpmaddwd (sq_dot_fused); and when every row of the tile is exactly 2:4
 * (checked per call with nibble popcounts) each 16 columns consume exactly 8
 * values, which removes the counts and the end-of-row checks (sq_dot_24).
 * Measured on this 2-vCPU shared machine (noisy), K = 4096, N = 11008, two
 * threads splitting n, 2:4: M = 1 about 1.1-1.5x the time of
 * lv_qgemm_int8_rows_avx2 on the dense weight (compute-bound: the expansion
 * costs more instructions than the bytes it saves), M = 512 about 1.1-1.4x.
 *
 * sparse_linear: kept values are converted to float32 (exact) and put in
 * place with vpermd on the same table (indices widened to int32, pruned lanes
 * cleared to +0, as the reference's w = 0.0f); two __m256 accumulators per
 * output are the contract's lanes 0-7 and 8-15, each advanced by one
 * _mm256_fmadd_ps per 16 k (the contract's fmaf), then the fixed tree. The
 * padding past K multiplies 0 by 0 into a lane that can never hold -0 (a lane
 * starts at +0 and round-to-nearest sums never give -0 from a +0), so it
 * changes no bit.
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "lowvram/convert.h"
#include "lowvram/sparse.h"
#include "qgemm_internal.h" /* lv_qgemm_groups */
#include "qgemm_avx2_internal.h" /* LV_INLINE, qg2_x16, qg2_hsum4 */
#include "sparse_grad.h"
#include "sparse_internal.h"

/* ---- the expansion tables (compile-time constants) ---------------------- */

#define SX_POPC(b)                                                                            \
    (((b) & 1u) + (((b) >> 1) & 1u) + (((b) >> 2) & 1u) + (((b) >> 3) & 1u) +                 \
     (((b) >> 4) & 1u) + (((b) >> 5) & 1u) + (((b) >> 6) & 1u) + (((b) >> 7) & 1u))
#define SX_LANE(b, i)                                                                         \
    ((uint64_t)((((b) >> (i)) & 1u) ? SX_POPC((b) & ((1u << (i)) - 1u)) : 0x80u) << (8 * (i)))
#define SX_ENT(b)                                                                             \
    (SX_LANE(b, 0) | SX_LANE(b, 1) | SX_LANE(b, 2) | SX_LANE(b, 3) | SX_LANE(b, 4) |          \
     SX_LANE(b, 5) | SX_LANE(b, 6) | SX_LANE(b, 7))
#define SX_E4(F, b) F((b) + 0u), F((b) + 1u), F((b) + 2u), F((b) + 3u)
#define SX_E16(F, b) SX_E4(F, (b) + 0u), SX_E4(F, (b) + 4u), SX_E4(F, (b) + 8u), SX_E4(F, (b) + 12u)
#define SX_E64(F, b)                                                                          \
    SX_E16(F, (b) + 0u), SX_E16(F, (b) + 16u), SX_E16(F, (b) + 32u), SX_E16(F, (b) + 48u)
#define SX_E256(F) SX_E64(F, 0u), SX_E64(F, 64u), SX_E64(F, 128u), SX_E64(F, 192u)

/* pshufb controls of a mask byte: lane i <- value rank, or 0x80 (zero). */
static const uint64_t sx_tab[256] __attribute__((aligned(64))) = {SX_E256(SX_ENT)};
/* values a mask byte consumes */
static const uint8_t sx_pc[256] __attribute__((aligned(64))) = {SX_E256(SX_POPC)};

/* ---- float vectors <-> the C boundary's dtypes (as qgemm_avx2.c) --------- */

/* Not shared through qgemm_avx2_internal.h, unlike qg2_x16 / qg2_hsum4:
 * these differ from qgemm_avx2.c's copies in their short paths (the load
 * skips the memcpy at n <= 0; the store has no whole-vector path, as
 * sparse_qlinear stores at most SQ_NR lanes). Either copy gives the same
 * bytes for every call made here, but inlined into the kernels each compiles
 * them differently, so sharing them would not be a pure refactor. */

/* row[i .. i + n) as float32 (exact), 0 <= n <= 8; lanes past n are 0. */
LV_INLINE __m256 lv256_load_f32(const void *row, lv_dtype dt, int64_t i, int n) {
    if (dt == LV_F32) {
        if (n >= 8) return _mm256_loadu_ps((const float *)row + i);
        float t[8] = {0};
        if (n > 0) memcpy(t, (const float *)row + i, sizeof(float) * (size_t)n);
        return _mm256_loadu_ps(t);
    }
    __m128i h;
    if (n >= 8) {
        h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + i));
    } else {
        uint16_t t[8] = {0};
        if (n > 0) memcpy(t, (const uint16_t *)row + i, sizeof(uint16_t) * (size_t)n);
        h = _mm_loadu_si128((const __m128i *)t);
    }
    if (dt == LV_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

/* Stores lanes [0, n) of v into row[i .. i + n) in dtype dt (convert.h's
 * rounding and canonical NaNs), as qgemm_avx2.c's lv256_store_f32. */
LV_INLINE void lv256_store_f32(void *row, lv_dtype dt, int64_t i, __m256 v, int n) {
    if (dt == LV_F32) {
        float t[8];
        _mm256_storeu_ps(t, v);
        memcpy((float *)row + i, t, sizeof(float) * (size_t)n);
        return;
    }
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    __m128i h;
    if (dt == LV_BF16) {
        const __m256i u = _mm256_castps_si256(v);
        const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
        __m256i r = _mm256_srli_epi32(
            _mm256_add_epi32(u, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff))), 16);
        r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7fc0), nan);
        h = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    } else {
        h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m128i nan16 =
            _mm_packs_epi32(_mm256_castsi256_si128(nan), _mm256_extracti128_si256(nan, 1));
        h = _mm_blendv_epi8(h, _mm_set1_epi16(0x7e00), nan16);
    }
    uint16_t t[8];
    _mm_storeu_si128((__m128i *)t, h);
    memcpy((uint16_t *)row + i, t, sizeof(uint16_t) * (size_t)n);
}

/* ---- int8 expansion ------------------------------------------------------ */

/* sx_hi[c]: c in the high eight bytes, 0 in the low ones — the offset of the
 * second mask byte's controls when the first consumed c values. */
#define SX_HI(c) {0, 0, 0, 0, 0, 0, 0, 0, c, c, c, c, c, c, c, c}
static const uint8_t sx_hi[9][16] __attribute__((aligned(16))) = {
    SX_HI(0), SX_HI(1), SX_HI(2), SX_HI(3), SX_HI(4), SX_HI(5), SX_HI(6), SX_HI(7), SX_HI(8)};

/* 16 decompressed codes from the mask bytes b0, b1 and the values at vp, of
 * which `avail` remain in the row (at least sx_pc[b0] + sx_pc[b1]). */
LV_INLINE __m128i sx_expand16(const int8_t *vp, int64_t avail, unsigned b0, unsigned b1) {
    const __m128i ctl = _mm_add_epi8(
        _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)&sx_tab[b0]),
                           _mm_loadl_epi64((const __m128i *)&sx_tab[b1])),
        _mm_load_si128((const __m128i *)sx_hi[sx_pc[b0]]));
    __m128i v;
    if (avail >= 16) {
        v = _mm_loadu_si128((const __m128i *)vp);
    } else {
        int8_t t[16] = {0};
        if (avail > 0) memcpy(t, vp, (size_t)avail);
        v = _mm_loadu_si128((const __m128i *)t);
    }
    return _mm_shuffle_epi8(v, ctl);
}

/* dst[0 .. len) = the decompressed codes of columns [k0, k0 + len) of a row
 * (bits: the row's mask; *vp: its next value, advanced; ve: the row's end),
 * and zeros up to the next multiple of 16. k0 is a multiple of 16; bits past
 * K are 0 (validated), so a partial last mask byte expands to zeros. */
static void sx_expand_i8(const uint8_t *bits, int64_t k0, int64_t len, const int8_t **vp,
                         const int8_t *ve, int8_t *dst) {
    const uint8_t *b = bits + k0 / 8;
    const int8_t *p = *vp;
    int64_t i = 0;
    for (; i + 16 <= len; i += 16, b += 2) {
        const unsigned b0 = b[0], b1 = b[1];
        _mm_storeu_si128((__m128i *)(dst + i), sx_expand16(p, ve - p, b0, b1));
        p += sx_pc[b0] + sx_pc[b1];
    }
    if (i < len) {
        const unsigned b0 = b[0], b1 = len - i > 8 ? b[1] : 0u;
        _mm_storeu_si128((__m128i *)(dst + i), sx_expand16(p, ve - p, b0, b1));
        p += sx_pc[b0] + sx_pc[b1];
    }
    *vp = p;
}

/* ---- sparse_qlinear ------------------------------------------------------ */

#define SQ_NR 4     /* weight rows per tile */
#define SQ_MB 64    /* activation rows per block */
#define SQ_KC 1024  /* k per expanded chunk (a multiple of 64: chunks stay in a group) */

/* The activation widening (qg2_x16) and the four horizontal sums
 * (qg2_hsum4) are qgemm_avx2.c's, from qgemm_avx2_internal.h. */

/* sums[i] += [sum over k < len of (x[i * ldx + k] - 128) * wb[j][k], j < 4]
 * for i < MR (a constant at each call site). wb rows are zero-padded to a
 * multiple of 16; the activation's last len % 16 bytes go through a copy. */
LV_INLINE void sq_dot(const uint8_t *x, int64_t ldx, int8_t wb[SQ_NR][SQ_KC + 16],
                      int64_t len, const int MR, __m128i *sums) {
    __m256i acc[2][SQ_NR];
#pragma GCC unroll 2
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < SQ_NR; j++) acc[i][j] = _mm256_setzero_si256();
    int64_t k = 0;
    for (; k + 16 <= len; k += 16) {
        __m256i xv[2];
#pragma GCC unroll 2
        for (int i = 0; i < MR; i++) xv[i] = qg2_x16(x + i * ldx + k);
#pragma GCC unroll 4
        for (int j = 0; j < SQ_NR; j++) {
            const __m256i wv = _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i *)(wb[j] + k)));
#pragma GCC unroll 2
            for (int i = 0; i < MR; i++)
                acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(xv[i], wv));
        }
    }
    if (k < len) {
        __m256i xv[2];
#pragma GCC unroll 2
        for (int i = 0; i < MR; i++) {
            uint8_t t[16];
            memset(t, 0x80, 16);
            memcpy(t, x + i * ldx + k, (size_t)(len - k));
            xv[i] = qg2_x16(t);
        }
#pragma GCC unroll 4
        for (int j = 0; j < SQ_NR; j++) {
            const __m256i wv = _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i *)(wb[j] + k)));
#pragma GCC unroll 2
            for (int i = 0; i < MR; i++)
                acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(xv[i], wv));
        }
    }
#pragma GCC unroll 2
    for (int i = 0; i < MR; i++)
        sums[i] = _mm_add_epi32(sums[i], qg2_hsum4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));
}

/* One activation row (M = 1 per block, batch-1 decoding): nothing reuses an
 * expanded chunk, so the codes go from the shuffle straight into vpmaddwd.
 * *sum += [sum over k < len of (x[k] - 128) * w[j][k0 + k], j < 4]; rows
 * j >= nr give 0. The last len % 16 activations go through a copy; the
 * expanded codes past K are 0 (mask bits past K are 0). */
static void sq_dot_fused(const uint8_t *x, const uint8_t *const *bits, const int8_t **vp,
                         const int8_t *const *ve, int nr, int64_t k0, int64_t len,
                         __m128i *sum) {
    __m256i acc[SQ_NR];
    const uint8_t *b[SQ_NR];
    const int8_t *p[SQ_NR];
#pragma GCC unroll 4
    for (int j = 0; j < SQ_NR; j++) {
        acc[j] = _mm256_setzero_si256();
        b[j] = j < nr ? bits[j] + k0 / 8 : NULL;
        p[j] = j < nr ? vp[j] : NULL;
    }
    int64_t k = 0;
    for (; k < len; k += 16) {
        __m256i xv;
        unsigned two = 1; /* mask bytes this step reads */
        if (k + 16 <= len) {
            xv = qg2_x16(x + k);
            two = 2;
        } else {
            uint8_t t[16];
            memset(t, 0x80, 16);
            memcpy(t, x + k, (size_t)(len - k));
            xv = qg2_x16(t);
            two = len - k > 8 ? 2 : 1;
        }
#pragma GCC unroll 4
        for (int j = 0; j < SQ_NR; j++) {
            if (j >= nr) break;
            const unsigned b0 = b[j][0], b1 = two == 2 ? b[j][1] : 0u;
            const __m128i w = sx_expand16(p[j], ve[j] - p[j], b0, b1);
            acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(xv, _mm256_cvtepi8_epi16(w)));
            p[j] += sx_pc[b0] + sx_pc[b1];
            b[j] += 2;
        }
    }
    for (int j = 0; j < nr; j++) vp[j] = p[j];
    *sum = _mm_add_epi32(*sum, qg2_hsum4(acc[0], acc[1], acc[2], acc[3]));
}

/* 1 when every group of 4 columns of the row keeps exactly 2 (K a multiple
 * of 16): then every 16 columns consume exactly 8 values, and sq_dot_24 needs
 * no counts and never a tail. Nibble popcounts by pshufb, 32 mask bytes at a
 * time. */
static int sx_row_is_2of4(const uint8_t *bits, int64_t K) {
    if (K % 16) return 0;
    const int64_t KB = K / 8;
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1,
                                         2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i lo4 = _mm256_set1_epi8(0x0f), two = _mm256_set1_epi8(2);
    int64_t i = 0;
    for (; i + 32 <= KB; i += 32) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(bits + i));
        const __m256i a = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, lo4));
        const __m256i b = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4));
        const __m256i ok = _mm256_and_si256(_mm256_cmpeq_epi8(a, two), _mm256_cmpeq_epi8(b, two));
        if (_mm256_movemask_epi8(ok) != -1) return 0;
    }
    for (; i < KB; i++)
        if (sx_pc[bits[i] & 0x0fu] != 2 || sx_pc[bits[i] >> 4] != 2) return 0;
    return 1;
}

/* sq_dot_fused for rows that are all 2:4 (sx_row_is_2of4) and len a
 * multiple of 16: 8 values per 16 columns, the second byte's controls offset
 * by 4. */
static void sq_dot_24(const uint8_t *x, const uint8_t *const *bits, const int8_t **vp, int nr,
                      int64_t k0, int64_t len, __m128i *sum) {
    __m256i acc[SQ_NR];
    const uint8_t *b[SQ_NR];
    const int8_t *p[SQ_NR];
#pragma GCC unroll 4
    for (int j = 0; j < SQ_NR; j++) {
        acc[j] = _mm256_setzero_si256();
        b[j] = j < nr ? bits[j] + k0 / 8 : NULL;
        p[j] = j < nr ? vp[j] : NULL;
    }
    const __m128i hi4 = _mm_load_si128((const __m128i *)sx_hi[4]);
    for (int64_t k = 0; k < len; k += 16) {
        const __m256i xv = qg2_x16(x + k);
#pragma GCC unroll 4
        for (int j = 0; j < SQ_NR; j++) {
            if (j >= nr) break;
            const unsigned b0 = b[j][k / 8], b1 = b[j][k / 8 + 1];
            const __m128i ctl = _mm_add_epi8(
                _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)&sx_tab[b0]),
                                   _mm_loadl_epi64((const __m128i *)&sx_tab[b1])),
                hi4);
            const __m128i w =
                _mm_shuffle_epi8(_mm_loadl_epi64((const __m128i *)(p[j] + k / 2)), ctl);
            acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(xv, _mm256_cvtepi8_epi16(w)));
        }
    }
    for (int j = 0; j < nr; j++) vp[j] = p[j] + len / 2;
    *sum = _mm_add_epi32(*sum, qg2_hsum4(acc[0], acc[1], acc[2], acc[3]));
}

lv_status lv_sparse_qgemm_int8_rows_avx2(const uint8_t *xu, int64_t ldx, const float *xscale,
                                         const int8_t *qvalues, int64_t ldv,
                                         const uint8_t *mask_bits, int64_t ldb, int64_t KV,
                                         const float *wscale, int64_t group_size,
                                         const float *bias, int64_t K, int64_t m0, int64_t m1,
                                         int64_t n0, int64_t n1, void *y, lv_dtype ydt,
                                         int64_t ldy) {
    lv_status st = lv_check_sparse_qgemm(xu, ldx, xscale, qvalues, ldv, mask_bits, ldb, KV,
                                         wscale, group_size, K, m0, m1, n0, n1, y, ldy);
    if (st != LV_OK) return st;
    if (m1 == m0 || n1 == n0) return LV_OK;
    const int64_t G = group_size > 0 ? K / group_size : 1;
    const int64_t gs = K / G;
    const size_t esz = (size_t)lv_dtype_size(ydt);
    int8_t wb[SQ_NR][SQ_KC + 16] __attribute__((aligned(32)));
    __m128i isum[SQ_MB];
    __m128 t[SQ_MB];
    for (int64_t mb0 = m0; mb0 < m1; mb0 += SQ_MB) {
        const int64_t mb1 = mb0 + SQ_MB < m1 ? mb0 + SQ_MB : m1;
        const int mbn = (int)(mb1 - mb0);
        for (int64_t n = n0; n < n1; n += SQ_NR) {
            const int nr = (int)(n1 - n < SQ_NR ? n1 - n : SQ_NR);
            const uint8_t *bits[SQ_NR];
            const int8_t *vp[SQ_NR], *ve[SQ_NR];
            for (int j = 0; j < nr; j++) {
                bits[j] = mask_bits + (n + j) * ldb;
                vp[j] = qvalues ? qvalues + (n + j) * ldv : NULL;
                ve[j] = qvalues ? vp[j] + KV : NULL;
            }
            for (int j = nr; j < SQ_NR; j++) memset(wb[j], 0, sizeof wb[j]); /* lanes not stored */
            int all24 = mbn == 1;
            for (int j = 0; j < nr && all24; j++) all24 = sx_row_is_2of4(bits[j], K);
            for (int64_t g = 0; g < G; g++) {
                for (int i = 0; i < mbn; i++) isum[i] = _mm_setzero_si128();
                for (int64_t kc = g * gs; kc < (g + 1) * gs; kc += SQ_KC) {
                    const int64_t len = (g + 1) * gs - kc < SQ_KC ? (g + 1) * gs - kc : SQ_KC;
                    if (all24) {
                        sq_dot_24(xu + mb0 * ldx + kc, bits, vp, nr, kc, len, isum);
                        continue;
                    }
                    if (mbn == 1) {
                        sq_dot_fused(xu + mb0 * ldx + kc, bits, vp, ve, nr, kc, len, isum);
                        continue;
                    }
                    for (int j = 0; j < nr; j++) sx_expand_i8(bits[j], kc, len, &vp[j], ve[j], wb[j]);
                    const uint8_t *x = xu + mb0 * ldx + kc;
                    int i = 0;
                    for (; i + 2 <= mbn; i += 2) sq_dot(x + i * ldx, ldx, wb, len, 2, isum + i);
                    if (i < mbn) sq_dot(x + i * ldx, ldx, wb, len, 1, isum + i);
                }
                float wsv[SQ_NR] = {0};
                for (int j = 0; j < nr; j++) wsv[j] = wscale[(n + j) * G + g];
                const __m128 ws = _mm_loadu_ps(wsv);
                for (int i = 0; i < mbn; i++) {
                    const __m128 p = _mm_mul_ps(_mm_cvtepi32_ps(isum[i]), ws);
                    t[i] = g == 0 ? p : _mm_add_ps(t[i], p);
                }
            }
            float bv[SQ_NR] = {0};
            if (bias)
                for (int j = 0; j < nr; j++) bv[j] = bias[n + j];
            const __m128 b = _mm_loadu_ps(bv);
            for (int i = 0; i < mbn; i++) {
                __m128 v = _mm_mul_ps(t[i], _mm_set1_ps(xscale[mb0 + i]));
                if (bias) v = _mm_add_ps(v, b);
                void *yr = (char *)y + (size_t)((mb0 + i) * ldy) * esz;
                lv256_store_f32(yr, ydt, n, _mm256_castps128_ps256(v), nr);
            }
        }
    }
    return LV_OK;
}

/* ---- sparse_linear ------------------------------------------------------- */

#define SG_NR 4   /* weight rows per tile */
#define SG_MB 32  /* activation rows per block */
#define SG_KC 256 /* k per expanded chunk (a multiple of 16: chunks keep the lanes) */

/* 8 decompressed weights (float32) from mask byte b and the values of row vr
 * from index j on, of which `avail` remain. */
LV_INLINE __m256 sg_expand8(const void *vr, lv_dtype vdt, int64_t j, int64_t avail, unsigned b) {
    if (avail <= 0) return _mm256_setzero_ps(); /* then b == 0 too */
    const __m256 v = lv256_load_f32(vr, vdt, j, avail >= 8 ? 8 : (int)avail);
    const __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)&sx_tab[b]));
    const __m256 p = _mm256_permutevar8x32_ps(v, idx);
    const __m256i kept = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x80), idx);
    return _mm256_and_ps(p, _mm256_castsi256_ps(kept));
}

/* dst[0 .. len) = the decompressed weights of columns [k0, k0 + len) of a
 * row, zeros up to the next multiple of 16; *j is the row's value cursor. */
static void sg_expand_f(const uint8_t *bits, const void *vr, lv_dtype vdt, int64_t KV,
                        int64_t k0, int64_t len, int64_t *j, float *dst) {
    const int64_t end = (len + 15) & ~(int64_t)15;
    int64_t c = *j;
    for (int64_t i = 0; i < end; i += 8) {
        if (i < len) {
            const unsigned b = bits[(k0 + i) / 8];
            _mm256_store_ps(dst + i, sg_expand8(vr, vdt, c, KV - c, b));
            c += sx_pc[b];
        } else {
            _mm256_store_ps(dst + i, _mm256_setzero_ps());
        }
    }
    *j = c;
}

lv_status lv_sparse_gemm_rows_avx2(const void *x, lv_dtype xdt, int64_t ldx, const void *values,
                                   lv_dtype vdt, int64_t ldv, const uint8_t *mask_bits,
                                   int64_t ldb, int64_t KV, const float *bias, int64_t K,
                                   int64_t m0, int64_t m1, int64_t n0, int64_t n1, void *y,
                                   lv_dtype ydt, int64_t ldy) {
    lv_status st = lv_check_sparse_gemm(x, ldx, values, ldv, mask_bits, ldb, KV, K, m0, m1, n0,
                                        n1, y, ldy);
    if (st != LV_OK) return st;
    if (m1 == m0 || n1 == n0) return LV_OK;
    const size_t xsz = (size_t)lv_dtype_size(xdt), vsz = (size_t)lv_dtype_size(vdt),
                 ysz = (size_t)lv_dtype_size(ydt);
    float wf[SG_NR][SG_KC] __attribute__((aligned(32)));
    float park[SG_MB][SG_NR][16] __attribute__((aligned(32)));
    for (int64_t mb0 = m0; mb0 < m1; mb0 += SG_MB) {
        const int64_t mb1 = mb0 + SG_MB < m1 ? mb0 + SG_MB : m1;
        for (int64_t n = n0; n < n1; n += SG_NR) {
            const int nr = (int)(n1 - n < SG_NR ? n1 - n : SG_NR);
            const uint8_t *bits[SG_NR];
            const void *vr[SG_NR];
            int64_t cur[SG_NR];
            for (int jr = 0; jr < nr; jr++) {
                bits[jr] = mask_bits + (n + jr) * ldb;
                vr[jr] = values ? (const char *)values + (size_t)((n + jr) * ldv) * vsz : NULL;
                cur[jr] = 0;
            }
            for (int jr = nr; jr < SG_NR; jr++) memset(wf[jr], 0, sizeof wf[jr]);
            for (int64_t kc = 0; kc < K; kc += SG_KC) {
                const int64_t len = K - kc < SG_KC ? K - kc : SG_KC;
                for (int jr = 0; jr < nr; jr++)
                    sg_expand_f(bits[jr], vr[jr], vdt, KV, kc, len, &cur[jr], wf[jr]);
                for (int64_t m = mb0; m < mb1; m++) {
                    const char *xr = (const char *)x + (size_t)(m * ldx) * xsz;
                    float(*pk)[16] = park[m - mb0];
                    __m256 acc[SG_NR][2];
#pragma GCC unroll 4
                    for (int jr = 0; jr < SG_NR; jr++) {
                        acc[jr][0] = kc == 0 ? _mm256_setzero_ps() : _mm256_load_ps(pk[jr]);
                        acc[jr][1] = kc == 0 ? _mm256_setzero_ps() : _mm256_load_ps(pk[jr] + 8);
                    }
                    for (int64_t kk = 0; kk < len; kk += 16) {
                        const int64_t r = len - kk;
                        __m256 x0, x1;
                        if (r >= 16) {
                            x0 = lv256_load_f32(xr, xdt, kc + kk, 8);
                            x1 = lv256_load_f32(xr, xdt, kc + kk + 8, 8);
                        } else {
                            x0 = lv256_load_f32(xr, xdt, kc + kk, r >= 8 ? 8 : (int)r);
                            x1 = r > 8 ? lv256_load_f32(xr, xdt, kc + kk + 8, (int)(r - 8))
                                       : _mm256_setzero_ps();
                        }
#pragma GCC unroll 4
                        for (int jr = 0; jr < SG_NR; jr++) {
                            acc[jr][0] = _mm256_fmadd_ps(x0, _mm256_load_ps(wf[jr] + kk), acc[jr][0]);
                            acc[jr][1] =
                                _mm256_fmadd_ps(x1, _mm256_load_ps(wf[jr] + kk + 8), acc[jr][1]);
                        }
                    }
#pragma GCC unroll 4
                    for (int jr = 0; jr < SG_NR; jr++) {
                        _mm256_store_ps(pk[jr], acc[jr][0]);
                        _mm256_store_ps(pk[jr] + 8, acc[jr][1]);
                    }
                }
            }
            /* the fixed tree: s8 = lanes 0-7 + 8-15, s4 = halves, s2, y */
            for (int64_t m = mb0; m < mb1; m++) {
                void *yr = (char *)y + (size_t)(m * ldy) * ysz;
                for (int jr = 0; jr < nr; jr++) {
                    const float *l = park[m - mb0][jr];
                    const __m256 s8 = _mm256_add_ps(_mm256_load_ps(l), _mm256_load_ps(l + 8));
                    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8),
                                                 _mm256_extractf128_ps(s8, 1));
                    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
                    float v = _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
                    if (bias) v = v + bias[n + jr];
                    lv_store_f32(yr, ydt, n + jr, v);
                }
            }
        }
    }
    return LV_OK;
}

/* ---- the rest forwards to the reference ----------------------------------- */

lv_status lv_nm_mask_rows_avx2(const float *score, int64_t lds, int64_t K, int n, int m,
                               int64_t r0, int64_t r1, uint8_t *keep, int64_t ldk) {
    return lv_nm_mask_rows_ref(score, lds, K, n, m, r0, r1, keep, ldk);
}

lv_status lv_sparse_compress_rows_avx2(const void *w, int esz, int64_t ldw, const uint8_t *keep,
                                       int64_t ldk, int64_t K, int64_t KV, int64_t r0,
                                       int64_t r1, void *values, int64_t ldv,
                                       uint8_t *mask_bits, int64_t ldb) {
    return lv_sparse_compress_rows_ref(w, esz, ldw, keep, ldk, K, KV, r0, r1, values, ldv,
                                       mask_bits, ldb);
}

lv_status lv_sparse_decompress_rows_avx2(const void *values, int esz, int64_t ldv,
                                         const uint8_t *mask_bits, int64_t ldb, int64_t K,
                                         int64_t KV, int64_t r0, int64_t r1, void *w,
                                         int64_t ldw) {
    return lv_sparse_decompress_rows_ref(values, esz, ldv, mask_bits, ldb, K, KV, r0, r1, w,
                                         ldw);
}

/* ---- gradients to the input --------------------------------------------- */

#include "qgemm_avx2_grad.h" /* gr2_tile_1 .. 6 (int8), GR2_TILE_FN */

GR2_TILE_FN(gr2_ftile, 1, 1)
GR2_TILE_FN(gr2_ftile, 2, 1)
GR2_TILE_FN(gr2_ftile, 3, 1)
GR2_TILE_FN(gr2_ftile, 4, 1)
GR2_TILE_FN(gr2_ftile, 5, 1)
GR2_TILE_FN(gr2_ftile, 6, 1)
static const gr2_tile_fn gr2_ftiles[GR2_MT + 1] = {NULL,        gr2_ftile_1, gr2_ftile_2,
                                                   gr2_ftile_3, gr2_ftile_4, gr2_ftile_5,
                                                   gr2_ftile_6};

/* Both gradients: qgemm_avx2.c's register tiles (qgemm_avx2_grad.h) on
 * 16-column strips rebuilt from the compressed rows (sx_expand_i8 /
 * sg_expand_f, the products' own expansions) into a stack buffer, GR2_NC
 * rows of n at a time, once per block of GR2_MB rows of gy: the contract's
 * fmaf chain in order of n, pruned entries the expanded zeros, so the bits
 * of the reference (and, for int8, of qlinear_grad_input on the decompressed
 * codes). Each row's value cursor is carried from strip to strip (jpos, one
 * int64 per row, malloc'd since N is unbounded; if that fails the chain in
 * sparse_grad.h gives the same bits, slower). */
static lv_status sg2_grad(const void *gy, lv_dtype gdt, int64_t ldg, const void *values,
                          lv_dtype vdt, int is_int8, int64_t ldv, const uint8_t *mask_bits,
                          int64_t ldb, int64_t KV, const float *wscale, int64_t group_size,
                          const float *act_scale, int64_t N, int64_t K, int64_t m0, int64_t m1,
                          int64_t k0, int64_t k1, void *gx, lv_dtype xdt, int64_t ldgx) {
    if (m1 <= m0 || k1 <= k0) return LV_OK;
    int64_t *jpos = (int64_t *)malloc((size_t)N * sizeof *jpos);
    if (!jpos)
        return lv_sparse_grad_chain(gy, gdt, ldg, values, vdt, is_int8, ldv, mask_bits, ldb,
                                    wscale, group_size, act_scale, N, K, m0, m1, k0, k1, gx,
                                    xdt, ldgx);
    const size_t vsz = is_int8 ? 1 : (size_t)lv_dtype_size(vdt);
    const int64_t G = is_int8 ? lv_qgemm_groups(K, group_size) : 1;
    const int64_t gs = K / G, kv0 = k0 & ~(int64_t)15;
    const gr2_tile_fn *tiles = is_int8 ? gr2_tiles : gr2_ftiles;
    float park[GR2_MB * 16];                               /* accumulators between chunks */
    float fstrip[GR2_NC * 16] __attribute__((aligned(32))); /* float values' strips */
    int8_t *qstrip = (int8_t *)fstrip;                      /* int8 codes' strips */
    for (int64_t mb = m0; mb < m1; mb += GR2_MB) {
        const int64_t me = mb + GR2_MB < m1 ? mb + GR2_MB : m1;
        for (int64_t n = 0; n < N; n++) jpos[n] = lv_kept_before(mask_bits + n * ldb, kv0);
        /* strips start at multiples of 16 in absolute k (one group each) */
        for (int64_t kv = kv0; kv < k1; kv += 16) {
            const int lo = (int)(k0 > kv ? k0 - kv : 0);
            const int hi = (int)(k1 - kv < 16 ? k1 - kv : 16);
            const int64_t len = K - kv < 16 ? K - kv : 16;
            for (int64_t n0 = 0; n0 < N; n0 += GR2_NC) {
                const int nc = (int)(N - n0 < GR2_NC ? N - n0 : GR2_NC);
                for (int j = 0; j < nc; j++) {
                    const int64_t n = n0 + j;
                    const uint8_t *bits = mask_bits + n * ldb;
                    if (KV == 0) { /* nothing kept: no values to point at */
                        memset(is_int8 ? (void *)(qstrip + j * 16) : (void *)(fstrip + j * 16),
                               0, is_int8 ? 16 : 16 * sizeof(float));
                    } else if (is_int8) {
                        const int8_t *row = (const int8_t *)values + n * ldv;
                        const int8_t *vp = row + jpos[n];
                        sx_expand_i8(bits, kv, len, &vp, row + KV, qstrip + j * 16);
                        jpos[n] = vp - row;
                    } else {
                        sg_expand_f(bits, (const char *)values + (size_t)(n * ldv) * vsz, vdt, KV,
                                    kv, len, &jpos[n], fstrip + j * 16);
                    }
                }
                for (int64_t m = mb; m < me; m += GR2_MT)
                    tiles[me - m < GR2_MT ? me - m : GR2_MT](
                        gy, gdt, ldg, m, is_int8 ? (const void *)qstrip : (const void *)fstrip,
                        16, 16, wscale, G, kv / gs, N, n0, nc, kv, lo, hi, park + (m - mb) * 16,
                        act_scale, gx, xdt, ldgx);
            }
        }
    }
    free(jpos);
    return LV_OK;
}

static lv_status sg2_qgrad(const void *gy, lv_dtype gdt, int64_t ldg, const int8_t *qvalues,
                           int64_t ldv, const uint8_t *mask_bits, int64_t ldb, int64_t KV,
                           const float *wscale, int64_t group_size, const float *act_scale,
                           int64_t N, int64_t K, int64_t m0, int64_t m1, int64_t k0, int64_t k1,
                           void *gx, lv_dtype xdt, int64_t ldgx) {
    return sg2_grad(gy, gdt, ldg, qvalues, LV_F32, 1, ldv, mask_bits, ldb, KV, wscale,
                    group_size, act_scale, N, K, m0, m1, k0, k1, gx, xdt, ldgx);
}

static lv_status sg2_fgrad(const void *gy, lv_dtype gdt, int64_t ldg, const void *values,
                           lv_dtype vdt, int64_t ldv, const uint8_t *mask_bits, int64_t ldb,
                           int64_t KV, int64_t N, int64_t K, int64_t m0, int64_t m1, int64_t k0,
                           int64_t k1, void *gx, lv_dtype xdt, int64_t ldgx) {
    return sg2_grad(gy, gdt, ldg, values, vdt, 0, ldv, mask_bits, ldb, KV, NULL, -1, NULL, N, K,
                    m0, m1, k0, k1, gx, xdt, ldgx);
}

LV_SPARSE_GRAD_ENTRIES(avx2, sg2_qgrad, sg2_fgrad)
