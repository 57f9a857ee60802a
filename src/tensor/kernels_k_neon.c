/* kernels_k_neon.c — NEON (aarch64) kernels of the k-quants that
 * kernels_k_ref.c specifies: the q8_K activation quantizer and the dots of
 * q4_K, q5_K and q6_K weights with q8_K activations.
 *
 * Compiled to nothing except on aarch64; installed by mf_neon_install. The
 * integer parts (levels times scales times q8) are exact in any order; the
 * float steps are the reference's, in its order: q4_K two scalar chains
 * (acc, accm) fed per pair of sub-blocks, q5_K and q6_K 8 lanes (two
 * float32x4_t) with one FMA per super-block, reduced by the reference's
 * tree. Lane l of a super-block is the sum over its eight 32-element chunks
 * of scale * (products 4l..4l+3 of the chunk), so a chunk's first 16 bytes
 * feed lanes 0..3 and the rest lanes 4..7. Levels are built as int8 (all
 * fit) and multiplied signed. */
#include "tensor/kernels_neon.h"

#if defined(__aarch64__) && defined(__ARM_NEON)

#include <math.h>

#define QK_K 256
#define Q4K_BYTES 144
#define Q5K_BYTES 176
#define Q6K_BYTES 210

/* ---- q8_K: as mf_ref_q8_k_from_float ---- */

/* The first value of largest magnitude, with its sign (NaN skipped); *amax
 * gets its magnitude. */
static float signed_max(const float *x, float *amax) {
    float32x4_t m = vdupq_n_f32(0.0f);
    for (int j = 0; j < QK_K; j += 4) m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(x + j)));
    *amax = vmaxnmvq_f32(m);
    for (int j = 0; j < QK_K; j++)
        if (fabsf(x[j]) == *amax) return x[j];
    return 0.0f;
}

static void q8_k_block(const float *x, uint8_t *p) {
    float amax, max = signed_max(x, &amax), d = 0.0f;
    int8_t *qs = (int8_t *)(p + 4);
    if (amax == 0.0f || isinf(amax)) {
        memset(qs, 0, QK_K);
    } else {
        float iscale = -127.0f / max;
        for (int j = 0; j < QK_K; j += 16) {
            int16x8_t h[2];
            for (int k = 0; k < 2; k++) {
                int32x4_t q[2];
                for (int e = 0; e < 2; e++) {
                    float32x4_t v = vmulq_n_f32(vld1q_f32(x + j + 8 * k + 4 * e), iscale);
                    v = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(v), vceqq_f32(v, v)));
                    v = vminq_f32(vmaxq_f32(v, vdupq_n_f32(-127.0f)), vdupq_n_f32(127.0f));
                    q[e] = vcvtnq_s32_f32(v); /* nearest, ties to even: nearest_int */
                }
                h[k] = vcombine_s16(vmovn_s32(q[0]), vmovn_s32(q[1]));
            }
            vst1q_s8(qs + j, vcombine_s8(vmovn_s16(h[0]), vmovn_s16(h[1])));
        }
        d = 1.0f / iscale;
    }
    memcpy(p, &d, sizeof d);
    for (int g = 0; g < QK_K / 16; g++) mf_wr16(p + 260 + 2 * g, (uint16_t)vaddlvq_s8(vld1q_s8(qs + 16 * g)));
}

static void q8_k_from_float(const float *src, void *dst, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++) q8_k_block(src + b * QK_K, (uint8_t *)dst + b * MF_Q8_K_BYTES);
}

/* q4_K/q5_K's 8 six-bit scales and mins (get_scale_min_k4), by 32-bit words. */
static inline void k4_scales(const uint8_t *s, uint8_t sc[8], uint8_t mn[8]) {
    uint32_t w0 = mf_rd32(s), w1 = mf_rd32(s + 4), w2 = mf_rd32(s + 8);
    uint32_t v[4] = {w0 & 0x3f3f3f3fu, (w2 & 0x0f0f0f0fu) | (((w0 >> 6) & 0x03030303u) << 4),
                     w1 & 0x3f3f3f3fu, ((w2 >> 4) & 0x0f0f0f0fu) | (((w1 >> 6) & 0x03030303u) << 4)};
    memcpy(sc, v, 8);
    memcpy(mn, v + 2, 8);
}

