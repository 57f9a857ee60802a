/*
 * ops/cpu/sparse_ref.c — the sparse family's contract (lowvram/sparse.h) in
 * plain scalar C11: N:M masks, compression to kept values + bit masks and
 * back, and the products and input gradients on compressed weights. The
 * oracle of every SIMD and CUDA variant, written for clarity: one element at
 * a time, in the contract's order. Built with -ffp-contract=off.
 */
#include <math.h>
#include <string.h>

#include "lowvram/convert.h"
#include "lowvram/qgemm.h"
#include "lowvram/sparse.h"
#include "sparse_grad.h"
#include "sparse_internal.h"

lv_status lv_nm_mask_rows_ref(const float *score, int64_t lds, int64_t K, int n, int m,
                              int64_t r0, int64_t r1, uint8_t *keep, int64_t ldk) {
    lv_status st = lv_check_nm_mask(score, lds, K, n, m, r0, r1, keep, ldk);
    if (st != LV_OK) return st;
    for (int64_t r = r0; r < r1; r++) {
        const float *s = score + r * lds;
        for (int64_t k = 0; k < K; k++)
            if (isnan(s[k])) return LV_E_INVALID;
        for (int64_t g = 0; g < K; g += m) {
            for (int i = 0; i < m; i++) {
                /* rank of column i in its group: columns ahead of it in the
                 * order (larger score, or equal score and lower index) */
                int ahead = 0;
                for (int j = 0; j < m; j++)
                    if (s[g + j] > s[g + i] || (s[g + j] == s[g + i] && j < i)) ahead++;
                keep[r * ldk + g + i] = (uint8_t)(ahead < n);
            }
        }
    }
    return LV_OK;
}

lv_status lv_sparse_compress_rows_ref(const void *w, int esz, int64_t ldw, const uint8_t *keep,
                                      int64_t ldk, int64_t K, int64_t KV, int64_t r0,
                                      int64_t r1, void *values, int64_t ldv,
                                      uint8_t *mask_bits, int64_t ldb) {
    lv_status st = lv_check_compress(w, esz, ldw, keep, ldk, K, KV, r0, r1, values, ldv,
                                     mask_bits, ldb);
    if (st != LV_OK) return st;
    const int64_t KB = lv_mask_row_bytes(K);
    for (int64_t r = r0; r < r1; r++) {
        int64_t kept = 0;
        for (int64_t k = 0; k < K; k++) kept += keep[r * ldk + k] != 0;
        if (kept != KV) return LV_E_INVALID;
        uint8_t *bits = mask_bits + r * ldb;
        memset(bits, 0, (size_t)KB);
        const char *wr = (const char *)w + (size_t)(r * ldw) * (size_t)esz;
        char *vr = KV ? (char *)values + (size_t)(r * ldv) * (size_t)esz : NULL;
        int64_t j = 0;
        for (int64_t k = 0; k < K; k++) {
            if (!keep[r * ldk + k]) continue;
            bits[k / 8] |= (uint8_t)(1u << (k % 8));
            memcpy(vr + (size_t)j * (size_t)esz, wr + (size_t)k * (size_t)esz, (size_t)esz);
            j++;
        }
    }
    return LV_OK;
}

lv_status lv_sparse_decompress_rows_ref(const void *values, int esz, int64_t ldv,
                                        const uint8_t *mask_bits, int64_t ldb, int64_t K,
                                        int64_t KV, int64_t r0, int64_t r1, void *w,
                                        int64_t ldw) {
    lv_status st = lv_check_decompress(values, esz, ldv, mask_bits, ldb, K, KV, r0, r1, w, ldw);
    if (st != LV_OK) return st;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *bits = mask_bits + r * ldb;
        if (lv_mask_row_count(bits, K) != KV) return LV_E_INVALID;
        const char *vr = KV ? (const char *)values + (size_t)(r * ldv) * (size_t)esz : NULL;
        char *wr = (char *)w + (size_t)(r * ldw) * (size_t)esz;
        int64_t j = 0;
        for (int64_t k = 0; k < K; k++) {
            char *dst = wr + (size_t)k * (size_t)esz;
            if (bits[k / 8] >> (k % 8) & 1u) {
                memcpy(dst, vr + (size_t)j * (size_t)esz, (size_t)esz);
                j++;
            } else {
                memset(dst, 0, (size_t)esz);
            }
        }
    }
    return LV_OK;
}

