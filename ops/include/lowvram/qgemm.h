/*
 * lowvram/qgemm.h — the contract of the int8 dynamic-quantized Linear
 * (torch.ops.lowvram.qlinear, quantize_int8, quantize_weight,
 * qlinear_grad_input). ops/cpu/qgemm_ref.c is this contract in scalar C,
 * python/lowvram/reference.py is it in PyTorch; the AVX2, AVX-512 and CUDA
 * variants match it: int8 codes and int32 sums bit for bit, and — because
 * every float operation below is named with its order and rounding, with no
 * FMA contraction except where an fmaf is written — the float outputs too.
 *
 * Shapes: M rows (tokens), K in-features, N out-features. Activations x are
 * [M, K], weights w are [N, K] as nn.Linear stores them, outputs y [M, N].
 * Row strides (ld*) are in elements; columns are contiguous. Sizes are
 * int64_t. Every entry point works on a row range [r0, r1) (or a tile
 * [m0, m1) x [n0, n1)) so that the caller can split work across threads:
 * each output element is computed the same way whatever the split, so results
 * are bit-identical for any thread count. Kernels never start threads,
 * allocate, print or exit; they return an lv_status.
 *
 * ## Quantization (quantize_int8 / quantize_weight): lv_quantize_int8_rows
 *
 * A row is split into G groups of `group_size` consecutive columns (G = 1 and
 * group_size = K when group_size <= 0). For row r and group g, in float32:
 *
 *     v[k]      = x[r, k]                    (exact conversion to float32)
 *     v[k]      = v[k] * act_scale[k]        (only when act_scale != NULL; one
 *                                             rounded float32 product — this is
 *                                             SmoothQuant's per-input-channel
 *                                             factor, fused into this pass)
 *     absmax    = max_k |v[k]|  over the group
 *     scale     = absmax / 127               (float32 division, rounded)
 *     inv       = 127 / absmax               (float32 division, rounded)
 *     q[r, k]   = clamp(round_half_even(v[k] * inv), -127, 127)
 *
 * Edge cases, per group:
 *   - absmax is NaN or +Inf (the group holds a NaN or an Inf, or act_scale
 *     made a product overflow): every code 0 and scale = NaN, so the output
 *     row becomes NaN as a float Linear's would, and nothing else is touched.
 *   - absmax < LV_QUANT_MIN_ABSMAX (2^-100; all-zero groups, subnormals, and
 *     values so small that 127 / absmax would overflow near 2^-121): every
 *     code 0 and scale = 0.
 * Codes never take -128: |v * inv| <= 127 * (1 + 2^-23) rounds to at most 127.
 *
 * ## Product (qlinear): lv_qgemm_int8_rows
 *
 *     acc_g[m, n] = sum over k in group g of q[m, k] * w[n, k]     (int32, exact)
 *     t[m, n]     = (float)acc_0 * wscale[n, 0]
 *                   then t = t + (float)acc_g * wscale[n, g] for g = 1..G-1
 *                   (each product and sum rounded to float32, in that order)
 *     y[m, n]     = t * xscale[m]                                 (rounded)
 *     y[m, n]     = y[m, n] + bias[n]          (when bias != NULL; rounded)
 *     y stored in y's dtype, rounded to nearest even (common.h)
 *
 * Weights may hold any int8 value, -128 included. Exactness bound: |q * w| <=
 * 127 * 128, so every partial sum of K <= LV_QGEMM_K_MAX = 131072 products
 * fits in int32 (131072 * 16256 < 2^31). Larger K returns LV_E_K_TOO_LARGE.
 * Variants may accumulate in any order or with wrap-around (e.g. vpdpbusd on
 * codes + 128 with a row-sum correction): integer addition mod 2^32 gives the
 * exact sum whenever the true sum fits, which the bound guarantees.
 *
 * Activation codes reach the CPU product as q + 128 stored in uint8 (the
 * unsigned operand of vpdpbusd); lv_quantize_int8_rows writes that form when
 * asked (offset128 = 1). They must lie in 1..255 (codes -127..127, which is
 * all quantization produces): the K bound above counts on |q| <= 127.
 *
 * ## Gradient to the input (qlinear_grad_input): lv_qlinear_grad_input_rows
 *
 * The straight-through gradient of y = x W_q^T with W_q[n, k] =
 * w[n, k] * wscale[n, g(k)] (g(k) = k / group_size), times act_scale[k] when
 * the forward quantized x * act_scale:
 *
 *     acc = 0.0f
 *     for n = 0 .. N-1 in order:
 *         s   = gy[m, n] * wscale[n, g(k)]                     (rounded)
 *         acc = fmaf(s, (float)w[n, k], acc)                   (one rounding)
 *     gx[m, k] = acc * act_scale[k]   (when act_scale != NULL; rounded)
 *     gx stored in gx's dtype, rounded to nearest even
 *
 * The dequantized weight is never materialized.
 */
