/*
 * ops/cpu/qgemm.c — the dispatching entry points of the qgemm family: each
 * calls the variant lv_cpu_isa() chose (common.c). Variants compiled out of
 * a build return LV_E_UNSUPPORTED, and the choice never names one the CPU
 * lacks, so dispatch needs no further checks.
 */
#include "lowvram/qgemm.h"

lv_status lv_quantize_int8_rows(const void *x, lv_dtype xdt, int64_t ldx, int64_t K,
                                const float *act_scale, int64_t group_size, int64_t r0,
                                int64_t r1, void *q, int64_t ldq, float *scale,
                                int offset128) {
    switch (lv_cpu_isa()) {
    case LV_ISA_AVX512:
        return lv_quantize_int8_rows_avx512(x, xdt, ldx, K, act_scale, group_size, r0, r1, q,
                                            ldq, scale, offset128);
    case LV_ISA_AVX2:
        return lv_quantize_int8_rows_avx2(x, xdt, ldx, K, act_scale, group_size, r0, r1, q, ldq,
                                          scale, offset128);
    default:
        return lv_quantize_int8_rows_ref(x, xdt, ldx, K, act_scale, group_size, r0, r1, q, ldq,
                                         scale, offset128);
    }
}

lv_status lv_qgemm_int8_rows(const uint8_t *xu, int64_t ldx, const float *xscale,
                             const int8_t *w, int64_t ldw, const float *wscale,
                             int64_t group_size, const float *bias, int64_t K, int64_t m0,
                             int64_t m1, int64_t n0, int64_t n1, void *y, lv_dtype ydt,
                             int64_t ldy) {
    switch (lv_cpu_isa()) {
    case LV_ISA_AVX512:
        return lv_qgemm_int8_rows_avx512(xu, ldx, xscale, w, ldw, wscale, group_size, bias, K,
                                         m0, m1, n0, n1, y, ydt, ldy);
    case LV_ISA_AVX2:
        return lv_qgemm_int8_rows_avx2(xu, ldx, xscale, w, ldw, wscale, group_size, bias, K, m0,
                                       m1, n0, n1, y, ydt, ldy);
    default:
        return lv_qgemm_int8_rows_ref(xu, ldx, xscale, w, ldw, wscale, group_size, bias, K, m0,
                                      m1, n0, n1, y, ydt, ldy);
    }
}

lv_status lv_qlinear_grad_input_rows(const void *gy, lv_dtype gdt, int64_t ldg,
                                     const int8_t *w, int64_t ldw, const float *wscale,
                                     int64_t group_size, const float *act_scale, int64_t N,
                                     int64_t K, int64_t m0, int64_t m1, int64_t k0,
                                     int64_t k1, void *gx, lv_dtype xdt, int64_t ldgx) {
    switch (lv_cpu_isa()) {
    case LV_ISA_AVX512:
        return lv_qlinear_grad_input_rows_avx512(gy, gdt, ldg, w, ldw, wscale, group_size,
                                                 act_scale, N, K, m0, m1, k0, k1, gx, xdt,
                                                 ldgx);
    case LV_ISA_AVX2:
        return lv_qlinear_grad_input_rows_avx2(gy, gdt, ldg, w, ldw, wscale, group_size,
                                               act_scale, N, K, m0, m1, k0, k1, gx, xdt, ldgx);
    default:
        return lv_qlinear_grad_input_rows_ref(gy, gdt, ldg, w, ldw, wscale, group_size,
                                              act_scale, N, K, m0, m1, k0, k1, gx, xdt, ldgx);
    }
}
