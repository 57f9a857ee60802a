/* kernels_k_avx512.c — AVX-512 (F, BW, VL, VNNI) dot products of q4_K
 * weights with q8_K activations, one row and four rows at a time.
 *
 * Installed by mf_avx512_install over the AVX2 entries. The float steps are
 * mf_ref_dot_q4_k's (llama.cpp's repacked-GEMM order: per pair p of
 * sub-blocks acc = fma(I_p, d*dy, acc), accm = fma(M_p, dmin*dy, accm)); the
 * integer parts I_p = sc[2p]*D[2p] + sc[2p+1]*D[2p+1] come from vpdpbusd
 * (unsigned nibbles times signed q8, exact in int32 for any q8 byte), two
 * sub-blocks per 512-bit register. The one-row kernel reduces the sub-block
 * sums to eight int32 and multiplies them by their scales; the four-row
 * kernel (also used for decoding) packs each row's partial sums to int16
 * (exact: each is at most 4*15*128) and halves them there, then reduces the
 * four rows together, multiplies by the scales (unpacked with byte shuffles)
 * and lays the sums out so that lane r of one 8-lane FMA is row r's scalar
 * FMA into acc and lane 4 + r its FMA into accm, in the same order. */
#include "tensor/kernels_avx512.h"

#include <math.h>

#define QK_K 256
#define XB 144

/* The 8 six-bit scales (int16 lanes 0..7) and mins (8..15) of a block. */
static inline __m256i k4_scales_mins(const uint8_t *s) {
    uint32_t w0 = mf_rd32(s), w1 = mf_rd32(s + 4), w2 = mf_rd32(s + 8);
    uint32_t sc_lo = w0 & 0x3f3f3f3fu, mn_lo = w1 & 0x3f3f3f3fu;
    uint32_t sc_hi = (w2 & 0x0f0f0f0fu) | (((w0 >> 6) & 0x03030303u) << 4);
    uint32_t mn_hi = ((w2 >> 4) & 0x0f0f0f0fu) | (((w1 >> 6) & 0x03030303u) << 4);
    return _mm256_cvtepu8_epi16(_mm_setr_epi32((int)sc_lo, (int)sc_hi, (int)mn_lo, (int)mn_hi));
}

/* The q8 sub-blocks arranged as the nibble registers hold the weights:
 * y[0] = [sb0|sb2], y[1] = [sb1|sb3], y[2] = [sb4|sb6], y[3] = [sb5|sb7];
 * ss = int16 lane k: S[k] = bsums[2k] + bsums[2k+1]. */
typedef struct { __m512i y[4]; __m128i ss; } q8k_regs;

BLOCK_FN q8k_regs q8k_load(const uint8_t *b) {
    q8k_regs r;
    for (int h = 0; h < 2; h++) {
        __m512i a = _mm512_loadu_si512(b + 4 + 128 * h), c = _mm512_loadu_si512(b + 68 + 128 * h);
        r.y[2 * h] = _mm512_shuffle_i64x2(a, c, _MM_SHUFFLE(1, 0, 1, 0));
        r.y[2 * h + 1] = _mm512_shuffle_i64x2(a, c, _MM_SHUFFLE(3, 2, 3, 2));
    }
    __m256i bs = _mm256_loadu_si256((const __m256i *)(b + 260));
    r.ss = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    return r;
}

/* The four vpdpbusd of a q4_K block: low/high nibbles of its two 64-byte
 * halves against the q8 sub-blocks arranged to match (q8k_regs). */
BLOCK_FN void q4k_dots(const uint8_t *a, const q8k_regs *q, __m512i *r0, __m512i *r1, __m512i *r2, __m512i *r3) {
    const __m512i m4 = _mm512_set1_epi8(0x0f), z = _mm512_setzero_si512();
    __m512i w0 = _mm512_loadu_si512(a + 16), w1 = _mm512_loadu_si512(a + 80);
    *r0 = _mm512_dpbusd_epi32(z, _mm512_and_si512(w0, m4), q->y[0]);
    *r1 = _mm512_dpbusd_epi32(z, _mm512_and_si512(_mm512_srli_epi16(w0, 4), m4), q->y[1]);
    *r2 = _mm512_dpbusd_epi32(z, _mm512_and_si512(w1, m4), q->y[2]);
    *r3 = _mm512_dpbusd_epi32(z, _mm512_and_si512(_mm512_srli_epi16(w1, 4), m4), q->y[3]);
}

