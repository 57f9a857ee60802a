/*
 * ops/cpu/sparse_avx512.c — the AVX-512 (F/BW/VL/DQ + VNNI + VBMI2) variant of
 * the sparse family (lowvram/sparse.h): the products on compressed weights
 * (kept values + bit masks) and decompression. Compiled with the qgemm
 * AVX-512 flags plus -mavx512vbmi2, and called by ops/cpu/sparse.c only on
 * CPUs that have VBMI2: vpexpandb / vpexpandw / vexpandps put the kept values
 * of a row back in their columns, one 64-, 32- or 16-bit slice of the mask at
 * a time, and the value pointer advances by the slice's popcount; values are
 * read by expand-loads or by loads masked to exactly the slice's kept
 * elements, so no kernel reads past a values row. Bit-exact with
 * sparse_ref.c (same float operations in the same order; -ffp-contract=off,
 * the only FMAs are the contract's fmaf). Arguments are refused as
 * sparse_internal.h's checks refuse them; the mask rows (exactly KV set
 * bits, none past K) are checked a panel at a time just before the panel's
 * values are read (sp_check_masks: vpopcntq where the CPU has it, else a
 * nibble table), which sparse.h allows and which costs less than checking
 * them all up front byte by byte (that alone took longer than the M = 1
 * product). Masks, compression and the input gradients forward to the
 * reference (not on an inference hot path).
 *
 * sparse_qlinear is qgemm_avx512.c's int8 product with a different weight
 * source: the helpers that do not touch the weights (dtype conversions, lane
 * masks, the tiles' reduction, the per-tile correction, the activation copy,
 * the epilogue) are that file's, from qgemm_avx512_internal.h; the tiles read
 * the weights differently, so their shapes are repeated here (same dot form,
 * same int32 sums mod 2^32, same float epilogue order, hence the same bits
 * as lv_qgemm_int8_rows on the decompressed weight):
 *   streaming (calls of <= SQ_SM = 8 rows: decoding, small batches) — the
 *     rows copied as signed codes q = xu ^ 0x80 with their row sums; each
 *     64-column slice of a weight row is expanded straight into a register
 *     (pruned columns 0), flipped to w + 128 and used by every row: sum
 *     q (w + 128) - 128 sum q. With 1-2 rows, weight rows are read one at a
 *     time (values and masks are then two sequential streams, which the
 *     hardware prefetcher follows); with 3-8, lockstep tiles that also sweep
 *     L2 prefetches over the next panel.
 *   blocked (larger calls) — as the dense blocked path: panels of SQ_NB
 *     weight rows outside, blocks of SQ_MB rows inside; per 6-row tile one
 *     pass expands the rows into a dense stack copy (the dense path copies
 *     them anyway, to dodge 4 KiB aliasing in L1) and sums them, then 4 x 6
 *     register tiles run every row of the block past the copy. The
 *     expansion is paid once per tile and block, not per row.
 * A row's value cursor (popcount of its mask before the current chunk) is
 * carried between chunks of k in a small array per panel.
 *
 * Measured on the 2-core Zen 4 this was written on (shared with other jobs,
 * so medians swing; minima of interleaved repeats, 2:4 int8 vs
 * lv_qgemm_int8_rows_avx512, weights cold): vpexpandb costs far more in these
 * loops than alone (0.9 cycles), and the M = 1 loop takes about 5.8 cycles
 * per 64 columns with the weights in L2, where the dense kernel takes 3.3;
 * so M = 1 is compute bound, not memory bound: 0.93-1.0x the dense kernel
 * with one thread (1.4-1.5 ms at K 4096, N 11008) and 0.85-1.1x with two
 * (0.7-0.8 ms, the dense kernel then streaming at 55-65 GB/s). M = 8 runs
 * at about 0.7x (the dense kernel is compute bound there and the
 * expansions come on top), M = 32 and 512 at about 1.0x.
 *
 * sparse_linear (float values) follows the contract's named order: sixteen
 * lanes, lane l takes k = l, l + 16, ... with one fused multiply-add each,
 * then the fixed s8/s4/s2 tree. Register tiles of up to 4 rows x 4 weight
 * rows (1-2 x 8 for one or two rows) expand each 16-column slice of a weight
 * row once for every row of the tile; the K tail uses merge-masked FMAs, so
 * lanes past K keep their sums (the reference never touches them: adding
 * 0 * 0 would turn a -0 sum into +0).
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "lowvram/convert.h"
#include "qgemm_internal.h"        /* lv_qgemm_groups */
#include "qgemm_avx512_internal.h" /* LV_INLINE, dtype and mask helpers, shared tile code */
#include "sparse_grad.h"
#include "sparse_internal.h"

/* The float vector <-> dtype conversions (lv512_load_f32, lv512_store_f32)
 * and lane masks (lv512_mask16, lv512_mask64) are qgemm_avx512.c's, from
 * qgemm_avx512_internal.h. */

/* ---- mask bits and expansion -------------------------------------------- */

/* Mask bits of columns [k, k + 64) of a row whose bits start at `row`, with
 * `rem` = columns left from k (> 0). Near the end only the bytes the row has
 * are read (ceil(rem / 8)); bits past K are 0 (checked), so the slice holds
 * exactly the kept columns. */
LV_INLINE uint64_t sp_bits64(const uint8_t *row, int64_t k, int64_t rem) {
    if (rem >= 64) {
        uint64_t b;
        memcpy(&b, row + k / 8, 8);
        return b;
    }
    const int nb = (int)((rem + 7) / 8);
    return (uint64_t)_mm_cvtsi128_si64(
        _mm_maskz_loadu_epi8((__mmask16)((1u << nb) - 1u), row + k / 8));
}

/* The same for 16 columns [k, k + 16), k a multiple of 16. */
LV_INLINE __mmask16 sp_bits16(const uint8_t *row, int64_t k, int64_t rem) {
    if (rem > 8) {
        uint16_t b;
        memcpy(&b, row + k / 8, 2);
        return (__mmask16)b;
    }
    return (__mmask16)row[k / 8];
}

/* The same for 32 columns [k, k + 32), k a multiple of 32. */
LV_INLINE __mmask32 sp_bits32(const uint8_t *row, int64_t k, int64_t rem) {
    if (rem >= 32) {
        uint32_t b;
        memcpy(&b, row + k / 8, 4);
        return (__mmask32)b;
    }
    const int nb = (int)((rem + 7) / 8);
    uint32_t b = 0;
    memcpy(&b, row + k / 8, (size_t)nb); /* little-endian: byte i is bits 8i.. */
    return (__mmask32)b;
}

/* The decompressed int8 slice [k, k + 64) of a row: kept bytes from *vp in
 * their columns, 0 elsewhere; *vp advances past them. */
LV_INLINE __m512i sp_expand8(uint64_t bits, const int8_t **vp) {
    const __m512i w = _mm512_maskz_expandloadu_epi8((__mmask64)bits, *vp);
    *vp += __builtin_popcountll(bits);
    return w;
}

/* take[c]: the first c bytes (a table: in the one-row loop it measured
 * faster than shifting, 5.8 against 6.1 cycles per 64 columns) */
