/*
 * ops/cpu/accum_avx512.c — the AVX-512 (F/BW/VL/DQ) variant of the accum
 * family (lowvram/accum.h). Compiled with the AVX-512 flags only, and called
 * only after lv_cpu_isa_supported(LV_ISA_AVX512). Bit-exact with
 * accum_ref.c: vfmadd231ps is the contract's fmaf (one rounding), bf16 ->
 * f32 is a 16-bit shift and vcvtph2ps converts f16 exactly; the tail
 * (< 16 elements) runs the same instructions under a lane mask (masked loads
 * do not touch, or fault on, the lanes they leave out). Memory-bound: 64
 * elements per iteration, unaligned loads and stores.
 */
#include <immintrin.h>

#include "accum_internal.h"

#define LV_INLINE static inline __attribute__((always_inline))

LV_INLINE __m512 load16(const void *g, lv_dtype dt, int64_t i) {
    if (dt == LV_F32) return _mm512_loadu_ps((const float *)g + i);
    const __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)g + i));
    if (dt == LV_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

LV_INLINE __m512 load16_mask(const void *g, lv_dtype dt, int64_t i, __mmask16 m) {
    if (dt == LV_F32) return _mm512_maskz_loadu_ps(m, (const float *)g + i);
    const __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)g + i);
    if (dt == LV_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

LV_INLINE void run(float *acc, const void *g, lv_dtype dt, float scale, int64_t n) {
    const __m512 s = _mm512_set1_ps(scale);
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 g0 = load16(g, dt, i), g1 = load16(g, dt, i + 16);
        __m512 g2 = load16(g, dt, i + 32), g3 = load16(g, dt, i + 48);
        _mm512_storeu_ps(acc + i, _mm512_fmadd_ps(s, g0, _mm512_loadu_ps(acc + i)));
        _mm512_storeu_ps(acc + i + 16, _mm512_fmadd_ps(s, g1, _mm512_loadu_ps(acc + i + 16)));
        _mm512_storeu_ps(acc + i + 32, _mm512_fmadd_ps(s, g2, _mm512_loadu_ps(acc + i + 32)));
        _mm512_storeu_ps(acc + i + 48, _mm512_fmadd_ps(s, g3, _mm512_loadu_ps(acc + i + 48)));
    }
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(acc + i, _mm512_fmadd_ps(s, load16(g, dt, i), _mm512_loadu_ps(acc + i)));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        const __m512 a = _mm512_maskz_loadu_ps(m, acc + i);
        _mm512_mask_storeu_ps(acc + i, m, _mm512_fmadd_ps(s, load16_mask(g, dt, i, m), a));
    }
}

lv_status lv_grad_accum_span_avx512(float *acc, const void *g, lv_dtype gdt, float scale,
                                    int64_t n) {
    if (!lv_cpu_isa_supported(LV_ISA_AVX512)) return LV_E_UNSUPPORTED;
    lv_status st = lv_check_accum_span(acc, g, gdt, n);
    if (st != LV_OK) return st;
    switch (gdt) {
    case LV_F32: run(acc, g, LV_F32, scale, n); break;
    case LV_BF16: run(acc, g, LV_BF16, scale, n); break;
    default: run(acc, g, LV_F16, scale, n); break;
    }
    return LV_OK;
}