/* Lane p of *isum: I_p, of *imin: M_p (as floats, exact integers first). */
BLOCK_FN void q4k_block(const uint8_t *a, const q8k_regs *q, __m128 *isum, __m128 *imin) {
    __m512i r0, r1, r2, r3;
    q4k_dots(a, q, &r0, &r1, &r2, &r3);
    /* lane L of t: [r0, r1, r2, r3] summed over lane L; lanes 0+1 hold
     * sub-blocks 0, 1, 4, 5 and lanes 2+3 hold 2, 3, 6, 7 */
    __m512i t = hadd32(hadd32(r0, r1), hadd32(r2, r3));
    t = _mm512_add_epi32(t, _mm512_shuffle_i32x4(t, t, _MM_SHUFFLE(2, 3, 0, 1)));
    __m256i d = _mm256_inserti128_si256(_mm512_castsi512_si256(t), _mm512_extracti32x4_epi32(t, 2), 1);
    d = _mm256_permutevar8x32_epi32(d, _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7));
    __m256i sm = k4_scales_mins(a + 4);
    __m256i p = _mm256_mullo_epi32(d, _mm256_cvtepu16_epi32(_mm256_castsi256_si128(sm)));
    p = _mm256_add_epi32(p, _mm256_shuffle_epi32(p, _MM_SHUFFLE(2, 3, 0, 1)));
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6));
    *isum = _mm_cvtepi32_ps(_mm256_castsi256_si128(p));
    *imin = _mm_cvtepi32_ps(_mm_madd_epi16(_mm256_extracti128_si256(sm, 1), q->ss));
}

static void dot_q4_k(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    float acc = 0, accm = 0, is[4], im[4];
    for (int64_t i = 0; i < n / QK_K; i++, a += XB, b += MF_Q8_K_BYTES) {
        float dy = mf_q8k_d(b);
        float dd = _cvtsh_ss(mf_rd16(a)) * dy, dm = _cvtsh_ss(mf_rd16(a + 2)) * dy;
        q8k_regs q = q8k_load(b);
        __m128 vi, vm;
        q4k_block(a, &q, &vi, &vm);
        _mm_storeu_ps(is, vi);
        _mm_storeu_ps(im, vm);
        for (int p = 0; p < 4; p++) {
            acc = __builtin_fmaf(is[p], dd, acc);
            accm = __builtin_fmaf(im[p], dm, accm);
        }
    }
    *s = acc - accm;
}

/* Super-blocks per pass of the four-row kernel (16384 elements; about
 * 41 KB of stack): rows up to this long are read whole, one after another
 * (a smaller pass that walks the four rows in pieces reads DRAM far slower
 * here: 7 instead of 10.6 GB/s at 5632 elements per row, one thread). */
#define CHUNK 64

/* [d of rows 0..3 | dmin of rows 0..3] of super-block i, times dy. */
static inline __m256 row_scales(const uint8_t *ai, uint64_t xs, float dy) {
    __m128i h = _mm_setr_epi32((int)mf_rd32(ai), (int)mf_rd32(ai + xs), (int)mf_rd32(ai + 2 * xs),
                               (int)mf_rd32(ai + 3 * xs));
    h = _mm_shuffle_epi8(h, _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15));
    return _mm256_mul_ps(_mm256_cvtph_ps(h), _mm256_set1_ps(dy));
}

/* The 8 six-bit scales (bytes 0..7) and mins (8..15) of a block from its
 * 16-byte head h (d, dmin, 12 scale bytes s = h + 4), with byte shuffles:
 * sc_j = s_j & 63, mn_j = s_{j+4} & 63 (j < 4); sc_{j+4} = (s_{j+8} & 15) |
 * (s_j >> 6) << 4, mn_{j+4} = (s_{j+8} >> 4) | (s_{j+4} >> 6) << 4. */
static inline __m128i k4_scales_mins_v(const uint8_t *h) {
    const __m128i hv = _mm_loadu_si128((const __m128i *)h);
    const __m128i ip = _mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m128i iq = _mm_setr_epi8(-1, -1, -1, -1, 4, 5, 6, 7, -1, -1, -1, -1, 8, 9, 10, 11);
    const __m128i sh = _mm_setr_epi16(0, 0, 0, 0, 0, 0, 4, 4);
    const __m128i m1 = _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 15, 15, 15, 15);
    __m128i lo = _mm_srlv_epi16(_mm_shuffle_epi8(hv, ip), sh);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(_mm_shuffle_epi8(hv, iq), 2), _mm_set1_epi8(0x30));
    return _mm_ternarylogic_epi32(lo, m1, hi, 0xEA); /* (lo & m1) | hi */
}