static const __mmask64 sp_take[65] = {
    0x0ull, 0x1ull, 0x3ull, 0x7ull,
    0xfull, 0x1full, 0x3full, 0x7full,
    0xffull, 0x1ffull, 0x3ffull, 0x7ffull,
    0xfffull, 0x1fffull, 0x3fffull, 0x7fffull,
    0xffffull, 0x1ffffull, 0x3ffffull, 0x7ffffull,
    0xfffffull, 0x1fffffull, 0x3fffffull, 0x7fffffull,
    0xffffffull, 0x1ffffffull, 0x3ffffffull, 0x7ffffffull,
    0xfffffffull, 0x1fffffffull, 0x3fffffffull, 0x7fffffffull,
    0xffffffffull, 0x1ffffffffull, 0x3ffffffffull, 0x7ffffffffull,
    0xfffffffffull, 0x1fffffffffull, 0x3fffffffffull, 0x7fffffffffull,
    0xffffffffffull, 0x1ffffffffffull, 0x3ffffffffffull, 0x7ffffffffffull,
    0xfffffffffffull, 0x1fffffffffffull, 0x3fffffffffffull, 0x7fffffffffffull,
    0xffffffffffffull, 0x1ffffffffffffull, 0x3ffffffffffffull, 0x7ffffffffffffull,
    0xfffffffffffffull, 0x1fffffffffffffull, 0x3fffffffffffffull, 0x7fffffffffffffull,
    0xffffffffffffffull, 0x1ffffffffffffffull, 0x3ffffffffffffffull, 0x7ffffffffffffffull,
    0xfffffffffffffffull, 0x1fffffffffffffffull, 0x3fffffffffffffffull, 0x7fffffffffffffffull,
    0xffffffffffffffffull,
};

/* The same with a masked load of exactly the kept bytes and the register
 * form of vpexpandb: measured faster on Zen 4 in the one-row loop (5.4
 * against 7.3 cycles per 64 columns, L1-resident), slower in the lockstep
 * tiles, so only the one-row tile uses it. */
LV_INLINE __m512i sp_expand8_reg(uint64_t bits, const int8_t **vp) {
    const int c = __builtin_popcountll(bits);
    const __mmask64 take = sp_take[c];
    const __m512i w = _mm512_maskz_expand_epi8((__mmask64)bits, _mm512_maskz_loadu_epi8(take, *vp));
    *vp += c;
    return w;
}

/* sparse_internal.h's row check (exactly KV set bits over [0, K), none past
 * K in the last byte), eight bytes per popcount: its byte loop costs more
 * than the whole M = 1 product. The kernels run it per panel of rows, just
 * before the panel's values are read (which the contract allows: a bad row
 * is refused before any of its values is read), so it also brings the
 * panel's masks into cache for the product. */
/* Set bits of rows [n0, n1) over their first `full` whole bytes into cnt[],
 * 64 bytes at a time (masked loads at the row's end). POPCNT selects
 * vpopcntq (AVX512_VPOPCNTDQ, where the CPU has it: one instruction per 64
 * bytes) or a nibble table (vpshufb) summed by vpsadbw. */
#define SP_COUNT_ROWS(NAME, ATTR, POPCNT)                                                    \
    static ATTR void NAME(const uint8_t *mask_bits, int64_t ldb, int64_t full, int64_t n0,   \
                          int64_t n1, int64_t *cnt) {                                        \
        const __m512i lut = _mm512_broadcast_i32x4(                                          \
            _mm_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4));                 \
        const __m512i lo4 = _mm512_set1_epi8(0x0f), zero = _mm512_setzero_si512();          \
        (void)lut, (void)lo4;                                                                \
        for (int64_t n = n0; n < n1; n++) {                                                  \
            const uint8_t *b = mask_bits + n * ldb;                                          \
            __m512i acc = zero;                                                              \
            for (int64_t i = 0; i < full; i += 64) {                                         \
                const __m512i v = _mm512_maskz_loadu_epi8(lv512_mask64(full - i), b + i);   \
                acc = _mm512_add_epi64(acc, POPCNT);                                         \
            }                                                                                \
            cnt[n - n0] = (int64_t)_mm512_reduce_add_epi64(acc);                             \
        }                                                                                    \
    }
SP_COUNT_ROWS(sp_count_rows_vpopcnt, __attribute__((target("avx512vpopcntdq"))),
              _mm512_popcnt_epi64(v))
SP_COUNT_ROWS(sp_count_rows_lut, ,
              _mm512_sad_epu8(
                  _mm512_add_epi8(
                      _mm512_shuffle_epi8(lut, _mm512_and_si512(v, lo4)),
                      _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(v, 4), lo4))),
                  zero))
#undef SP_COUNT_ROWS

static lv_status sp_check_masks(const uint8_t *mask_bits, int64_t ldb, int64_t K, int64_t KV,
                                int64_t n0, int64_t n1) {
    const int64_t full = K / 8;
    /* a panel at a time: the counts of at most 128 rows */
    static int have_vpopcnt = -1; /* benign race: every thread stores the same value */
    if (have_vpopcnt < 0) have_vpopcnt = __builtin_cpu_supports("avx512vpopcntdq") ? 1 : 0;
    for (int64_t r0 = n0; r0 < n1; r0 += 128) {
        const int64_t r1 = n1 - r0 < 128 ? n1 : r0 + 128;
        int64_t cnt[128];
        if (have_vpopcnt)
            sp_count_rows_vpopcnt(mask_bits, ldb, full, r0, r1, cnt);
        else
            sp_count_rows_lut(mask_bits, ldb, full, r0, r1, cnt);
        for (int64_t n = r0; n < r1; n++) {
            int64_t c = cnt[n - r0];
            if (K % 8) {
                const unsigned last = mask_bits[n * ldb + full];
                if (last >> (K % 8)) return LV_E_INVALID;
                c += __builtin_popcount(last);
            }
            if (c != KV) return LV_E_INVALID;
        }
    }
    return LV_OK;
}

/* ---- sparse_qlinear ----------------------------------------------------- */

/* The dense kernel's tuning (qgemm_avx512.c, Zen 4), same roles. */
/* calls of at most this many rows take the streaming path: one block, so
 * each weight slice is expanded once per call (the dense kernel streams up
 * to 32 rows in four blocks, which here would expand every slice four
 * times; measured at M = 32: 0.7x the dense kernel that way, 1.0x blocked) */
#define SQ_SM 8
#define SQ_FB 8    /* rows per block, streaming path */
#define SQ_SEQ 2   /* blocks of at most this many rows read weight rows one at a time */
#define SQ_FNB 96  /* weight rows per panel, streaming path (a multiple of 2, 3, 4, 6) */
#define SQ_XB 24576 /* bytes of the streaming path's activation copy (stays in L1) */
#define SQ_MR 4    /* activation rows per register tile, blocked path */
#define SQ_NR 6    /* weight rows per register tile, blocked path */
#define SQ_MB 128  /* activation rows per block, blocked path */
#define SQ_NB 48   /* weight rows per panel, blocked path */
#define SQ_KC 4096 /* k bytes per chunk, blocked path */
#define SQ_WLD (SQ_KC + 64)    /* row stride of the blocked path's weight copy */
#define SQ_PF_HINT _MM_HINT_T1 /* prefetches into L2 */

