/*
 * ops/cpu/qgemm_internal.h — argument checks shared by every CPU variant of
 * the qgemm family (internal), so that each variant refuses exactly what the
 * reference refuses. The shim (bindings/) checks tensors first and names the
 * op and argument; these checks keep a direct C caller from running off the
 * end of a buffer.
 */
#ifndef LOWVRAM_CPU_QGEMM_INTERNAL_H
#define LOWVRAM_CPU_QGEMM_INTERNAL_H

#include "lowvram/qgemm.h"

/* Groups per row: 1 for group_size <= 0, else K / group_size; 0 when
 * group_size does not divide K. */
static inline int64_t lv_qgemm_groups(int64_t K, int64_t group_size) {
    if (group_size <= 0) return 1;
    if (K % group_size) return 0;
    return K / group_size;
}

static inline lv_status lv_check_quantize(const void *x, int64_t ldx, int64_t K,
                                          int64_t group_size, int64_t r0, int64_t r1,
                                          const void *q, int64_t ldq, const float *scale) {
    if (K < 1 || r0 < 0 || r1 < r0 || lv_qgemm_groups(K, group_size) == 0) return LV_E_INVALID;
    if (r1 > r0 && (!x || !q || !scale || ldx < K || ldq < K)) return LV_E_INVALID;
    return LV_OK;
}

static inline lv_status lv_check_qgemm(const uint8_t *xu, int64_t ldx, const float *xscale,
                                       const int8_t *w, int64_t ldw, const float *wscale,
                                       int64_t group_size, int64_t K, int64_t m0, int64_t m1,
                                       int64_t n0, int64_t n1, const void *y, int64_t ldy) {
    if (K > LV_QGEMM_K_MAX) return LV_E_K_TOO_LARGE;
    if (K < 1 || m0 < 0 || m1 < m0 || n0 < 0 || n1 < n0) return LV_E_INVALID;
    if (group_size > 0 && (K % group_size || group_size % 64)) return LV_E_INVALID;
    if (m1 > m0 && n1 > n0 &&
        (!xu || !xscale || !w || !wscale || !y || ldx < K || ldw < K || ldy < n1))
        return LV_E_INVALID;
    return LV_OK;
}

static inline lv_status lv_check_grad_input(const void *gy, int64_t ldg, const int8_t *w,
                                            int64_t ldw, const float *wscale,
                                            int64_t group_size, int64_t N, int64_t K,
                                            int64_t m0, int64_t m1, int64_t k0, int64_t k1,
                                            const void *gx, int64_t ldgx) {
    if (N < 1 || K < 1 || m0 < 0 || m1 < m0 || k0 < 0 || k1 < k0 || k1 > K)
        return LV_E_INVALID;
    if (group_size > 0 && (K % group_size || group_size % 64)) return LV_E_INVALID;
    if (m1 > m0 && k1 > k0 && (!gy || !w || !wscale || !gx || ldg < N || ldw < K || ldgx < k1))
        return LV_E_INVALID;
    return LV_OK;
}

#endif /* LOWVRAM_CPU_QGEMM_INTERNAL_H */
