/* kernels_k2_neon.c — NEON (aarch64) dot products of q2_K, q3_K and iq4_xs
 * weights with q8_K activations.
 *
 * Compiled to nothing except on aarch64; installed by mf_neon_install. Each
 * kernel forms the same exact integer sums as its scalar reference in
 * kernels_k2_ref.c and then performs the same float operations in the same
 * order, so the results are bit-identical: q3_K and iq4_xs 8 lanes (two
 * float32x4_t, lane l = chunk bytes 4l..4l+3 over the eight chunks of 32)
 * with one FMA per super-block and the reference's tree; q2_K two scalar
 * chains fed once per half super-block. Levels are built as int8 (q3_K's
 * -4..3, iq4_xs's -127..113, q2_K's 0..3) and multiplied signed, which is
 * exact for any int8 activation. */
#include "tensor/kernels_neon.h"

#if defined(__aarch64__) && defined(__ARM_NEON)

#include <math.h>

#define QK_K 256
#define Q2K_BYTES 84
#define Q3K_BYTES 110
#define IQ4XS_BYTES 136

/* Bits 2p..2p+1 of every byte. */
NF_INLINE uint8x16_t crumb(uint8x16_t v, int p) {
    return vandq_u8(vshlq_u8(v, vdupq_n_s8((int8_t)(-2 * p))), vdupq_n_u8(3));
}

/* ---- q3_K ---- */

/* The 16 six-bit scales, minus 32 (as the reference's q3_scales). */
static inline void q3_scales(const uint8_t s[12], int32_t out[16]) {
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? (s[j] & 0xf) : (s[j - 8] >> 4);
        int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        out[j] = (lo | (hi << 4)) - 32;
    }
}

/* Chunk c = 4h + p: 2-bit part from bits 2p of qs[32h..], third bit from
 * bit c of hmask; level = (low | third << 2) - 4. */
NF_INLINE int8x16_t q3_levels(uint8x16_t qs, uint8x16_t hm, int p, int c) {
    uint8x16_t hb = vandq_u8(vshlq_u8(hm, vdupq_n_s8((int8_t)-c)), vdupq_n_u8(1));
    return vsubq_s8(nf_s8(vorrq_u8(crumb(qs, p), vshlq_n_u8(hb, 2))), vdupq_n_s8(4));
}

static void dot_q3_k(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    float32x4_t lo = vdupq_n_f32(0.0f), hi = lo;
    for (int64_t i = 0; i < n / QK_K; i++, a += Q3K_BYTES, b += MF_Q8_K_BYTES) {
        const int8_t *q8 = (const int8_t *)(b + 4);
        int32_t sc[16];
        q3_scales(a + 96, sc);
        uint8x16_t hm0 = vld1q_u8(a), hm1 = vld1q_u8(a + 16);
        int32x4_t ilo = vdupq_n_s32(0), ihi = ilo;
        for (int h = 0; h < 2; h++) {
            uint8x16_t q0 = vld1q_u8(a + 32 + 32 * h), q1 = vld1q_u8(a + 48 + 32 * h);
            for (int p = 0; p < 4; p++) {
                int c = 4 * h + p;
                nf_chunk_lanes(q3_levels(q0, hm0, p, c), q3_levels(q1, hm1, p, c), q8 + 32 * c,
                               sc[2 * c], sc[2 * c + 1], &ilo, &ihi);
            }
        }
        nf_lanes_fma(nf_q8k_d(b) * nf_f16(a + 108), ilo, ihi, &lo, &hi);
    }
    *s = nf_tree8(lo, hi);
}

/* ---- iq4_xs ---- */

static void dot_iq4_xs(int64_t n, float *s, const void *x, const void *y) {
    static const int8_t lev[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};
    const int8x16_t t = vld1q_s8(lev);
    const uint8_t *a = x, *b = y;
    float32x4_t lo = vdupq_n_f32(0.0f), hi = lo;
    for (int64_t i = 0; i < n / QK_K; i++, a += IQ4XS_BYTES, b += MF_Q8_K_BYTES) {
        const int8_t *q8 = (const int8_t *)(b + 4);
        uint32_t sh = mf_rd16(a + 2);
        int32x4_t ilo = vdupq_n_s32(0), ihi = ilo;
        for (int ib = 0; ib < 8; ib++) {
            int32_t sc = (((a[4 + ib / 2] >> (4 * (ib % 2))) & 0xf) | (((sh >> (2 * ib)) & 3) << 4)) - 32;
            uint8x16_t q = vld1q_u8(a + 8 + 16 * ib);
            int8x16_t w0 = vqtbl1q_s8(t, vandq_u8(q, vdupq_n_u8(0x0f))), w1 = vqtbl1q_s8(t, vshrq_n_u8(q, 4));
            nf_chunk_lanes(w0, w1, q8 + 32 * ib, sc, sc, &ilo, &ihi);
        }
        nf_lanes_fma(nf_f16(a) * nf_q8k_d(b), ilo, ihi, &lo, &hi);
    }
    *s = nf_tree8(lo, hi);
}

/* ---- q2_K: per half, acc += I_h * (d*dy), macc += M_h * (dmin*dy) ---- */

/* I_h: exact sum of (scale & 15) * q * q8 over half h of the super-block. */
NF_INLINE int32_t q2k_half(const uint8_t *a, const int8_t *q8, int h) {
    uint8x16_t q0 = vld1q_u8(a + 16 + 32 * h), q1 = vld1q_u8(a + 32 + 32 * h);
    int32x4_t lo = vdupq_n_s32(0), hi = lo;
    for (int p = 0; p < 4; p++) {
        int c = 4 * h + p;
        nf_chunk_lanes(nf_s8(crumb(q0, p)), nf_s8(crumb(q1, p)), q8 + 32 * c, a[2 * c] & 0xf,
                       a[2 * c + 1] & 0xf, &lo, &hi);
    }
    return vaddvq_s32(vaddq_s32(lo, hi));
}

static void dot_q2_k(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    float acc = 0.0f, macc = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++, a += Q2K_BYTES, b += MF_Q8_K_BYTES) {
        float dy = nf_q8k_d(b), dd = nf_f16(a + 80) * dy, dm = nf_f16(a + 82) * dy;
        for (int h = 0; h < 2; h++) {
            int32_t isum = q2k_half(a, (const int8_t *)(b + 4), h), msum = 0;
            for (int j = 8 * h; j < 8 * h + 8; j++) msum += (a[j] >> 4) * (int16_t)mf_rd16(b + 260 + 2 * j);
            acc = fmaf((float)isum, dd, acc);
            macc = fmaf((float)msum, dm, macc);
        }
    }
    *s = acc - macc;
}

void mf_neon_install_k2(mf_type_traits table[MF_TYPE_COUNT]) {
    table[MF_TYPE_Q2_K].vec_dot = dot_q2_k;
    table[MF_TYPE_Q3_K].vec_dot = dot_q3_k;
    table[MF_TYPE_IQ4_XS].vec_dot = dot_iq4_xs;
}

#endif
