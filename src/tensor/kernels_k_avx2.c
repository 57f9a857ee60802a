/* kernels_k_avx2.c — AVX2 + FMA dot products of q4_K, q5_K and q6_K
 * weights with q8_K activations (one row and four rows at a time).
 *
 * Compiled with -mavx2 -mfma -mf16c and installed by mf_avx2_install after
 * the CPU check. Each kernel performs exactly the float operations of its
 * scalar reference in kernels_k_ref.c (llama.cpp's orders: the repacked
 * GEMM's for q4_K, the AVX2 vec_dot's for q5_K and q6_K); the integer parts
 * are exact, so the results agree with the reference bit for bit, and the
 * four-row kernels with the one-row ones. */
#include "tensor/kernels.h"

#include <immintrin.h>

#define QK_K 256
/* The per-block helpers must be inlined into their loops (GCC otherwise
 * calls them, spilling vectors around a vzeroupper per block), and their
 * four-step loops unrolled so the shuffle controls are constants. */
#define BLOCK_FN static inline __attribute__((always_inline))
#define UNROLL4 _Pragma("GCC unroll 4")

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* The 8 six-bit scales (int16 lanes 0..7) and mins (lanes 8..15) of a
 * q4_K/q5_K block, unpacked from the 12 bytes with 32-bit word operations. */
static inline __m256i k4_scales_mins(const uint8_t *s) {
    uint32_t w0 = mf_rd32(s), w1 = mf_rd32(s + 4), w2 = mf_rd32(s + 8);
    uint32_t sc_lo = w0 & 0x3f3f3f3fu, mn_lo = w1 & 0x3f3f3f3fu;
    uint32_t sc_hi = (w2 & 0x0f0f0f0fu) | (((w0 >> 6) & 0x03030303u) << 4);
    uint32_t mn_hi = ((w2 >> 4) & 0x0f0f0f0fu) | (((w1 >> 6) & 0x03030303u) << 4);
    return _mm256_cvtepu8_epi16(_mm_setr_epi32((int)sc_lo, (int)sc_hi, (int)mn_lo, (int)mn_hi));
}

/* int16 lane k of the sub-block sums of the q8 values: bsums 2k + 2k+1. */
static inline __m128i q8k_sub_sums(const uint8_t *y) {
    __m256i bs = _mm256_loadu_si256((const __m256i *)(y + 260));
    return _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
}

/* Every int16 lane set to lane k (< 8) of the low half of v16. */
static inline __m256i bcast16(__m256i v16, int k) {
    __m256i lo = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(v16));
    return _mm256_shuffle_epi8(lo, _mm256_set1_epi16((short)(2 * k | (2 * k + 1) << 8)));
}

/* Eight exact int32 lanes of scale * (q . q8) over 32 elements: lane l holds
 * products 4l..4l+3 times the int16 scale (maddubs, then madd). q is
 * unsigned (<= 63) so maddubs cannot saturate with |q8| <= 127. */
static inline __m256i scaled_dot32(__m256i q, const int8_t *q8, __m256i scale) {
    __m256i p16 = _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)q8));
    return _mm256_madd_epi16(scale, p16);
}

/* Sum of each of four int32 vectors, as the four lanes of the result. */
static inline __m128i hsum4x8(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* ---- q4_K: llama.cpp's repacked-GEMM order (see mf_ref_dot_q4_k) ---- */

/* One q4_K super-block against one q8_K block: lane p of *isum is
 * sc[2p]*D[2p] + sc[2p+1]*D[2p+1], lane p of *imin m[2p]*S[2p] +
 * m[2p+1]*S[2p+1], both converted to float (exact integers first). */
BLOCK_FN void q4k_block(const uint8_t *a, const uint8_t *b, __m128 *isum, __m128 *imin) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const int8_t *q8 = (const int8_t *)(b + 4);
    __m256i sm = k4_scales_mins(a + 4), v[4];
    UNROLL4
    for (int g = 0; g < 4; g++) {
        __m256i bits = _mm256_loadu_si256((const __m256i *)(a + 16 + 32 * g));
        __m256i lo = _mm256_and_si256(bits, m4), hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
        v[g] = _mm256_add_epi32(scaled_dot32(lo, q8 + 64 * g, bcast16(sm, 2 * g)),
                                scaled_dot32(hi, q8 + 64 * g + 32, bcast16(sm, 2 * g + 1)));
    }
    *isum = _mm_cvtepi32_ps(hsum4x8(v[0], v[1], v[2], v[3]));
    *imin = _mm_cvtepi32_ps(_mm_madd_epi16(_mm256_extracti128_si256(sm, 1), q8k_sub_sums(b)));
}