/* sum_j mn[j] * (bsums[2j] + bsums[2j+1]) over j in [j0, j0 + nj). */
static inline int32_t min_sum(const uint8_t *mn, const uint8_t *y, int j0, int nj) {
    int32_t s = 0;
    for (int j = j0; j < j0 + nj; j++)
        s += mn[j] * ((int16_t)mf_rd16(y + 260 + 4 * j) + (int16_t)mf_rd16(y + 262 + 4 * j));
    return s;
}

/* ---- q4_K: two chains, one FMA each per pair of sub-blocks ---- */

/* Lane p: sc[2p]*D[2p] + sc[2p+1]*D[2p+1] (D: exact sub-block dots), as float. */
NF_INLINE float32x4_t q4k_isums(const uint8_t *a, const int8_t *q8, const uint8_t sc[8]) {
    int32_t dsub[8];
    for (int g = 0; g < 4; g++) {
        uint8x16_t b0 = vld1q_u8(a + 16 + 32 * g), b1 = vld1q_u8(a + 32 + 32 * g);
        uint8x16_t m4 = vdupq_n_u8(0x0f);
        dsub[2 * g] = nf_dot32(nf_s8(vandq_u8(b0, m4)), nf_s8(vandq_u8(b1, m4)), q8 + 64 * g);
        dsub[2 * g + 1] = nf_dot32(nf_s8(vshrq_n_u8(b0, 4)), nf_s8(vshrq_n_u8(b1, 4)), q8 + 64 * g + 32);
    }
    int32_t is[4];
    for (int p = 0; p < 4; p++) is[p] = sc[2 * p] * dsub[2 * p] + sc[2 * p + 1] * dsub[2 * p + 1];
    return vcvtq_f32_s32(vld1q_s32(is));
}

NF_INLINE float32x4_t q4k_imins(const uint8_t *mn, const uint8_t *y) {
    int32_t im[4];
    for (int p = 0; p < 4; p++) im[p] = min_sum(mn, y, 2 * p, 2);
    return vcvtq_f32_s32(vld1q_s32(im));
}

static void dot_q4_k(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    float acc = 0, accm = 0;
    for (int64_t i = 0; i < n / QK_K; i++, a += Q4K_BYTES, b += MF_Q8_K_BYTES) {
        float dy = nf_q8k_d(b), dd = nf_f16(a) * dy, dm = nf_f16(a + 2) * dy, is[4], im[4];
        uint8_t sc[8], mn[8];
        k4_scales(a + 4, sc, mn);
        vst1q_f32(is, q4k_isums(a, (const int8_t *)(b + 4), sc));
        vst1q_f32(im, q4k_imins(mn, b));
        for (int p = 0; p < 4; p++) {
            acc = fmaf(is[p], dd, acc);
            accm = fmaf(im[p], dm, accm);
        }
    }
    *s = acc - accm;
}

/* Four rows: lane r of each vector FMA is row r's scalar FMA of dot_q4_k. */
static void dot4_q4_k(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    const uint8_t *b = y;
    float32x4_t acc = vdupq_n_f32(0.0f), accm = acc;
    for (int64_t i = 0; i < n / QK_K; i++, b += MF_Q8_K_BYTES) {
        float is[16], im[16], dx[4], mx[4], dy = nf_q8k_d(b);
        for (int r = 0; r < 4; r++) {
            const uint8_t *a = (const uint8_t *)x + r * xs + i * Q4K_BYTES;
            uint8_t sc[8], mn[8];
            k4_scales(a + 4, sc, mn);
            dx[r] = nf_f16(a);
            mx[r] = nf_f16(a + 2);
            vst1q_f32(is + 4 * r, q4k_isums(a, (const int8_t *)(b + 4), sc));
            vst1q_f32(im + 4 * r, q4k_imins(mn, b));
        }
        float32x4x4_t ti = vld4q_f32(is), tm = vld4q_f32(im); /* val[p], lane r */
        float32x4_t dd = vmulq_n_f32(vld1q_f32(dx), dy), dm = vmulq_n_f32(vld1q_f32(mx), dy);
        for (int p = 0; p < 4; p++) {
            acc = vfmaq_f32(acc, ti.val[p], dd);
            accm = vfmaq_f32(accm, tm.val[p], dm);
        }
    }
    vst1q_f32(s, vsubq_f32(acc, accm));
}

/* ---- q5_K: 8 lanes plus a scalar chain of the mins ---- */

