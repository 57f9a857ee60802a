/*
 * ops/cpu/qgemm_avx512.c — the AVX-512 (F/BW/VL/DQ + VNNI) variant of the
 * qgemm family (lowvram/qgemm.h): row quantization, the int8 product on
 * vpdpbusd, and the gradient to the input. Compiled with -mavx512f/bw/vl/dq
 * -mavx512vnni (plus AVX2/FMA/F16C) only, and called only after
 * lv_cpu_isa_supported(LV_ISA_AVX512). Bit-exact with qgemm_ref.c: every
 * float operation is the one the contract names, in its order (the build has
 * -ffp-contract=off; the only FMA is the gradient's explicit _mm512_fmadd_ps,
 * the contract's fmaf), integer sums are exact mod 2^32, and each output
 * element is computed the same way whatever tile or path it falls in.
 *
 * Quantization: per group, one pass takes the max of |v| as integer bits
 * (for non-negative floats the integer order is the float order, and NaN /
 * Inf land at or above 0x7f800000), a second scales, rounds half to even,
 * clamps and packs sixteen codes at a time.
 *
 * Product, in "dot form" on the canonical [N, K] weights (no repacked
 * layout): a register tile of activation rows x weight rows keeps one zmm of
 * sixteen int32 partial sums per pair over 64-byte k steps, folded at the
 * end of each chunk of k by a transpose-and-add tree; int32 sums go to a
 * stack tile, groups are combined in float in group order, and the epilogue
 * runs sixteen outputs at a time. vpdpbusd multiplies unsigned by signed
 * bytes, and the sum is corrected mod 2^32 (the contract's K bound makes the
 * true sum fit). Two paths:
 *   streaming (calls of <= QG_SM rows: decoding, small batches) — blocks of
 *     <= 8 rows, copied as signed codes q = xu ^ 0x80 with their row sums;
 *     one tile holds all rows of a block (1 x 6 ... 8 x 2), so each weight
 *     vector is loaded once, flipped to the unsigned w + 128 and used by every
 *     row: sum q (w + 128) - 128 sum q. The tiles also sweep L2 prefetches
 *     over the next panel of weight rows, in address order, one line per line
 *     consumed, which keeps DRAM streaming at the pace of the arithmetic.
 *   blocked (larger calls) — panels of QG_NB weight rows outside (they stay in
 *     L2), blocks of QG_MB rows inside; per 6-row weight tile one pass sums
 *     the rows (for - 128 sum w), copies them to a stack buffer whose stride
 *     avoids 4 KiB aliasing in L1, and prefetches the next tile; then 4 x 6
 *     tiles (24 accumulators, 10 loads per 24 vpdpbusd) run every row of the
 *     block past the copy.
 * Measured on the 2-core Zen 4 this was tuned on, K = 4096, N = 11008, one
 * thread: M = 1 streams the weights as fast as a plain read of them (about
 * 25 GB/s cold), M = 8 takes about 1.3x that, M = 512 about 400 GOP/s (85% of
 * the vpdpbusd peak). Per-group scales cost a 16-lane reduction per group
 * and output, which dot form cannot avoid: at M = 512, group 128 runs at
 * about 120 GOP/s and group 64 at about 85.
 *
 * Gradient: a register tile of 6 rows x 64 k (24 zmm) walks n in order,
 * fused multiply-adds with the products gy * wscale computed beforehand,
 * sixteen at a time, for 256 n (the same rounded products); chunks of n are
 * outside the row tiles, so a chunk's weight lines serve every tile of a
 * block, and the accumulators wait in a stack tile between chunks.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "lowvram/convert.h"
#include "qgemm_avx512_internal.h" /* LV_INLINE, dtype and mask helpers, shared tile code */
#include "qgemm_internal.h"

/* ---- quantization ------------------------------------------------------- */

/* x[k] (* act_scale[k]) for the lanes of m, as the contract's v[k]. */
LV_INLINE __m512 lv512_quant_v(const void *xr, lv_dtype xdt, const float *act_scale,
                               int64_t k, __mmask16 m) {
    __m512 v = lv512_load_f32(xr, xdt, k, m);
    if (act_scale) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, act_scale + k));
    return v;
}