/* The tiles' reduction is the dense kernel's qg_hsum16
 * (qgemm_avx512_internal.h). */

/* Blocked-path register tile (dense weights, the expanded copy):
 * out[i * NR + j] = sum over k < len of (q + 128)(i, k) * w(j, k) mod 2^32. */
LV_INLINE void sq_dtile(const uint8_t *x, int64_t ldx, const int8_t *const *wp, int64_t len,
                        const int MR, const int NR, int32_t *out) {
    __m512i acc[24];
#pragma GCC unroll 24
    for (int a = 0; a < MR * NR; a++) acc[a] = _mm512_setzero_si512();
    int64_t k = 0;
    for (; k + 64 <= len; k += 64) {
        __m512i xv[SQ_MR];
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) xv[i] = _mm512_loadu_si512(x + i * ldx + k);
#pragma GCC unroll 6
        for (int j = 0; j < NR; j++) {
            const __m512i wv = _mm512_load_si512(wp[j] + k);
#pragma GCC unroll 4
            for (int i = 0; i < MR; i++)
                acc[i * NR + j] = _mm512_dpbusd_epi32(acc[i * NR + j], xv[i], wv);
        }
    }
    if (k < len) { /* K tail: masked activation bytes load as 0 and add nothing */
        const __mmask64 mk = lv512_mask64(len - k);
        __m512i xv[SQ_MR];
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) xv[i] = _mm512_maskz_loadu_epi8(mk, x + i * ldx + k);
#pragma GCC unroll 6
        for (int j = 0; j < NR; j++) {
            const __m512i wv = _mm512_load_si512(wp[j] + k);
#pragma GCC unroll 4
            for (int i = 0; i < MR; i++)
                acc[i * NR + j] = _mm512_dpbusd_epi32(acc[i * NR + j], xv[i], wv);
        }
    }
    const int na = MR * NR;
    _mm512_storeu_si512(out, qg_hsum16(acc, na < 16 ? na : 16));
    if (na > 16) _mm512_storeu_si512(out + 16, qg_hsum16(acc + 16, na - 16));
}

/* Streaming-path register tile, expanding as it goes: out[i * NR + j] = sum
 * over k < len of q(i, k) * (w(j, k) + 128) mod 2^32, x the block's signed
 * copy (zero-padded to whole vectors), mp[j] row j's mask bits from the
 * chunk's first column, vp[j] its value cursor (advanced). Each expanded
 * vector also prefetches the next line of the sweep pf[0] .. pf[1]. */
LV_INLINE void sq_stile(const uint8_t *x, int64_t ldx, const uint8_t *const *mp,
                        const int8_t **vp, int64_t len, const int MR, const int NR,
                        int32_t *out, uintptr_t *pf) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    uintptr_t pfc = pf[0];
    const uintptr_t pfe = pf[1];
    const int8_t *v[SQ_NR];
#pragma GCC unroll 6
    for (int j = 0; j < NR; j++) v[j] = vp[j];
    __m512i acc[24];
#pragma GCC unroll 24
    for (int a = 0; a < MR * NR; a++) acc[a] = _mm512_setzero_si512();
    for (int64_t k = 0; k < len; k += 64) {
        __m512i xv[SQ_FB];
        /* the copy is zero-padded past len: whole loads add nothing there */
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) xv[i] = _mm512_load_si512(x + i * ldx + k);
#pragma GCC unroll 6
        for (int j = 0; j < NR; j++) {
            const __m512i wv =
                _mm512_xor_si512(sp_expand8(sp_bits64(mp[j], k, len - k), &v[j]), flip);
            if (pfc < pfe) {
                _mm_prefetch((const char *)pfc, SQ_PF_HINT);
                pfc += 64;
            }
#pragma GCC unroll 8
            for (int i = 0; i < MR; i++)
                acc[i * NR + j] = _mm512_dpbusd_epi32(acc[i * NR + j], wv, xv[i]);
        }
    }
    pf[0] = pfc;
#pragma GCC unroll 6
    for (int j = 0; j < NR; j++) vp[j] = v[j];
    const int na = MR * NR;
    _mm512_storeu_si512(out, qg_hsum16(acc, na < 16 ? na : 16));
    if (na > 16) _mm512_storeu_si512(out + 16, qg_hsum16(acc + 16, na - 16));
}

/* Row-sequential streaming tile (blocks of 1-2 rows): SQ_RR weight rows
 * read one after the other (values and masks then stay two sequential
 * streams, which the hardware prefetcher follows), each row's k range split
 * over KS accumulators so that the vpdpbusd chains do not bound the speed,
 * one reduction at the end. out[r * MR + i] = sum q(i, k) (w_r(k) + 128)
 * mod 2^32. Measured on Zen 4 (L1-resident, cycles per 64 columns, M = 1):
 * one row per call 6.5, two or four rows per call 10-11 (the expansion
 * loop runs slower after the first row; not understood), so SQ_RR is 1. */
#define SQ_RR 1
LV_INLINE void sq_rtile(const uint8_t *x, int64_t ldx, const uint8_t *const *mbp,
                        const int8_t **vp, int64_t len, const int MR, const int KS,
                        int32_t *out) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i sum[SQ_RR * SQ_SEQ];
#pragma GCC unroll 1
    for (int r = 0; r < SQ_RR; r++) {
        const uint8_t *mb = mbp[r];
        const int8_t *v = vp[r];
        __m512i acc[SQ_SEQ * 4];
#pragma GCC unroll 8
        for (int a = 0; a < MR * KS; a++) acc[a] = _mm512_setzero_si512();
        int64_t k = 0;
        for (; k + 64 * KS <= len; k += 64 * KS) {
#pragma GCC unroll 4
            for (int c = 0; c < KS; c++) {
                uint64_t bits;
                memcpy(&bits, mb + (k + 64 * c) / 8, 8);
                const __m512i wv = _mm512_xor_si512(
                    MR == 1 ? sp_expand8_reg(bits, &v) : sp_expand8(bits, &v), flip);
#pragma GCC unroll 2
                for (int i = 0; i < MR; i++)
                    acc[i * KS + c] = _mm512_dpbusd_epi32(
                        acc[i * KS + c], wv, _mm512_load_si512(x + i * ldx + k + 64 * c));
            }
        }
        for (; k < len; k += 64) {
            const __m512i wv =
                _mm512_xor_si512(sp_expand8(sp_bits64(mb, k, len - k), &v), flip);
#pragma GCC unroll 2
            for (int i = 0; i < MR; i++)
                acc[i * KS] =
                    _mm512_dpbusd_epi32(acc[i * KS], wv, _mm512_load_si512(x + i * ldx + k));
        }
        vp[r] = v;
#pragma GCC unroll 2
        for (int i = 0; i < MR; i++) {
            __m512i t = acc[i * KS];
#pragma GCC unroll 4
            for (int c = 1; c < KS; c++) t = _mm512_add_epi32(t, acc[i * KS + c]);
            sum[r * MR + i] = t;
        }
    }
    _mm512_storeu_si512(out, qg_hsum16(sum, SQ_RR * MR));
}

/* One noinline function per tile shape: several shapes inlined into one loop
 * make GCC spill the accumulators. */
typedef void (*sq_dtile_fn)(const uint8_t *x, int64_t ldx, const int8_t *const *wp,
                            int64_t len, int32_t *out);