/* The decompressed int8 weight w[n, k] (0 where pruned), walking a row's
 * values with a cursor: call with k = 0, 1, 2, ... in order. */
static inline int32_t next_code(const uint8_t *bits, const int8_t *v, int64_t k, int64_t *j) {
    return (bits[k / 8] >> (k % 8) & 1u) ? (int32_t)v[(*j)++] : 0;
}

lv_status lv_sparse_qgemm_int8_rows_ref(const uint8_t *xu, int64_t ldx, const float *xscale,
                                        const int8_t *qvalues, int64_t ldv,
                                        const uint8_t *mask_bits, int64_t ldb, int64_t KV,
                                        const float *wscale, int64_t group_size,
                                        const float *bias, int64_t K, int64_t m0, int64_t m1,
                                        int64_t n0, int64_t n1, void *y, lv_dtype ydt,
                                        int64_t ldy) {
    lv_status st = lv_check_sparse_qgemm(xu, ldx, xscale, qvalues, ldv, mask_bits, ldb, KV,
                                         wscale, group_size, K, m0, m1, n0, n1, y, ldy);
    if (st != LV_OK) return st;
    const int64_t G = group_size > 0 ? K / group_size : 1;
    const int64_t gs = K / G;
    const size_t esz = (size_t)lv_dtype_size(ydt);
    for (int64_t m = m0; m < m1; m++) {
        const uint8_t *xr = xu + m * ldx;
        void *yr = (char *)y + (size_t)(m * ldy) * esz;
        for (int64_t n = n0; n < n1; n++) {
            const uint8_t *bits = mask_bits + n * ldb;
            const int8_t *vr = KV ? qvalues + n * ldv : NULL;  /* values may be NULL when KV = 0 */
            int64_t j = 0;
            float t = 0.0f;
            for (int64_t g = 0; g < G; g++) {
                int64_t acc = 0;
                for (int64_t k = g * gs; k < (g + 1) * gs; k++)
                    acc += ((int64_t)xr[k] - 128) * next_code(bits, vr, k, &j);
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

lv_status lv_sparse_gemm_rows_ref(const void *x, lv_dtype xdt, int64_t ldx, const void *values,
                                  lv_dtype vdt, int64_t ldv, const uint8_t *mask_bits,
                                  int64_t ldb, int64_t KV, const float *bias, int64_t K,
                                  int64_t m0, int64_t m1, int64_t n0, int64_t n1, void *y,
                                  lv_dtype ydt, int64_t ldy) {
    lv_status st = lv_check_sparse_gemm(x, ldx, values, ldv, mask_bits, ldb, KV, K, m0, m1, n0,
                                        n1, y, ldy);
    if (st != LV_OK) return st;
    const size_t xsz = (size_t)lv_dtype_size(xdt), vsz = (size_t)lv_dtype_size(vdt),
                 ysz = (size_t)lv_dtype_size(ydt);
    for (int64_t m = m0; m < m1; m++) {
        const char *xr = (const char *)x + (size_t)(m * ldx) * xsz;
        void *yr = (char *)y + (size_t)(m * ldy) * ysz;
        for (int64_t n = n0; n < n1; n++) {
            const uint8_t *bits = mask_bits + n * ldb;
            const char *vr = KV ? (const char *)values + (size_t)(n * ldv) * vsz : NULL;
            float lane[16] = {0};
            int64_t j = 0;
            for (int64_t k = 0; k < K; k++) {
                float w = 0.0f;
                if (bits[k / 8] >> (k % 8) & 1u) w = lv_load_f32(vr, vdt, j++);
                lane[k % 16] = fmaf(lv_load_f32(xr, xdt, k), w, lane[k % 16]);
            }
            float s8[8], s4[4], s2[2];
            for (int i = 0; i < 8; i++) s8[i] = lane[i] + lane[i + 8];
            for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
            for (int i = 0; i < 2; i++) s2[i] = s4[i] + s4[i + 2];
            float v = s2[0] + s2[1];
            if (bias) v = v + bias[n];
            lv_store_f32(yr, ydt, n, v);
        }
    }
    return LV_OK;
}

LV_SPARSE_GRAD_ENTRIES(ref, lv_sparse_qgrad_chain, lv_sparse_fgrad_chain)
