/* kernels_q32_avx2.c — AVX2 + FMA + F16C kernels of the 32-element block
 * formats q4_0, q4_1, q5_0, q5_1, iq4_nl and of the q8_1 activation quantizer.
 *
 * Every kernel performs exactly the floating-point operations of its scalar
 * reference in kernels_q32_ref.c, in the same order, so the two agree bit
 * for bit (tests/unit/test_quant_q32.c checks it): the integer parts (block
 * quants times activation quants) are exact in any order, and only the float
 * steps are ordered — per block either one FMA into each of 8 lanes (q5_0,
 * q4_1, q5_1), or one FMA of the whole block sum into a single chain (q4_0,
 * iq4_nl). The chain is inherently serial, so the chain kernels reduce eight
 * blocks' integer sums at a time and then run the eight FMAs; the four-row
 * kernels run four rows' chains side by side to hide the FMA latency. The
 * weight quantizers are not here: they run once per model, the scalar ones
 * serve. */
#include "tensor/kernels.h"

#include <immintrin.h>

#define QK 32

typedef __m256i (*load_fn)(const uint8_t *blk);

/* The tree of kernels_q32_ref.c's tree8: l + l+4, then + l+2, then + l+1. */
static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

static inline int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

static inline float f16_at(const uint8_t *p) { return _cvtsh_ss(mf_rd16(p)); }

/* ---- unpacking 32 quants into 32 bytes, element order ---- */

/* Low nibbles are elements 0..15, high nibbles 16..31. */
static inline __m256i nibbles32(const uint8_t *qs) {
    __m128i x = _mm_loadu_si128((const __m128i *)qs);
    __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(x), _mm_srli_epi16(x, 4), 1);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
}

/* Byte j is 0xff where bit j of the little-endian u32 at qh4 is set. */
static inline __m256i bits32(const uint8_t *qh4) {
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201ll);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)mf_rd32(qh4)), spread);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

/* Signed values (q4_0: q-8, q5_0: q-16, iq4_nl: the level). */
static inline __m256i load_q4_0(const uint8_t *b) {
    return _mm256_sub_epi8(nibbles32(b + 2), _mm256_set1_epi8(8));
}
/* q - 16 is the nibble with 0xf0 or'ed in where the fifth bit is clear. */
static inline __m256i load_q5_0(const uint8_t *b) {
    return _mm256_or_si256(nibbles32(b + 6), _mm256_andnot_si256(bits32(b + 2), _mm256_set1_epi8(-16)));
}
static inline __m256i load_iq4_nl(const uint8_t *b) {
    const __m256i lev = _mm256_setr_epi8(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38,
                                         53, 69, 89, 113, -127, -104, -83, -65, -49, -35, -22,
                                         -10, 1, 13, 25, 38, 53, 69, 89, 113);
    return _mm256_shuffle_epi8(lev, nibbles32(b + 2));
}
/* Unsigned values (0..15, 0..31). */
static inline __m256i load_q4_1(const uint8_t *b) { return nibbles32(b + 4); }
static inline __m256i load_q5_1(const uint8_t *b) {
    return _mm256_or_si256(nibbles32(b + 8), _mm256_and_si256(bits32(b + 4), _mm256_set1_epi8(0x10)));
}

/* Lane l = exact sum of products 4l..4l+3. maddubs wants an unsigned first
 * operand: |w| and y carrying w's sign give the same products; pairs stay
 * inside int16 while |w|, |y| <= 127. */
