/*
 * lowvram/sparse.h — the contract of structured pruning that really saves
 * memory (torch.ops.lowvram.nm_mask, sparse_compress, sparse_decompress,
 * sparse_linear, sparse_qlinear). ops/cpu/sparse_ref.c is this contract in
 * scalar C, python/lowvram/reference.py is it in PyTorch; the SIMD and CUDA
 * variants match it (masks, codes and int32 sums bit for bit; the float
 * product of sparse_linear bit for bit too, because its summation order is
 * named below).
 *
 * Shapes as in qgemm.h: x [M, K], weights [N, K], y [M, N].
 *
 * ## Masks: lv_nm_mask_rows
 *
 * In every group of m consecutive columns of a row of `score` [N, K]
 * (float32), keep the n columns with the largest scores; among equal scores
 * the lower column index wins (a stable order: a column is kept when fewer
 * than n columns of its group have a larger score, or an equal score and a
 * lower index). K must be a multiple of m, 1 <= n <= m <= 64. Scores are
 * compared as float32 values (-0 == +0); a NaN score is an error
 * (LV_E_INVALID, the row range is left unwritten from the bad row on) because
 * it has no place in the order.
 *
 * ## Compressed storage (canonical, what state_dict holds)
 *
 *     mask_bits [N, KB] uint8, KB = ceil(K / 8): bit (k % 8) of byte k / 8 of
 *               row n is 1 when weight (n, k) is kept (least significant bit
 *               first); bits past K are 0.
 *     values    [N, KV]: the kept weights of row n in increasing k. Every row
 *               keeps exactly KV weights (N:M: KV = K * n / m; unstructured at
 *               a sparsity s per row: KV = K - round(K * s)), so values is a
 *               plain rectangular tensor, float (f32/bf16/f16) or int8 codes
 *               with qgemm.h's per-channel / per-group wscale.
 *
 * 2:4 int8 is 0.5 + 0.125 = 0.625 bytes per weight; bf16 dense is 2.
 *
 * ## Products
 *
 * sparse_qlinear: exactly qgemm.h's qlinear on the decompressed int8 weight
 * (pruned codes 0): same activation quantization, exact int32 sums, same
 * float epilogue — so the same bits as qlinear(x, decompress(...)).
 *
 * sparse_linear (float values): with v[k] = x[m, k] (float32, exact) and
 * w[k] the decompressed weight (0 where pruned, float32, exact), 16 lanes
 *
 *     lane[l] = 0.0f; for k = l, l + 16, l + 32, ... < K:
 *                   lane[l] = fmaf(v[k], w[k], lane[l])     (one rounding)
 *
 * then a fixed tree: s8[i] = lane[i] + lane[i + 8] (i < 8), s4[i] = s8[i] +
 * s8[i + 4], s2[i] = s4[i] + s4[i + 2], y = s2[0] + s2[1]; y = y + bias[n]
 * when bias is given; stored in y's dtype, rounded to nearest even. Pruned
 * weights are multiplied too (v * 0), so a NaN or Inf in x gives NaN, as the
 * dense product on the decompressed weight does.
 *
 * ## Gradients to the input (weights frozen)
 *
 * sparse_qlinear_grad_input: exactly qgemm.h's qlinear_grad_input on the
 * decompressed int8 weight (its fmaf chain runs over every n, pruned zeros
 * included, then * act_scale[k] when given). sparse_linear_grad_input: the same chain without scales,
 * acc = fmaf(gy[m, n], w[n, k], acc) for n = 0 .. N-1, w the decompressed
 * float weight.
 */
#ifndef LOWVRAM_SPARSE_H
#define LOWVRAM_SPARSE_H

#include <stddef.h>
#include <stdint.h>

#include "lowvram/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes of a row of mask bits. */
static inline int64_t lv_mask_row_bytes(int64_t K) { return (K + 7) / 8; }

/*
 * keep[r, k] (1 = kept, 0 = pruned; uint8, row stride ldk) for rows [r0, r1)
 * of score [rows, K] (float32, row stride lds).
 */
lv_status lv_nm_mask_rows(const float *score, int64_t lds, int64_t K, int n, int m,
                          int64_t r0, int64_t r1, uint8_t *keep, int64_t ldk);

/*
 * Compresses rows [r0, r1) of a dense weight w [rows, K] (elements of `esz`
 * bytes: 1 for int8 codes, 2 or 4 for floats, row stride ldw elements) under
 * keep [rows, K] (uint8 0/1, row stride ldk): values [rows, KV] (row stride
 * ldv elements) and mask_bits [rows, KB] (row stride ldb bytes).
 * LV_E_INVALID when a row does not keep exactly KV weights.
 */
lv_status lv_sparse_compress_rows(const void *w, int esz, int64_t ldw, const uint8_t *keep,
                                  int64_t ldk, int64_t K, int64_t KV, int64_t r0, int64_t r1,
                                  void *values, int64_t ldv, uint8_t *mask_bits, int64_t ldb);

/*
 * Decompresses rows [r0, r1): w[r, k] = the next value of row r where bit k is
 * set, else 0 (bit patterns copied, `esz` bytes per element).
 * LV_E_INVALID when a row's mask does not hold exactly KV set bits.
 */
lv_status lv_sparse_decompress_rows(const void *values, int esz, int64_t ldv,
                                    const uint8_t *mask_bits, int64_t ldb, int64_t K,
                                    int64_t KV, int64_t r0, int64_t r1, void *w, int64_t ldw);

/*
 * sparse_qlinear: y[m, n] for m in [m0, m1), n in [n0, n1). Arguments as
 * lv_qgemm_int8_rows (activation codes + 128, scales, wscale, group_size,
 * bias, y), with the int8 weight given compressed: qvalues [N, KV] (row
 * stride ldv) and mask_bits [N, KB] (row stride ldb).
 */