lv_status lv_quantize_int8_rows_avx512(const void *x, lv_dtype xdt, int64_t ldx, int64_t K,
                                       const float *act_scale, int64_t group_size, int64_t r0,
                                       int64_t r1, void *q, int64_t ldq, float *scale,
                                       int offset128) {
    lv_status st = lv_check_quantize(x, ldx, K, group_size, r0, r1, q, ldq, scale);
    if (st != LV_OK) return st;
    const int64_t G = lv_qgemm_groups(K, group_size);
    const int64_t gs = K / G;
    const size_t esz = (size_t)lv_dtype_size(xdt);
    const __m512i absmask = _mm512_set1_epi32(0x7fffffff);
    const __m512i flip = _mm512_set1_epi32(offset128 ? 0x80 : 0);
    for (int64_t r = r0; r < r1; r++) {
        const char *xr = (const char *)x + (size_t)(r * ldx) * esz;
        int8_t *qr = (int8_t *)q + r * ldq;
        for (int64_t g = 0; g < G; g++) {
            const int64_t k0 = g * gs, k1 = k0 + gs;
            /* |v| as bits: for non-negative floats the integer order is the
             * float order, and any NaN or Inf lands at or above 0x7f800000,
             * so one unsigned max finds both absmax and non-finite values. */
            __m512i mx0 = _mm512_setzero_si512(), mx1 = _mm512_setzero_si512();
            int64_t k = k0;
            for (; k + 32 <= k1; k += 32) {
                const __m512 a = lv512_quant_v(xr, xdt, act_scale, k, 0xffff);
                const __m512 b = lv512_quant_v(xr, xdt, act_scale, k + 16, 0xffff);
                mx0 = _mm512_max_epu32(mx0, _mm512_and_si512(_mm512_castps_si512(a), absmask));
                mx1 = _mm512_max_epu32(mx1, _mm512_and_si512(_mm512_castps_si512(b), absmask));
            }
            for (; k < k1; k += 16) {
                const __m512 a = lv512_quant_v(xr, xdt, act_scale, k, lv512_mask16(k1 - k));
                mx0 = _mm512_max_epu32(mx0, _mm512_and_si512(_mm512_castps_si512(a), absmask));
            }
            const uint32_t amax = _mm512_reduce_max_epu32(_mm512_max_epu32(mx0, mx1));
            float s;
            if (amax >= 0x7f800000u || lv_bits_f32(amax) < LV_QUANT_MIN_ABSMAX) {
                s = amax >= 0x7f800000u ? NAN : 0.0f;
                memset(qr + k0, offset128 ? 0x80 : 0, (size_t)gs);
            } else {
                const float absmax = lv_bits_f32(amax);
                s = absmax / 127.0f;
                const __m512 inv = _mm512_set1_ps(127.0f / absmax);
                const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
                for (k = k0; k < k1; k += 16) {
                    const __mmask16 m = lv512_mask16(k1 - k);
                    const __m512 v = lv512_quant_v(xr, xdt, act_scale, k, m);
                    __m512i c = _mm512_cvt_roundps_epi32(
                        _mm512_mul_ps(v, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                    c = _mm512_min_epi32(_mm512_max_epi32(c, lo), hi);
                    /* codes + 128 as uint8 is the code's byte with its top bit flipped */
                    c = _mm512_xor_si512(c, flip);
                    _mm_mask_storeu_epi8(qr + k, m, _mm512_cvtepi32_epi8(c));
                }
            }
            scale[r * G + g] = s;
        }
    }
    return LV_OK;
}

/* ---- product ------------------------------------------------------------ */

/* Tuned on Zen 4 (1 zmm vpdpbusd per cycle, L1D 32 KiB, L2 1 MiB) at
 * K = 4096, N = 11008; see the measurements in the file header. */
#define QG_SM 32    /* calls of at most this many rows take the streaming path */
#define QG_FB 8     /* rows per block, streaming path */
#ifndef QG_SEQ
#define QG_SEQ 2    /* blocks of at most this many rows read weight rows one at a time
                       (measured: faster for 1-2 rows; 4x6 / 8x2 lockstep tiles win above) */
#endif
#define QG_FNB 96   /* weight rows per panel, streaming path (a multiple of 2, 3, 4, 6) */
#define QG_XB 24576 /* bytes of the streaming path's activation copy (stays in L1) */
#define QG_MR 4     /* activation rows per register tile, blocked path */
#define QG_NR 6     /* weight rows per register tile, blocked path: 24 + 4 + 1 zmm */
#define QG_MB 128   /* activation rows per block, blocked path (128 measured 3% over 64) */
#define QG_NB 48    /* weight rows per panel, blocked path (48 x K bytes stay in L2) */
#define QG_KC 4096  /* k bytes per chunk, blocked path */
#define QG_WLD (QG_KC + 64)    /* row stride of the blocked path's weight copy */
#define QG_PF_HINT _MM_HINT_T1 /* prefetches into L2: T0 crowds L1's miss buffers */

/* The tiles' transpose-and-add reduction (qg_hsum16), the streaming path's
 * activation copy (qg_stream_copy) and the float epilogue (qg_epilogue) are
 * in qgemm_avx512_internal.h: sparse_avx512.c's sparse_qlinear runs this
 * product on expanded weights and shares them. */

/* The register tile: out[i * NR + j] = sum over k < len of a(i, k) * b(j, k)
 * (mod 2^32) for i < MR, j < NR, where x holds MR rows (stride ldx) and wp[j]
 * the NR weight rows.
 *   STREAM = 0 (blocked path): x is activation codes + 128 (the unsigned
 *     operand) and w the int8 weights: a sum of (q + 128) * w.
 *   STREAM = 1 (streaming path): x is the signed codes q (the block's copy)
 *     and each weight vector becomes the unsigned operand w + 128 (w ^ 0x80),
 *     flipped once for all MR rows: a sum of q * (w + 128). Each weight
 *     vector loaded also prefetches the next line of the sweep pf[0] ..
 *     pf[1] (updated), one line per line consumed.
 * MR, NR and STREAM are constants: the accumulators live in registers. */
LV_INLINE void qg_tile(const uint8_t *x, int64_t ldx, const int8_t *const *wp, int64_t len,
                       const int MR, const int NR, const int STREAM, int32_t *out,
                       uintptr_t *pf) {
    enum { NA = 24 };
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    uintptr_t pfc = STREAM ? pf[0] : 0;
    const uintptr_t pfe = STREAM ? pf[1] : 0;
    __m512i acc[NA];
#pragma GCC unroll 24
    for (int a = 0; a < NA; a++) acc[a] = _mm512_setzero_si512();
    int64_t k = 0;
    for (; k + 64 <= len; k += 64) {
        __m512i xv[QG_FB];
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) xv[i] = _mm512_loadu_si512(x + i * ldx + k);
#pragma GCC unroll 6
        for (int j = 0; j < NR; j++) {
            __m512i wv = _mm512_loadu_si512(wp[j] + k);
            if (STREAM) {
                wv = _mm512_xor_si512(wv, flip);
                if (pfc < pfe) {
                    _mm_prefetch((const char *)pfc, QG_PF_HINT);
                    pfc += 64;
                }
            }
#pragma GCC unroll 8
            for (int i = 0; i < MR; i++)
                acc[i * NR + j] = STREAM ? _mm512_dpbusd_epi32(acc[i * NR + j], wv, xv[i])
                                         : _mm512_dpbusd_epi32(acc[i * NR + j], xv[i], wv);
        }
    }
    if (k < len) { /* K tail: masked activation bytes load as 0 and add nothing */
        const __mmask64 mk = lv512_mask64(len - k);
        __m512i xv[QG_FB];
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) xv[i] = _mm512_maskz_loadu_epi8(mk, x + i * ldx + k);
#pragma GCC unroll 6
        for (int j = 0; j < NR; j++) {
            __m512i wv = _mm512_maskz_loadu_epi8(mk, wp[j] + k);
            if (STREAM) wv = _mm512_xor_si512(wv, flip);
#pragma GCC unroll 8
            for (int i = 0; i < MR; i++)
                acc[i * NR + j] = STREAM ? _mm512_dpbusd_epi32(acc[i * NR + j], wv, xv[i])
                                         : _mm512_dpbusd_epi32(acc[i * NR + j], xv[i], wv);
        }
    }
    if (STREAM) pf[0] = pfc;
    const int na = MR * NR;
    _mm512_storeu_si512(out, qg_hsum16(acc, na < 16 ? na : 16));
    if (na > 16) _mm512_storeu_si512(out + 16, qg_hsum16(acc + 16, na - 16));
}