static inline __m256i isum_signed(__m256i w, const uint8_t *yq) {
    __m256i y = _mm256_loadu_si256((const __m256i *)yq);
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}
static inline __m256i isum_unsigned(__m256i w, const uint8_t *yq) {
    __m256i p = _mm256_maddubs_epi16(w, _mm256_loadu_si256((const __m256i *)yq));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* ---- q8_1 activations ---- */

/* As mf_ref_q8_1_act_from_float: id = 127/amax, ties to even, NaN -> 0,
 * clamp to +-127, s = f16(d * (float)sum). */
static void q8_1_act_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    const __m256 sign = _mm256_set1_ps(-0.0f), lim = _mm256_set1_ps(127.0f);
    for (int64_t b = 0; b < n / QK; b++, p += MF_Q8_1_BYTES) {
        const float *x = src + b * QK;
        __m256 v[4], m = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            m = _mm256_max_ps(_mm256_andnot_ps(sign, v[k]), m); /* NaN lanes keep m */
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
        float amax = _mm_cvtss_f32(h), d = amax / 127.0f;
        __m256 vid = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
        __m256i i[4];
        for (int k = 0; k < 4; k++) {
            __m256 t = _mm256_round_ps(_mm256_mul_ps(v[k], vid),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            t = _mm256_and_ps(t, _mm256_cmp_ps(t, t, _CMP_ORD_Q));
            t = _mm256_min_ps(_mm256_max_ps(t, _mm256_sub_ps(_mm256_setzero_ps(), lim)), lim);
            i[k] = _mm256_cvtps_epi32(t);
        }
        int32_t sum = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3])));
        mf_wr16(p, mf_f32_to_f16(d));
        mf_wr16(p + 2, mf_f32_to_f16(d * (float)sum));
        __m256i q = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
        q = _mm256_permutevar8x32_epi32(q, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(p + 4), q);
    }
}

/* ---- lane dots: q5_0 (x q8_0), q4_1 and q5_1 (x q8_1) ---- */

static inline __attribute__((always_inline)) float
lanes_q8_0(int64_t n, const uint8_t *x, int xb, load_fn load, const uint8_t *y) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK; i++, x += xb, y += MF_Q8_0_BYTES) {
        __m256 d = _mm256_set1_ps(f16_at(x) * f16_at(y));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(isum_signed(load(x), y + 2)), acc);
    }
    return hsum8(acc);
}

/* Lanes as above plus the scalar chain summs = fma(m, s, summs). */
static inline __attribute__((always_inline)) float
lanes_q8_1(int64_t n, const uint8_t *x, int xb, load_fn load, const uint8_t *y) {
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int64_t i = 0; i < n / QK; i++, x += xb, y += MF_Q8_1_BYTES) {
        summs = __builtin_fmaf(f16_at(x + 2), f16_at(y + 2), summs);
        __m256 d = _mm256_set1_ps(f16_at(x) * f16_at(y));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(isum_unsigned(load(x), y + 4)), acc);
    }
    return hsum8(acc) + summs;
}

static void dot_q5_0(int64_t n, float *s, const void *x, const void *y) {
    *s = lanes_q8_0(n, x, MF_Q5_0_BYTES, load_q5_0, y);
}
static void dot_q4_1(int64_t n, float *s, const void *x, const void *y) {
    *s = lanes_q8_1(n, x, MF_Q4_1_BYTES, load_q4_1, y);
}
static void dot_q5_1(int64_t n, float *s, const void *x, const void *y) {
    *s = lanes_q8_1(n, x, MF_Q5_1_BYTES, load_q5_1, y);
}

/* Four rows share each activation block; each row keeps its own order. */
static inline __attribute__((always_inline)) void
lanes4_q8_0(int64_t n, float s[4], const uint8_t *x, uint64_t xs, int xb, load_fn load,
            const uint8_t *y) {
    __m256 c[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < n / QK; i++, y += MF_Q8_0_BYTES) {
        float dy = f16_at(y);
        for (int r = 0; r < 4; r++) {
            const uint8_t *a = x + r * xs + i * xb;
            __m256 d = _mm256_set1_ps(f16_at(a) * dy);
            c[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(isum_signed(load(a), y + 2)), c[r]);
        }
    }
    for (int r = 0; r < 4; r++) s[r] = hsum8(c[r]);
}