static void dot_q4_k(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    float acc = 0, accm = 0, is[4], im[4];
    for (int64_t i = 0; i < n / QK_K; i++, a += 144, b += MF_Q8_K_BYTES) {
        float dy = mf_q8k_d(b);
        float dd = _cvtsh_ss(mf_rd16(a)) * dy, dm = _cvtsh_ss(mf_rd16(a + 2)) * dy;
        __m128 vi, vm;
        q4k_block(a, b, &vi, &vm);
        _mm_storeu_ps(is, vi);
        _mm_storeu_ps(im, vm);
        /* two chains of four dependent FMAs, the order the reference fixes */
        for (int p = 0; p < 4; p++) {
            acc = __builtin_fmaf(is[p], dd, acc);
            accm = __builtin_fmaf(im[p], dm, accm);
        }
    }
    *s = acc - accm;
}

/* Four rows: the per-pair sums of the rows are transposed so that lane r of
 * one vector FMA is row r's scalar FMA of dot_q4_k, in the same order. */
static void dot4_q4_k(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    const uint8_t *b = y, *a = x;
    __m128 acc = _mm_setzero_ps(), accm = acc;
    for (int64_t i = 0; i < n / QK_K; i++, b += MF_Q8_K_BYTES) {
        const uint64_t o = (uint64_t)i * 144;
        __m128 dy = _mm_set1_ps(mf_q8k_d(b)), vi[4], vm[4], dx, dmx;
        float d_r[4], m_r[4];
        for (int r = 0; r < 4; r++) {
            const uint8_t *ar = a + r * xs + o;
            d_r[r] = _cvtsh_ss(mf_rd16(ar));
            m_r[r] = _cvtsh_ss(mf_rd16(ar + 2));
            q4k_block(ar, b, &vi[r], &vm[r]);
        }
        dx = _mm_mul_ps(_mm_loadu_ps(d_r), dy);
        dmx = _mm_mul_ps(_mm_loadu_ps(m_r), dy);
        _MM_TRANSPOSE4_PS(vi[0], vi[1], vi[2], vi[3]);
        _MM_TRANSPOSE4_PS(vm[0], vm[1], vm[2], vm[3]);
        for (int p = 0; p < 4; p++) {
            acc = _mm_fmadd_ps(vi[p], dx, acc);
            accm = _mm_fmadd_ps(vm[p], dmx, accm);
        }
    }
    _mm_storeu_ps(s, _mm_sub_ps(acc, accm));
}

/* ---- q5_K: llama.cpp's AVX2 vec_dot order (see mf_ref_dot_q5_k) ---- */

/* The block's eight lane sums of scale * (q5 . q8), as floats, and the
 * integer sum of m[j]*S[j] in *imin. */