/* Each tile shape is a function of its own: inlined into the loops below,
 * several shapes at once make GCC spill the accumulators in the k loop. */
typedef void (*qg_tile_fn)(const uint8_t *x, int64_t ldx, const int8_t *const *wp,
                           int64_t len, int32_t *out, uintptr_t *pf);
#define QG_TILE_FN(MR, NR, STREAM)                                                           \
    static __attribute__((noinline)) void qg_tile_##MR##x##NR##_##STREAM(                    \
        const uint8_t *x, int64_t ldx, const int8_t *const *wp, int64_t len, int32_t *out,    \
        uintptr_t *pf) {                                                                      \
        qg_tile(x, ldx, wp, len, MR, NR, STREAM, out, pf);                                    \
    }
QG_TILE_FN(1, 6, 0)
QG_TILE_FN(2, 6, 0)
QG_TILE_FN(3, 6, 0)
QG_TILE_FN(4, 6, 0)
/* streaming shapes: MR * NR accumulators + MR activation vectors + a
 * weight vector + the flip constant within the 32 zmm registers */
QG_TILE_FN(1, 6, 1)
QG_TILE_FN(2, 6, 1)
QG_TILE_FN(3, 6, 1)
QG_TILE_FN(4, 6, 1)
QG_TILE_FN(5, 4, 1)
QG_TILE_FN(6, 3, 1)
QG_TILE_FN(7, 3, 1)
QG_TILE_FN(8, 2, 1)
#undef QG_TILE_FN

