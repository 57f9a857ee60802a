/* kernels_q32_neon.c — NEON (aarch64) kernels of the 32-element block
 * formats q4_0, q4_1, q5_0, q5_1, iq4_nl and of the q8_1 activation quantizer.
 *
 * Compiled to nothing except on aarch64; installed by mf_neon_install. Every
 * kernel performs exactly the float operations of its scalar reference in
 * kernels_q32_ref.c, in the same order, so the two agree bit for bit: per
 * block either one FMA into each of 8 lanes (q5_0, q4_1, q5_1; two
 * float32x4_t), or one FMA of the whole block's exact integer sum into a
 * single chain (q4_0, iq4_nl). The four-row kernels keep each row's order;
 * for the chains, lane r of one vector FMA is row r's scalar FMA. Block
 * quants are unpacked to 32 int8 in element order (lo = elements 0..15,
 * hi = 16..31); unsigned levels (<= 31) are valid int8 too, so one exact
 * signed product sum serves every format. */
#include "tensor/kernels_neon.h"

#if defined(__aarch64__) && defined(__ARM_NEON)

#include <math.h>

#define QK 32
#define BLOCK_FN static inline __attribute__((always_inline))

typedef struct {
    int8x16_t lo, hi;
} q32;
typedef q32 (*load_fn)(const uint8_t *blk);

/* ---- unpacking a block's 32 quants, element order ---- */

BLOCK_FN q32 nibbles(const uint8_t *qs) {
    uint8x16_t v = vld1q_u8(qs);
    q32 q = {vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0f))), vreinterpretq_s8_u8(vshrq_n_u8(v, 4))};
    return q;
}

/* Byte j of lo (hi) is 0xff where bit j (16 + j) of the u32 at qh4 is set. */
BLOCK_FN void bits32(const uint8_t *qh4, uint8x16_t *lo, uint8x16_t *hi) {
    static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    uint32_t qh = mf_rd32(qh4);
    uint8x16_t m = vld1q_u8(bit);
    *lo = vtstq_u8(vcombine_u8(vdup_n_u8((uint8_t)qh), vdup_n_u8((uint8_t)(qh >> 8))), m);
    *hi = vtstq_u8(vcombine_u8(vdup_n_u8((uint8_t)(qh >> 16)), vdup_n_u8((uint8_t)(qh >> 24))), m);
}

BLOCK_FN q32 load_q4_0(const uint8_t *b) {
    q32 q = nibbles(b + 2);
    q.lo = vsubq_s8(q.lo, vdupq_n_s8(8));
    q.hi = vsubq_s8(q.hi, vdupq_n_s8(8));
    return q;
}

/* q - 16 is the nibble with 0xf0 or'ed in where the fifth bit is clear. */
BLOCK_FN q32 load_q5_0(const uint8_t *b) {
    q32 q = nibbles(b + 6);
    uint8x16_t hl, hh;
    bits32(b + 2, &hl, &hh);
    q.lo = vorrq_s8(q.lo, vreinterpretq_s8_u8(vbicq_u8(vdupq_n_u8(0xf0), hl)));
    q.hi = vorrq_s8(q.hi, vreinterpretq_s8_u8(vbicq_u8(vdupq_n_u8(0xf0), hh)));
    return q;
}

BLOCK_FN q32 load_iq4_nl(const uint8_t *b) {
    static const int8_t lev[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};
    int8x16_t t = vld1q_s8(lev);
    q32 q = nibbles(b + 2);
    q.lo = vqtbl1q_s8(t, vreinterpretq_u8_s8(q.lo));
    q.hi = vqtbl1q_s8(t, vreinterpretq_u8_s8(q.hi));
    return q;
}

BLOCK_FN q32 load_q4_1(const uint8_t *b) { return nibbles(b + 4); }

BLOCK_FN q32 load_q5_1(const uint8_t *b) {
    q32 q = nibbles(b + 8);
    uint8x16_t hl, hh;
    bits32(b + 4, &hl, &hh);
    q.lo = vorrq_s8(q.lo, vreinterpretq_s8_u8(vandq_u8(hl, vdupq_n_u8(0x10))));
    q.hi = vorrq_s8(q.hi, vreinterpretq_s8_u8(vandq_u8(hh, vdupq_n_u8(0x10))));
    return q;
}

