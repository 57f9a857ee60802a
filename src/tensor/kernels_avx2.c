/* kernels_avx2.c — AVX2 + FMA + F16C kernels for f32, f16, bf16 and q8_0.
 *
 * Compiled with -mavx2 -mfma -mf16c (the Makefile gives those flags to files
 * named *_avx2.c only); types.c calls mf_avx2_install after checking the CPU,
 * so nothing here runs on a machine without these extensions. The f32, f16
 * and q8_0 dots perform exactly the reference's operations (its lanes are
 * our vector lanes; see kernels_ref.c for the order, llama.cpp's), so they
 * agree with it bit for bit, and the four-row versions with the one-row
 * ones. The bf16 dot sums in its own order (four accumulators), close to the
 * double-precision reference but not equal. The conversions (f16, bf16,
 * q8_0 from f32) produce exactly the reference's bytes. */
#include "tensor/kernels.h"

#include <immintrin.h>

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

static inline __m256 load_f16x8(const uint8_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static inline __m256 load_bf16x8(const uint8_t *p) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

/* ---- conversions ---- */

static void f16_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_f16x8(p + 2 * i));
    for (; i < n; i++) dst[i] = mf_f16_to_f32(mf_rd16(p + 2 * i));
}

/* F16C rounds to nearest even and keeps subnormals, as mf_f32_to_f16 does. */
static void f16_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(p + 2 * i), h);
    }
    for (; i < n; i++) mf_wr16(p + 2 * i, mf_f32_to_f16(src[i]));
}

static void bf16_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_bf16x8(p + 2 * i));
    for (; i < n; i++) dst[i] = mf_bf16_to_f32(mf_rd16(p + 2 * i));
}

/* The integer rounding of mf_f32_to_bf16, eight lanes at a time. */
static void bf16_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    const __m256i lsb1 = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i quiet = _mm256_set1_epi32(0x40);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i u = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), lsb1);
        __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(bias, lsb)), 16);
        __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
        __m256i qn = _mm256_or_si256(_mm256_srli_epi32(u, 16), quiet);
        r = _mm256_blendv_epi8(r, qn, nan);
        /* packus works within 128-bit lanes; gather the two halves */
        __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
        _mm_storeu_si128((__m128i *)(p + 2 * i), _mm256_castsi256_si128(packed));
    }
    for (; i < n; i++) mf_wr16(p + 2 * i, mf_f32_to_bf16(src[i]));
}

/* roundf (ties away from zero) of t, clamped to [-127, 127], NaN -> 0: the
 * reference's q8_round. round_ps only offers ties-to-even, so truncate and
 * add the sign where the dropped fraction is at least one half (t - trunc(t)
 * is exact). */
static inline __m256i q8_round8(__m256 t) {
    const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
    __m256 r = _mm256_round_ps(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(t, r));
    __m256 up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    __m256 step = _mm256_or_ps(_mm256_and_ps(t, sign), one);
    r = _mm256_add_ps(r, _mm256_and_ps(up, step));
    r = _mm256_and_ps(r, _mm256_cmp_ps(t, t, _CMP_ORD_Q));
    r = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
    return _mm256_cvtps_epi32(r);
}

static void q8_0_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / MF_QK8_0; b++, p += MF_Q8_0_BYTES) {
        const float *x = src + b * MF_QK8_0;
        __m256 v[4], m = _mm256_setzero_ps();
        /* max(|x|, m) returns m when |x| is NaN, as fmaxf ignores NaN */
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            m = _mm256_max_ps(_mm256_andnot_ps(sign, v[k]), m);
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
        float d = _mm_cvtss_f32(h) / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        mf_wr16(p, mf_f32_to_f16(d));
        __m256 vid = _mm256_set1_ps(id);
        __m256i i0 = q8_round8(_mm256_mul_ps(v[0], vid)), i1 = q8_round8(_mm256_mul_ps(v[1], vid));
        __m256i i2 = q8_round8(_mm256_mul_ps(v[2], vid)), i3 = q8_round8(_mm256_mul_ps(v[3], vid));
        __m256i q = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        q = _mm256_permutevar8x32_epi32(q, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(p + 2), q);
    }
}