/* The row-sequential tile of the streaming path: out[i] = sum over k < len
 * of q(i, k) * (w(k) + 128) for the MR rows of the block's copy x (signed
 * codes, stride ldx) and ONE weight row. Weight rows are then read one after
 * the other, a single sequential stream that the hardware prefetcher follows
 * at the DRAM bandwidth; several rows read side by side (4 KiB apart) are
 * several streams, which it does not (measured here: 46 GB/s for six rows in
 * lockstep against 58 GB/s one row at a time, 2 threads, 2 MiB pages). With
 * one or two rows the dependent vpdpbusd chains would bound the speed, so the
 * k range is split over KS accumulators per row. */
LV_INLINE void qg_rowtile(const uint8_t *x, int64_t ldx, const int8_t *w, int64_t len,
                          const int MR, const int KS, int32_t *out) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i acc[QG_FB * 4];
#pragma GCC unroll 32
    for (int a = 0; a < MR * KS; a++) acc[a] = _mm512_setzero_si512();
    int64_t k = 0;
    for (; k + 64 * KS <= len; k += 64 * KS) {
#pragma GCC unroll 4
        for (int c = 0; c < KS; c++) {
            const __m512i wv = _mm512_xor_si512(_mm512_loadu_si512(w + k + 64 * c), flip);
#pragma GCC unroll 8
            for (int i = 0; i < MR; i++)
                acc[i * KS + c] = _mm512_dpbusd_epi32(
                    acc[i * KS + c], wv, _mm512_loadu_si512(x + i * ldx + k + 64 * c));
        }
    }
    for (; k < len; k += 64) { /* tail: masked activation bytes load as 0 */
        const __mmask64 mk = lv512_mask64(len - k);
        const __m512i wv = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mk, w + k), flip);
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++)
            acc[i * KS] = _mm512_dpbusd_epi32(acc[i * KS], wv,
                                              _mm512_maskz_loadu_epi8(mk, x + i * ldx + k));
    }
    __m512i sum[QG_FB];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        sum[i] = acc[i * KS];
#pragma GCC unroll 4
        for (int c = 1; c < KS; c++) sum[i] = _mm512_add_epi32(sum[i], acc[i * KS + c]);
    }
    _mm512_storeu_si512(out, qg_hsum16(sum, MR));
}

typedef void (*qg_rowtile_fn)(const uint8_t *x, int64_t ldx, const int8_t *w, int64_t len,
                              int32_t *out);
