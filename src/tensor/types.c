/* types.c — the traits tables and the scalar f16/bf16 conversions.
 *
 * The reference table below is the one place that says what memfit can do
 * with each type: a row per type (to_float, from_float, vec_dot and the type
 * activations are converted to). Adding a format is adding a row here and
 * its kernels elsewhere. The table in use starts as a copy of the reference
 * one and, when the CPU has AVX2+FMA+F16C and MF_FORCE_REF is not set, gets
 * the SIMD entries laid over it (then the AVX-512 VNNI ones, where present;
 * on aarch64 the NEON ones, always); both are built once, under pthread_once, and
 * never change afterwards, so kernels never consult flags or globals. */
#include "tensor/kernels.h"

#include <pthread.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <stdlib.h>
#include <string.h>

/* ---- IEEE half and bfloat16 ------------------------------------------------ */

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}
static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float mf_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24 is exact in f32 */
        float v = (float)man * 0x1p-24f;
        return bits_f32(f32_bits(v) | sign);
    }
    /* a NaN comes out quiet (as F16C's widening does), payload kept */
    if (exp == 31) return bits_f32(sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0));
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

/* Round-to-nearest-even of the magnitude bits a (f32, finite, below 2^-14)
 * to a half subnormal: the value is m * 2^(e-150), in half ulps m*2^(e-126). */
static uint16_t f16_subnormal(uint32_t a) {
    uint32_t e = a >> 23;
    if (e < 102) return 0; /* below 2^-25: rounds to zero, never to the tie */
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e; /* 14 ..= 24 */
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return (uint16_t)q; /* q == 0x400 is the smallest normal, encoded alike */
}

uint16_t mf_f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    /* NaN stays NaN, quiet, keeping the top payload bits (as F16C does). */
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff));
    /* 65520 is halfway between 65504 (odd mantissa) and 2^16: ties go up to inf. */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);
    if (a < 0x38800000u) return (uint16_t)(sign | f16_subnormal(a));
    uint32_t h = (a >> 13) - (112u << 10), rem = a & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; /* carry may bump the exponent */
    return (uint16_t)(sign | h);
}

float mf_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t mf_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    /* bf16 shares f32's exponent, so subnormals and overflow need nothing
     * special: adding 0x7fff plus the kept lsb rounds to nearest even. */
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

/* ---- the tables -------------------------------------------------------------- */

static const mf_type_traits ref_table[MF_TYPE_COUNT] = {
    [MF_TYPE_F32] = {.to_float = mf_ref_f32_to_float, .from_float = mf_ref_f32_from_float,
                     .vec_dot = mf_ref_dot_f32, .vec_dot_type = MF_TYPE_F32},
    [MF_TYPE_F16] = {.to_float = mf_ref_f16_to_float, .from_float = mf_ref_f16_from_float,
                     .vec_dot = mf_ref_dot_f16, .vec_dot_type = MF_TYPE_F16},
    [MF_TYPE_BF16] = {.to_float = mf_ref_bf16_to_float, .from_float = mf_ref_bf16_from_float,
                     .vec_dot = mf_ref_dot_bf16, .vec_dot_type = MF_TYPE_BF16},
    [MF_TYPE_Q8_0] = {.to_float = mf_ref_q8_0_to_float, .from_float = mf_ref_q8_0_from_float,
                     .act_from_float = mf_ref_q8_0_act_from_float,
                     .vec_dot = mf_ref_dot_q8_0, .vec_dot_type = MF_TYPE_Q8_0},
    /* 32-blocks (kernels_q32_ref.c): llama.cpp pairs q4_1/q5_1 with q8_1,
     * whose s = d*sum(qs) carries the min's share of the dot */
    [MF_TYPE_Q4_0] = {.to_float = mf_ref_q4_0_to_float, .from_float = mf_ref_q4_0_from_float,
                      .quantize = mf_ref_quantize_q4_0, .vec_dot = mf_ref_dot_q4_0,
                      .vec_dot_type = MF_TYPE_Q8_0},
    [MF_TYPE_Q4_1] = {.to_float = mf_ref_q4_1_to_float, .from_float = mf_ref_q4_1_from_float,
                      .quantize = mf_ref_quantize_q4_1, .vec_dot = mf_ref_dot_q4_1,
                      .vec_dot_type = MF_TYPE_Q8_1},
    [MF_TYPE_Q5_0] = {.to_float = mf_ref_q5_0_to_float, .from_float = mf_ref_q5_0_from_float,
                      .quantize = mf_ref_quantize_q5_0, .vec_dot = mf_ref_dot_q5_0,
                      .vec_dot_type = MF_TYPE_Q8_0},
    [MF_TYPE_Q5_1] = {.to_float = mf_ref_q5_1_to_float, .from_float = mf_ref_q5_1_from_float,
                      .quantize = mf_ref_quantize_q5_1, .vec_dot = mf_ref_dot_q5_1,
                      .vec_dot_type = MF_TYPE_Q8_1},
    [MF_TYPE_Q8_1] = {.to_float = mf_ref_q8_1_to_float, .from_float = mf_ref_q8_1_from_float,
                      .act_from_float = mf_ref_q8_1_act_from_float,
                      .vec_dot_type = MF_TYPE_Q8_1},
    [MF_TYPE_Q2_K] = {.to_float = mf_ref_q2_k_to_float, .from_float = mf_ref_q2_k_from_float,
                      .quantize = mf_ref_quantize_q2_k, .vec_dot = mf_ref_dot_q2_k,
                      .vec_dot_type = MF_TYPE_Q8_K},
    [MF_TYPE_Q3_K] = {.to_float = mf_ref_q3_k_to_float, .from_float = mf_ref_q3_k_from_float,
                      .quantize = mf_ref_quantize_q3_k, .vec_dot = mf_ref_dot_q3_k,
                      .vec_dot_type = MF_TYPE_Q8_K},
    [MF_TYPE_Q4_K] = {.to_float = mf_ref_q4_k_to_float, .from_float = mf_ref_q4_k_from_float,
                      .quantize = mf_ref_quantize_q4_k, .vec_dot = mf_ref_dot_q4_k,
                      .vec_dot_type = MF_TYPE_Q8_K},
    [MF_TYPE_Q5_K] = {.to_float = mf_ref_q5_k_to_float, .from_float = mf_ref_q5_k_from_float,
                      .quantize = mf_ref_quantize_q5_k, .vec_dot = mf_ref_dot_q5_k,
                      .vec_dot_type = MF_TYPE_Q8_K},
    [MF_TYPE_Q6_K] = {.to_float = mf_ref_q6_k_to_float, .from_float = mf_ref_q6_k_from_float,
                      .quantize = mf_ref_quantize_q6_k, .vec_dot = mf_ref_dot_q6_k,
                      .vec_dot_type = MF_TYPE_Q8_K},
    /* activations of the 256-blocks; llama.cpp's x86 backend quantizes them
     * with the reference rule, so from_float serves both uses */
    [MF_TYPE_Q8_K] = {.to_float = mf_ref_q8_k_to_float, .from_float = mf_ref_q8_k_from_float,
                      .vec_dot_type = MF_TYPE_Q8_K},
    [MF_TYPE_IQ4_NL] = {.to_float = mf_ref_iq4_nl_to_float,
                        .from_float = mf_ref_iq4_nl_from_float,
                        .quantize = mf_ref_quantize_iq4_nl, .vec_dot = mf_ref_dot_iq4_nl,
                        .vec_dot_type = MF_TYPE_Q8_0},
    [MF_TYPE_IQ4_XS] = {.to_float = mf_ref_iq4_xs_to_float, .from_float = mf_ref_iq4_xs_from_float,
                        .quantize = mf_ref_quantize_iq4_xs, .vec_dot = mf_ref_dot_iq4_xs,
                        .vec_dot_type = MF_TYPE_Q8_K},
};

