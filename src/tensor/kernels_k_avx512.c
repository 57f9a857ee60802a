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
 * kernel (also used for decoding) packs the partial sums to int16 (exact:
 * each is at most 4*15*128) so that vpmaddwd applies the scales and halves
 * them, reduces the four rows together, and lays the sums out so that lane
 * r of one 4-lane FMA is row r's scalar FMA, in the same order. */
#include "tensor/kernels.h"

#include <immintrin.h>

#define QK_K 256
#define XB 144
#define BLOCK_FN static inline __attribute__((always_inline))

static inline float q8k_d(const uint8_t *y) {
    float d;
    memcpy(&d, y, sizeof d);
    return d;
}

/* Per 128-bit lane: [a0+a1, a2+a3, b0+b1, b2+b3] (AVX2's hadd, 4 lanes). */
static inline __m512i hadd32(__m512i a, __m512i b) {
    __m512 fa = _mm512_castsi512_ps(a), fb = _mm512_castsi512_ps(b);
    __m512i e = _mm512_castps_si512(_mm512_shuffle_ps(fa, fb, _MM_SHUFFLE(2, 0, 2, 0)));
    __m512i o = _mm512_castps_si512(_mm512_shuffle_ps(fa, fb, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_epi32(e, o);
}

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

/* Lane p of *isum: I_p, of *imin: M_p (as floats, exact integers first). */
BLOCK_FN void q4k_block(const uint8_t *a, const q8k_regs *q, __m128 *isum, __m128 *imin) {
    const __m512i m4 = _mm512_set1_epi8(0x0f), z = _mm512_setzero_si512();
    __m512i w0 = _mm512_loadu_si512(a + 16), w1 = _mm512_loadu_si512(a + 80);
    __m512i r0 = _mm512_dpbusd_epi32(z, _mm512_and_si512(w0, m4), q->y[0]);
    __m512i r1 = _mm512_dpbusd_epi32(z, _mm512_and_si512(_mm512_srli_epi16(w0, 4), m4), q->y[1]);
    __m512i r2 = _mm512_dpbusd_epi32(z, _mm512_and_si512(w1, m4), q->y[2]);
    __m512i r3 = _mm512_dpbusd_epi32(z, _mm512_and_si512(_mm512_srli_epi16(w1, 4), m4), q->y[3]);
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
        float dy = q8k_d(b);
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

/* Super-blocks per pass of the four-row kernel (4096 elements). */
#define CHUNK 16

/* Per 4-lane vector: (d, dmin) of rows 0..3 of super-block i, times dy. */
static inline void row_scales(const uint8_t *ai, uint64_t xs, float dyf, __m128 *dx, __m128 *dmx) {
    __m128 dy = _mm_set1_ps(dyf);
    __m128i h = _mm_setr_epi32((int)mf_rd32(ai), (int)mf_rd32(ai + xs), (int)mf_rd32(ai + 2 * xs),
                               (int)mf_rd32(ai + 3 * xs));
    __m256 dm8 = _mm256_cvtph_ps(h); /* d0 m0 d1 m1 | d2 m2 d3 m3 */
    __m128 lo = _mm256_castps256_ps128(dm8), hi = _mm256_extractf128_ps(dm8, 1);
    *dx = _mm_mul_ps(_mm_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0)), dy);
    *dmx = _mm_mul_ps(_mm_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1)), dy);
}

/* Scale words for the packed partial sums of q4k_partials: lane L of
 * packs(r0, r1) holds 4 dwords of r0 then 4 of r1, sub-blocks 0|1 (L < 2)
 * or 2|3; of packs(r2, r3) sub-blocks 4|5 or 6|7. */
#define W4(v) v, v, v, v
static const uint16_t idx_sc01[32] = {W4(0), W4(1), W4(0), W4(1), W4(2), W4(3), W4(2), W4(3)};
static const uint16_t idx_sc23[32] = {W4(4), W4(5), W4(4), W4(5), W4(6), W4(7), W4(6), W4(7)};
/* dword 4p + r of the result: I_p of row r, from the two row pairs' sums */
static const uint32_t idx_pick[16] = {0, 2, 16, 18, 8, 10, 24, 26, 1, 3, 17, 19, 9, 11, 25, 27};
static const uint32_t idx_tr4[16] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};

/* Stage 1 of the four-row kernel for one row: the vpdpbusd dwords (|.| <=
 * 4*15*128, so int16 packing is exact), times their scales and added in
 * pairs by vpmaddwd: the dwords of m[0] lanes 0-1 add up to I_0, lanes 2-3
 * to I_1, of m[1] to I_2 and I_3; *imin = M_0..M_3. */