#define QG_ROWTILE_FN(MR, KS)                                                                \
    static __attribute__((noinline)) void qg_rowtile_##MR(const uint8_t *x, int64_t ldx,     \
                                                          const int8_t *w, int64_t len,       \
                                                          int32_t *out) {                     \
        qg_rowtile(x, ldx, w, len, MR, KS, out);                                              \
    }
QG_ROWTILE_FN(1, 4)
QG_ROWTILE_FN(2, 4)
QG_ROWTILE_FN(3, 2)
QG_ROWTILE_FN(4, 2)
QG_ROWTILE_FN(5, 1)
QG_ROWTILE_FN(6, 1)
QG_ROWTILE_FN(7, 1)
QG_ROWTILE_FN(8, 1)
#undef QG_ROWTILE_FN

/* Runs one tile and adds its sums into the block's int32 tile (row stride
 * ld): iacc[i][j] (+)= out[i][j] - 128 * (cs[j] or rs[i]), the correction by
 * the column sums of the weights (blocked path) or the row sums of the codes
 * (streaming path), as qg_sums_into (qgemm_avx512_internal.h, which
 * sparse_avx512.c's tiles share). */
static inline void qg_tile_into(qg_tile_fn tile, const uint8_t *x, int64_t ldx,
                                const int8_t *const *wp, int64_t len, int NR, int mr, int nr,
                                const int32_t *cs, const int32_t *rs, int first,
                                uint32_t *iacc, int ld, uintptr_t *pf) {
    int32_t out[32];
    tile(x, ldx, wp, len, out, pf);
    qg_sums_into(out, NR, mr, nr, cs, rs, first, iacc, ld);
}

/* Blocked path, for blocks of more than QG_FB rows. Per QG_NR-row weight
 * tile, one pass sums the rows (vpdpbusd of a vector of ones) and copies them
 * into buf (row stride QG_WLD): the rows of a matrix whose stride is a
 * multiple of 4 KiB share one L1 set, and ten such streams (four activation
 * rows, six weight rows) would overflow its eight ways. The pass also
 * prefetches the next tile's rows, so that DRAM keeps streaming while the
 * 4 x 6 tiles then run every activation row of the block past the copy. */
static void qg_blocked_panel(const uint8_t *x, int64_t ldx, int mbn, const int8_t *w,
                             int64_t ldw, int64_t kb, int64_t len, int nbn, int first,
                             uint32_t *iacc, int8_t *buf) {
    static const qg_tile_fn tiles[QG_MR + 1] = {NULL, qg_tile_1x6_0, qg_tile_2x6_0,
                                                qg_tile_3x6_0, qg_tile_4x6_0};
    const __m512i ones = _mm512_set1_epi8(1);
    const int8_t *bp[QG_NR];
    for (int j = 0; j < QG_NR; j++) bp[j] = buf + j * QG_WLD;
    for (int nt = 0; nt < nbn; nt += QG_NR) {
        const int nr = nbn - nt < QG_NR ? nbn - nt : QG_NR;
        /* rows past the panel repeat its last row; their sums are dropped */
        const int8_t *wp[QG_NR];
        for (int j = 0; j < QG_NR; j++) wp[j] = w + (nt + (j < nr ? j : nr - 1)) * ldw + kb;
        __m512i acc[QG_NR];
        for (int j = 0; j < QG_NR; j++) acc[j] = _mm512_setzero_si512();
        for (int64_t k = 0; k < len; k += 64) {
            const __mmask64 mk = lv512_mask64(len - k);
#pragma GCC unroll 6
            for (int j = 0; j < QG_NR; j++) {
                const __m512i wv = _mm512_maskz_loadu_epi8(mk, wp[j] + k);
                /* integer arithmetic: the address may lie past the matrix,
                 * which a prefetch tolerates and pointer arithmetic does not */
                _mm_prefetch((const char *)((uintptr_t)(wp[j] + k) + (uintptr_t)(QG_NR * ldw)),
                             QG_PF_HINT);
                acc[j] = _mm512_dpbusd_epi32(acc[j], ones, wv);
                _mm512_store_si512(buf + j * QG_WLD + k, wv);
            }
        }
        int32_t cs[16];
        _mm512_storeu_si512(cs, qg_hsum16(acc, QG_NR));
        for (int mt = 0; mt < mbn; mt += QG_MR) {
            const int mr = mbn - mt < QG_MR ? mbn - mt : QG_MR;
            qg_tile_into(tiles[mr], x + mt * ldx + kb, ldx, bp, len, QG_NR, mr, nr, cs, NULL,
                         first, iacc + mt * QG_NB + nt, QG_NB, NULL);
        }
    }
}