NF_INLINE void q5k_lanes(const uint8_t *a, const int8_t *q8, const uint8_t sc[8], int32x4_t *lo,
                        int32x4_t *hi) {
    uint8x16_t qh0 = vld1q_u8(a + 16), qh1 = vld1q_u8(a + 32), m4 = vdupq_n_u8(0x0f), one = vdupq_n_u8(1);
    *lo = *hi = vdupq_n_s32(0);
    for (int g = 0; g < 4; g++) {
        uint8x16_t b0 = vld1q_u8(a + 48 + 32 * g), b1 = vld1q_u8(a + 64 + 32 * g);
        int8x16_t sh0 = vdupq_n_s8((int8_t)-(2 * g)), sh1 = vdupq_n_s8((int8_t)-(2 * g + 1));
        /* fifth bit of sub-block 2g (2g+1) is bit 2g (2g+1) of qh[l], moved to bit 4 */
        uint8x16_t e0 = vshlq_n_u8(vandq_u8(vshlq_u8(qh0, sh0), one), 4);
        uint8x16_t e1 = vshlq_n_u8(vandq_u8(vshlq_u8(qh1, sh0), one), 4);
        uint8x16_t o0 = vshlq_n_u8(vandq_u8(vshlq_u8(qh0, sh1), one), 4);
        uint8x16_t o1 = vshlq_n_u8(vandq_u8(vshlq_u8(qh1, sh1), one), 4);
        nf_chunk_lanes(nf_s8(vorrq_u8(vandq_u8(b0, m4), e0)), nf_s8(vorrq_u8(vandq_u8(b1, m4), e1)),
                    q8 + 64 * g, sc[2 * g], sc[2 * g], lo, hi);
        nf_chunk_lanes(nf_s8(vorrq_u8(vshrq_n_u8(b0, 4), o0)), nf_s8(vorrq_u8(vshrq_n_u8(b1, 4), o1)),
                    q8 + 64 * g + 32, sc[2 * g + 1], sc[2 * g + 1], lo, hi);
    }
}

/* One super-block of one row into its lanes and its min chain. */
NF_INLINE void q5k_step(const uint8_t *a, const uint8_t *b, float32x4_t *lo, float32x4_t *hi, float *summs) {
    float dy = nf_q8k_d(b);
    float d = dy * nf_f16(a), dmin = -dy * nf_f16(a + 2);
    uint8_t sc[8], mn[8];
    k4_scales(a + 4, sc, mn);
    *summs = fmaf(dmin, (float)min_sum(mn, b, 0, 8), *summs);
    int32x4_t ilo, ihi;
    q5k_lanes(a, (const int8_t *)(b + 4), sc, &ilo, &ihi);
    nf_lanes_fma(d, ilo, ihi, lo, hi);
}

static void dot_q5_k(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    float32x4_t lo = vdupq_n_f32(0.0f), hi = lo;
    float summs = 0;
    for (int64_t i = 0; i < n / QK_K; i++, a += Q5K_BYTES, b += MF_Q8_K_BYTES) q5k_step(a, b, &lo, &hi, &summs);
    *s = nf_tree8(lo, hi) + summs;
}

static void dot4_q5_k(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    float32x4_t lo[4], hi[4];
    float summs[4] = {0};
    for (int r = 0; r < 4; r++) lo[r] = hi[r] = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *b = (const uint8_t *)y + i * MF_Q8_K_BYTES;
        for (int r = 0; r < 4; r++)
            q5k_step((const uint8_t *)x + r * xs + i * Q5K_BYTES, b, &lo[r], &hi[r], &summs[r]);
    }
    for (int r = 0; r < 4; r++) s[r] = nf_tree8(lo[r], hi[r]) + summs[r];
}

/* ---- q6_K: 8 lanes; the -32 offset is taken back per lane from bsums ---- */

/* Chunk c's 32 unsigned 6-bit levels: nibbles n0/n1, bits 2k..2k+1 of qh. */
NF_INLINE int8x16_t q6_levels(uint8x16_t nib, uint8x16_t qh, int k) {
    uint8x16_t hb = vandq_u8(vshlq_u8(qh, vdupq_n_s8((int8_t)(-2 * k))), vdupq_n_u8(3));
    return nf_s8(vorrq_u8(nib, vshlq_n_u8(hb, 4)));
}