/* llama.cpp's activation quantizer: id = 127/amax, ties to even (NaN -> 0). */
static void q8_0_act_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    const __m256 sign = _mm256_set1_ps(-0.0f), lim = _mm256_set1_ps(127.0f);
    for (int64_t b = 0; b < n / MF_QK8_0; b++, p += MF_Q8_0_BYTES) {
        const float *x = src + b * MF_QK8_0;
        __m256 v[4], m = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            m = _mm256_max_ps(_mm256_andnot_ps(sign, v[k]), m);
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
        float amax = _mm_cvtss_f32(h);
        mf_wr16(p, mf_f32_to_f16(amax / 127.0f));
        __m256 vid = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
        __m256i i[4];
        for (int k = 0; k < 4; k++) {
            __m256 t = _mm256_round_ps(_mm256_mul_ps(v[k], vid),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            t = _mm256_and_ps(t, _mm256_cmp_ps(t, t, _CMP_ORD_Q));
            t = _mm256_min_ps(_mm256_max_ps(t, _mm256_sub_ps(_mm256_setzero_ps(), lim)), lim);
            i[k] = _mm256_cvtps_epi32(t);
        }
        __m256i q = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
        q = _mm256_permutevar8x32_epi32(q, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(p + 2), q);
    }
}

/* ---- dot products ----
 * f32 and f16: the 16 lanes of kernels_ref.c are two registers, lo (terms
 * i..i+7 of each 16) and hi (i+8..i+15); the tree starts with lo + hi, and
 * hsum8 continues it (l + l+4, then l + l+2, then l + l+1). */

static inline float finish16(__m256 lo, __m256 hi) { return hsum8(_mm256_add_ps(lo, hi)); }

static void dot_f32(int64_t n, float *s, const void *x, const void *y) {
    const float *a = x, *b = y;
    __m256 lo = _mm256_setzero_ps(), hi = lo;
    int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i += 16) {
        lo = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), lo);
        hi = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), hi);
    }
    float sum = finish16(lo, hi);
    for (int64_t i = n16; i < n; i++) sum = __builtin_fmaf(a[i], b[i], sum);
    *s = sum;
}

/* Four rows at once: eight independent FMA chains hide the FMA latency
 * that two chains cannot, and each activation load serves four rows. The
 * accumulators are named, not an array, so they stay in registers. */
static void dot4_f32(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    const float *b = y, *a0 = x;
    const float *a1 = (const float *)((const uint8_t *)a0 + xs);
    const float *a2 = (const float *)((const uint8_t *)a1 + xs);
    const float *a3 = (const float *)((const uint8_t *)a2 + xs);
    __m256 l0 = _mm256_setzero_ps(), l1 = l0, l2 = l0, l3 = l0, h0 = l0, h1 = l0, h2 = l0, h3 = l0;
    int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i += 16) {
        __m256 bl = _mm256_loadu_ps(b + i), bh = _mm256_loadu_ps(b + i + 8);
        l0 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + i), bl, l0);
        h0 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + i + 8), bh, h0);
        l1 = _mm256_fmadd_ps(_mm256_loadu_ps(a1 + i), bl, l1);
        h1 = _mm256_fmadd_ps(_mm256_loadu_ps(a1 + i + 8), bh, h1);
        l2 = _mm256_fmadd_ps(_mm256_loadu_ps(a2 + i), bl, l2);
        h2 = _mm256_fmadd_ps(_mm256_loadu_ps(a2 + i + 8), bh, h2);
        l3 = _mm256_fmadd_ps(_mm256_loadu_ps(a3 + i), bl, l3);
        h3 = _mm256_fmadd_ps(_mm256_loadu_ps(a3 + i + 8), bh, h3);
    }
    s[0] = finish16(l0, h0);
    s[1] = finish16(l1, h1);
    s[2] = finish16(l2, h2);
    s[3] = finish16(l3, h3);
    for (int64_t i = n16; i < n; i++) {
        s[0] = __builtin_fmaf(a0[i], b[i], s[0]);
        s[1] = __builtin_fmaf(a1[i], b[i], s[1]);
        s[2] = __builtin_fmaf(a2[i], b[i], s[2]);
        s[3] = __builtin_fmaf(a3[i], b[i], s[3]);
    }
}