/* Streaming path, for blocks of at most QG_FB rows (decoding, small
 * batches): one tile holds every row of the block, so each weight vector is
 * loaded once and used by all rows. xq is the block's copy as signed codes
 * (row stride ldq) and rs its row sums. The tiles sweep prefetches over the
 * next panel (pf), whose rows are contiguous: DRAM then serves one
 * sequential stream at the pace of the arithmetic, which two to six row
 * streams 4 KiB apart do not get from the hardware prefetcher alone. */
static void qg_stream_panel(const uint8_t *xq, int64_t ldq, const int32_t *rs, int mbn,
                            const int8_t *w, int64_t ldw, int64_t kb, int64_t len, int nbn,
                            int first, uint32_t *iacc, uintptr_t *pf) {
    /* a tile per block height (two 4 x 6 passes over the same weight rows
     * measured slower than one 8 x 2: their activation rows overflow L1) */
    static const struct {
        qg_tile_fn fn;
        int nr;
    } shapes[QG_FB + 1] = {{NULL, 1},          {qg_tile_1x6_1, 6}, {qg_tile_2x6_1, 6},
                           {qg_tile_3x6_1, 6}, {qg_tile_4x6_1, 6}, {qg_tile_5x4_1, 4},
                           {qg_tile_6x3_1, 3}, {qg_tile_7x3_1, 3}, {qg_tile_8x2_1, 2}};
    static const qg_rowtile_fn rowtiles[QG_FB + 1] = {
        NULL,          qg_rowtile_1, qg_rowtile_2, qg_rowtile_3, qg_rowtile_4,
        qg_rowtile_5, qg_rowtile_6, qg_rowtile_7, qg_rowtile_8};
    if (mbn <= QG_SEQ) {
        /* one weight row at a time, in address order (see qg_rowtile) */
        const __m512i r = _mm512_slli_epi32(_mm512_maskz_loadu_epi32(lv512_mask16(mbn), rs), 7);
        int32_t out[16], rv[16];
        _mm512_storeu_si512(rv, r);
        for (int j = 0; j < nbn; j++) {
            rowtiles[mbn](xq, ldq, w + j * ldw + kb, len, out);
            for (int i = 0; i < mbn; i++) {
                uint32_t *dst = iacc + i * QG_FNB + j;
                const uint32_t v = (uint32_t)out[i] - (uint32_t)rv[i];
                *dst = first ? v : *dst + v;
            }
        }
        (void)pf;
        return;
    }
    if (mbn > QG_FB) return; /* never: blocks are at most QG_FB rows */
    const int NR = shapes[mbn].nr;
    for (int nt = 0; nt < nbn; nt += NR) {
        const int nr = nbn - nt < NR ? nbn - nt : NR;
        /* rows past the panel repeat its last row; their sums are dropped */
        const int8_t *wp[QG_NR];
        for (int j = 0; j < NR; j++) wp[j] = w + (nt + (j < nr ? j : nr - 1)) * ldw + kb;
        qg_tile_into(shapes[mbn].fn, xq, ldq, wp, len, NR, mbn, nr, NULL, rs, first,
                     iacc + nt, QG_FNB, pf);
    }
}

/* One call's operands, and the scratch tiles its blocks share (on the
 * stack of the entry point: kernels do not allocate). */
typedef struct {
    const uint8_t *xu;
    int64_t ldx;
    const float *xscale;
    const int8_t *w;
    int64_t ldw;
    const float *wscale, *bias;
    int64_t K, G, gs, n1;
    void *y;
    lv_dtype ydt;
    int64_t ldy;
    /* int32 sums of the current group (mod 2^32) and float sums of the
     * groups done (G > 1), [rows][ld] with ld = QG_NB or QG_FNB */
    uint32_t iacc[QG_MB * QG_NB];
    float tacc[QG_MB * QG_NB];
    /* the blocked path's weight tile or the streaming path's activations */
    union {
        _Alignas(64) int8_t w[QG_NR * QG_WLD];
        _Alignas(64) uint8_t x[QG_XB + QG_FB * 64];
    } buf;
    int32_t rs[QG_FB];
} qg_call;