/* Lanes 0..3 (*il) and 4..7 (*ih) of a block: exact sums of 4 products. */
BLOCK_FN void block_isums(q32 w, const uint8_t *yq, int32x4_t *il, int32x4_t *ih) {
    int32x4_t z = vdupq_n_s32(0);
    *il = nf_dot16(z, w.lo, vld1q_s8((const int8_t *)yq));
    *ih = nf_dot16(z, w.hi, vld1q_s8((const int8_t *)(yq + 16)));
}

/* ---- q8_1 activations: as mf_ref_q8_1_act_from_float ---- */

static void q8_1_act_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t b = 0; b < n / QK; b++, p += MF_Q8_1_BYTES) {
        const float *x = src + b * QK;
        float32x4_t v[8], m = vdupq_n_f32(0.0f);
        for (int k = 0; k < 8; k++) {
            v[k] = vld1q_f32(x + 4 * k);
            m = vmaxnmq_f32(m, vabsq_f32(v[k])); /* fmaxf: a NaN is ignored */
        }
        float amax = vmaxnmvq_f32(m), d = amax / 127.0f;
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int32x4_t q[8], sum = vdupq_n_s32(0);
        for (int k = 0; k < 8; k++) {
            float32x4_t r = vrndnq_f32(vmulq_n_f32(v[k], id));
            r = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(r), vceqq_f32(r, r)));
            q[k] = vcvtq_s32_f32(vminq_f32(vmaxq_f32(r, vdupq_n_f32(-127.0f)), vdupq_n_f32(127.0f)));
            sum = vaddq_s32(sum, q[k]);
        }
        mf_wr16(p, mf_f32_to_f16(d));
        mf_wr16(p + 2, mf_f32_to_f16(d * (float)vaddvq_s32(sum)));
        for (int k = 0; k < 2; k++) {
            int16x8_t lo = vcombine_s16(vmovn_s32(q[4 * k]), vmovn_s32(q[4 * k + 1]));
            int16x8_t hi = vcombine_s16(vmovn_s32(q[4 * k + 2]), vmovn_s32(q[4 * k + 3]));
            vst1q_s8((int8_t *)(p + 4 + 16 * k), vcombine_s8(vmovn_s16(lo), vmovn_s16(hi)));
        }
    }
}

/* ---- lane dots: q5_0 (x q8_0), q4_1 and q5_1 (x q8_1) ---- */

BLOCK_FN void lane_step(q32 w, const uint8_t *yq, float d, float32x4_t *lo, float32x4_t *hi) {
    int32x4_t il, ih;
    block_isums(w, yq, &il, &ih);
    *lo = vfmaq_f32(*lo, vdupq_n_f32(d), vcvtq_f32_s32(il));
    *hi = vfmaq_f32(*hi, vdupq_n_f32(d), vcvtq_f32_s32(ih));
}

BLOCK_FN float lanes_q8_0(int64_t n, const uint8_t *x, int xb, load_fn load, const uint8_t *y) {
    float32x4_t lo = vdupq_n_f32(0.0f), hi = lo;
    for (int64_t i = 0; i < n / QK; i++, x += xb, y += MF_Q8_0_BYTES)
        lane_step(load(x), y + 2, nf_f16(x) * nf_f16(y), &lo, &hi);
    return nf_tree8(lo, hi);
}

/* Lanes as above plus the scalar chain summs = fmaf(m, s, summs). */
BLOCK_FN float lanes_q8_1(int64_t n, const uint8_t *x, int xb, load_fn load, const uint8_t *y) {
    float32x4_t lo = vdupq_n_f32(0.0f), hi = lo;
    float summs = 0.0f;
    for (int64_t i = 0; i < n / QK; i++, x += xb, y += MF_Q8_1_BYTES) {
        summs = fmaf(nf_f16(x + 2), nf_f16(y + 2), summs);
        lane_step(load(x), y + 4, nf_f16(x) * nf_f16(y), &lo, &hi);
    }
    return nf_tree8(lo, hi) + summs;
}

/* Four rows share each activation block; yb and yq: q8_0 (34, 2) or q8_1
 * (36, 4); with_m adds q8_1's chain of m*s. */