static void dot_f16(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    __m256 lo = _mm256_setzero_ps(), hi = lo;
    int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i += 16) {
        lo = _mm256_fmadd_ps(load_f16x8(a + 2 * i), load_f16x8(b + 2 * i), lo);
        hi = _mm256_fmadd_ps(load_f16x8(a + 2 * i + 16), load_f16x8(b + 2 * i + 16), hi);
    }
    float sum = finish16(lo, hi);
    for (int64_t i = n16; i < n; i++)
        sum = __builtin_fmaf(_cvtsh_ss(mf_rd16(a + 2 * i)), _cvtsh_ss(mf_rd16(b + 2 * i)), sum);
    *s = sum;
}

static inline float f16_at(const uint8_t *p, int64_t i) { return _cvtsh_ss(mf_rd16(p + 2 * i)); }

static void dot4_f16(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    const uint8_t *b = y, *a0 = x, *a1 = a0 + xs, *a2 = a1 + xs, *a3 = a2 + xs;
    __m256 l0 = _mm256_setzero_ps(), l1 = l0, l2 = l0, l3 = l0, h0 = l0, h1 = l0, h2 = l0, h3 = l0;
    int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i += 16) {
        __m256 bl = load_f16x8(b + 2 * i), bh = load_f16x8(b + 2 * i + 16);
        l0 = _mm256_fmadd_ps(load_f16x8(a0 + 2 * i), bl, l0);
        h0 = _mm256_fmadd_ps(load_f16x8(a0 + 2 * i + 16), bh, h0);
        l1 = _mm256_fmadd_ps(load_f16x8(a1 + 2 * i), bl, l1);
        h1 = _mm256_fmadd_ps(load_f16x8(a1 + 2 * i + 16), bh, h1);
        l2 = _mm256_fmadd_ps(load_f16x8(a2 + 2 * i), bl, l2);
        h2 = _mm256_fmadd_ps(load_f16x8(a2 + 2 * i + 16), bh, h2);
        l3 = _mm256_fmadd_ps(load_f16x8(a3 + 2 * i), bl, l3);
        h3 = _mm256_fmadd_ps(load_f16x8(a3 + 2 * i + 16), bh, h3);
    }
    s[0] = finish16(l0, h0);
    s[1] = finish16(l1, h1);
    s[2] = finish16(l2, h2);
    s[3] = finish16(l3, h3);
    for (int64_t i = n16; i < n; i++) {
        float bi = f16_at(b, i);
        s[0] = __builtin_fmaf(f16_at(a0, i), bi, s[0]);
        s[1] = __builtin_fmaf(f16_at(a1, i), bi, s[1]);
        s[2] = __builtin_fmaf(f16_at(a2, i), bi, s[2]);
        s[3] = __builtin_fmaf(f16_at(a3, i), bi, s[3]);
    }
}

static void dot_bf16(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const uint8_t *pa = a + 2 * i, *pb = b + 2 * i;
        acc0 = _mm256_fmadd_ps(load_bf16x8(pa), load_bf16x8(pb), acc0);
        acc1 = _mm256_fmadd_ps(load_bf16x8(pa + 16), load_bf16x8(pb + 16), acc1);
        acc2 = _mm256_fmadd_ps(load_bf16x8(pa + 32), load_bf16x8(pb + 32), acc2);
        acc3 = _mm256_fmadd_ps(load_bf16x8(pa + 48), load_bf16x8(pb + 48), acc3);
    }
    for (; i + 8 <= n; i += 8)
        acc0 = _mm256_fmadd_ps(load_bf16x8(a + 2 * i), load_bf16x8(b + 2 * i), acc0);
    float sum = hsum8(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    for (; i < n; i++)
        sum += mf_bf16_to_f32(mf_rd16(a + 2 * i)) * mf_bf16_to_f32(mf_rd16(b + 2 * i));
    *s = sum;
}