BLOCK_FN void q4k_partials(const uint8_t *a, const q8k_regs *q, __m512i m[2], __m128i *imin) {
    const __m512i m4 = _mm512_set1_epi8(0x0f), z = _mm512_setzero_si512();
    __m512i w0 = _mm512_loadu_si512(a + 16), w1 = _mm512_loadu_si512(a + 80);
    __m512i r0 = _mm512_dpbusd_epi32(z, _mm512_and_si512(w0, m4), q->y[0]);
    __m512i r1 = _mm512_dpbusd_epi32(z, _mm512_and_si512(_mm512_srli_epi16(w0, 4), m4), q->y[1]);
    __m512i r2 = _mm512_dpbusd_epi32(z, _mm512_and_si512(w1, m4), q->y[2]);
    __m512i r3 = _mm512_dpbusd_epi32(z, _mm512_and_si512(_mm512_srli_epi16(w1, 4), m4), q->y[3]);
    __m256i sm = k4_scales_mins(a + 4);
    __m512i sm5 = _mm512_zextsi256_si512(sm);
    m[0] = _mm512_madd_epi16(_mm512_packs_epi32(r0, r1),
                             _mm512_permutexvar_epi16(_mm512_loadu_si512(idx_sc01), sm5));
    m[1] = _mm512_madd_epi16(_mm512_packs_epi32(r2, r3),
                             _mm512_permutexvar_epi16(_mm512_loadu_si512(idx_sc23), sm5));
    *imin = _mm_madd_epi16(_mm256_extracti128_si256(sm, 1), q->ss);
}

/* Stage 2: lane p (128-bit) of *isum = I_p of rows 0..3, of *imin = M_p. */
BLOCK_FN void q4k_rows_sums(const __m512i m[4][2], const __m128i im[4], __m512 *isum, __m512 *imin) {
    __m512i h0 = hadd32(m[0][0], m[0][1]), h1 = hadd32(m[1][0], m[1][1]);
    __m512i h2 = hadd32(m[2][0], m[2][1]), h3 = hadd32(m[3][0], m[3][1]);
    /* lane L: [row a m[0].L, row a m[1].L, row b m[0].L, row b m[1].L] */
    __m512i g01 = hadd32(h0, h1), g23 = hadd32(h2, h3);
    g01 = _mm512_add_epi32(g01, _mm512_shuffle_i32x4(g01, g01, _MM_SHUFFLE(2, 3, 0, 1)));
    g23 = _mm512_add_epi32(g23, _mm512_shuffle_i32x4(g23, g23, _MM_SHUFFLE(2, 3, 0, 1)));
    *isum = _mm512_cvtepi32_ps(_mm512_permutex2var_epi32(g01, _mm512_loadu_si512(idx_pick), g23));
    __m512i mm = _mm512_loadu_si512(im); /* the four rows' M_0..M_3, one after another */
    *imin = _mm512_cvtepi32_ps(_mm512_permutexvar_epi32(_mm512_loadu_si512(idx_tr4), mm));
}

/* acc = fma(s_p, d, acc) for the four 128-bit lanes p in order. */
static inline __m128 chain4(__m512 s, __m128 d, __m128 acc) {
    acc = _mm_fmadd_ps(_mm512_castps512_ps128(s), d, acc);
    acc = _mm_fmadd_ps(_mm512_extractf32x4_ps(s, 1), d, acc);
    acc = _mm_fmadd_ps(_mm512_extractf32x4_ps(s, 2), d, acc);
    return _mm_fmadd_ps(_mm512_extractf32x4_ps(s, 3), d, acc);
}

/* Four rows in two stages per chunk: the integer partial sums row after
 * row (DRAM streams one sequential row on this VM at ~30 GB/s, four rows
 * walked side by side at ~11), then per super-block the rows' pair sums
 * transposed so that lane r of one 4-lane FMA is row r's scalar FMA, in
 * the reference order. */
static void dot4_q4_k(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    const uint8_t *b = y, *a = x;
    q8k_regs q[CHUNK];
    __m512i part[CHUNK][4][2];
    __m128i im[CHUNK][4];
    __m128 acc = _mm_setzero_ps(), accm = acc;
    int64_t nb = n / QK_K;
    for (int64_t i0 = 0; i0 < nb; i0 += CHUNK) {
        int m = nb - i0 < CHUNK ? (int)(nb - i0) : CHUNK;
        const uint8_t *ai = a + (uint64_t)i0 * XB, *bi = b + (uint64_t)i0 * MF_Q8_K_BYTES;
        for (int k = 0; k < m; k++) q[k] = q8k_load(bi + (uint64_t)k * MF_Q8_K_BYTES);
        for (int r = 0; r < 4; r++)
            for (int k = 0; k < m; k++) q4k_partials(ai + r * xs + (uint64_t)k * XB, &q[k], part[k][r], &im[k][r]);
        for (int k = 0; k < m; k++) {
            __m128 dx, dmx;
            __m512 vi, vm;
            row_scales(ai + (uint64_t)k * XB, xs, q8k_d(bi + (uint64_t)k * MF_Q8_K_BYTES), &dx, &dmx);
            q4k_rows_sums((const __m512i(*)[2])part[k], im[k], &vi, &vm);
            acc = chain4(vi, dx, acc);
            accm = chain4(vm, dmx, accm);
        }
    }
    _mm_storeu_ps(s, _mm_sub_ps(acc, accm));
}

void mf_avx512_install_k(mf_type_traits table[MF_TYPE_COUNT]) {
    table[MF_TYPE_Q4_K].vec_dot = dot_q4_k;
    table[MF_TYPE_Q4_K].vec_dot4 = dot4_q4_k;
    table[MF_TYPE_Q4_K].dot4_decode = true;
}
