/* kernels_quant_ref.c — dequantization of llama.cpp's other block formats
 * (q4_0, q4_1, q5_0, q5_1, q2_K..q6_K, iq4_nl, iq4_xs), so that files
 * quantized by llama.cpp can be read.
 *
 * Each function reproduces ggml's dequantize_row_* bit for bit (checked by
 * tests/unit/test_tensor.c against ../shared/quant): the float operations are
 * the same ones in the same order, e.g. (d * scale) * q - (dmin * m). Block
 * layouts are ggml-common.h's; the byte offsets used are written beside each
 * function. Quantizers and dot products for these types come later. */
#include "tensor/kernels.h"

#define QK_K 256

/* ---- 32-element blocks ---- */

/* q4_0 {f16 d; u8 qs[16]}: low nibbles are elements 0..15, high 16..31. */
void mf_ref_q4_0_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t b = 0; b < n / 32; b++, p += 18, dst += 32) {
        float d = mf_f16_to_f32(mf_rd16(p));
        for (int j = 0; j < 16; j++) {
            dst[j] = (float)((p[2 + j] & 0xf) - 8) * d;
            dst[j + 16] = (float)((p[2 + j] >> 4) - 8) * d;
        }
    }
}

/* q4_1 {f16 d; f16 m; u8 qs[16]}: x = q*d + m. */
void mf_ref_q4_1_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t b = 0; b < n / 32; b++, p += 20, dst += 32) {
        float d = mf_f16_to_f32(mf_rd16(p)), m = mf_f16_to_f32(mf_rd16(p + 2));
        for (int j = 0; j < 16; j++) {
            dst[j] = (float)(p[4 + j] & 0xf) * d + m;
            dst[j + 16] = (float)(p[4 + j] >> 4) * d + m;
        }
    }
}

/* Fifth bits: bit j of the little-endian u32 qh belongs to element j. */
static void q5_values(const uint8_t *qh4, const uint8_t *qs, int out[32]) {
    uint32_t qh = mf_rd32(qh4);
    for (int j = 0; j < 16; j++) {
        out[j] = (int)((qs[j] & 0xf) | (((qh >> j) & 1) << 4));
        out[j + 16] = (int)((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
    }
}

/* q5_0 {f16 d; u8 qh[4]; u8 qs[16]}: x = (q - 16) * d. */
void mf_ref_q5_0_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    int q[32];
    for (int64_t b = 0; b < n / 32; b++, p += 22, dst += 32) {
        float d = mf_f16_to_f32(mf_rd16(p));
        q5_values(p + 2, p + 6, q);
        for (int j = 0; j < 32; j++) dst[j] = (float)(q[j] - 16) * d;
    }
}

/* q5_1 {f16 d; f16 m; u8 qh[4]; u8 qs[16]}: x = q*d + m. */
void mf_ref_q5_1_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    int q[32];
    for (int64_t b = 0; b < n / 32; b++, p += 24, dst += 32) {
        float d = mf_f16_to_f32(mf_rd16(p)), m = mf_f16_to_f32(mf_rd16(p + 2));
        q5_values(p + 4, p + 8, q);
        for (int j = 0; j < 32; j++) dst[j] = (float)q[j] * d + m;
    }
}

/* The 16 non-uniform levels of iq4_nl / iq4_xs (ggml's kvalues_iq4nl). */
static const int8_t iq4_levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                      1,    13,   25,  38,  53,  69,  89,  113};

/* iq4_nl {f16 d; u8 qs[16]}: x = d * level[nibble]. */
void mf_ref_iq4_nl_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t b = 0; b < n / 32; b++, p += 18, dst += 32) {
        float d = mf_f16_to_f32(mf_rd16(p));
        for (int j = 0; j < 16; j++) {
            dst[j] = d * (float)iq4_levels[p[2 + j] & 0xf];
            dst[j + 16] = d * (float)iq4_levels[p[2 + j] >> 4];
        }
    }
}

/* ---- 256-element super-blocks ---- */

/* q2_K {u8 scales[16]; u8 qs[64]; f16 d; f16 dmin} (84 bytes). Each 16
 * values have a 4-bit scale (low nibble) and 4-bit min (high nibble);
 * 2-bit quants, four planes per 32 bytes of qs. */
void mf_ref_q2_k_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t b = 0; b < n / QK_K; b++, p += 84) {
        float d = mf_f16_to_f32(mf_rd16(p + 80)), dmin = mf_f16_to_f32(mf_rd16(p + 82));
        const uint8_t *sc = p, *q = p + 16;
        int is = 0;
        for (int half = 0; half < 2; half++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int k = 0; k < 2; k++, is++) {
                    float dl = d * (float)(sc[is] & 0xf), ml = dmin * (float)(sc[is] >> 4);
                    for (int l = 0; l < 16; l++)
                        *dst++ = dl * (float)((q[16 * k + l] >> shift) & 3) - ml;
                }
            }
        }
    }
}

