/*
 * ops/cpu/sparse_grad.h — the gradient chain of the sparse family (internal):
 * gx[m, k] = (fmaf chain over n = 0 .. N-1 of scaled gy[m, n] times the
 * decompressed weight w[n, k]) * act_scale[k], as lowvram/sparse.h states.
 * One copy, included by every CPU variant so that each compiles it with its
 * own ISA flags: in the reference (baseline x86-64) fmaf is a libm call, in
 * the AVX2 / AVX-512 files it is one vfmadd, vectorized — the same bits,
 * since fmaf rounds once either way.
 */
#ifndef LOWVRAM_CPU_SPARSE_GRAD_H
#define LOWVRAM_CPU_SPARSE_GRAD_H

#include <math.h>
#include <string.h>

#include "lowvram/convert.h"
#include "lowvram/sparse.h"
#include "sparse_internal.h"

/* Row n of values (NULL when values is NULL: nothing kept, never read). */
#define KV_ROW(values, n, ldv, vsz) \
    ((values) ? (const char *)(values) + (size_t)((n) * (ldv)) * (vsz) : (const char *)NULL)

/* Set bits of a mask row before column k (the index of weight k's value). */
static inline int64_t lv_kept_before(const uint8_t *bits, int64_t k) {
    int64_t j = 0, b = 0;
    for (; b + 8 <= k / 8; b += 8) {
        uint64_t w;
        memcpy(&w, bits + b, 8);
        j += __builtin_popcountll(w);
    }
    for (; b < k / 8; b++) j += __builtin_popcount(bits[b]);
    if (k % 8) j += __builtin_popcount(bits[k / 8] & ((1u << (k % 8)) - 1u));
    return j;
}

/* Columns of gx one call of the gradient chain keeps in registers/stack. */
#define LV_GRAD_KBLOCK 256
/* Rows of gy sharing one expansion of a weight block. */
#define LV_GRAD_MTILE 8

/* The shared fmaf chain of both gradients: wscale == NULL for float values.
 * For each (m, k) the chain runs over n = 0 .. N-1 in order, as the contract
 * says; blocks of LV_GRAD_KBLOCK columns keep their chains in a stack array so
 * that each weight row is walked once per block (looking a value up per
 * element cost O(K) and made training through pruned layers impossible).
 * Pruned weights enter as 0 (fmaf(s, 0, acc): an Inf or NaN gradient still
 * gives NaN, as on the decompressed weight). */
static inline lv_status lv_sparse_grad_chain(const void *gy, lv_dtype gdt, int64_t ldg,
                                             const void *values, lv_dtype vdt, int is_int8,
                                             int64_t ldv, const uint8_t *mask_bits, int64_t ldb,
                                             const float *wscale, int64_t group_size,
                                             const float *act_scale, int64_t N, int64_t K,
                                             int64_t m0, int64_t m1, int64_t k0, int64_t k1,
                                             void *gx, lv_dtype xdt, int64_t ldgx) {
    const int64_t G = group_size > 0 ? K / group_size : 1;
    const int64_t gs = K / G;
    const size_t gsz = (size_t)lv_dtype_size(gdt), xsz = (size_t)lv_dtype_size(xdt);
    const size_t vsz = is_int8 ? 1 : (size_t)lv_dtype_size(vdt);
    float acc[LV_GRAD_MTILE][LV_GRAD_KBLOCK], wb[LV_GRAD_KBLOCK], sb[LV_GRAD_KBLOCK];
    for (int64_t kb = k0; kb < k1; kb += LV_GRAD_KBLOCK) {
        const int64_t ke = kb + LV_GRAD_KBLOCK < k1 ? kb + LV_GRAD_KBLOCK : k1, nb = ke - kb;
        for (int64_t mt = m0; mt < m1; mt += LV_GRAD_MTILE) {
            const int64_t me = mt + LV_GRAD_MTILE < m1 ? mt + LV_GRAD_MTILE : m1;
            for (int64_t r = 0; r < me - mt; r++)
                for (int64_t i = 0; i < nb; i++) acc[r][i] = 0.0f;
            for (int64_t n = 0; n < N; n++) {
                const uint8_t *bits = mask_bits + n * ldb;
                const char *vr = KV_ROW(values, n, ldv, vsz);
                int64_t j = lv_kept_before(bits, kb);
                /* This block of row n expanded once (0 where pruned) for the
                 * whole tile of rows, its scales per column when there are
                 * groups; then straight fmaf loops the compiler vectorizes
                 * (fmaf rounds once whatever instruction runs it). */
                for (int64_t k = kb; k < ke; k++) {
                    float w = 0.0f;
                    if (bits[k / 8] >> (k % 8) & 1u)
                        w = is_int8 ? (float)((const int8_t *)vr)[j++] : lv_load_f32(vr, vdt, j++);
                    wb[k - kb] = w;
                }
                if (wscale && G > 1)
                    for (int64_t k = kb; k < ke; k++) sb[k - kb] = wscale[n * G + k / gs];
                for (int64_t m = mt; m < me; m++) {
                    const float g = lv_load_f32((const char *)gy + (size_t)(m * ldg) * gsz, gdt, n);
                    float *a = acc[m - mt];
                    if (!wscale) {
                        for (int64_t i = 0; i < nb; i++) a[i] = fmaf(g, wb[i], a[i]);
                    } else if (G == 1) {
                        const float s = g * wscale[n];
                        for (int64_t i = 0; i < nb; i++) a[i] = fmaf(s, wb[i], a[i]);
                    } else {
                        for (int64_t i = 0; i < nb; i++) a[i] = fmaf(g * sb[i], wb[i], a[i]);
                    }
                }
            }
            for (int64_t m = mt; m < me; m++) {
                void *xr = (char *)gx + (size_t)(m * ldgx) * xsz;
                for (int64_t k = kb; k < ke; k++) {
                    float a = acc[m - mt][k - kb];
                    if (act_scale) a = a * act_scale[k];
                    lv_store_f32(xr, xdt, k, a);
                }
            }
        }
    }
    return LV_OK;
}