static inline __attribute__((always_inline)) void
lanes4_q8_1(int64_t n, float s[4], const uint8_t *x, uint64_t xs, int xb, load_fn load,
            const uint8_t *y) {
    __m256 c[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    float summs[4] = {0};
    for (int64_t i = 0; i < n / QK; i++, y += MF_Q8_1_BYTES) {
        float dy = f16_at(y), sy = f16_at(y + 2);
        for (int r = 0; r < 4; r++) {
            const uint8_t *a = x + r * xs + i * xb;
            summs[r] = __builtin_fmaf(f16_at(a + 2), sy, summs[r]);
            __m256 d = _mm256_set1_ps(f16_at(a) * dy);
            c[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(isum_unsigned(load(a), y + 4)), c[r]);
        }
    }
    for (int r = 0; r < 4; r++) s[r] = hsum8(c[r]) + summs[r];
}

static void dot4_q5_0(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    lanes4_q8_0(n, s, x, xs, MF_Q5_0_BYTES, load_q5_0, y);
}
static void dot4_q4_1(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    lanes4_q8_1(n, s, x, xs, MF_Q4_1_BYTES, load_q4_1, y);
}
static void dot4_q5_1(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    lanes4_q8_1(n, s, x, xs, MF_Q5_1_BYTES, load_q5_1, y);
}

/* ---- chain dots: q4_0 and iq4_nl (x q8_0) ---- */

/* Lane k of the result = total of v[k] (integer adds: exact in any order). */
static inline __m256i reduce8(const __m256i v[8]) {
    __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    /* a = [v0..v3 low halves | v0..v3 high halves], b likewise for v4..v7 */
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20),
                            _mm256_permute2x128_si256(a, b, 0x31));
}

/* d_w*d_y of eight consecutive blocks, one per lane (f16 products are
 * exact in f32, so vector and scalar multiplies agree). */
static inline __m256 scales8(const uint8_t *x, int xb, const uint8_t *y) {
    __m128i hx = _mm_setr_epi16((short)mf_rd16(x), (short)mf_rd16(x + xb),
                                (short)mf_rd16(x + 2 * xb), (short)mf_rd16(x + 3 * xb),
                                (short)mf_rd16(x + 4 * xb), (short)mf_rd16(x + 5 * xb),
                                (short)mf_rd16(x + 6 * xb), (short)mf_rd16(x + 7 * xb));
    const int yb = MF_Q8_0_BYTES;
    __m128i hy = _mm_setr_epi16((short)mf_rd16(y), (short)mf_rd16(y + yb),
                                (short)mf_rd16(y + 2 * yb), (short)mf_rd16(y + 3 * yb),
                                (short)mf_rd16(y + 4 * yb), (short)mf_rd16(y + 5 * yb),
                                (short)mf_rd16(y + 6 * yb), (short)mf_rd16(y + 7 * yb));
    return _mm256_mul_ps(_mm256_cvtph_ps(hx), _mm256_cvtph_ps(hy));
}

/* Eight consecutive blocks of one row: their exact block sums (as floats),
 * one per lane, and their scale products. */
static inline __attribute__((always_inline)) void
chain_group(const uint8_t *x, int xb, load_fn load, const uint8_t *y, __m256 *sum, __m256 *d) {
    __m256i v[8];
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++) v[k] = isum_signed(load(x + k * xb), y + k * MF_Q8_0_BYTES + 2);
    *sum = _mm256_cvtepi32_ps(reduce8(v));
    *d = scales8(x, xb, y);
}

/* acc = fma(s[k], d[k], acc) for k = 0..3 of a 4-lane pair, in order. */
static inline __m128 chain4(__m128 s, __m128 d, __m128 acc) {
    acc = _mm_fmadd_ss(s, d, acc);
    acc = _mm_fmadd_ss(_mm_movehdup_ps(s), _mm_movehdup_ps(d), acc);
    acc = _mm_fmadd_ss(_mm_movehl_ps(s, s), _mm_movehl_ps(d, d), acc);
    return _mm_fmadd_ss(_mm_shuffle_ps(s, s, 3), _mm_shuffle_ps(d, d, 3), acc);
}