/* Rows [mb0, mb0 + mbn) of y against weight rows [nb0, nb0 + nbn): the
 * int32 sums chunk by chunk, the float combination of the groups, and the
 * epilogue in the contract's order. stream: mbn <= QG_FB, the streaming
 * path (panels of QG_FNB rows; prefetch: this block is the panel's first
 * and prefetches the next panel), else the blocked path (QG_MB x QG_NB). */
static void qg_block(qg_call *c, int stream, int prefetch, int64_t mb0, int mbn, int64_t nb0,
                     int nbn) {
    const int64_t G = c->G, gs = c->gs, ldw = c->ldw;
    const int ld = stream ? QG_FNB : QG_NB;
    /* streaming chunks as long as the activation copy allows: fewer
     * reductions per weight byte */
    const int64_t kc = stream ? QG_XB / mbn / 64 * 64 : QG_KC;
    const int8_t *wpan = c->w + nb0 * ldw;
    uintptr_t pf[2] = {0, 0}; /* the next panel, for the streaming tiles */
    if (stream && prefetch && nb0 + nbn < c->n1) {
        const int64_t rows = c->n1 - nb0 - nbn < QG_FNB ? c->n1 - nb0 - nbn : QG_FNB;
        pf[0] = (uintptr_t)(wpan + nbn * ldw);
        pf[1] = pf[0] + (uintptr_t)((rows - 1) * ldw + c->K);
    }
    for (int64_t g = 0; g < G; g++) {
        for (int64_t kb = g * gs; kb < (g + 1) * gs; kb += kc) {
            const int64_t len = (g + 1) * gs - kb < kc ? (g + 1) * gs - kb : kc;
            const int first = kb == g * gs;
            if (stream) {
                qg_stream_copy(c->xu + mb0 * c->ldx, c->ldx, mbn, kb, len, c->buf.x, kc + 64,
                               c->rs);
                qg_stream_panel(c->buf.x, kc + 64, c->rs, mbn, wpan, ldw, kb, len, nbn, first,
                                c->iacc, pf);
            } else {
                qg_blocked_panel(c->xu + mb0 * c->ldx, c->ldx, mbn, wpan, ldw, kb, len, nbn,
                                 first, c->iacc, c->buf.w);
            }
        }
        if (G == 1) break;
        /* t = (float)acc_0 * ws_0, then t + (float)acc_g * ws_g, in group order */
        const __m512i gidx = _mm512_mullo_epi32(
            _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
            _mm512_set1_epi32((int)G));
        for (int jn = 0; jn < nbn; jn += 16) {
            const __mmask16 mk = lv512_mask16(nbn - jn);
            const __m512 ws = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mk, gidx,
                                                       c->wscale + (nb0 + jn) * G + g, 4);
            for (int i = 0; i < mbn; i++) {
                const __m512 p = _mm512_mul_ps(
                    _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(mk, c->iacc + i * ld + jn)), ws);
                float *t = c->tacc + i * ld + jn;
                _mm512_storeu_ps(t, g == 0 ? p : _mm512_add_ps(_mm512_loadu_ps(t), p));
            }
        }
    }
    /* y = t * xscale[m] (+ bias[n]), stored in y's dtype */
    qg_epilogue(c->iacc, c->tacc, ld, G, c->wscale, c->xscale, c->bias, c->y, c->ydt, c->ldy,
                mb0, mbn, nb0, nbn);
}