static mf_type_traits active_table[MF_TYPE_COUNT];
static pthread_once_t active_once = PTHREAD_ONCE_INIT;

#if defined(__x86_64__) || defined(__i386__) /* the CPU checks matter on x86 only */
/* F16C is read from CPUID leaf 1 (ECX bit 29) because clang's
 * __builtin_cpu_supports does not know it; the builtin's avx2 check already
 * covers the OS saving the ymm registers. */
static bool cpu_has_avx2(void) {
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return false;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
#else
    return false;
#endif
}

/* The AVX-512 kernels need F (512-bit registers, masks), BW (byte and word
 * shuffles), VL (the same on 256/128 bits) and VNNI (vpdpbusd); the builtin
 * also checks that the OS saves the zmm state. */
static bool cpu_has_avx512(void) {
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#else
    return false;
#endif
}

#endif

static void init_active(void) {
    memcpy(active_table, ref_table, sizeof active_table);
    const char *force = getenv("MF_FORCE_REF");
    bool use_ref = force && force[0] && strcmp(force, "0") != 0;
    if (use_ref) return;
#if defined(__aarch64__) && defined(__ARM_NEON)
    mf_neon_install(active_table); /* NEON is baseline on aarch64 */
#elif defined(__x86_64__) || defined(__i386__)
    if (!cpu_has_avx2()) return;
    mf_avx2_install(active_table);
    if (cpu_has_avx512()) mf_avx512_install(active_table);
#endif
}

static bool known(int type) { return type >= 0 && type < MF_TYPE_COUNT; }

const mf_type_traits *mf_traits(int type) {
    if (!known(type)) return NULL;
    pthread_once(&active_once, init_active);
    return active_table[type].to_float ? &active_table[type] : NULL;
}

const mf_type_traits *mf_traits_ref(int type) {
    if (!known(type)) return NULL;
    return ref_table[type].to_float ? &ref_table[type] : NULL;
}

bool mf_type_can_matmul(int type) {
    const mf_type_traits *t = mf_traits(type);
    if (!t || !t->vec_dot) return false;
    const mf_type_traits *v = mf_traits(t->vec_dot_type);
    return v && v->from_float;
}

void mf_get_row(const void *w, int type, int64_t n_in, int64_t row, float *dst) {
    const mf_type_traits *t = mf_traits(type);
    uint64_t rb;
    if (!t || n_in < 0 || row < 0 || !mf_type_row_bytes(type, (uint64_t)n_in, &rb)) {
        /* a caller bug, not bad input: say so loudly in the numbers */
        for (int64_t i = 0; i < n_in; i++) dst[i] = bits_f32(0x7fc00000u);
        return;
    }
    t->to_float((const uint8_t *)w + (uint64_t)row * rb, dst, n_in);
}

uint64_t mf_quantize_rows(int type, const float *src, void *dst, int64_t nrows,
                          int64_t n_per_row, const float *imatrix) {
    const mf_type_traits *t = mf_traits(type);
    uint64_t row;
    if (!t || nrows < 0 || !mf_type_row_bytes(type, (uint64_t)n_per_row, &row)) return 0;
    if (t->quantize) return t->quantize(src, dst, nrows, n_per_row, imatrix);
    if (!t->from_float) return 0;
    for (int64_t r = 0; r < nrows; r++)
        t->from_float(src + r * n_per_row, (uint8_t *)dst + (uint64_t)r * row, n_per_row);
    return row * (uint64_t)nrows;
}