static inline __m128 chain8(__m256 s, __m256 d, __m128 acc) {
    acc = chain4(_mm256_castps256_ps128(s), _mm256_castps256_ps128(d), acc);
    return chain4(_mm256_extractf128_ps(s, 1), _mm256_extractf128_ps(d, 1), acc);
}

static inline __attribute__((always_inline)) float
chain_q8_0(int64_t n, const uint8_t *x, int xb, load_fn load, const uint8_t *y) {
    __m128 acc = _mm_setzero_ps();
    int64_t nb = n / QK, i = 0;
    for (; i + 8 <= nb; i += 8, x += 8 * xb, y += 8 * MF_Q8_0_BYTES) {
        __m256 sum, d;
        chain_group(x, xb, load, y, &sum, &d);
        acc = chain8(sum, d, acc);
    }
    float a = _mm_cvtss_f32(acc);
    for (; i < nb; i++, x += xb, y += MF_Q8_0_BYTES) {
        float t = (float)hsum_i32(isum_signed(load(x), y + 2));
        a = __builtin_fmaf(t, f16_at(x) * f16_at(y), a);
    }
    return a;
}

static inline __attribute__((always_inline)) void
chain4_q8_0(int64_t n, float s[4], const uint8_t *x, uint64_t xs, int xb, load_fn load,
            const uint8_t *y) {
    __m128 acc[4] = {_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps()};
    int64_t nb = n / QK, i = 0;
    for (; i + 8 <= nb; i += 8, y += 8 * MF_Q8_0_BYTES) {
        for (int r = 0; r < 4; r++) {
            __m256 sum, d;
            chain_group(x + r * xs + i * xb, xb, load, y, &sum, &d);
            acc[r] = chain8(sum, d, acc[r]);
        }
    }
    for (int r = 0; r < 4; r++) s[r] = _mm_cvtss_f32(acc[r]);
    for (; i < nb; i++, y += MF_Q8_0_BYTES) {
        for (int r = 0; r < 4; r++) {
            const uint8_t *a = x + r * xs + i * xb;
            float t = (float)hsum_i32(isum_signed(load(a), y + 2));
            s[r] = __builtin_fmaf(t, f16_at(a) * f16_at(y), s[r]);
        }
    }
}

static void dot_q4_0(int64_t n, float *s, const void *x, const void *y) {
    *s = chain_q8_0(n, x, MF_Q4_0_BYTES, load_q4_0, y);
}
static void dot_iq4_nl(int64_t n, float *s, const void *x, const void *y) {
    *s = chain_q8_0(n, x, MF_IQ4_NL_BYTES, load_iq4_nl, y);
}
static void dot4_q4_0(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    chain4_q8_0(n, s, x, xs, MF_Q4_0_BYTES, load_q4_0, y);
}
static void dot4_iq4_nl(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    chain4_q8_0(n, s, x, xs, MF_IQ4_NL_BYTES, load_iq4_nl, y);
}

void mf_avx2_install_q32(mf_type_traits table[MF_TYPE_COUNT]) {
    table[MF_TYPE_Q8_1].act_from_float = q8_1_act_from_float;
    table[MF_TYPE_Q4_0].vec_dot = dot_q4_0;
    table[MF_TYPE_Q4_0].vec_dot4 = dot4_q4_0;
    table[MF_TYPE_IQ4_NL].vec_dot = dot_iq4_nl;
    table[MF_TYPE_IQ4_NL].vec_dot4 = dot4_iq4_nl;
    table[MF_TYPE_Q5_0].vec_dot = dot_q5_0;
    table[MF_TYPE_Q5_0].vec_dot4 = dot4_q5_0;
    table[MF_TYPE_Q4_1].vec_dot = dot_q4_1;
    table[MF_TYPE_Q4_1].vec_dot4 = dot4_q4_1;
    table[MF_TYPE_Q5_1].vec_dot = dot_q5_1;
    table[MF_TYPE_Q5_1].vec_dot4 = dot4_q5_1;
}
