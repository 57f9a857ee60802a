/*
 * ops/cpu/sparse_internal.h — argument checks shared by every CPU variant of
 * the sparse family (internal), so that each variant refuses exactly what the
 * reference refuses. Masks are checked where they are read: a row whose mask
 * does not hold exactly KV set bits is LV_E_INVALID before any of its values
 * is read, so a corrupt mask can never send a kernel past the values.
 */
#ifndef LOWVRAM_CPU_SPARSE_INTERNAL_H
#define LOWVRAM_CPU_SPARSE_INTERNAL_H

#include <string.h>

#include "lowvram/qgemm.h"
#include "lowvram/sparse.h"

/* Set bits of a row's mask over columns [0, K); bits past K must be 0 and
 * count as a mismatch (returned as K + 1) when they are not. */
static inline int64_t lv_mask_row_count(const uint8_t *bits, int64_t K) {
    int64_t c = 0;
    const int64_t full = K / 8;
    int64_t b = 0;
    /* Eight bytes at a time: counting byte by byte cost more than a whole
     * M = 1 product (memcpy: the row need not be 8-byte aligned). */
    for (; b + 8 <= full; b += 8) {
        uint64_t w;
        memcpy(&w, bits + b, 8);
        c += __builtin_popcountll(w);
    }
    for (; b < full; b++) c += __builtin_popcount(bits[b]);
    if (K % 8) {
        const unsigned last = bits[full];
        if (last >> (K % 8)) return K + 1;
        c += __builtin_popcount(last);
    }
    return c;
}

static inline lv_status lv_check_nm_mask(const float *score, int64_t lds, int64_t K, int n,
                                         int m, int64_t r0, int64_t r1, const uint8_t *keep,
                                         int64_t ldk) {
    if (m < 1 || m > 64 || n < 1 || n > m || K < 1 || K % m || r0 < 0 || r1 < r0)
        return LV_E_INVALID;
    if (r1 > r0 && (!score || !keep || lds < K || ldk < K)) return LV_E_INVALID;
    return LV_OK;
}

static inline lv_status lv_check_compress(const void *w, int esz, int64_t ldw,
                                          const uint8_t *keep, int64_t ldk, int64_t K,
                                          int64_t KV, int64_t r0, int64_t r1,
                                          const void *values, int64_t ldv,
                                          const uint8_t *mask_bits, int64_t ldb) {
    if ((esz != 1 && esz != 2 && esz != 4) || K < 1 || KV < 0 || KV > K || r0 < 0 || r1 < r0)
        return LV_E_INVALID;
    if (r1 > r0 && (!w || !keep || !mask_bits || (KV > 0 && !values) || ldw < K || ldk < K ||
                    ldv < KV || ldb < lv_mask_row_bytes(K)))
        return LV_E_INVALID;
    return LV_OK;
}

static inline lv_status lv_check_decompress(const void *values, int esz, int64_t ldv,
                                            const uint8_t *mask_bits, int64_t ldb, int64_t K,
                                            int64_t KV, int64_t r0, int64_t r1, const void *w,
                                            int64_t ldw) {
    if ((esz != 1 && esz != 2 && esz != 4) || K < 1 || KV < 0 || KV > K || r0 < 0 || r1 < r0)
        return LV_E_INVALID;
    if (r1 > r0 && (!w || !mask_bits || (KV > 0 && !values) || ldw < K || ldv < KV ||
                    ldb < lv_mask_row_bytes(K)))
        return LV_E_INVALID;
    return LV_OK;
}

/* Every row of [n0, n1) must keep exactly KV weights. */
static inline lv_status lv_check_mask_rows(const uint8_t *mask_bits, int64_t ldb, int64_t K,
                                           int64_t KV, int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++)
        if (lv_mask_row_count(mask_bits + n * ldb, K) != KV) return LV_E_INVALID;
    return LV_OK;
}

static inline lv_status lv_check_sparse_qgemm(const uint8_t *xu, int64_t ldx,
                                              const float *xscale, const int8_t *qvalues,
                                              int64_t ldv, const uint8_t *mask_bits,
                                              int64_t ldb, int64_t KV, const float *wscale,
                                              int64_t group_size, int64_t K, int64_t m0,
                                              int64_t m1, int64_t n0, int64_t n1,
                                              const void *y, int64_t ldy) {
    if (K > LV_QGEMM_K_MAX) return LV_E_K_TOO_LARGE;
    if (K < 1 || KV < 0 || KV > K || m0 < 0 || m1 < m0 || n0 < 0 || n1 < n0)
        return LV_E_INVALID;
    if (group_size > 0 && (K % group_size || group_size % 64)) return LV_E_INVALID;
    if (m1 > m0 && n1 > n0) {
        if (!xu || !xscale || !mask_bits || !wscale || !y || (KV > 0 && !qvalues) || ldx < K ||
            ldv < KV || ldb < lv_mask_row_bytes(K) || ldy < n1)
            return LV_E_INVALID;
        return lv_check_mask_rows(mask_bits, ldb, K, KV, n0, n1);
    }
    return LV_OK;
}

static inline lv_status lv_check_sparse_gemm(const void *x, int64_t ldx, const void *values,
                                             int64_t ldv, const uint8_t *mask_bits,
                                             int64_t ldb, int64_t KV, int64_t K, int64_t m0,
                                             int64_t m1, int64_t n0, int64_t n1, const void *y,
                                             int64_t ldy) {
    if (K < 1 || KV < 0 || KV > K || m0 < 0 || m1 < m0 || n0 < 0 || n1 < n0)
        return LV_E_INVALID;
    if (m1 > m0 && n1 > n0) {
        if (!x || !mask_bits || !y || (KV > 0 && !values) || ldx < K || ldv < KV ||
            ldb < lv_mask_row_bytes(K) || ldy < n1)
            return LV_E_INVALID;
        return lv_check_mask_rows(mask_bits, ldb, K, KV, n0, n1);
    }
    return LV_OK;
}

static inline lv_status lv_check_sparse_grad(const void *gy, int64_t ldg, const void *values,
                                             int64_t ldv, const uint8_t *mask_bits,
                                             int64_t ldb, int64_t KV, const float *wscale,
                                             int64_t group_size, int64_t N, int64_t K,
                                             int64_t m0, int64_t m1, int64_t k0, int64_t k1,
                                             const void *gx, int64_t ldgx) {
    (void)wscale;
    if (N < 1 || K < 1 || KV < 0 || KV > K || m0 < 0 || m1 < m0 || k0 < 0 || k1 < k0 || k1 > K)
        return LV_E_INVALID;
    if (group_size > 0 && (K % group_size || group_size % 64)) return LV_E_INVALID;
    if (m1 > m0 && k1 > k0) {
        if (!gy || !mask_bits || !gx || (KV > 0 && !values) || ldg < N || ldv < KV ||
            ldb < lv_mask_row_bytes(K) || ldgx < k1)
            return LV_E_INVALID;
        return lv_check_mask_rows(mask_bits, ldb, K, KV, 0, N);
    }
    return LV_OK;
}

#endif /* LOWVRAM_CPU_SPARSE_INTERNAL_H */