typedef void (*sq_stile_fn)(const uint8_t *x, int64_t ldx, const uint8_t *const *mp,
                            const int8_t **vp, int64_t len, int32_t *out, uintptr_t *pf);
typedef void (*sq_rtile_fn)(const uint8_t *x, int64_t ldx, const uint8_t *const *mbp,
                            const int8_t **vp, int64_t len, int32_t *out);
#define SQ_DTILE_FN(MR)                                                                      \
    static __attribute__((noinline)) void sq_dtile_##MR(                                     \
        const uint8_t *x, int64_t ldx, const int8_t *const *wp, int64_t len, int32_t *out) { \
        sq_dtile(x, ldx, wp, len, MR, SQ_NR, out);                                           \
    }
SQ_DTILE_FN(1)
SQ_DTILE_FN(2)
SQ_DTILE_FN(3)
SQ_DTILE_FN(4)
#undef SQ_DTILE_FN
#define SQ_STILE_FN(MR, NR)                                                                  \
    static __attribute__((noinline)) void sq_stile_##MR##x##NR(                              \
        const uint8_t *x, int64_t ldx, const uint8_t *const *mp, const int8_t **vp,          \
        int64_t len, int32_t *out, uintptr_t *pf) {                                          \
        sq_stile(x, ldx, mp, vp, len, MR, NR, out, pf);                                      \
    }
SQ_STILE_FN(3, 6)
SQ_STILE_FN(4, 6)
SQ_STILE_FN(5, 4)
SQ_STILE_FN(6, 3)
SQ_STILE_FN(7, 3)
SQ_STILE_FN(8, 2)
#undef SQ_STILE_FN
#define SQ_RTILE_FN(MR, KS)                                                                  \
    static __attribute__((noinline)) void sq_rtile_##MR(                                     \
        const uint8_t *x, int64_t ldx, const uint8_t *const *mbp, const int8_t **vp,         \
        int64_t len, int32_t *out) {                                                         \
        sq_rtile(x, ldx, mbp, vp, len, MR, KS, out);                                         \
    }
SQ_RTILE_FN(1, 4)
SQ_RTILE_FN(2, 2)
#undef SQ_RTILE_FN

/* One call's operands and the scratch its blocks share (on the entry point's
 * stack: kernels do not allocate). */
typedef struct {
    const uint8_t *xu;
    int64_t ldx;
    const float *xscale;
    const int8_t *v;
    int64_t ldv;
    const uint8_t *mb;
    int64_t ldb;
    const float *wscale, *bias;
    int64_t K, G, gs, n1;
    void *y;
    lv_dtype ydt;
    int64_t ldy;
    /* int32 sums of the current group and float sums of the groups done */
    uint32_t iacc[SQ_MB * SQ_NB];
    float tacc[SQ_MB * SQ_NB];
    /* each panel row's value cursor: kept values before the current chunk */
    int64_t cur[SQ_FNB];
    union {
        _Alignas(64) int8_t w[SQ_NR * SQ_WLD];
        _Alignas(64) uint8_t x[SQ_XB + SQ_FB * 64];
    } buf;
    int32_t rs[SQ_FB];
} sq_call;

/* Blocked path: per SQ_NR-row tile of the panel (rows nb0 ..), expand
 * columns [kb, kb + len) into buf with the rows' sums (for - 128 sum w),
 * prefetching the next tile's values and masks, then run every activation
 * row of the block past the copy in 4 x 6 tiles. */
static void sq_blocked_panel(sq_call *c, int64_t mb0, int mbn, int64_t nb0, int64_t kb,
                             int64_t len, int nbn, int first) {
    static const sq_dtile_fn tiles[SQ_MR + 1] = {NULL, sq_dtile_1, sq_dtile_2, sq_dtile_3,
                                                 sq_dtile_4};
    const __m512i ones = _mm512_set1_epi8(1);
    const int64_t ldv = c->ldv, ldb = c->ldb;
    const int8_t *bp[SQ_NR];
    for (int j = 0; j < SQ_NR; j++) bp[j] = c->buf.w + j * SQ_WLD;
    for (int nt = 0; nt < nbn; nt += SQ_NR) {
        const int nr = nbn - nt < SQ_NR ? nbn - nt : SQ_NR;
        /* rows past the panel repeat its last row; their sums are dropped
         * and their cursors not kept */
        const int8_t *vp[SQ_NR];
        const uint8_t *mp[SQ_NR];
        for (int j = 0; j < SQ_NR; j++) {
            const int64_t r = nt + (j < nr ? j : nr - 1);
            vp[j] = c->v + (nb0 + r) * ldv + c->cur[r];
            mp[j] = c->mb + (nb0 + r) * ldb + kb / 8;
        }
        __m512i acc[SQ_NR];
        for (int j = 0; j < SQ_NR; j++) acc[j] = _mm512_setzero_si512();
        for (int64_t k = 0; k < len; k += 64) {
#pragma GCC unroll 6
            for (int j = 0; j < SQ_NR; j++) {
                /* integer arithmetic: the addresses may lie past the arrays,
                 * which a prefetch tolerates and pointer arithmetic does not */
                _mm_prefetch((const char *)((uintptr_t)vp[j] + (uintptr_t)(SQ_NR * ldv)),
                             SQ_PF_HINT);
                if (!(k & 511))
                    _mm_prefetch(
                        (const char *)((uintptr_t)(mp[j] + k / 8) + (uintptr_t)(SQ_NR * ldb)),
                        SQ_PF_HINT);
                const __m512i wv = sp_expand8(sp_bits64(mp[j], k, len - k), &vp[j]);
                acc[j] = _mm512_dpbusd_epi32(acc[j], ones, wv);
                _mm512_store_si512(c->buf.w + j * SQ_WLD + k, wv);
            }
        }
        for (int j = 0; j < nr; j++) c->cur[nt + j] = vp[j] - (c->v + (nb0 + nt + j) * ldv);
        int32_t cs[16];
        _mm512_storeu_si512(cs, qg_hsum16(acc, SQ_NR));
        for (int mt = 0; mt < mbn; mt += SQ_MR) {
            const int mr = mbn - mt < SQ_MR ? mbn - mt : SQ_MR;
            int32_t out[32];
            tiles[mr](c->xu + (mb0 + mt) * c->ldx + kb, c->ldx, bp, len, out);
            qg_sums_into(out, SQ_NR, mr, nr, cs, NULL, first, c->iacc + mt * SQ_NB + nt, SQ_NB);
        }
    }
}

/* Streaming path over the panel's rows for columns [kb, kb + len): xq the
 * block's signed copy (row stride ldq), rs its row sums. */