/* Word j of each 128-bit lane of the min operand: mn_j (byte 8 + j). */
#define MN 8, -1, 9, -1, 10, -1, 11, -1, 12, -1, 13, -1, 14, -1, 15, -1
static const int8_t idx_mn[64] = {MN, MN, MN, MN};
#undef MN
/* From g (lane p: I_p of rows 0..3) and mm (lane r: M_0..M_3 of row r):
 * 256-bit half h of the result = [I_p of rows 0..3 | M_p of rows 0..3],
 * p = h (idx_ip01) or 2 + h (idx_ip23). */
static const uint32_t idx_ip01[16] = {0, 1, 2, 3, 16, 20, 24, 28, 4, 5, 6, 7, 17, 21, 25, 29};
static const uint32_t idx_ip23[16] = {8, 9, 10, 11, 18, 22, 26, 30, 12, 13, 14, 15, 19, 23, 27, 31};

/* Stage 1 of the four-row kernel for one row: the vpdpbusd dwords (|.| <=
 * 4*15*128) packed to int16, the two halves of each sub-block added (|.| <=
 * 8*15*128 < 2^15: exact), then pairs added by vpmaddwd: lane p of the
 * result = [D_2p, D_2p, D_2p+1, D_2p+1] in two parts each (D_j: sub-block
 * j's dot); *smv = the block's scales and mins. */
BLOCK_FN __m512i q4k_partials(const uint8_t *a, const q8k_regs *q, __m128i *smv) {
    __m512i r0, r1, r2, r3;
    q4k_dots(a, q, &r0, &r1, &r2, &r3);
    /* lane L of p01: sub-blocks 0|1 (L < 2) or 2|3, 4 words each; of p23: 4|5, 6|7 */
    __m512i p01 = _mm512_packs_epi32(r0, r1), p23 = _mm512_packs_epi32(r2, r3);
    __m512i t = _mm512_add_epi16(_mm512_shuffle_i64x2(p01, p23, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_i64x2(p01, p23, _MM_SHUFFLE(3, 1, 3, 1)));
    *smv = k4_scales_mins_v(a);
    return _mm512_madd_epi16(t, _mm512_set1_epi16(1));
}

/* Lane p of hadd32(m0, m1) = [D_2p, D_2p+1] of rows a, b; times the scales
 * [sc_2p, sc_2p+1] of rows a, b (interleaved bytes of their scale vectors). */
static inline __m512i scaled_pair(__m512i m0, __m512i m1, __m128i va, __m128i vb) {
    return _mm512_mullo_epi32(hadd32(m0, m1), _mm512_cvtepu8_epi32(_mm_unpacklo_epi16(va, vb)));
}

/* Stage 2: 256-bit half h of *v01 = [I_h of rows 0..3 | M_h of rows 0..3],
 * of *v23 the same for p = 2 + h; sm = the four rows' scales and mins, ss4
 * = S_0..S_7 in every lane. */
BLOCK_FN void q4k_rows_sums(const __m512i m[4], const __m128i sm[4], __m512i ss4, __m512i imn, __m512 *v01,
                            __m512 *v23) {
    __m512i s01 = scaled_pair(m[0], m[1], sm[0], sm[1]), s23 = scaled_pair(m[2], m[3], sm[2], sm[3]);
    __m512i g = hadd32(s01, s23); /* lane p: I_p of rows 0..3 */
    __m512i sm4 = _mm512_loadu_si512(sm);
    __m512i mm = _mm512_madd_epi16(_mm512_shuffle_epi8(sm4, imn), ss4); /* lane r: row r's M_0..M_3 */
    *v01 = _mm512_cvtepi32_ps(_mm512_permutex2var_epi32(g, _mm512_loadu_si512(idx_ip01), mm));
    *v23 = _mm512_cvtepi32_ps(_mm512_permutex2var_epi32(g, _mm512_loadu_si512(idx_ip23), mm));
}

static inline __m256 hi256(__m512 v) {
    return _mm256_castsi256_ps(_mm512_extracti64x4_epi64(_mm512_castps_si512(v), 1));
}

/* acc = fma(v_p, d, acc) for p = 0..3: the pairs (I_p, M_p) of rows 0..3,
 * in order, acc = [acc of rows 0..3 | accm of rows 0..3]. */
static inline __m256 chain4(__m512 v01, __m512 v23, __m256 d, __m256 acc) {
    acc = _mm256_fmadd_ps(_mm512_castps512_ps256(v01), d, acc);
    acc = _mm256_fmadd_ps(hi256(v01), d, acc);
    acc = _mm256_fmadd_ps(_mm512_castps512_ps256(v23), d, acc);
    return _mm256_fmadd_ps(hi256(v23), d, acc);
}

/* Four rows in two stages per chunk: the integer partial sums row after
 * row (DRAM streams one sequential row on this VM at ~30 GB/s, four rows
 * walked side by side at ~11), then per super-block the rows' sums
 * reduced, scaled and transposed so that lane r (4 + r) of one 8-lane FMA
 * is row r's scalar FMA into acc (accm), in the reference order. */
static void dot4_q4_k(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    const uint8_t *b = y, *a = x;
    q8k_regs q[CHUNK];
    __m512i part[CHUNK][4], ssp[CHUNK];
    __m128i smv[CHUNK][4];
    const __m512i imn = _mm512_loadu_si512(idx_mn);
    __m256 acc = _mm256_setzero_ps();
    int64_t nb = n / QK_K;
    for (int64_t i0 = 0; i0 < nb; i0 += CHUNK) {
        int m = nb - i0 < CHUNK ? (int)(nb - i0) : CHUNK;
        const uint8_t *ai = a + (uint64_t)i0 * XB, *bi = b + (uint64_t)i0 * MF_Q8_K_BYTES;
        for (int k = 0; k < m; k++) {
            q[k] = q8k_load(bi + (uint64_t)k * MF_Q8_K_BYTES);
            ssp[k] = _mm512_broadcast_i32x4(q[k].ss);
        }
        for (int r = 0; r < 4; r++)
            for (int k = 0; k < m; k++)
                part[k][r] = q4k_partials(ai + r * xs + (uint64_t)k * XB, &q[k], &smv[k][r]);
        for (int k = 0; k < m; k++) {
            __m512 v01, v23;
            __m256 d = row_scales(ai + (uint64_t)k * XB, xs, mf_q8k_d(bi + (uint64_t)k * MF_Q8_K_BYTES));
            q4k_rows_sums(part[k], smv[k], ssp[k], imn, &v01, &v23);
            acc = chain4(v01, v23, d, acc);
        }
    }
    _mm_storeu_ps(s, _mm_sub_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1)));
}

