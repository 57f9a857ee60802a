/*
 * ops/cpu/qgemm_ref.c — the qgemm contract (lowvram/qgemm.h) in plain scalar
 * C11: the oracle every SIMD and CUDA variant is tested against, and the
 * variant LOWVRAM_ISA=ref runs. Written for clarity, not speed: one element at
 * a time, in exactly the order the contract names. Built with
 * -ffp-contract=off so that no a * b + c becomes an FMA behind our back.
 */
#include <math.h>

#include "lowvram/convert.h"
#include "qgemm_internal.h"

lv_status lv_quantize_int8_rows_ref(const void *x, lv_dtype xdt, int64_t ldx, int64_t K,
                                    const float *act_scale, int64_t group_size, int64_t r0,
                                    int64_t r1, void *q, int64_t ldq, float *scale,
                                    int offset128) {
    lv_status st = lv_check_quantize(x, ldx, K, group_size, r0, r1, q, ldq, scale);
    if (st != LV_OK) return st;
    const int64_t G = lv_qgemm_groups(K, group_size);
    const int64_t gs = K / G;
    const size_t esz = (size_t)lv_dtype_size(xdt);
    for (int64_t r = r0; r < r1; r++) {
        const char *xr = (const char *)x + (size_t)(r * ldx) * esz;
        int8_t *qr = (int8_t *)q + r * ldq;
        for (int64_t g = 0; g < G; g++) {
            const int64_t k0 = g * gs, k1 = k0 + gs;
            float absmax = 0.0f;
            int nonfinite = 0;
            for (int64_t k = k0; k < k1; k++) {
                float v = lv_load_f32(xr, xdt, k);
                if (act_scale) v = v * act_scale[k];
                float a = fabsf(v);
                if (!(a <= 3.40282347e+38f)) nonfinite = 1; /* NaN or Inf */
                else if (a > absmax) absmax = a;
            }
            float s;
            if (nonfinite) {
                s = NAN;
                for (int64_t k = k0; k < k1; k++) qr[k] = 0;
            } else if (absmax < LV_QUANT_MIN_ABSMAX) {
                s = 0.0f;
                for (int64_t k = k0; k < k1; k++) qr[k] = 0;
            } else {
                s = absmax / 127.0f;
                const float inv = 127.0f / absmax;
                for (int64_t k = k0; k < k1; k++) {
                    float v = lv_load_f32(xr, xdt, k);
                    if (act_scale) v = v * act_scale[k];
                    float c = rintf(v * inv); /* default rounding: nearest even */
                    if (c > 127.0f) c = 127.0f;
                    if (c < -127.0f) c = -127.0f;
                    qr[k] = (int8_t)c;
                }
            }
            scale[r * G + g] = s;
        }
        if (offset128)
            for (int64_t k = 0; k < K; k++) ((uint8_t *)qr)[k] = (uint8_t)(qr[k] + 128);
    }
    return LV_OK;
}

lv_status lv_qgemm_int8_rows_ref(const uint8_t *xu, int64_t ldx, const float *xscale,
                                 const int8_t *w, int64_t ldw, const float *wscale,
                                 int64_t group_size, const float *bias, int64_t K, int64_t m0,
                                 int64_t m1, int64_t n0, int64_t n1, void *y, lv_dtype ydt,
                                 int64_t ldy) {
    lv_status st = lv_check_qgemm(xu, ldx, xscale, w, ldw, wscale, group_size, K, m0, m1, n0,
                                  n1, y, ldy);
    if (st != LV_OK) return st;
    const int64_t G = lv_qgemm_groups(K, group_size);
    const int64_t gs = K / G;
    const size_t esz = (size_t)lv_dtype_size(ydt);
    for (int64_t m = m0; m < m1; m++) {
        const uint8_t *xr = xu + m * ldx;
        void *yr = (char *)y + (size_t)(m * ldy) * esz;
        for (int64_t n = n0; n < n1; n++) {
            const int8_t *wr = w + n * ldw;
            float t = 0.0f;
            for (int64_t g = 0; g < G; g++) {
                /* |sum| <= K * 127 * 128 < 2^31 for codes in the contract's
                 * range; int64 keeps even a caller outside it free of UB */
                int64_t acc = 0;
                for (int64_t k = g * gs; k < (g + 1) * gs; k++)
                    acc += ((int64_t)xr[k] - 128) * (int64_t)wr[k];
                const float p = (float)(int32_t)acc * wscale[n * G + g];
                t = g == 0 ? p : t + p;
            }
            float v = t * xscale[m];
            if (bias) v = v + bias[n];
            lv_store_f32(yr, ydt, n, v);
        }
    }
    return LV_OK;
}

lv_status lv_qlinear_grad_input_rows_ref(const void *gy, lv_dtype gdt, int64_t ldg,
                                         const int8_t *w, int64_t ldw, const float *wscale,
                                         int64_t group_size, const float *act_scale, int64_t N,
                                         int64_t K, int64_t m0, int64_t m1, int64_t k0,
                                         int64_t k1, void *gx, lv_dtype xdt, int64_t ldgx) {
    lv_status st = lv_check_grad_input(gy, ldg, w, ldw, wscale, group_size, N, K, m0, m1, k0,
                                       k1, gx, ldgx);
    if (st != LV_OK) return st;
    const int64_t G = lv_qgemm_groups(K, group_size);
    const int64_t gs = K / G;
    const size_t gsz = (size_t)lv_dtype_size(gdt), xsz = (size_t)lv_dtype_size(xdt);
    for (int64_t m = m0; m < m1; m++) {
        const char *gr = (const char *)gy + (size_t)(m * ldg) * gsz;
        void *xr = (char *)gx + (size_t)(m * ldgx) * xsz;
        for (int64_t k = k0; k < k1; k++) {
            const int64_t g = k / gs;
            float acc = 0.0f;
            for (int64_t n = 0; n < N; n++) {
                const float s = lv_load_f32(gr, gdt, n) * wscale[n * G + g];
                acc = fmaf(s, (float)w[n * ldw + k], acc);
            }
            if (act_scale) acc = acc * act_scale[k];
            lv_store_f32(xr, xdt, k, acc);
        }
    }
    return LV_OK;
}