BLOCK_FN __m256 q5k_block(const uint8_t *a, const uint8_t *b, int32_t *imin) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    const int8_t *q8 = (const int8_t *)(b + 4);
    __m256i sm = k4_scales_mins(a + 4);
    __m128i pm = _mm_madd_epi16(_mm256_extracti128_si256(sm, 1), q8k_sub_sums(b));
    pm = _mm_add_epi32(pm, _mm_unpackhi_epi64(pm, pm));
    *imin = _mm_cvtsi128_si32(_mm_add_epi32(pm, _mm_shuffle_epi32(pm, 1)));
    __m256i hbits = _mm256_loadu_si256((const __m256i *)(a + 16)), sum = _mm256_setzero_si256();
    UNROLL4
    for (int g = 0; g < 4; g++) {
        __m256i bits = _mm256_loadu_si256((const __m256i *)(a + 48 + 32 * g));
        /* bit 2g of qh[l] is the fifth bit of element l of sub-block 2g */
        __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(hbits, 2 * g), one);
        __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(hbits, 2 * g + 1), one);
        __m256i lo = _mm256_or_si256(_mm256_and_si256(bits, m4), _mm256_slli_epi16(h0, 4));
        __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4),
                                     _mm256_slli_epi16(h1, 4));
        sum = _mm256_add_epi32(sum, scaled_dot32(lo, q8 + 64 * g, bcast16(sm, 2 * g)));
        sum = _mm256_add_epi32(sum, scaled_dot32(hi, q8 + 64 * g + 32, bcast16(sm, 2 * g + 1)));
    }
    return _mm256_cvtepi32_ps(sum);
}

static void dot_q5_k(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    __m256 acc = _mm256_setzero_ps();
    float summs = 0;
    for (int64_t i = 0; i < n / QK_K; i++, a += 176, b += MF_Q8_K_BYTES) {
        float dy = mf_q8k_d(b);
        float d = dy * _cvtsh_ss(mf_rd16(a)), dmin = -dy * _cvtsh_ss(mf_rd16(a + 2));
        int32_t imin;
        __m256 v = q5k_block(a, b, &imin);
        summs = __builtin_fmaf(dmin, (float)imin, summs);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), v, acc);
    }
    *s = hsum8(acc) + summs;
}

static void dot4_q5_k(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    const uint8_t *b = y, *a0 = x, *a1 = a0 + xs, *a2 = a1 + xs, *a3 = a2 + xs;
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    float m0 = 0, m1 = 0, m2 = 0, m3 = 0;
    for (int64_t i = 0; i < n / QK_K; i++, b += MF_Q8_K_BYTES) {
        const uint64_t o = (uint64_t)i * 176;
        float dy = mf_q8k_d(b);
        int32_t i0, i1, i2, i3;
        __m256 v0 = q5k_block(a0 + o, b, &i0), v1 = q5k_block(a1 + o, b, &i1);
        __m256 v2 = q5k_block(a2 + o, b, &i2), v3 = q5k_block(a3 + o, b, &i3);
        c0 = _mm256_fmadd_ps(_mm256_set1_ps(dy * _cvtsh_ss(mf_rd16(a0 + o))), v0, c0);
        c1 = _mm256_fmadd_ps(_mm256_set1_ps(dy * _cvtsh_ss(mf_rd16(a1 + o))), v1, c1);
        c2 = _mm256_fmadd_ps(_mm256_set1_ps(dy * _cvtsh_ss(mf_rd16(a2 + o))), v2, c2);
        c3 = _mm256_fmadd_ps(_mm256_set1_ps(dy * _cvtsh_ss(mf_rd16(a3 + o))), v3, c3);
        m0 = __builtin_fmaf(-dy * _cvtsh_ss(mf_rd16(a0 + o + 2)), (float)i0, m0);
        m1 = __builtin_fmaf(-dy * _cvtsh_ss(mf_rd16(a1 + o + 2)), (float)i1, m1);
        m2 = __builtin_fmaf(-dy * _cvtsh_ss(mf_rd16(a2 + o + 2)), (float)i2, m2);
        m3 = __builtin_fmaf(-dy * _cvtsh_ss(mf_rd16(a3 + o + 2)), (float)i3, m3);
    }
    s[0] = hsum8(c0) + m0;
    s[1] = hsum8(c1) + m1;
    s[2] = hsum8(c2) + m2;
    s[3] = hsum8(c3) + m3;
}

/* ---- q6_K: llama.cpp's AVX2 vec_dot order (see mf_ref_dot_q6_k) ---- */

/* The block's eight lane sums of sc * (u . q8) - 32 * (sc . bsums) per
 * lane pair, as floats. */