/* One block's 32 int8 products summed to eight exact int32 lanes (lane l =
 * products 4l..4l+3), as floats. maddubs needs an unsigned operand: |x| and
 * y carrying x's sign give the same products. Pair sums stay below 2^15
 * while |q| <= 127, which every q8_0 quantizer guarantees (-128 could
 * saturate, as in ggml). */
static inline __m256 q8_block_dot(const uint8_t *a, __m256i qb) {
    __m256i qa = _mm256_loadu_si256((const __m256i *)(a + 2));
    __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(qa, qa), _mm256_sign_epi8(qb, qa));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

static inline __m256i q8_load(const uint8_t *b) {
    return _mm256_loadu_si256((const __m256i *)(b + 2));
}

/* One accumulator, one FMA per block, as llama.cpp: the chain is what the
 * order demands; the four-row version below supplies the parallelism. */
static void dot_q8_0(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / MF_QK8_0; i++, a += MF_Q8_0_BYTES, b += MF_Q8_0_BYTES) {
        __m256 d = _mm256_set1_ps(_cvtsh_ss(mf_rd16(a)) * _cvtsh_ss(mf_rd16(b)));
        acc = _mm256_fmadd_ps(d, q8_block_dot(a, q8_load(b)), acc);
    }
    *s = hsum8(acc);
}

static inline __m256 q8_scale(const uint8_t *a, float db) {
    return _mm256_set1_ps(_cvtsh_ss(mf_rd16(a)) * db);
}

static void dot4_q8_0(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    const uint8_t *b = y, *a0 = x, *a1 = a0 + xs, *a2 = a1 + xs, *a3 = a2 + xs;
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    for (int64_t i = 0; i < n / MF_QK8_0; i++, b += MF_Q8_0_BYTES) {
        const int64_t o = i * MF_Q8_0_BYTES;
        __m256i qb = q8_load(b);
        float db = _cvtsh_ss(mf_rd16(b));
        c0 = _mm256_fmadd_ps(q8_scale(a0 + o, db), q8_block_dot(a0 + o, qb), c0);
        c1 = _mm256_fmadd_ps(q8_scale(a1 + o, db), q8_block_dot(a1 + o, qb), c1);
        c2 = _mm256_fmadd_ps(q8_scale(a2 + o, db), q8_block_dot(a2 + o, qb), c2);
        c3 = _mm256_fmadd_ps(q8_scale(a3 + o, db), q8_block_dot(a3 + o, qb), c3);
    }
    s[0] = hsum8(c0);
    s[1] = hsum8(c1);
    s[2] = hsum8(c2);
    s[3] = hsum8(c3);
}

void mf_avx2_install(mf_type_traits table[MF_TYPE_COUNT]) {
    mf_avx2_install_k2(table);
    mf_avx2_install_k(table);
    mf_avx2_install_q32(table);
    table[MF_TYPE_F32].vec_dot = dot_f32;
    table[MF_TYPE_F32].vec_dot4 = dot4_f32;
    table[MF_TYPE_F16].vec_dot4 = dot4_f16;
    table[MF_TYPE_Q8_0].vec_dot4 = dot4_q8_0;
    table[MF_TYPE_F16].to_float = f16_to_float;
    table[MF_TYPE_F16].from_float = f16_from_float;
    table[MF_TYPE_F16].vec_dot = dot_f16;
    table[MF_TYPE_BF16].to_float = bf16_to_float;
    table[MF_TYPE_BF16].from_float = bf16_from_float;
    table[MF_TYPE_BF16].vec_dot = dot_bf16;
    table[MF_TYPE_Q8_0].from_float = q8_0_from_float;
    table[MF_TYPE_Q8_0].act_from_float = q8_0_act_from_float;
    table[MF_TYPE_Q8_0].vec_dot = dot_q8_0;
}