/* Lane l: sc * (levels . q8) over the chunks minus 32 * (sc[2l]*bsums[2l] +
 * sc[2l+1]*bsums[2l+1]), exact. */
NF_INLINE void q6k_lanes(const uint8_t *a, const uint8_t *b, int32x4_t *lo, int32x4_t *hi) {
    const int8_t *q8 = (const int8_t *)(b + 4), *sc = (const int8_t *)(a + 192);
    const uint8x16_t m4 = vdupq_n_u8(0x0f);
    *lo = *hi = vdupq_n_s32(0);
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = a + 64 * h, *qh = a + 128 + 32 * h;
        uint8x16_t l[4] = {vld1q_u8(ql), vld1q_u8(ql + 16), vld1q_u8(ql + 32), vld1q_u8(ql + 48)};
        uint8x16_t h0 = vld1q_u8(qh), h1 = vld1q_u8(qh + 16);
        for (int k = 0; k < 4; k++) {
            /* k = 0, 1: low nibbles of ql[0..31], ql[32..63]; k = 2, 3: high */
            uint8x16_t n0 = l[2 * (k & 1)], n1 = l[2 * (k & 1) + 1];
            n0 = k < 2 ? vandq_u8(n0, m4) : vshrq_n_u8(n0, 4);
            n1 = k < 2 ? vandq_u8(n1, m4) : vshrq_n_u8(n1, 4);
            int c = 4 * h + k;
            nf_chunk_lanes(q6_levels(n0, h0, k), q6_levels(n1, h1, k), q8 + 32 * c, sc[2 * c],
                           sc[2 * c + 1], lo, hi);
        }
    }
    int8x16_t s = vld1q_s8(sc);
    int16x8_t s0 = vmovl_s8(vget_low_s8(s)), s1 = vmovl_high_s8(s);
    int16x8_t b0 = vreinterpretq_s16_u8(vld1q_u8(b + 260)), b1 = vreinterpretq_s16_u8(vld1q_u8(b + 276));
    int32x4_t off_lo = vpaddq_s32(vmull_s16(vget_low_s16(s0), vget_low_s16(b0)), vmull_high_s16(s0, b0));
    int32x4_t off_hi = vpaddq_s32(vmull_s16(vget_low_s16(s1), vget_low_s16(b1)), vmull_high_s16(s1, b1));
    *lo = vsubq_s32(*lo, vshlq_n_s32(off_lo, 5));
    *hi = vsubq_s32(*hi, vshlq_n_s32(off_hi, 5));
}

NF_INLINE void q6k_step(const uint8_t *a, const uint8_t *b, float32x4_t *lo, float32x4_t *hi) {
    int32x4_t ilo, ihi;
    q6k_lanes(a, b, &ilo, &ihi);
    nf_lanes_fma(nf_q8k_d(b) * nf_f16(a + 208), ilo, ihi, lo, hi);
}

static void dot_q6_k(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    float32x4_t lo = vdupq_n_f32(0.0f), hi = lo;
    for (int64_t i = 0; i < n / QK_K; i++, a += Q6K_BYTES, b += MF_Q8_K_BYTES) q6k_step(a, b, &lo, &hi);
    *s = nf_tree8(lo, hi);
}

static void dot4_q6_k(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    float32x4_t lo[4], hi[4];
    for (int r = 0; r < 4; r++) lo[r] = hi[r] = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *b = (const uint8_t *)y + i * MF_Q8_K_BYTES;
        for (int r = 0; r < 4; r++) q6k_step((const uint8_t *)x + r * xs + i * Q6K_BYTES, b, &lo[r], &hi[r]);
    }
    for (int r = 0; r < 4; r++) s[r] = nf_tree8(lo[r], hi[r]);
}

void mf_neon_install_k(mf_type_traits table[MF_TYPE_COUNT]) {
    table[MF_TYPE_Q8_K].from_float = q8_k_from_float;
    table[MF_TYPE_Q4_K].vec_dot = dot_q4_k;
    table[MF_TYPE_Q4_K].vec_dot4 = dot4_q4_k;
    table[MF_TYPE_Q5_K].vec_dot = dot_q5_k;
    table[MF_TYPE_Q5_K].vec_dot4 = dot4_q5_k;
    table[MF_TYPE_Q6_K].vec_dot = dot_q6_k;
    table[MF_TYPE_Q6_K].vec_dot4 = dot4_q6_k;
}


#endif
