/*
 * ops/cpu/accum_avx2.c — the AVX2 (+ FMA, F16C) variant of the accum family
 * (lowvram/accum.h). Compiled with -mavx2 -mfma -mf16c only, and called only
 * after lv_cpu_isa_supported(LV_ISA_AVX2). Bit-exact with accum_ref.c:
 * vfmadd231ps is the contract's fmaf (one rounding), bf16 -> f32 is a 16-bit
 * shift and vcvtph2ps converts f16 exactly (subnormals included); the tail
 * (< 8 elements) is the scalar contract, where fmaf is one vfmadd231ss.
 * Memory-bound: 32 elements per iteration, unaligned loads and stores.
 */
#include <immintrin.h>
#include <math.h>

#include "accum_internal.h"
#include "lowvram/convert.h"

#define LV_INLINE static inline __attribute__((always_inline))

LV_INLINE __m256 load8(const void *g, lv_dtype dt, int64_t i) {
    if (dt == LV_F32) return _mm256_loadu_ps((const float *)g + i);
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)g + i));
    if (dt == LV_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

LV_INLINE void run(float *acc, const void *g, lv_dtype dt, float scale, int64_t n) {
    const __m256 s = _mm256_set1_ps(scale);
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 g0 = load8(g, dt, i), g1 = load8(g, dt, i + 8);
        __m256 g2 = load8(g, dt, i + 16), g3 = load8(g, dt, i + 24);
        _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(s, g0, _mm256_loadu_ps(acc + i)));
        _mm256_storeu_ps(acc + i + 8, _mm256_fmadd_ps(s, g1, _mm256_loadu_ps(acc + i + 8)));
        _mm256_storeu_ps(acc + i + 16, _mm256_fmadd_ps(s, g2, _mm256_loadu_ps(acc + i + 16)));
        _mm256_storeu_ps(acc + i + 24, _mm256_fmadd_ps(s, g3, _mm256_loadu_ps(acc + i + 24)));
    }
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(s, load8(g, dt, i), _mm256_loadu_ps(acc + i)));
    for (; i < n; i++) acc[i] = fmaf(scale, lv_load_f32(g, dt, i), acc[i]);
}

lv_status lv_grad_accum_span_avx2(float *acc, const void *g, lv_dtype gdt, float scale,
                                  int64_t n) {
    if (!lv_cpu_isa_supported(LV_ISA_AVX2)) return LV_E_UNSUPPORTED;
    lv_status st = lv_check_accum_span(acc, g, gdt, n);
    if (st != LV_OK) return st;
    /* one instantiation per dtype, so that the loop carries no dtype branch */
    switch (gdt) {
    case LV_F32: run(acc, g, LV_F32, scale, n); break;
    case LV_BF16: run(acc, g, LV_BF16, scale, n); break;
    default: run(acc, g, LV_F16, scale, n); break;
    }
    return LV_OK;
}