lv_status lv_qgemm_int8_rows_avx512(const uint8_t *xu, int64_t ldx, const float *xscale,
                                    const int8_t *w, int64_t ldw, const float *wscale,
                                    int64_t group_size, const float *bias, int64_t K,
                                    int64_t m0, int64_t m1, int64_t n0, int64_t n1, void *y,
                                    lv_dtype ydt, int64_t ldy) {
    lv_status st = lv_check_qgemm(xu, ldx, xscale, w, ldw, wscale, group_size, K, m0, m1, n0,
                                  n1, y, ldy);
    if (st != LV_OK || m0 == m1 || n0 == n1) return st;
    qg_call c;
    c.xu = xu, c.ldx = ldx, c.xscale = xscale, c.w = w, c.ldw = ldw, c.wscale = wscale;
    c.bias = bias, c.K = K, c.G = lv_qgemm_groups(K, group_size), c.gs = K / c.G, c.n1 = n1;
    c.y = y, c.ydt = ydt, c.ldy = ldy;
    if (m1 - m0 <= QG_SM) {
        /* decoding and small batches: blocks of <= QG_FB rows, as even as
         * possible, run past each panel while it sits in L2 */
        const int64_t nblk = (m1 - m0 + QG_FB - 1) / QG_FB;
        const int64_t per = (m1 - m0 + nblk - 1) / nblk;
        for (int64_t nb0 = n0; nb0 < n1; nb0 += QG_FNB)
            for (int64_t mb0 = m0; mb0 < m1; mb0 += per)
                qg_block(&c, 1, mb0 == m0, mb0, (int)(m1 - mb0 < per ? m1 - mb0 : per), nb0,
                         (int)(n1 - nb0 < QG_FNB ? n1 - nb0 : QG_FNB));
        return LV_OK;
    }
    /* panels of weight rows outside, blocks of rows inside: a panel
     * (QG_NB x K bytes) stays in L2 while every block passes it, so the
     * weights come from DRAM once and the activations from L3 */
    for (int64_t nb0 = n0; nb0 < n1; nb0 += QG_NB)
        for (int64_t mb0 = m0; mb0 < m1; mb0 += QG_MB)
            qg_block(&c, 0, 0, mb0, (int)(m1 - mb0 < QG_MB ? m1 - mb0 : QG_MB), nb0,
                     (int)(n1 - nb0 < QG_NB ? n1 - nb0 : QG_NB));
    return LV_OK;
}

/* ---- gradient to the input ---------------------------------------------- */

/* The register tiles (gr_tile_1 .. gr_tile_6) are in qgemm_avx512_internal.h:
 * sparse_avx512.c runs them on strips it expands from the compressed weight. */

lv_status lv_qlinear_grad_input_rows_avx512(const void *gy, lv_dtype gdt, int64_t ldg,
                                            const int8_t *w, int64_t ldw, const float *wscale,
                                            int64_t group_size, const float *act_scale,
                                            int64_t N, int64_t K, int64_t m0, int64_t m1,
                                            int64_t k0, int64_t k1, void *gx, lv_dtype xdt,
                                            int64_t ldgx) {
    lv_status st = lv_check_grad_input(gy, ldg, w, ldw, wscale, group_size, N, K, m0, m1, k0,
                                       k1, gx, ldgx);
    if (st != LV_OK) return st;
    const int64_t G = lv_qgemm_groups(K, group_size);
    const int64_t gs = K / G;
    float park[GR_MB * 64]; /* a block's accumulators between chunks of n */
    for (int64_t mb = m0; mb < m1; mb += GR_MB) {
        const int64_t me = mb + GR_MB < m1 ? mb + GR_MB : m1;
        /* strips start at multiples of 64 in absolute k, so each lies in one
         * group (group sizes are multiples of 64) */
        for (int64_t kv = k0 & ~(int64_t)63; kv < k1; kv += 64) {
            const int64_t lo = k0 > kv ? k0 - kv : 0;
            const __mmask64 mk = lv512_mask64(k1 - kv) & ~lv512_mask64(lo);
            /* chunks of n outside the row tiles: a chunk's weight lines (and
             * their pages' TLB entries) serve every row tile of the block */
            for (int64_t n0 = 0; n0 < N; n0 += GR_NC) {
                const int nc = (int)(N - n0 < GR_NC ? N - n0 : GR_NC);
                for (int64_t m = mb; m < me; m += GR_MT)
                    gr_tiles[me - m < GR_MT ? me - m : GR_MT](
                        gy, gdt, ldg, m, w + n0 * ldw + kv, ldw, wscale, G, kv / gs, N, n0, nc,
                        kv, mk, park + (m - mb) * 64, act_scale, gx, xdt, ldgx);
            }
        }
    }
    return LV_OK;
}