/* Both gradients through the chain above, with the signatures
 * LV_SPARSE_GRAD_ENTRIES takes (the reference and AVX2 files use them; the
 * AVX-512 file has its own kernels giving the same bits). */
static inline lv_status lv_sparse_qgrad_chain(const void *gy, lv_dtype gdt, int64_t ldg,
                                              const int8_t *qvalues, int64_t ldv,
                                              const uint8_t *mask_bits, int64_t ldb, int64_t KV,
                                              const float *wscale, int64_t group_size,
                                              const float *act_scale, int64_t N, int64_t K,
                                              int64_t m0, int64_t m1, int64_t k0, int64_t k1,
                                              void *gx, lv_dtype xdt, int64_t ldgx) {
    (void)KV;
    return lv_sparse_grad_chain(gy, gdt, ldg, qvalues, LV_F32, 1, ldv, mask_bits, ldb, wscale,
                                group_size, act_scale, N, K, m0, m1, k0, k1, gx, xdt, ldgx);
}

static inline lv_status lv_sparse_fgrad_chain(const void *gy, lv_dtype gdt, int64_t ldg,
                                              const void *values, lv_dtype vdt, int64_t ldv,
                                              const uint8_t *mask_bits, int64_t ldb, int64_t KV,
                                              int64_t N, int64_t K, int64_t m0, int64_t m1,
                                              int64_t k0, int64_t k1, void *gx, lv_dtype xdt,
                                              int64_t ldgx) {
    (void)KV;
    return lv_sparse_grad_chain(gy, gdt, ldg, values, vdt, 0, ldv, mask_bits, ldb, NULL, -1,
                                NULL, N, K, m0, m1, k0, k1, gx, xdt, ldgx);
}

/* Both gradient entry points of a variant (lowvram/sparse.h): the shared
 * argument and mask checks, then qchain / fchain (functions of
 * lv_sparse_qgrad_chain's / lv_sparse_fgrad_chain's signatures: those, or the
 * variant's own kernels giving their bits) for int8 / float values, compiled
 * with the including file's ISA flags. */
#define LV_SPARSE_GRAD_ENTRIES(sfx, qchain, fchain)                                                   \
    lv_status lv_sparse_qlinear_grad_input_rows_##sfx(                                        \
        const void *gy, lv_dtype gdt, int64_t ldg, const int8_t *qvalues, int64_t ldv,        \
        const uint8_t *mask_bits, int64_t ldb, int64_t KV, const float *wscale,               \
        int64_t group_size, const float *act_scale, int64_t N, int64_t K, int64_t m0,         \
        int64_t m1, int64_t k0, int64_t k1, void *gx, lv_dtype xdt, int64_t ldgx) {           \
        lv_status st = lv_check_sparse_grad(gy, ldg, qvalues, ldv, mask_bits, ldb, KV,         \
                                            wscale, group_size, N, K, m0, m1, k0, k1, gx,     \
                                            ldgx);                                            \
        if (st != LV_OK || !wscale) return st != LV_OK ? st : LV_E_INVALID;                   \
        return qchain(gy, gdt, ldg, qvalues, ldv, mask_bits, ldb, KV, wscale, group_size,     \
                      act_scale, N, K, m0, m1, k0, k1, gx, xdt, ldgx);                        \
    }                                                                                         \
    lv_status lv_sparse_linear_grad_input_rows_##sfx(                                         \
        const void *gy, lv_dtype gdt, int64_t ldg, const void *values, lv_dtype vdt,          \
        int64_t ldv, const uint8_t *mask_bits, int64_t ldb, int64_t KV, int64_t N, int64_t K, \
        int64_t m0, int64_t m1, int64_t k0, int64_t k1, void *gx, lv_dtype xdt,               \
        int64_t ldgx) {                                                                       \
        lv_status st = lv_check_sparse_grad(gy, ldg, values, ldv, mask_bits, ldb, KV, NULL,    \
                                            -1, N, K, m0, m1, k0, k1, gx, ldgx);              \
        if (st != LV_OK) return st;                                                           \
        return fchain(gy, gdt, ldg, values, vdt, ldv, mask_bits, ldb, KV, N, K, m0, m1, k0,   \
                      k1, gx, xdt, ldgx);                                                     \
    }

#endif /* LOWVRAM_CPU_SPARSE_GRAD_H */