/* mf_ref_q8_k_from_float, vectorized: the signed value of largest |x| (the
 * first one, NaNs skipped: vmaxps returns its second operand when the first
 * is NaN), iscale = -127/max, q = round-to-even of the clamped product (NaN
 * -> 0), d = 1/iscale, bsums over each 16. Same bytes as the reference. */
static void q8_k_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t b = 0; b < n / QK_K; b++, p += MF_Q8_K_BYTES) {
        const float *x = src + b * QK_K;
        __m512 am = _mm512_setzero_ps();
        for (int j = 0; j < QK_K; j += 16) am = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + j)), am);
        float amax = _mm512_reduce_max_ps(am), max = 0.0f, d = 0.0f;
        int8_t *qs = (int8_t *)(p + 4);
        if (amax == 0.0f || amax == INFINITY) {
            memset(qs, 0, QK_K);
            memset(p + 260, 0, 32);
            memcpy(p, &d, sizeof d);
            continue;
        }
        for (int j = 0; j < QK_K; j += 16) {
            __mmask16 eq = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(x + j)),
                                              _mm512_set1_ps(amax), _CMP_EQ_OQ);
            if (eq) {
                max = x[j + __builtin_ctz(eq)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        const __m512 vs = _mm512_set1_ps(iscale), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
        for (int g = 0; g < QK_K / 16; g++) {
            __m512 v = _mm512_mul_ps(vs, _mm512_loadu_ps(x + 16 * g));
            v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);
            __m512i q = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, lo), hi));
            _mm_storeu_si128((__m128i *)(qs + 16 * g), _mm512_cvtepi32_epi8(q));
            mf_wr16(p + 260 + 2 * g, (uint16_t)(int16_t)_mm512_reduce_add_epi32(q));
        }
        d = 1.0f / iscale;
        memcpy(p, &d, sizeof d);
    }
}

void mf_avx512_install_k(mf_type_traits table[MF_TYPE_COUNT]) {
    table[MF_TYPE_Q8_K].act_from_float = q8_k_from_float;
    table[MF_TYPE_Q4_K].vec_dot = dot_q4_k;
    table[MF_TYPE_Q4_K].vec_dot4 = dot4_q4_k;
    table[MF_TYPE_Q4_K].dot4_decode = true;
}
