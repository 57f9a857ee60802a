/* kernels_neon.c — NEON (aarch64) kernels for f32, f16, bf16 and q8_0, and
 * mf_neon_install, which lays every NEON kernel over the reference table.
 *
 * Compiled to nothing except where the compiler targets aarch64 (NEON is
 * part of the base ISA there, so no flags and no run-time check are needed).
 * Each kernel performs exactly the float operations of its scalar reference
 * in kernels_ref.c, in the same order, so the two agree bit for bit
 * (tests/unit/test_kernels_simd.c): the 16 fmaf lanes of the f32/f16 dots
 * are four float32x4_t, q8_0's 8 lanes two; the bf16 dot keeps the
 * reference's double-precision running sum, element by element. f16
 * widening (vcvt_f32_f16) is exact, narrowing rounds to nearest even and
 * keeps subnormals, infinities and quiet NaN payloads as mf_f32_to_f16 does.
 * The four-row dots run four rows' chains side by side, each in its own
 * order, as the AVX2 ones do. */
#include "tensor/kernels_neon.h"

#if defined(__aarch64__) && defined(__ARM_NEON)

#include <math.h>

/* ---- f16 and bf16 conversions ---- */

static void f16_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, nf_f16x4(p + 2 * i));
    for (; i < n; i++) dst[i] = mf_f16_to_f32(mf_rd16(p + 2 * i));
}

static void f16_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1_u8(p + 2 * i, vreinterpret_u8_f16(vcvt_f16_f32(vld1q_f32(src + i))));
    for (; i < n; i++) mf_wr16(p + 2 * i, mf_f32_to_f16(src[i]));
}

static inline float32x4_t bf16x4(const uint8_t *p) {
    uint16x4_t h = vreinterpret_u16_u8(vld1_u8(p));
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
}

static void bf16_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, bf16x4(p + 2 * i));
    for (; i < n; i++) dst[i] = mf_bf16_to_f32(mf_rd16(p + 2 * i));
}

/* The integer rounding of mf_f32_to_bf16, four lanes at a time. */
static void bf16_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32x4_t u = vreinterpretq_u32_f32(vld1q_f32(src + i));
        uint32x4_t lsb = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
        uint32x4_t r = vshrq_n_u32(vaddq_u32(u, vaddq_u32(lsb, vdupq_n_u32(0x7fff))), 16);
        uint32x4_t nan = vcgtq_u32(vandq_u32(u, vdupq_n_u32(0x7fffffff)), vdupq_n_u32(0x7f800000));
        uint32x4_t qn = vorrq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(0x40));
        vst1_u8(p + 2 * i, vreinterpret_u8_u16(vmovn_u32(vbslq_u32(nan, qn, r))));
    }
    for (; i < n; i++) mf_wr16(p + 2 * i, mf_f32_to_bf16(src[i]));
}

/* ---- q8_0 quantizers ---- */

/* max |x| over a block of 32 with fmaxf's rule (a NaN is ignored). */
static inline float amax32(const float *x, float32x4_t v[8]) {
    float32x4_t m = vdupq_n_f32(0.0f);
    for (int k = 0; k < 8; k++) {
        v[k] = vld1q_f32(x + 4 * k);
        m = vmaxnmq_f32(m, vabsq_f32(v[k]));
    }
    return vmaxnmvq_f32(m);
}

/* Rounded t (already rounded by the caller's mode) with NaN -> 0, clamped
 * to [-127, 127], as int32. */
static inline int32x4_t q8_clamp4(float32x4_t r) {
    r = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(r), vceqq_f32(r, r)));
    r = vminq_f32(vmaxq_f32(r, vdupq_n_f32(-127.0f)), vdupq_n_f32(127.0f));
    return vcvtq_s32_f32(r);
}

/* Narrow 32 int32 (in [-127, 127]) to int8 at dst. */
static inline void store_q8x32(int8_t *dst, const int32x4_t q[8]) {
    for (int k = 0; k < 2; k++) {
        int16x8_t a = vcombine_s16(vmovn_s32(q[4 * k]), vmovn_s32(q[4 * k + 1]));
        int16x8_t b = vcombine_s16(vmovn_s32(q[4 * k + 2]), vmovn_s32(q[4 * k + 3]));
        vst1q_s8(dst + 16 * k, vcombine_s8(vmovn_s16(a), vmovn_s16(b)));
    }
}

