/* kernels_neon.h — internal to src/tensor: the small NEON helpers that the
 * aarch64 kernel files (kernels_*_neon.c) share. Empty on other targets.
 *
 * The helpers keep the float lanes of the x86 kernels: eight lanes are two
 * float32x4_t (lo = lanes 0..3, hi = 4..7), reduced by the reference's tree
 * (l + l+4, then + l+2, then + l+1). Integer sums of int8 products are exact,
 * so they are formed with vdotq_s32 where the compiler targets the dot
 * product extension and with widening multiplies and pairwise adds
 * otherwise; both leave in int32 lane i the sum of products 4i..4i+3. */
#ifndef MF_TENSOR_KERNELS_NEON_H
#define MF_TENSOR_KERNELS_NEON_H

#if defined(__aarch64__) && defined(__ARM_NEON)
#include "tensor/kernels.h"

#include <arm_neon.h>

/* Exact widening of 4 or 8 little-endian halves (any byte alignment). */
static inline float32x4_t nf_f16x4(const uint8_t *p) {
    return vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(p)));
}
static inline float nf_f16(const uint8_t *p) {
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(mf_rd16(p)))), 0);
}

/* acc + (lane i: sum of a[j]*b[j] over j = 4i..4i+3), exact. */
static inline int32x4_t nf_dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, a, b);
#else
    int32x4_t lo = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    int32x4_t hi = vpaddlq_s16(vmull_high_s8(a, b));
    return vaddq_s32(acc, vpaddq_s32(lo, hi));
#endif
}

/* The reference's tree8 over lanes lo (0..3) and hi (4..7). */
static inline float nf_tree8(float32x4_t lo, float32x4_t hi) {
    float32x4_t s4 = vaddq_f32(lo, hi);
    float32x2_t s2 = vadd_f32(vget_low_f32(s4), vget_high_f32(s4));
    return vget_lane_f32(s2, 0) + vget_lane_f32(s2, 1);
}

/* Lane r = the total of v[r] (integer adds: exact in any order). */
static inline int32x4_t nf_totals4(int32x4_t v0, int32x4_t v1, int32x4_t v2, int32x4_t v3) {
    return vpaddq_s32(vpaddq_s32(v0, v1), vpaddq_s32(v2, v3));
}

/* Kernel-body helpers: always inlined, so their loops see constants. */
#define NF_INLINE static inline __attribute__((always_inline))

static inline int8x16_t nf_s8(uint8x16_t v) { return vreinterpretq_s8_u8(v); }

/* Exact sum of products over 32 elements (w0: 0..15, w1: 16..31). */
NF_INLINE int32_t nf_dot32(int8x16_t w0, int8x16_t w1, const int8_t *q8) {
    int32x4_t z = vdupq_n_s32(0);
    return vaddvq_s32(nf_dot16(nf_dot16(z, w0, vld1q_s8(q8)), w1, vld1q_s8(q8 + 16)));
}

/* Chunk of 32 into the 8 integer lanes: lanes 0..3 times s0, 4..7 times s1. */
NF_INLINE void nf_chunk_lanes(int8x16_t w0, int8x16_t w1, const int8_t *q8, int32_t s0, int32_t s1,
                          int32x4_t *lo, int32x4_t *hi) {
    int32x4_t z = vdupq_n_s32(0);
    *lo = vmlaq_n_s32(*lo, nf_dot16(z, w0, vld1q_s8(q8)), s0);
    *hi = vmlaq_n_s32(*hi, nf_dot16(z, w1, vld1q_s8(q8 + 16)), s1);
}

/* lane += fmaf(d, (float)integer lane), for lanes 0..3 and 4..7. */
NF_INLINE void nf_lanes_fma(float d, int32x4_t ilo, int32x4_t ihi, float32x4_t *lo, float32x4_t *hi) {
    *lo = vfmaq_f32(*lo, vdupq_n_f32(d), vcvtq_f32_s32(ilo));
    *hi = vfmaq_f32(*hi, vdupq_n_f32(d), vcvtq_f32_s32(ihi));
}

/* q8_K's f32 scale. */
static inline float nf_q8k_d(const uint8_t *y) {
    float d;
    memcpy(&d, y, sizeof d);
    return d;
}

#endif
#endif
