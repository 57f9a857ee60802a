/*
 * lowvram/convert.h — the scalar float conversions of common.h, shared by
 * the C reference and SIMD variants (ops/cpu), the CUDA kernels (ops/cuda,
 * where every function is also __device__) and the tests: one copy of the
 * rules, so every variant gives the same bits. Internal to lowvram. The rules are common.h's: bf16/f16 -> f32 exact; f32 -> bf16
 * and f32 -> f16 round to nearest even, every NaN -> the canonical quiet NaN
 * of the target (0x7fc0 / 0x7e00, positive: which NaN operand x86 propagates,
 * and so its sign, is up to the compiler's operand order), f16 with IEEE subnormals and overflow to
 * infinity. SIMD variants convert whole vectors with the same rules and are
 * tested against these.
 */
#ifndef LOWVRAM_CONVERT_H
#define LOWVRAM_CONVERT_H

#include <stdint.h>
#include <string.h>

#include "lowvram/common.h"

#ifdef __CUDACC__
#define LV_HOSTDEV __host__ __device__
#else
#define LV_HOSTDEV
#endif

LV_HOSTDEV static inline uint32_t lv_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

LV_HOSTDEV static inline float lv_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

LV_HOSTDEV static inline float lv_bf16_to_f32(uint16_t h) { return lv_bits_f32((uint32_t)h << 16); }

LV_HOSTDEV static inline uint16_t lv_f32_to_bf16(float f) {
    uint32_t u = lv_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0; /* NaN */
    /* round to nearest even on the 16 dropped bits; carries into the
     * exponent give the right result, including overflow to infinity */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

LV_HOSTDEV static inline float lv_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return lv_bits_f32(sign | 0x7f800000u | (man << 13)); /* inf/NaN */
    if (exp == 0) {
        if (man == 0) return lv_bits_f32(sign);
        /* subnormal: man * 2^-24, exact in float32 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return lv_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

LV_HOSTDEV static inline uint16_t lv_f32_to_f16(float f) {
    uint32_t u = lv_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return 0x7e00u; /* NaN, whatever its sign (which x86 leaves to codegen) */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {
        /* result is an f16 subnormal (or zero): value / 2^-24, rounded to
         * nearest even. The shift keeps the exact fraction in integers. */
        if (a < 0x33000000u) return sign; /* < 2^-25: rounds to 0 (ties too) */
        uint32_t e = a >> 23;                /* 102 .. 112 */
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e;           /* 14 .. 24 */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    /* normal: rebias exponent, round the 13 dropped bits to nearest even */
    uint32_t r = a - 0x38000000u; /* exponent 127 -> 15 */
    r += 0xfffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
}

/* Element i of a float row of dtype dt, as float32 (exact). */
LV_HOSTDEV static inline float lv_load_f32(const void *row, lv_dtype dt, int64_t i) {
    switch (dt) {
    case LV_BF16: return lv_bf16_to_f32(((const uint16_t *)row)[i]);
    case LV_F16: return lv_f16_to_f32(((const uint16_t *)row)[i]);
    default: return ((const float *)row)[i];
    }
}

/* Stores v into element i of a row of dtype dt (rounded to nearest even). */
LV_HOSTDEV static inline void lv_store_f32(void *row, lv_dtype dt, int64_t i, float v) {
    switch (dt) {
    case LV_BF16: ((uint16_t *)row)[i] = lv_f32_to_bf16(v); break;
    case LV_F16: ((uint16_t *)row)[i] = lv_f32_to_f16(v); break;
    default: ((float *)row)[i] = v; break;
    }
}

#endif /* LOWVRAM_CONVERT_H */
