/* kernels_k2_avx2.c — AVX2 dot products of q2_K, q3_K and iq4_xs weights
 * with q8_K activations.
 *
 * Compiled with -mavx2 -mfma -mf16c (the Makefile's rule for *_avx2.c);
 * mf_avx2_install_k2 is called from mf_avx2_install after the CPU check.
 * Each kernel computes the same exact integer sums as its scalar reference
 * in kernels_k2_ref.c (the order of the integer additions cannot matter)
 * and then the same float operations in the same order, so the results are
 * bit-identical to the reference. Products are formed with maddubs, whose
 * first operand must be unsigned: q2_K and q3_K use their unsigned 2-bit
 * parts (q3_K subtracts the "high bit clear" 4s in a second maddubs, as
 * ggml does); iq4_xs moves the level's sign onto the activation, exact
 * while activations are in [-127, 127], which the q8_K quantizer
 * guarantees. The quantizers stay scalar (they are not on a hot path). */
#include "tensor/kernels.h"

#include <immintrin.h>

#define QK_K 256

static const int8_t iq4_levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                      1,    13,   25,  38,  53,  69,  89,  113};

/* l + l+4, then + l+2, then + l+1: the reference's lanes8_sum. */
static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

static inline int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* Sub-block scales of one half super-block (eight int16 in each 128-bit
 * half of v) spread so that, for plane p, the low eight int16 lanes hold
 * scale 2p and the high eight scale 2p+1: elements 0..15 and 16..31 of the
 * 32 that plane p covers. */
static inline __m256i plane_scales(__m256i v, int p) {
    static const uint8_t shuf[4][32] = {
        {0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3},
        {4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7},
        {8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9,
         10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11},
        {12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13,
         14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15}};
    return _mm256_shuffle_epi8(v, _mm256_loadu_si256((const __m256i *)shuf[p]));
}

/* Sixteen int16 scales -> per half, the eight of that half in both 128-bit
 * halves (what plane_scales shuffles). */
static inline __m256i half_scales(__m256i s16, int h) {
    __m128i part = h ? _mm256_extracti128_si256(s16, 1) : _mm256_castsi256_si128(s16);
    return _mm256_set_m128i(part, part);
}

/* ---- q2_K ---- */

/* sum over one half super-block of scale * q * q8, exactly. */
static inline int32_t q2k_half(const uint8_t *qs, const int8_t *q8, __m256i sc) {
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256i bits = _mm256_loadu_si256((const __m256i *)qs), sum = _mm256_setzero_si256();
    for (int p = 0; p < 4; p++) {
        __m256i q = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * p), m3);
        __m256i y = _mm256_loadu_si256((const __m256i *)(q8 + 32 * p));
        __m256i p16 = _mm256_maddubs_epi16(q, y);
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(p16, plane_scales(sc, p)));
    }
    return hsum_epi32(sum);
}

/* The reference's order (llama.cpp's repack GEMM): two scalar chains. */
static void dot_q2_k(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    const __m128i m4 = _mm_set1_epi8(0xf);
    float acc = 0.0f, macc = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++, a += 84, b += MF_Q8_K_BYTES) {
        const int8_t *q8 = (const int8_t *)(b + 4);
        float dy = mf_q8k_d(b);
        float dd = _cvtsh_ss(mf_rd16(a + 80)) * dy, dm = _cvtsh_ss(mf_rd16(a + 82)) * dy;
        __m128i raw = _mm_loadu_si128((const __m128i *)a);
        __m256i sc = _mm256_cvtepu8_epi16(_mm_and_si128(raw, m4));
        __m256i mn = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4));
        __m256i mprod = _mm256_madd_epi16(mn, _mm256_loadu_si256((const __m256i *)(b + 260)));
        __m128i lo = _mm256_castsi256_si128(mprod), hi = _mm256_extracti128_si256(mprod, 1);
        int32_t msum[2], isum[2];
        for (int h = 0; h < 2; h++) {
            __m128i m = h ? hi : lo;
            m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 0x4e));
            m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 0xb1));
            msum[h] = _mm_cvtsi128_si32(m);
            isum[h] = q2k_half(a + 16 + 32 * h, q8 + 128 * h, half_scales(sc, h));
        }
        for (int h = 0; h < 2; h++) {
            acc = __builtin_fmaf((float)isum[h], dd, acc);
            macc = __builtin_fmaf((float)msum[h], dm, macc);
        }
    }
    *s = acc - macc;
}