/* Weights: d = amax/127, id = 1/d, roundf (ties away: vrndaq). */
static void q8_0_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t b = 0; b < n / MF_QK8_0; b++, p += MF_Q8_0_BYTES) {
        float32x4_t v[8];
        float d = amax32(src + b * MF_QK8_0, v) / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        mf_wr16(p, mf_f32_to_f16(d));
        int32x4_t q[8];
        for (int k = 0; k < 8; k++) q[k] = q8_clamp4(vrndaq_f32(vmulq_n_f32(v[k], id)));
        store_q8x32((int8_t *)(p + 2), q);
    }
}

/* Activations: id = 127/amax, ties to even (vrndnq). */
static void q8_0_act_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t b = 0; b < n / MF_QK8_0; b++, p += MF_Q8_0_BYTES) {
        float32x4_t v[8];
        float amax = amax32(src + b * MF_QK8_0, v);
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        mf_wr16(p, mf_f32_to_f16(amax / 127.0f));
        int32x4_t q[8];
        for (int k = 0; k < 8; k++) q[k] = q8_clamp4(vrndnq_f32(vmulq_n_f32(v[k], id)));
        store_q8x32((int8_t *)(p + 2), q);
    }
}

/* ---- f32 and f16 dots: 16 lanes = r[0] (lanes 0..3) .. r[3] (12..15);
 * the reference's tree16 starts with l + l+8 ---- */

static inline float finish16(const float32x4_t r[4]) {
    return nf_tree8(vaddq_f32(r[0], r[2]), vaddq_f32(r[1], r[3]));
}

static void dot_f32(int64_t n, float *s, const void *x, const void *y) {
    const float *a = x, *b = y;
    float32x4_t r[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i += 16)
        for (int k = 0; k < 4; k++) r[k] = vfmaq_f32(r[k], vld1q_f32(a + i + 4 * k), vld1q_f32(b + i + 4 * k));
    float sum = finish16(r);
    for (int64_t i = n16; i < n; i++) sum = fmaf(a[i], b[i], sum);
    *s = sum;
}

static void dot4_f32(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    const float *b = y;
    const float *a[4];
    float32x4_t r[4][4];
    for (int w = 0; w < 4; w++) {
        a[w] = (const float *)((const uint8_t *)x + w * xs);
        for (int k = 0; k < 4; k++) r[w][k] = vdupq_n_f32(0.0f);
    }
    int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i += 16) {
        for (int k = 0; k < 4; k++) {
            float32x4_t bk = vld1q_f32(b + i + 4 * k);
            for (int w = 0; w < 4; w++) r[w][k] = vfmaq_f32(r[w][k], vld1q_f32(a[w] + i + 4 * k), bk);
        }
    }
    for (int w = 0; w < 4; w++) {
        float sum = finish16(r[w]);
        for (int64_t i = n16; i < n; i++) sum = fmaf(a[w][i], b[i], sum);
        s[w] = sum;
    }
}

static void dot_f16(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    float32x4_t r[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i += 16)
        for (int k = 0; k < 4; k++)
            r[k] = vfmaq_f32(r[k], nf_f16x4(a + 2 * i + 8 * k), nf_f16x4(b + 2 * i + 8 * k));
    float sum = finish16(r);
    for (int64_t i = n16; i < n; i++) sum = fmaf(nf_f16(a + 2 * i), nf_f16(b + 2 * i), sum);
    *s = sum;
}

static void dot4_f16(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    const uint8_t *b = y;
    const uint8_t *a[4];
    float32x4_t r[4][4];
    for (int w = 0; w < 4; w++) {
        a[w] = (const uint8_t *)x + w * xs;
        for (int k = 0; k < 4; k++) r[w][k] = vdupq_n_f32(0.0f);
    }
    int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i += 16) {
        for (int k = 0; k < 4; k++) {
            float32x4_t bk = nf_f16x4(b + 2 * i + 8 * k);
            for (int w = 0; w < 4; w++) r[w][k] = vfmaq_f32(r[w][k], nf_f16x4(a[w] + 2 * i + 8 * k), bk);
        }
    }
    for (int w = 0; w < 4; w++) {
        float sum = finish16(r[w]);
        for (int64_t i = n16; i < n; i++) sum = fmaf(nf_f16(a[w] + 2 * i), nf_f16(b + 2 * i), sum);
        s[w] = sum;
    }
}