lv_status lv_sparse_qgemm_int8_rows(const uint8_t *xu, int64_t ldx, const float *xscale,
                                    const int8_t *qvalues, int64_t ldv,
                                    const uint8_t *mask_bits, int64_t ldb, int64_t KV,
                                    const float *wscale, int64_t group_size, const float *bias,
                                    int64_t K, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                                    void *y, lv_dtype ydt, int64_t ldy);

/*
 * sparse_linear: y[m, n] for m in [m0, m1), n in [n0, n1): x [M, K] (dtype
 * xdt, row stride ldx), values [N, KV] (dtype vdt), bias [N] float32 or NULL,
 * y [M, N] (dtype ydt, row stride ldy).
 */
lv_status lv_sparse_gemm_rows(const void *x, lv_dtype xdt, int64_t ldx, const void *values,
                              lv_dtype vdt, int64_t ldv, const uint8_t *mask_bits, int64_t ldb,
                              int64_t KV, const float *bias, int64_t K, int64_t m0, int64_t m1,
                              int64_t n0, int64_t n1, void *y, lv_dtype ydt, int64_t ldy);

/* Gradients to the input, gx[m, k] for m in [m0, m1), k in [k0, k1). */
lv_status lv_sparse_qlinear_grad_input_rows(const void *gy, lv_dtype gdt, int64_t ldg,
                                            const int8_t *qvalues, int64_t ldv,
                                            const uint8_t *mask_bits, int64_t ldb, int64_t KV,
                                            const float *wscale, int64_t group_size,
                                            const float *act_scale, int64_t N, int64_t K,
                                            int64_t m0, int64_t m1, int64_t k0, int64_t k1,
                                            void *gx, lv_dtype xdt, int64_t ldgx);
lv_status lv_sparse_linear_grad_input_rows(const void *gy, lv_dtype gdt, int64_t ldg,
                                           const void *values, lv_dtype vdt, int64_t ldv,
                                           const uint8_t *mask_bits, int64_t ldb, int64_t KV,
                                           int64_t N, int64_t K, int64_t m0, int64_t m1,
                                           int64_t k0, int64_t k1, void *gx, lv_dtype xdt,
                                           int64_t ldgx);

/* The same entries, one per variant (same arguments; the dispatching
 * entries above call the variant lv_cpu_isa() names). Masks are validated
 * where they are read: a mask row without exactly KV set bits gives
 * LV_E_INVALID before any of that row's values is read (the outputs of the
 * call are then unspecified). */
#define LV_SPARSE_DECLARE_VARIANT(sfx)                                                        \
    lv_status lv_nm_mask_rows_##sfx(const float *score, int64_t lds, int64_t K, int n, int m,  \
                                    int64_t r0, int64_t r1, uint8_t *keep, int64_t ldk);      \
    lv_status lv_sparse_compress_rows_##sfx(                                                  \
        const void *w, int esz, int64_t ldw, const uint8_t *keep, int64_t ldk, int64_t K,     \
        int64_t KV, int64_t r0, int64_t r1, void *values, int64_t ldv, uint8_t *mask_bits,    \
        int64_t ldb);                                                                         \
    lv_status lv_sparse_decompress_rows_##sfx(const void *values, int esz, int64_t ldv,        \
                                              const uint8_t *mask_bits, int64_t ldb,          \
                                              int64_t K, int64_t KV, int64_t r0, int64_t r1,  \
                                              void *w, int64_t ldw);                          \
    lv_status lv_sparse_qgemm_int8_rows_##sfx(                                                \
        const uint8_t *xu, int64_t ldx, const float *xscale, const int8_t *qvalues,           \
        int64_t ldv, const uint8_t *mask_bits, int64_t ldb, int64_t KV, const float *wscale,  \
        int64_t group_size, const float *bias, int64_t K, int64_t m0, int64_t m1, int64_t n0, \
        int64_t n1, void *y, lv_dtype ydt, int64_t ldy);                                      \
    lv_status lv_sparse_gemm_rows_##sfx(                                                      \
        const void *x, lv_dtype xdt, int64_t ldx, const void *values, lv_dtype vdt,           \
        int64_t ldv, const uint8_t *mask_bits, int64_t ldb, int64_t KV, const float *bias,    \
        int64_t K, int64_t m0, int64_t m1, int64_t n0, int64_t n1, void *y, lv_dtype ydt,     \
        int64_t ldy);                                                                         \
    lv_status lv_sparse_qlinear_grad_input_rows_##sfx(                                        \
        const void *gy, lv_dtype gdt, int64_t ldg, const int8_t *qvalues, int64_t ldv,        \
        const uint8_t *mask_bits, int64_t ldb, int64_t KV, const float *wscale,               \
        int64_t group_size, const float *act_scale, int64_t N, int64_t K, int64_t m0,         \
        int64_t m1, int64_t k0, int64_t k1, void *gx, lv_dtype xdt, int64_t ldgx);                                    \
    lv_status lv_sparse_linear_grad_input_rows_##sfx(                                         \
        const void *gy, lv_dtype gdt, int64_t ldg, const void *values, lv_dtype vdt,          \
        int64_t ldv, const uint8_t *mask_bits, int64_t ldb, int64_t KV, int64_t N, int64_t K, \
        int64_t m0, int64_t m1, int64_t k0, int64_t k1, void *gx, lv_dtype xdt, int64_t ldgx);

LV_SPARSE_DECLARE_VARIANT(ref)
LV_SPARSE_DECLARE_VARIANT(avx2)
LV_SPARSE_DECLARE_VARIANT(avx512)

#ifdef __cplusplus
}
#endif

#endif /* LOWVRAM_SPARSE_H */