/* ---- q3_K ---- */

/* The 16 six-bit scales minus 32, as int16: word k of the result's bytes
 * holds scales 4k..4k+3, low nibbles from bytes 0..7 (scales 8..15 in
 * their high halves), the two high bits from bytes 8..11, bits 2k. */
static inline __m256i q3k_scales(const uint8_t s[12]) {
    const uint32_t m4 = 0x0f0f0f0f, m2 = 0x03030303;
    uint32_t a0 = mf_rd32(s), a1 = mf_rd32(s + 4), a2 = mf_rd32(s + 8);
    __m128i v = _mm_setr_epi32((int)((a0 & m4) | ((a2 & m2) << 4)),
                               (int)((a1 & m4) | (((a2 >> 2) & m2) << 4)),
                               (int)(((a0 >> 4) & m4) | (((a2 >> 4) & m2) << 4)),
                               (int)(((a1 >> 4) & m4) | (((a2 >> 6) & m2) << 4)));
    return _mm256_cvtepi8_epi16(_mm_sub_epi8(v, _mm_set1_epi8(32)));
}

/* Eight int32 lanes of scale * q * q8 for one half super-block: lane l
 * holds elements 4l..4l+3 (mod 32) of each plane, as the reference. */
static inline __m256i q3k_half(const uint8_t *hm, const uint8_t *qs, const int8_t *q8, __m256i sc,
                               int h) {
    const __m256i m3 = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
    __m256i bits = _mm256_loadu_si256((const __m256i *)qs), sum = _mm256_setzero_si256();
    __m256i hbits = _mm256_loadu_si256((const __m256i *)hm);
    for (int p = 0; p < 4; p++) {
        __m256i q = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * p), m3);
        __m256i bit = _mm256_set1_epi8((char)(1 << (4 * h + p)));
        __m256i clear = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, bit), _mm256_setzero_si256());
        __m256i y = _mm256_loadu_si256((const __m256i *)(q8 + 32 * p));
        __m256i p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(q, y),
                                       _mm256_maddubs_epi16(_mm256_and_si256(clear, four), y));
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(p16, plane_scales(sc, p)));
    }
    return sum;
}

static void dot_q3_k(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++, a += 110, b += MF_Q8_K_BYTES) {
        const int8_t *q8 = (const int8_t *)(b + 4);
        float d = mf_q8k_d(b) * _cvtsh_ss(mf_rd16(a + 108));
        __m256i sc = q3k_scales(a + 96);
        __m256i sumi = _mm256_add_epi32(q3k_half(a, a + 32, q8, half_scales(sc, 0), 0),
                                        q3k_half(a, a + 64, q8 + 128, half_scales(sc, 1), 1));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum8(acc);
}

/* ---- iq4_xs ---- */

static void dot_iq4_xs(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    const __m128i levels = _mm_loadu_si128((const __m128i *)iq4_levels), m4 = _mm_set1_epi8(0xf);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++, a += 136, b += MF_Q8_K_BYTES) {
        const int8_t *q8 = (const int8_t *)(b + 4);
        float d = _cvtsh_ss(mf_rd16(a)) * mf_q8k_d(b);
        uint16_t sh = mf_rd16(a + 2);
        __m256i sumi = _mm256_setzero_si256();
        for (int ib = 0; ib < 8; ib++) {
            __m128i bits = _mm_loadu_si128((const __m128i *)(a + 8 + 16 * ib));
            __m256i q = _mm256_set_m128i(
                _mm_shuffle_epi8(levels, _mm_and_si128(_mm_srli_epi16(bits, 4), m4)),
                _mm_shuffle_epi8(levels, _mm_and_si128(bits, m4)));
            __m256i yv = _mm256_loadu_si256((const __m256i *)(q8 + 32 * ib));
            __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(yv, q));
            int ls = (((a[4 + ib / 2] >> (4 * (ib % 2))) & 0xf) | (((sh >> (2 * ib)) & 3) << 4)) - 32;
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p16, _mm256_set1_epi16((short)ls)));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum8(acc);
}

void mf_avx2_install_k2(mf_type_traits table[MF_TYPE_COUNT]) {
    table[MF_TYPE_Q2_K].vec_dot = dot_q2_k;
    table[MF_TYPE_Q3_K].vec_dot = dot_q3_k;
    table[MF_TYPE_IQ4_XS].vec_dot = dot_iq4_xs;
}