BLOCK_FN void lanes4(int64_t n, float s[4], const uint8_t *x, uint64_t xs, int xb, load_fn load,
                     const uint8_t *y, int yb, int yq, int with_m) {
    float32x4_t lo[4], hi[4];
    float summs[4] = {0};
    for (int r = 0; r < 4; r++) lo[r] = hi[r] = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n / QK; i++, y += yb) {
        float dy = nf_f16(y), sy = with_m ? nf_f16(y + 2) : 0.0f;
        for (int r = 0; r < 4; r++) {
            const uint8_t *a = x + r * xs + i * xb;
            if (with_m) summs[r] = fmaf(nf_f16(a + 2), sy, summs[r]);
            lane_step(load(a), y + yq, nf_f16(a) * dy, &lo[r], &hi[r]);
        }
    }
    for (int r = 0; r < 4; r++) s[r] = with_m ? nf_tree8(lo[r], hi[r]) + summs[r] : nf_tree8(lo[r], hi[r]);
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
static void dot4_q5_0(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    lanes4(n, s, x, xs, MF_Q5_0_BYTES, load_q5_0, y, MF_Q8_0_BYTES, 2, 0);
}
static void dot4_q4_1(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    lanes4(n, s, x, xs, MF_Q4_1_BYTES, load_q4_1, y, MF_Q8_1_BYTES, 4, 1);
}
static void dot4_q5_1(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    lanes4(n, s, x, xs, MF_Q5_1_BYTES, load_q5_1, y, MF_Q8_1_BYTES, 4, 1);
}

/* ---- chain dots: q4_0 and iq4_nl (x q8_0): acc = fmaf(block sum, d, acc) ---- */

BLOCK_FN int32x4_t block_partial(const uint8_t *a, load_fn load, const uint8_t *y) {
    int32x4_t il, ih;
    block_isums(load(a), y + 2, &il, &ih);
    return vaddq_s32(il, ih);
}

BLOCK_FN float chain(int64_t n, const uint8_t *x, int xb, load_fn load, const uint8_t *y) {
    float acc = 0.0f;
    for (int64_t i = 0; i < n / QK; i++, x += xb, y += MF_Q8_0_BYTES) {
        float t = (float)vaddvq_s32(block_partial(x, load, y));
        acc = fmaf(t, nf_f16(x) * nf_f16(y), acc);
    }
    return acc;
}

/* Lane r of each vector FMA is row r's scalar FMA, in the same order. */
BLOCK_FN void chain4(int64_t n, float s[4], const uint8_t *x, uint64_t xs, int xb, load_fn load,
                     const uint8_t *y) {
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < n / QK; i++, y += MF_Q8_0_BYTES) {
        const uint8_t *a = x + i * xb;
        int32x4_t t = nf_totals4(block_partial(a, load, y), block_partial(a + xs, load, y),
                                 block_partial(a + 2 * xs, load, y), block_partial(a + 3 * xs, load, y));
        float dx[4] = {nf_f16(a), nf_f16(a + xs), nf_f16(a + 2 * xs), nf_f16(a + 3 * xs)};
        float32x4_t d = vmulq_n_f32(vld1q_f32(dx), nf_f16(y));
        acc = vfmaq_f32(acc, vcvtq_f32_s32(t), d);
    }
    vst1q_f32(s, acc);
}

static void dot_q4_0(int64_t n, float *s, const void *x, const void *y) {
    *s = chain(n, x, MF_Q4_0_BYTES, load_q4_0, y);
}
static void dot_iq4_nl(int64_t n, float *s, const void *x, const void *y) {
    *s = chain(n, x, MF_IQ4_NL_BYTES, load_iq4_nl, y);
}
static void dot4_q4_0(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    chain4(n, s, x, xs, MF_Q4_0_BYTES, load_q4_0, y);
}
static void dot4_iq4_nl(int64_t n, float s[4], const void *x, uint64_t xs, const void *y) {
    chain4(n, s, x, xs, MF_IQ4_NL_BYTES, load_iq4_nl, y);
}

void mf_neon_install_q32(mf_type_traits table[MF_TYPE_COUNT]) {
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

#endif