/* q3_K's 16 six-bit scales: low nibbles in bytes 0..7, high 2 bits in 8..11. */
static void q3_k_scales(const uint8_t s[12], int out[16]) {
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? (s[j] & 0xf) : (s[j - 8] >> 4);
        int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        out[j] = (lo | (hi << 4)) - 32;
    }
}

/* q3_K {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d} (110 bytes): 2 low
 * bits in qs, the third in hmask (clear means subtract 4). */
void mf_ref_q3_k_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    int sc[16];
    for (int64_t b = 0; b < n / QK_K; b++, p += 110) {
        float d = mf_f16_to_f32(mf_rd16(p + 108));
        const uint8_t *hm = p, *q = p + 32;
        q3_k_scales(p + 96, sc);
        int is = 0;
        uint8_t m = 1;
        for (int half = 0; half < 2; half++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, m = (uint8_t)(m << 1)) {
                for (int k = 0; k < 2; k++, is++) {
                    float dl = d * (float)sc[is];
                    for (int l = 0; l < 16; l++) {
                        int v = ((q[16 * k + l] >> shift) & 3) - ((hm[16 * k + l] & m) ? 0 : 4);
                        *dst++ = dl * (float)v;
                    }
                }
            }
        }
    }
}

/* q4_K / q5_K pack eight 6-bit (scale, min) pairs in 12 bytes. */
static void k4_scale_min(int j, const uint8_t *s, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* q4_K {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]} (144 bytes); q5_K adds
 * u8 qh[32] before qs (176 bytes). qh == NULL reads q4_K. */
static void k45_block(const uint8_t *p, const uint8_t *qh, const uint8_t *q, float *dst) {
    float d = mf_f16_to_f32(mf_rd16(p)), dmin = mf_f16_to_f32(mf_rd16(p + 2));
    const uint8_t *s = p + 4;
    for (int g = 0, is = 0; g < 4; g++, is += 2, q += 32) {
        int sc1, m1, sc2, m2;
        k4_scale_min(is, s, &sc1, &m1);
        k4_scale_min(is + 1, s, &sc2, &m2);
        float d1 = d * (float)sc1, dm1 = dmin * (float)m1;
        float d2 = d * (float)sc2, dm2 = dmin * (float)m2;
        uint8_t u1 = (uint8_t)(1u << (2 * g)), u2 = (uint8_t)(2u << (2 * g));
        for (int l = 0; l < 32; l++) {
            int h = qh && (qh[l] & u1) ? 16 : 0;
            *dst++ = d1 * (float)((q[l] & 0xf) + h) - dm1;
        }
        for (int l = 0; l < 32; l++) {
            int h = qh && (qh[l] & u2) ? 16 : 0;
            *dst++ = d2 * (float)((q[l] >> 4) + h) - dm2;
        }
    }
}

void mf_ref_q4_k_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t b = 0; b < n / QK_K; b++, p += 144, dst += QK_K) k45_block(p, NULL, p + 16, dst);
}

void mf_ref_q5_k_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t b = 0; b < n / QK_K; b++, p += 176, dst += QK_K) k45_block(p, p + 16, p + 48, dst);
}

/* q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d} (210 bytes): 4 low
 * bits in ql, 2 high in qh, value - 32, one int8 scale per 16 values. */
void mf_ref_q6_k_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t b = 0; b < n / QK_K; b++, p += 210) {
        float d = mf_f16_to_f32(mf_rd16(p + 208));
        const uint8_t *ql = p, *qh = p + 128;
        const int8_t *sc = (const int8_t *)(p + 192);
        for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, dst += 128) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                dst[l] = d * (float)sc[is] * (float)q1;
                dst[l + 32] = d * (float)sc[is + 2] * (float)q2;
                dst[l + 64] = d * (float)sc[is + 4] * (float)q3;
                dst[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

/* iq4_xs {f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]} (136 bytes):
 * eight 6-bit scales (value - 32) for 32 values each. */
void mf_ref_iq4_xs_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t b = 0; b < n / QK_K; b++, p += 136) {
        float d = mf_f16_to_f32(mf_rd16(p));
        uint16_t sh = mf_rd16(p + 2);
        const uint8_t *sl = p + 4, *qs = p + 8;
        for (int ib = 0; ib < 8; ib++, qs += 16, dst += 32) {
            int ls = ((sl[ib / 2] >> (4 * (ib % 2))) & 0xf) | (((sh >> (2 * ib)) & 3) << 4);
            float dl = d * (float)(ls - 32);
            for (int j = 0; j < 16; j++) {
                dst[j] = dl * (float)iq4_levels[qs[j] & 0xf];
                dst[j + 16] = dl * (float)iq4_levels[qs[j] >> 4];
            }
        }
    }
}