static void sq_stream_panel(sq_call *c, const uint8_t *xq, int64_t ldq, int mbn, int64_t nb0,
                            int64_t kb, int64_t len, int nbn, int first, uintptr_t *pf) {
    static const struct {
        sq_stile_fn fn;
        int nr;
    } shapes[SQ_FB + 1] = {{NULL, 1},        {NULL, 1},        {NULL, 1},
                           {sq_stile_3x6, 6}, {sq_stile_4x6, 6}, {sq_stile_5x4, 4},
                           {sq_stile_6x3, 3}, {sq_stile_7x3, 3}, {sq_stile_8x2, 2}};
    static const sq_rtile_fn rtiles[SQ_SEQ + 1] = {NULL, sq_rtile_1, sq_rtile_2};
    const int64_t ldv = c->ldv, ldb = c->ldb;
    if (mbn <= SQ_SEQ) {
        const uint32_t r0 = (uint32_t)c->rs[0] << 7, r1 = (uint32_t)c->rs[mbn - 1] << 7;
        int32_t out[16];
        for (int nt = 0; nt < nbn; nt += SQ_RR) {
            const int nr = nbn - nt < SQ_RR ? nbn - nt : SQ_RR;
            /* rows past the panel repeat its last row; dropped */
            const int8_t *vp[SQ_RR];
            const uint8_t *mp[SQ_RR];
            for (int j = 0; j < SQ_RR; j++) {
                const int64_t r = nt + (j < nr ? j : nr - 1);
                vp[j] = c->v + (nb0 + r) * ldv + c->cur[r];
                mp[j] = c->mb + (nb0 + r) * ldb + kb / 8;
            }
            rtiles[mbn](xq, ldq, mp, vp, len, out);
            for (int j = 0; j < nr; j++) {
                c->cur[nt + j] = vp[j] - (c->v + (nb0 + nt + j) * ldv);
                for (int i = 0; i < mbn; i++) {
                    uint32_t *dst = c->iacc + i * SQ_FNB + nt + j;
                    const uint32_t v = (uint32_t)out[j * mbn + i] - (i ? r1 : r0);
                    *dst = first ? v : *dst + v;
                }
            }
        }
        return;
    }
    const int NR = shapes[mbn].nr;
    for (int nt = 0; nt < nbn; nt += NR) {
        const int nr = nbn - nt < NR ? nbn - nt : NR;
        const int8_t *vp[SQ_NR];
        const uint8_t *mp[SQ_NR];
        for (int j = 0; j < NR; j++) {
            const int64_t r = nt + (j < nr ? j : nr - 1);
            vp[j] = c->v + (nb0 + r) * ldv + c->cur[r];
            mp[j] = c->mb + (nb0 + r) * ldb + kb / 8;
        }
        int32_t out[32];
        shapes[mbn].fn(xq, ldq, mp, vp, len, out, pf);
        for (int j = 0; j < nr; j++) c->cur[nt + j] = vp[j] - (c->v + (nb0 + nt + j) * ldv);
        qg_sums_into(out, NR, mbn, nr, NULL, c->rs, first, c->iacc + nt, SQ_FNB);
    }
}

/* Rows [mb0, mb0 + mbn) of y against weight rows [nb0, nb0 + nbn): int32
 * sums chunk by chunk, groups combined in float in group order, and the
 * epilogue in the contract's order (as qgemm_avx512.c's qg_block). */
static void sq_block(sq_call *c, int stream, int prefetch, int64_t mb0, int mbn, int64_t nb0,
                     int nbn) {
    const int64_t G = c->G, gs = c->gs;
    const int ld = stream ? SQ_FNB : SQ_NB;
    const int64_t kc = stream ? SQ_XB / mbn / 64 * 64 : SQ_KC;
    uintptr_t pf[2] = {0, 0}; /* the next panel's values then masks, for the tiles */
    if (stream && prefetch && nb0 + nbn < c->n1) {
        const int64_t nx = nb0 + nbn;
        const int64_t rows = c->n1 - nx < SQ_FNB ? c->n1 - nx : SQ_FNB;
        /* values rows are contiguous when ldv == KV (the canonical layout);
         * the sweep is a hint either way */
        pf[0] = (uintptr_t)(c->v + nx * c->ldv);
        pf[1] = pf[0] + (uintptr_t)((rows - 1) * c->ldv + c->ldv);
    }
    for (int j = 0; j < nbn; j++) c->cur[j] = 0;
    for (int64_t g = 0; g < G; g++) {
        for (int64_t kb = g * gs; kb < (g + 1) * gs; kb += kc) {
            const int64_t len = (g + 1) * gs - kb < kc ? (g + 1) * gs - kb : kc;
            const int first = kb == g * gs;
            if (stream) {
                qg_stream_copy(c->xu + mb0 * c->ldx, c->ldx, mbn, kb, len, c->buf.x, kc + 64,
                               c->rs);
                sq_stream_panel(c, c->buf.x, kc + 64, mbn, nb0, kb, len, nbn, first, pf);
            } else {
                sq_blocked_panel(c, mb0, mbn, nb0, kb, len, nbn, first);
            }
        }
        if (G == 1) break;
        /* t = (float)acc_0 * ws_0, then t + (float)acc_g * ws_g, in group order
         * (not shared with qg_block: tacc goes through masked loads and stores
         * here, whole vectors there) */
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
                _mm512_mask_storeu_ps(t, mk,
                                      g == 0 ? p : _mm512_add_ps(_mm512_maskz_loadu_ps(mk, t), p));
            }
        }
    }
    /* y = t * xscale[m] (+ bias[n]), stored in y's dtype */
    qg_epilogue(c->iacc, c->tacc, ld, G, c->wscale, c->xscale, c->bias, c->y, c->ydt, c->ldy,
                mb0, mbn, nb0, nbn);
}

lv_status lv_sparse_qgemm_int8_rows_avx512(const uint8_t *xu, int64_t ldx, const float *xscale,
                                           const int8_t *qvalues, int64_t ldv,
                                           const uint8_t *mask_bits, int64_t ldb, int64_t KV,
                                           const float *wscale, int64_t group_size,
                                           const float *bias, int64_t K, int64_t m0,
                                           int64_t m1, int64_t n0, int64_t n1, void *y,
                                           lv_dtype ydt, int64_t ldy) {
    /* lv_check_sparse_qgemm's scalar checks (an empty n range skips its
     * pointer and mask checks), then its pointer checks; masks are checked
     * per panel below (sp_check_masks) */
    lv_status st = lv_check_sparse_qgemm(xu, ldx, xscale, qvalues, ldv, mask_bits, ldb, KV,
                                         wscale, group_size, K, m0, m1, n0, n0, y, ldy);
    if (st != LV_OK || n1 < n0) return st != LV_OK ? st : LV_E_INVALID;
    if (m0 == m1 || n0 == n1) return LV_OK;
    if (!xu || !xscale || !mask_bits || !wscale || !y || (KV > 0 && !qvalues) || ldx < K ||
        ldv < KV || ldb < lv_mask_row_bytes(K) || ldy < n1)
        return LV_E_INVALID;
    /* KV = 0 may come with no values at all: a zero mask expands nothing, but
     * row pointers are still formed, so give them a real base */
    static const int8_t none[1] = {0};
    if (KV == 0) qvalues = none, ldv = 0;
    sq_call c;
    c.xu = xu, c.ldx = ldx, c.xscale = xscale, c.v = qvalues, c.ldv = ldv, c.mb = mask_bits;
    c.ldb = ldb, c.wscale = wscale, c.bias = bias, c.K = K;
    c.G = group_size > 0 ? K / group_size : 1, c.gs = K / c.G, c.n1 = n1;
    c.y = y, c.ydt = ydt, c.ldy = ldy;
    if (m1 - m0 <= SQ_SM) {
        /* blocks of <= SQ_FB rows, as even as possible, run past each panel
         * while it sits in L2 */
        const int64_t nblk = (m1 - m0 + SQ_FB - 1) / SQ_FB;
        const int64_t per = (m1 - m0 + nblk - 1) / nblk;
        for (int64_t nb0 = n0; nb0 < n1; nb0 += SQ_FNB) {
            if (sp_check_masks(mask_bits, ldb, K, KV, nb0, nb0 + SQ_FNB < n1 ? nb0 + SQ_FNB : n1))
                return LV_E_INVALID;
            for (int64_t mb0 = m0; mb0 < m1; mb0 += per)
                sq_block(&c, 1, mb0 == m0, mb0, (int)(m1 - mb0 < per ? m1 - mb0 : per), nb0,
                         (int)(n1 - nb0 < SQ_FNB ? n1 - nb0 : SQ_FNB));
        }
        return LV_OK;
    }
    for (int64_t nb0 = n0; nb0 < n1; nb0 += SQ_NB) {
        if (sp_check_masks(mask_bits, ldb, K, KV, nb0, nb0 + SQ_NB < n1 ? nb0 + SQ_NB : n1))
            return LV_E_INVALID;
        for (int64_t mb0 = m0; mb0 < m1; mb0 += SQ_MB)
            sq_block(&c, 0, 0, mb0, (int)(m1 - mb0 < SQ_MB ? m1 - mb0 : SQ_MB), nb0,
                     (int)(n1 - nb0 < SQ_NB ? n1 - nb0 : SQ_NB));
    }
    return LV_OK;
}