#ifndef LOWVRAM_QGEMM_H
#define LOWVRAM_QGEMM_H

#include <stddef.h>
#include <stdint.h>

#include "lowvram/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest K whose int32 sums are exact for any int8 weights. */
#define LV_QGEMM_K_MAX ((int64_t)131072)
/* Groups whose absmax is below this quantize to zero codes and scale 0. */
#define LV_QUANT_MIN_ABSMAX 0x1p-100f

/*
 * Quantizes rows [r0, r1) of x ([rows, K], dtype xdt, row stride ldx).
 *   act_scale   [K] float32 or NULL.
 *   group_size  <= 0: one scale per row (G = 1); else it must divide K
 *               (G = K / group_size).
 *   q           [rows, K] codes, row stride ldq bytes: int8 when offset128 = 0,
 *               q + 128 as uint8 when offset128 = 1.
 *   scale       [rows, G] float32, row stride G.
 * LV_E_INVALID for K < 1, a group_size that does not divide K, r0 > r1, or a
 * NULL pointer that the range needs.
 */
lv_status lv_quantize_int8_rows(const void *x, lv_dtype xdt, int64_t ldx, int64_t K,
                                const float *act_scale, int64_t group_size, int64_t r0,
                                int64_t r1, void *q, int64_t ldq, float *scale,
                                int offset128);

/*
 * y[m, n] for m in [m0, m1), n in [n0, n1) (contract above).
 *   xu       [M, K] activation codes + 128 (uint8), row stride ldx.
 *   xscale   [M] float32.
 *   w        [N, K] int8, row stride ldw.
 *   wscale   [N, G] float32, row stride G (G = 1 when group_size <= 0;
 *            else group_size divides K and is a multiple of 64).
 *   bias     [N] float32 or NULL.
 *   y        [M, N] in dtype ydt, row stride ldy.
 * LV_E_K_TOO_LARGE when K > LV_QGEMM_K_MAX; LV_E_INVALID for K < 1, bad
 * ranges or group sizes.
 */
lv_status lv_qgemm_int8_rows(const uint8_t *xu, int64_t ldx, const float *xscale,
                             const int8_t *w, int64_t ldw, const float *wscale,
                             int64_t group_size, const float *bias, int64_t K, int64_t m0,
                             int64_t m1, int64_t n0, int64_t n1, void *y, lv_dtype ydt,
                             int64_t ldy);

/*
 * gx[m, k] for m in [m0, m1), k in [k0, k1) (contract above).
 *   gy        [M, N] dtype gdt, row stride ldg.
 *   w         [N, K] int8, row stride ldw.
 *   wscale    [N, G] float32 (G and group_size as for lv_qgemm_int8_rows).
 *   act_scale [K] float32 or NULL.
 *   gx        [M, K] dtype xdt, row stride ldgx.
 */
lv_status lv_qlinear_grad_input_rows(const void *gy, lv_dtype gdt, int64_t ldg,
                                     const int8_t *w, int64_t ldw, const float *wscale,
                                     int64_t group_size, const float *act_scale, int64_t N,
                                     int64_t K, int64_t m0, int64_t m1, int64_t k0,
                                     int64_t k1, void *gx, lv_dtype xdt, int64_t ldgx);

