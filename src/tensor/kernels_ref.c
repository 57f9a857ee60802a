/* kernels_ref.c — scalar reference kernels for the computable types: f32,
 * f16, bf16 and q8_0 (row conversions and dot products).
 *
 * These are the spec: the SIMD kernels are tested against them and they run
 * wherever AVX2 is missing or MF_FORCE_REF=1. Conversions follow ggml's
 * reference code (q8_0: d = amax/127 stored as f16, q = roundf(x/d)). The f32,
 * f16 and q8_0 dots sum in the order llama.cpp's x86 CPU backend does, which
 * made the references in ../shared/reference: f32/f16 in 16 fmaf lanes (lane
 * l takes terms l, l+16, ...; its tinyBLAS kernels on AVX-512), q8_0 in 8
 * lanes, each lane adding fmaf(d_x*d_y, exact sum of 4 int8 products) block
 * after block; lanes are then added as a tree (l + l+8, + l+4, + l+2, + l+1).
 * The AVX2 kernels do exactly these operations, so they agree bit for bit.
 * The bf16 dot accumulates in double (ggml's generic code). */
#include "tensor/kernels.h"

#include <math.h>

/* ---- f32 ---- */

void mf_ref_f32_to_float(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void mf_ref_f32_from_float(const float *src, void *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static float tree8(const float v[8]) {
    float s4[4];
    for (int l = 0; l < 4; l++) s4[l] = v[l] + v[l + 4];
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

static float tree16(const float v[16]) {
    float s8[8];
    for (int l = 0; l < 8; l++) s8[l] = v[l] + v[l + 8];
    return tree8(s8);
}

/* 16 lanes over the first n & ~15 terms, then the rest one by one. */
void mf_ref_dot_f32(int64_t n, float *s, const void *x, const void *y) {
    const float *a = x, *b = y;
    float lanes[16] = {0};
    int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i += 16)
        for (int l = 0; l < 16; l++) lanes[l] = fmaf(a[i + l], b[i + l], lanes[l]);
    float sum = tree16(lanes);
    for (int64_t i = n16; i < n; i++) sum = fmaf(a[i], b[i], sum);
    *s = sum;
}

/* ---- f16 ---- */

void mf_ref_f16_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) dst[i] = mf_f16_to_f32(mf_rd16(p + 2 * i));
}

void mf_ref_f16_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++) mf_wr16(p + 2 * i, mf_f32_to_f16(src[i]));
}

/* As the f32 dot, on the widened halves (widening is exact). */
void mf_ref_dot_f16(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    float lanes[16] = {0};
    int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i++)
        lanes[i % 16] = fmaf(mf_f16_to_f32(mf_rd16(a + 2 * i)), mf_f16_to_f32(mf_rd16(b + 2 * i)),
                             lanes[i % 16]);
    float sum = tree16(lanes);
    for (int64_t i = n16; i < n; i++)
        sum = fmaf(mf_f16_to_f32(mf_rd16(a + 2 * i)), mf_f16_to_f32(mf_rd16(b + 2 * i)), sum);
    *s = sum;
}

/* ---- bf16 ---- */

void mf_ref_bf16_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) dst[i] = mf_bf16_to_f32(mf_rd16(p + 2 * i));
}

void mf_ref_bf16_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++) mf_wr16(p + 2 * i, mf_f32_to_bf16(src[i]));
}

void mf_ref_dot_bf16(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)(mf_bf16_to_f32(mf_rd16(a + 2 * i)) * mf_bf16_to_f32(mf_rd16(b + 2 * i)));
    *s = (float)sum;
}

/* ---- q8_0: blocks of {f16 d; int8 qs[32]} ---- */

void mf_ref_q8_0_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t b = 0; b < n / MF_QK8_0; b++, p += MF_Q8_0_BYTES) {
        float d = mf_f16_to_f32(mf_rd16(p));
        const int8_t *qs = (const int8_t *)(p + 2);
        for (int j = 0; j < MF_QK8_0; j++) dst[b * MF_QK8_0 + j] = (float)qs[j] * d;
    }
}

/* roundf, clamped to the int8 range; NaN (from a non-finite input) gives 0
 * rather than undefined behaviour. The AVX2 quantizer makes the same choices
 * so both produce the same bytes. */
static int8_t q8_round(float v) {
    if (v != v) return 0;
    v = roundf(v);
    if (v > 127.0f) v = 127.0f;
    if (v < -127.0f) v = -127.0f;
    return (int8_t)v;
}

void mf_ref_q8_0_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t b = 0; b < n / MF_QK8_0; b++, p += MF_Q8_0_BYTES) {
        const float *x = src + b * MF_QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < MF_QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        mf_wr16(p, mf_f32_to_f16(d));
        int8_t *qs = (int8_t *)(p + 2);
        for (int j = 0; j < MF_QK8_0; j++) qs[j] = q8_round(x[j] * id);
    }
}

/* Activations: scale 127/amax and round ties to even, as llama.cpp's x86
 * quantize_row_q8_0 does (its references were made that way). NaN -> 0. */
void mf_ref_q8_0_act_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t b = 0; b < n / MF_QK8_0; b++, p += MF_Q8_0_BYTES) {
        const float *x = src + b * MF_QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < MF_QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        mf_wr16(p, mf_f32_to_f16(amax / 127.0f));
        int8_t *qs = (int8_t *)(p + 2);
        for (int j = 0; j < MF_QK8_0; j++) {
            float v = nearbyintf(x[j] * id);
            qs[j] = (int8_t)(v == v ? fminf(fmaxf(v, -127.0f), 127.0f) : 0.0f);
        }
    }
}

/* Lane l of a block is the exact sum of products 4l..4l+3 (what maddubs +
 * madd, or dpbusd, leave in an int32 lane). */
void mf_ref_dot_q8_0(int64_t n, float *s, const void *x, const void *y) {
    const uint8_t *a = x, *b = y;
    float lanes[8] = {0};
    for (int64_t i = 0; i < n / MF_QK8_0; i++, a += MF_Q8_0_BYTES, b += MF_Q8_0_BYTES) {
        const int8_t *qa = (const int8_t *)(a + 2), *qb = (const int8_t *)(b + 2);
        float d = mf_f16_to_f32(mf_rd16(a)) * mf_f16_to_f32(mf_rd16(b));
        for (int l = 0; l < 8; l++) {
            int32_t isum = 0;
            for (int j = 4 * l; j < 4 * l + 4; j++) isum += (int32_t)qa[j] * qb[j];
            lanes[l] = fmaf(d, (float)isum, lanes[l]);
        }
    }
    *s = tree8(lanes);
}