/* ---- sparse_linear ------------------------------------------------------ */

#define SG_MR 4 /* activation rows per register tile */
#define SG_NR 4 /* weight rows per register tile (8 when the tile has <= 2 rows) */

/* Columns [k, k + 16) of a weight row as float32: the kept values from *vp
 * (dtype vdt) in their columns, 0 elsewhere; *vp advances past them. */
LV_INLINE __m512 sg_expand(__mmask16 bits, const char **vp, lv_dtype vdt) {
    /* register forms on a masked load of exactly the kept elements: the
     * memory forms (vpexpandw / vexpandps m) measured several times slower
     * on Zen 4 */
    const int c = __builtin_popcount(bits);
    const __mmask16 take = (__mmask16)((1u << c) - 1u);
    __m512 w;
    switch (vdt) {
    case LV_BF16:
        w = _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_maskz_expand_epi16(
                bits, _mm256_maskz_loadu_epi16(take, (const void *)*vp))),
            16));
        *vp += 2 * c;
        break;
    case LV_F16:
        w = _mm512_cvtph_ps(
            _mm256_maskz_expand_epi16(bits, _mm256_maskz_loadu_epi16(take, (const void *)*vp)));
        *vp += 2 * c;
        break;
    default:
        w = _mm512_maskz_expand_ps(bits, _mm512_maskz_loadu_ps(take, (const void *)*vp));
        *vp += 4 * c;
        break;
    }
    return w;
}

/* MR activation rows x NR weight rows over all of K, in the contract's lane
 * order; y[i][j] the tree's sums. */
LV_INLINE void sg_tile(const char *const *xr, lv_dtype xdt, const uint8_t *const *mp,
                       const char *const *vp0, lv_dtype vdt, int64_t K, const int MR,
                       const int NR, float *yout) {
    __m512 acc[16];
    const char *vp[8];
#pragma GCC unroll 8
    for (int j = 0; j < NR; j++) vp[j] = vp0[j];
#pragma GCC unroll 16
    for (int a = 0; a < MR * NR; a++) acc[a] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 xv[SG_MR];
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) xv[i] = lv512_load_f32(xr[i], xdt, k, 0xffff);
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) {
            const __m512 w = sg_expand(sp_bits16(mp[j], k, K - k), &vp[j], vdt);
#pragma GCC unroll 4
            for (int i = 0; i < MR; i++)
                acc[i * NR + j] = _mm512_fmadd_ps(xv[i], w, acc[i * NR + j]);
        }
    }
    if (k < K) {
        /* lanes past K keep their sums: the reference gives them no k */
        const __mmask16 mk = lv512_mask16(K - k);
        __m512 xv[SG_MR];
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) xv[i] = lv512_load_f32(xr[i], xdt, k, mk);
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) {
            const __m512 w = sg_expand(sp_bits16(mp[j], k, K - k), &vp[j], vdt);
#pragma GCC unroll 4
            for (int i = 0; i < MR; i++)
                acc[i * NR + j] = _mm512_mask3_fmadd_ps(xv[i], w, acc[i * NR + j], mk);
        }
    }
#pragma GCC unroll 16
    for (int a = 0; a < MR * NR; a++) {
        /* s8[i] = lane[i] + lane[i + 8], s4[i] = s8[i] + s8[i + 4],
         * s2[i] = s4[i] + s4[i + 2], y = s2[0] + s2[1] */
        const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(acc[a]),
                                        _mm512_extractf32x8_ps(acc[a], 1));
        const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
        const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        yout[a] = _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
    }
}

typedef void (*sg_tile_fn)(const char *const *xr, lv_dtype xdt, const uint8_t *const *mp,
                           const char *const *vp0, lv_dtype vdt, int64_t K, float *yout);
#define SG_TILE_FN(MR, NR)                                                                   \
    static __attribute__((noinline)) void sg_tile_##MR##x##NR(                               \
        const char *const *xr, lv_dtype xdt, const uint8_t *const *mp,                       \
        const char *const *vp0, lv_dtype vdt, int64_t K, float *yout) {                      \
        sg_tile(xr, xdt, mp, vp0, vdt, K, MR, NR, yout);                                     \
    }
SG_TILE_FN(1, 8)
SG_TILE_FN(2, 8)
SG_TILE_FN(3, 4)
SG_TILE_FN(4, 4)
#undef SG_TILE_FN