BLOCK_FN __m256 q6k_block(const uint8_t *a, const uint8_t *b) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(3);
    const int8_t *q8 = (const int8_t *)(b + 4);
    __m128i sc8 = _mm_loadu_si128((const __m128i *)(a + 192));
    __m256i sc16 = _mm256_cvtepi8_epi16(sc8), sum = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++) {
        __m256i l0 = _mm256_loadu_si256((const __m256i *)(a + 64 * h));
        __m256i l1 = _mm256_loadu_si256((const __m256i *)(a + 64 * h + 32));
        __m256i hb = _mm256_loadu_si256((const __m256i *)(a + 128 + 32 * h));
        __m256i q[4];
        q[0] = _mm256_and_si256(l0, m4);
        q[1] = _mm256_and_si256(l1, m4);
        q[2] = _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4);
        q[3] = _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4);
        UNROLL4
        for (int k = 0; k < 4; k++) {
            __m256i hk = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * k), m3);
            __m256i u = _mm256_or_si256(q[k], _mm256_slli_epi16(hk, 4));
            int c = 4 * h + k; /* chunk of 32: groups 2c (lanes 0..3), 2c+1 */
            __m128i s_lo = _mm_set1_epi16((short)(int8_t)a[192 + 2 * c]);
            __m128i s_hi = _mm_set1_epi16((short)(int8_t)a[192 + 2 * c + 1]);
            sum = _mm256_add_epi32(sum, scaled_dot32(u, q8 + 32 * c, _mm256_setr_m128i(s_lo, s_hi)));
        }
    }
    __m256i bs = _mm256_loadu_si256((const __m256i *)(b + 260));
    sum = _mm256_sub_epi32(sum, _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5));
    return _mm256_cvtepi32_ps(sum);
}

static void dot_q6_k(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++, a += 210, b += MF_Q8_K_BYTES) {
        __m256 d = _mm256_set1_ps(mf_q8k_d(b) * _cvtsh_ss(mf_rd16(a + 208)));
        acc = _mm256_fmadd_ps(d, q6k_block(a, b), acc);
    }
    *s = hsum8(acc);
}

static void dot4_q6_k(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    const uint8_t *b = y, *a0 = x, *a1 = a0 + xs, *a2 = a1 + xs, *a3 = a2 + xs;
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    for (int64_t i = 0; i < n / QK_K; i++, b += MF_Q8_K_BYTES) {
        const uint64_t o = (uint64_t)i * 210;
        float dy = mf_q8k_d(b);
        c0 = _mm256_fmadd_ps(_mm256_set1_ps(dy * _cvtsh_ss(mf_rd16(a0 + o + 208))), q6k_block(a0 + o, b), c0);
        c1 = _mm256_fmadd_ps(_mm256_set1_ps(dy * _cvtsh_ss(mf_rd16(a1 + o + 208))), q6k_block(a1 + o, b), c1);
        c2 = _mm256_fmadd_ps(_mm256_set1_ps(dy * _cvtsh_ss(mf_rd16(a2 + o + 208))), q6k_block(a2 + o, b), c2);
        c3 = _mm256_fmadd_ps(_mm256_set1_ps(dy * _cvtsh_ss(mf_rd16(a3 + o + 208))), q6k_block(a3 + o, b), c3);
    }
    s[0] = hsum8(c0);
    s[1] = hsum8(c1);
    s[2] = hsum8(c2);
    s[3] = hsum8(c3);
}

void mf_avx2_install_k(mf_type_traits table[MF_TYPE_COUNT]) {
    table[MF_TYPE_Q4_K].vec_dot = dot_q4_k;
    table[MF_TYPE_Q4_K].vec_dot4 = dot4_q4_k;
    table[MF_TYPE_Q5_K].vec_dot = dot_q5_k;
    table[MF_TYPE_Q5_K].vec_dot4 = dot4_q5_k;
    table[MF_TYPE_Q6_K].vec_dot = dot_q6_k;
    table[MF_TYPE_Q6_K].vec_dot4 = dot4_q6_k;
}