/* The reference's order exactly: f32 products, each widened and added to
 * one double in element order (the products are vectorised, the sum not). */
static void dot_bf16(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    double sum = 0.0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t p = vmulq_f32(bf16x4(a + 2 * i), bf16x4(b + 2 * i));
        float64x2_t lo = vcvt_f64_f32(vget_low_f32(p)), hi = vcvt_high_f64_f32(p);
        sum += vgetq_lane_f64(lo, 0);
        sum += vgetq_lane_f64(lo, 1);
        sum += vgetq_lane_f64(hi, 0);
        sum += vgetq_lane_f64(hi, 1);
    }
    for (; i < n; i++) {
        float p = mf_bf16_to_f32(mf_rd16(a + 2 * i)) * mf_bf16_to_f32(mf_rd16(b + 2 * i));
        sum += (double)p;
    }
    *s = (float)sum;
}

/* ---- q8_0 dot: lane l += fmaf(d_x*d_y, exact sum of products 4l..4l+3) ---- */

static inline void q8_block(const uint8_t *a, int8x16_t y0, int8x16_t y1, float d,
                            float32x4_t *lo, float32x4_t *hi) {
    int32x4_t z = vdupq_n_s32(0);
    int32x4_t il = nf_dot16(z, vld1q_s8((const int8_t *)(a + 2)), y0);
    int32x4_t ih = nf_dot16(z, vld1q_s8((const int8_t *)(a + 18)), y1);
    float32x4_t vd = vdupq_n_f32(d);
    *lo = vfmaq_f32(*lo, vd, vcvtq_f32_s32(il));
    *hi = vfmaq_f32(*hi, vd, vcvtq_f32_s32(ih));
}

static void dot_q8_0(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    float32x4_t lo = vdupq_n_f32(0.0f), hi = lo;
    for (int64_t i = 0; i < n / MF_QK8_0; i++, a += MF_Q8_0_BYTES, b += MF_Q8_0_BYTES) {
        int8x16_t y0 = vld1q_s8((const int8_t *)(b + 2)), y1 = vld1q_s8((const int8_t *)(b + 18));
        q8_block(a, y0, y1, nf_f16(a) * nf_f16(b), &lo, &hi);
    }
    *s = nf_tree8(lo, hi);
}

static void dot4_q8_0(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    const uint8_t *b = y, *a = x;
    float32x4_t lo[4], hi[4];
    for (int w = 0; w < 4; w++) lo[w] = hi[w] = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n / MF_QK8_0; i++, b += MF_Q8_0_BYTES) {
        int8x16_t y0 = vld1q_s8((const int8_t *)(b + 2)), y1 = vld1q_s8((const int8_t *)(b + 18));
        float dy = nf_f16(b);
        for (int w = 0; w < 4; w++) {
            const uint8_t *aw = a + w * xs + i * MF_Q8_0_BYTES;
            q8_block(aw, y0, y1, nf_f16(aw) * dy, &lo[w], &hi[w]);
        }
    }
    for (int w = 0; w < 4; w++) s[w] = nf_tree8(lo[w], hi[w]);
}

void mf_neon_install(mf_type_traits table[MF_TYPE_COUNT]) {
    mf_neon_install_q32(table);
    mf_neon_install_k(table);
    mf_neon_install_k2(table);
    table[MF_TYPE_F32].vec_dot = dot_f32;
    table[MF_TYPE_F32].vec_dot4 = dot4_f32;
    table[MF_TYPE_F16].to_float = f16_to_float;
    table[MF_TYPE_F16].from_float = f16_from_float;
    table[MF_TYPE_F16].vec_dot = dot_f16;
    table[MF_TYPE_F16].vec_dot4 = dot4_f16;
    table[MF_TYPE_BF16].to_float = bf16_to_float;
    table[MF_TYPE_BF16].from_float = bf16_from_float;
    table[MF_TYPE_BF16].vec_dot = dot_bf16;
    table[MF_TYPE_Q8_0].from_float = q8_0_from_float;
    table[MF_TYPE_Q8_0].act_from_float = q8_0_act_from_float;
    table[MF_TYPE_Q8_0].vec_dot = dot_q8_0;
    table[MF_TYPE_Q8_0].vec_dot4 = dot4_q8_0;
}

#endif