lv_status lv_sparse_gemm_rows_avx512(const void *x, lv_dtype xdt, int64_t ldx,
                                     const void *values, lv_dtype vdt, int64_t ldv,
                                     const uint8_t *mask_bits, int64_t ldb, int64_t KV,
                                     const float *bias, int64_t K, int64_t m0, int64_t m1,
                                     int64_t n0, int64_t n1, void *y, lv_dtype ydt,
                                     int64_t ldy) {
    /* as in lv_sparse_qgemm_int8_rows_avx512: scalar checks, pointer checks,
     * then masks per tile of rows */
    lv_status st = lv_check_sparse_gemm(x, ldx, values, ldv, mask_bits, ldb, KV, K, m0, m1, n0,
                                        n0, y, ldy);
    if (st != LV_OK || n1 < n0) return st != LV_OK ? st : LV_E_INVALID;
    if (m0 == m1 || n0 == n1) return LV_OK;
    if (!x || !mask_bits || !y || (KV > 0 && !values) || ldx < K || ldv < KV ||
        ldb < lv_mask_row_bytes(K) || ldy < n1)
        return LV_E_INVALID;
    static const float none[1] = {0.0f}; /* see lv_sparse_qgemm_int8_rows_avx512 */
    if (KV == 0) values = none, ldv = 0;
    static const struct {
        sg_tile_fn fn;
        int nr;
    } shapes[SG_MR + 1] = {{NULL, 1}, {sg_tile_1x8, 8}, {sg_tile_2x8, 8}, {sg_tile_3x4, 4},
                           {sg_tile_4x4, 4}};
    const size_t xsz = (size_t)lv_dtype_size(xdt), vsz = (size_t)lv_dtype_size(vdt),
                 ysz = (size_t)lv_dtype_size(ydt);
    /* one tile height for the whole call (the last block may be shorter), so
     * that a tile's weight rows, in L1, serve every block of rows */
    const int mrt = m1 - m0 < SG_MR ? (int)(m1 - m0) : SG_MR;
    const int NR = shapes[mrt].nr;
    for (int64_t nt = n0; nt < n1; nt += NR) {
        const int nr = n1 - nt < NR ? (int)(n1 - nt) : NR;
        if (sp_check_masks(mask_bits, ldb, K, KV, nt, nt + nr)) return LV_E_INVALID;
        /* rows past the range repeat its last row; their sums are dropped */
        const uint8_t *mp[8];
        const char *vp[8];
        for (int j = 0; j < NR; j++) {
            const int64_t n = nt + (j < nr ? j : nr - 1);
            mp[j] = mask_bits + n * ldb;
            vp[j] = (const char *)values + (size_t)(n * ldv) * vsz;
        }
        for (int64_t mt = m0; mt < m1; mt += mrt) {
            const int mr = m1 - mt < mrt ? (int)(m1 - mt) : mrt;
            const char *xr[SG_MR];
            for (int i = 0; i < mr; i++) xr[i] = (const char *)x + (size_t)((mt + i) * ldx) * xsz;
            float out[16];
            int nrs = NR;
            if (mr == mrt) {
                shapes[mr].fn(xr, xdt, mp, vp, vdt, K, out);
            } else {
                /* a short last block: one row at a time, NR columns */
                for (int i = 0; i < mr; i++) {
                    float o[8];
                    for (int j0 = 0; j0 < NR; j0 += 8) {
                        const int w = NR - j0 < 8 ? NR - j0 : 8;
                        const uint8_t *mq[8];
                        const char *vq[8];
                        for (int j = 0; j < 8; j++) {
                            mq[j] = mp[j0 + (j < w ? j : w - 1)];
                            vq[j] = vp[j0 + (j < w ? j : w - 1)];
                        }
                        sg_tile_1x8(&xr[i], xdt, mq, vq, vdt, K, o);
                        for (int j = 0; j < w; j++) out[i * NR + j0 + j] = o[j];
                    }
                }
            }
            for (int i = 0; i < mr; i++) {
                void *yr = (char *)y + (size_t)((mt + i) * ldy) * ysz;
                for (int j = 0; j < nr; j++) {
                    float v = out[i * nrs + j];
                    if (bias) v = v + bias[nt + j];
                    lv_store_f32(yr, ydt, nt + j, v);
                }
            }
        }
    }
    return LV_OK;
}

/* ---- decompression ------------------------------------------------------ */

lv_status lv_sparse_decompress_rows_avx512(const void *values, int esz, int64_t ldv,
                                           const uint8_t *mask_bits, int64_t ldb, int64_t K,
                                           int64_t KV, int64_t r0, int64_t r1, void *w,
                                           int64_t ldw) {
    lv_status st = lv_check_decompress(values, esz, ldv, mask_bits, ldb, K, KV, r0, r1, w, ldw);
    if (st != LV_OK) return st;
    static const float none[1] = {0.0f}; /* see lv_sparse_qgemm_int8_rows_avx512 */
    if (KV == 0) values = none, ldv = 0;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *bits = mask_bits + r * ldb;
        /* a row's values are read only after its mask proves to hold KV bits */
        if (sp_check_masks(mask_bits, ldb, K, KV, r, r + 1)) return LV_E_INVALID;
        const char *vr = (const char *)values + (size_t)(r * ldv) * (size_t)esz;
        char *wr = (char *)w + (size_t)(r * ldw) * (size_t)esz;
        /* 64 bytes of output per step: 64, 32 or 16 elements */
        if (esz == 1) {
            const int8_t *vp = (const int8_t *)vr;
            for (int64_t k = 0; k < K; k += 64) {
                const __m512i v = sp_expand8(sp_bits64(bits, k, K - k), &vp);
                _mm512_mask_storeu_epi8(wr + k, lv512_mask64(K - k), v);
            }
        } else if (esz == 2) {
            for (int64_t k = 0; k < K; k += 32) {
                const __mmask32 b = sp_bits32(bits, k, K - k);
                const __m512i v = _mm512_maskz_expandloadu_epi16(b, vr);
                vr += 2 * __builtin_popcount(b);
                const __mmask32 mk =
                    K - k >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << (K - k)) - 1u);
                _mm512_mask_storeu_epi16(wr + 2 * k, mk, v);
            }
        } else {
            for (int64_t k = 0; k < K; k += 16) {
                const __mmask16 b = sp_bits16(bits, k, K - k);
                const __m512i v = _mm512_maskz_expandloadu_epi32(b, vr);
                vr += 4 * __builtin_popcount(b);
                _mm512_mask_storeu_epi32(wr + 4 * k, lv512_mask16(K - k), v);
            }
        }
    }
    return LV_OK;
}

/* ---- forwarded to the reference ----------------------------------------- */

lv_status lv_nm_mask_rows_avx512(const float *score, int64_t lds, int64_t K, int n, int m,
                                 int64_t r0, int64_t r1, uint8_t *keep, int64_t ldk) {
    return lv_nm_mask_rows_ref(score, lds, K, n, m, r0, r1, keep, ldk);
}

lv_status lv_sparse_compress_rows_avx512(const void *w, int esz, int64_t ldw,
                                         const uint8_t *keep, int64_t ldk, int64_t K,
                                         int64_t KV, int64_t r0, int64_t r1, void *values,
                                         int64_t ldv, uint8_t *mask_bits, int64_t ldb) {
    return lv_sparse_compress_rows_ref(w, esz, ldw, keep, ldk, K, KV, r0, r1, values, ldv,
                                       mask_bits, ldb);
}

/* ---- gradient to the input --------------------------------------------- */

/* The float-weight tiles (the int8 ones, gr_tile_1 .. 6, come with the header). */
GR_TILE_FN(gr_ftile, 1, 1)
GR_TILE_FN(gr_ftile, 2, 1)
GR_TILE_FN(gr_ftile, 3, 1)
GR_TILE_FN(gr_ftile, 4, 1)
GR_TILE_FN(gr_ftile, 5, 1)
GR_TILE_FN(gr_ftile, 6, 1)
static const gr_tile_fn gr_ftiles[GR_MT + 1] = {NULL,       gr_ftile_1, gr_ftile_2, gr_ftile_3,
                                                gr_ftile_4, gr_ftile_5, gr_ftile_6};