/* The same three, one per variant (same arguments; the dispatching entries
 * above call the variant lv_cpu_isa() names). The _avx2 and _avx512 ones
 * return LV_E_UNSUPPORTED when the build or the CPU lacks them. */
#define LV_QGEMM_DECLARE_VARIANT(sfx)                                                       \
    lv_status lv_quantize_int8_rows_##sfx(const void *x, lv_dtype xdt, int64_t ldx,         \
                                          int64_t K, const float *act_scale,                \
                                          int64_t group_size, int64_t r0, int64_t r1,       \
                                          void *q, int64_t ldq, float *scale,               \
                                          int offset128);                                   \
    lv_status lv_qgemm_int8_rows_##sfx(                                                     \
        const uint8_t *xu, int64_t ldx, const float *xscale, const int8_t *w, int64_t ldw,  \
        const float *wscale, int64_t group_size, const float *bias, int64_t K, int64_t m0,  \
        int64_t m1, int64_t n0, int64_t n1, void *y, lv_dtype ydt, int64_t ldy);            \
    lv_status lv_qlinear_grad_input_rows_##sfx(                                             \
        const void *gy, lv_dtype gdt, int64_t ldg, const int8_t *w, int64_t ldw,            \
        const float *wscale, int64_t group_size, const float *act_scale, int64_t N,         \
        int64_t K, int64_t m0, int64_t m1, int64_t k0, int64_t k1, void *gx, lv_dtype xdt,  \
        int64_t ldgx);

LV_QGEMM_DECLARE_VARIANT(ref)
LV_QGEMM_DECLARE_VARIANT(avx2)
LV_QGEMM_DECLARE_VARIANT(avx512)

/*
 * CUDA launchers (ops/cuda/qgemm.cu), same contract on device pointers.
 * `stream` is a cudaStream_t; work is enqueued there and nothing synchronizes.
 * Activation codes on CUDA are plain int8 (offset128 = 0): __dp4a and
 * cuBLASLt's int8 GEMM take signed operands. LV_E_CUDA when a launch or a
 * library call fails; lv_cuda_last_error() then says which and why.
 */
lv_status lv_cuda_quantize_int8(const void *x, lv_dtype xdt, int64_t ldx, int64_t M, int64_t K,
                                const float *act_scale, int64_t group_size, int8_t *q,
                                int64_t ldq, float *scale, void *stream);

/* Bytes of device workspace lv_cuda_qgemm_int8 needs for these sizes (the
 * int32 products of the cuBLASLt path plus cuBLASLt's own workspace); 0 when
 * the kernel path needs none. */
size_t lv_cuda_qgemm_int8_workspace(int64_t M, int64_t N, int64_t K, int64_t group_size);

/* y = qlinear over all M x N outputs. cublaslt_handle is a cublasLtHandle_t
 * (the caller's, e.g. torch's) or NULL to use the kernel path only. */
lv_status lv_cuda_qgemm_int8(const int8_t *xq, int64_t ldx, const float *xscale,
                             const int8_t *w, int64_t ldw, const float *wscale,
                             int64_t group_size, const float *bias, int64_t M, int64_t N,
                             int64_t K, void *y, lv_dtype ydt, int64_t ldy, void *workspace,
                             size_t workspace_bytes, void *cublaslt_handle, void *stream);

lv_status lv_cuda_qlinear_grad_input(const void *gy, lv_dtype gdt, int64_t ldg,
                                     const int8_t *w, int64_t ldw, const float *wscale,
                                     int64_t group_size, const float *act_scale, int64_t M,
                                     int64_t N, int64_t K, void *gx, lv_dtype xdt,
                                     int64_t ldgx, void *stream);

/* Which path the last successful lv_cuda_qgemm_int8 on this thread took:
 * "kernel" (the __dp4a kernels) or "cublaslt" ("" before any). For tests. */
const char *lv_cuda_qgemm_int8_last_path(void);

/* The last CUDA failure's description on this thread ("" when none). */
const char *lv_cuda_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* LOWVRAM_QGEMM_H */