/* Both gradients (lowvram/sparse.h): the dense gradient's register tiles
 * (qgemm_avx512_internal.h) run on 64-column strips of the weight rebuilt
 * from the compressed rows by vpexpandb / vexpandps / vpexpandw into a stack
 * buffer (int8 codes, or float32 for float values), GR_NC rows of n at a
 * time, once per block of GR_MB rows of gy: the same fmaf chain in the same
 * order of n as on the decompressed weight (pruned entries are the expanded
 * zeros), so the same bits as the reference chain and, for int8, as
 * qlinear_grad_input; no float weight and no whole decompressed copy is
 * made. Where each row's values for a strip begin is carried from strip to
 * strip (jpos, one int64 per row, malloc'd since N is unbounded; if that
 * fails, the chain in sparse_grad.h gives the same bits, slower). Measured
 * by bench/bench_sparse_grad.py. */
static lv_status sq_grad(const void *gy, lv_dtype gdt, int64_t ldg, const void *values,
                         lv_dtype vdt, int is_int8, int64_t ldv, const uint8_t *mask_bits,
                         int64_t ldb, const float *wscale, int64_t group_size,
                         const float *act_scale, int64_t N, int64_t K, int64_t m0, int64_t m1,
                         int64_t k0, int64_t k1, void *gx, lv_dtype xdt, int64_t ldgx) {
    if (m1 <= m0 || k1 <= k0) return LV_OK;
    const int wide = !is_int8 && vdt == LV_F32;
    int64_t *jpos = (int64_t *)malloc((size_t)N * sizeof *jpos);
    if (!jpos || (!is_int8 && vdt != LV_F32 && vdt != LV_BF16 && vdt != LV_F16)) {
        free(jpos);
        return lv_sparse_grad_chain(gy, gdt, ldg, values, vdt, is_int8, ldv, mask_bits, ldb,
                                    wscale, group_size, act_scale, N, K, m0, m1, k0, k1, gx,
                                    xdt, ldgx);
    }
    const size_t vsz = is_int8 ? 1 : (size_t)lv_dtype_size(vdt);
    const int64_t G = is_int8 ? lv_qgemm_groups(K, group_size) : 1;
    const int64_t gs = K / G, rowbytes = lv_mask_row_bytes(K);
    const int64_t kv0 = k0 & ~(int64_t)63;
    const gr_tile_fn *tiles = is_int8 ? gr_tiles : gr_ftiles;
    float park[GR_MB * 64];           /* a block's accumulators between chunks of n */
    float fstrip[GR_NC * 64] __attribute__((aligned(64))); /* float values' strips */
    int8_t *qstrip = (int8_t *)fstrip;                      /* int8 codes' strips */
    uint16_t half[64] __attribute__((aligned(64)));         /* 16-bit values, expanded */
    for (int64_t mb = m0; mb < m1; mb += GR_MB) {
        const int64_t me = mb + GR_MB < m1 ? mb + GR_MB : m1;
        for (int64_t n = 0; n < N; n++) jpos[n] = lv_kept_before(mask_bits + n * ldb, kv0);
        /* strips start at multiples of 64 in absolute k: each lies in one
         * group, and its 64 mask bits are 8 whole bytes of the row */
        for (int64_t kv = kv0; kv < k1; kv += 64) {
            const int64_t lo = k0 > kv ? k0 - kv : 0;
            const __mmask64 mk = lv512_mask64(k1 - kv) & ~lv512_mask64(lo);
            const int64_t nbytes = rowbytes - kv / 8 < 8 ? rowbytes - kv / 8 : 8;
            for (int64_t n0 = 0; n0 < N; n0 += GR_NC) {
                const int nc = (int)(N - n0 < GR_NC ? N - n0 : GR_NC);
                for (int j = 0; j < nc; j++) {
                    const int64_t n = n0 + j;
                    uint64_t bits = 0;
                    memcpy(&bits, mask_bits + n * ldb + kv / 8, (size_t)nbytes);
                    bits &= lv512_mask64(K - kv);
                    /* no values (KV == 0): bits is 0 and nothing is read */
                    const char *vr = bits ? (const char *)values +
                                                (size_t)(n * ldv + jpos[n]) * vsz
                                          : NULL;
                    jpos[n] += __builtin_popcountll(bits);
                    if (is_int8) {
                        _mm512_store_si512((void *)(qstrip + j * 64),
                                           vr ? _mm512_maskz_expandloadu_epi8((__mmask64)bits, vr)
                                              : _mm512_setzero_si512());
                    } else if (wide) {
                        for (int v = 0; v < 4; v++, bits >>= 16) {
                            const __mmask16 m16 = (__mmask16)bits;
                            __m512 e = _mm512_setzero_ps();
                            if (m16) {
                                e = _mm512_maskz_expandloadu_ps(m16, vr);
                                vr += 4 * __builtin_popcount(m16);
                            }
                            _mm512_store_ps(fstrip + j * 64 + 16 * v, e);
                        }
                    } else {
                        for (int h = 0; h < 2; h++, bits >>= 32) {
                            const __mmask32 m32 = (__mmask32)bits;
                            __m512i e = _mm512_setzero_si512();
                            if (m32) {
                                e = _mm512_maskz_expandloadu_epi16(m32, vr);
                                vr += 2 * __builtin_popcount(m32);
                            }
                            _mm512_store_si512((void *)(half + 32 * h), e);
                        }
                        for (int v = 0; v < 4; v++)
                            _mm512_store_ps(fstrip + j * 64 + 16 * v,
                                            lv512_load_f32(half, vdt, 16 * v, 0xFFFF));
                    }
                }
                for (int64_t m = mb; m < me; m += GR_MT)
                    tiles[me - m < GR_MT ? me - m : GR_MT](
                        gy, gdt, ldg, m, is_int8 ? (const void *)qstrip : (const void *)fstrip,
                        64, wscale, G, kv / gs, N, n0, nc, kv, mk, park + (m - mb) * 64,
                        act_scale, gx, xdt, ldgx);
            }
        }
    }
    free(jpos);
    return LV_OK;
}

static lv_status sq_qgrad(const void *gy, lv_dtype gdt, int64_t ldg, const int8_t *qvalues,
                          int64_t ldv, const uint8_t *mask_bits, int64_t ldb, int64_t KV,
                          const float *wscale, int64_t group_size, const float *act_scale,
                          int64_t N, int64_t K, int64_t m0, int64_t m1, int64_t k0, int64_t k1,
                          void *gx, lv_dtype xdt, int64_t ldgx) {
    (void)KV; /* vpexpandb reads exactly the row's counted values */
    return sq_grad(gy, gdt, ldg, qvalues, LV_F32, 1, ldv, mask_bits, ldb, wscale, group_size,
                   act_scale, N, K, m0, m1, k0, k1, gx, xdt, ldgx);
}

static lv_status sq_fgrad(const void *gy, lv_dtype gdt, int64_t ldg, const void *values,
                          lv_dtype vdt, int64_t ldv, const uint8_t *mask_bits, int64_t ldb,
                          int64_t KV, int64_t N, int64_t K, int64_t m0, int64_t m1, int64_t k0,
                          int64_t k1, void *gx, lv_dtype xdt, int64_t ldgx) {
    (void)KV;
    return sq_grad(gy, gdt, ldg, values, vdt, 0, ldv, mask_bits, ldb, NULL, -1, NULL, N, K, m0,
                   m1, k0, k1, gx, xdt, ldgx);
}

LV_SPARSE_GRAD_ENTRIES(avx512, sq_qgrad, sq_fgrad)
