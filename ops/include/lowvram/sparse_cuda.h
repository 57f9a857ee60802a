/*
 * lowvram/sparse_cuda.h — the CUDA launchers of the sparse family
 * (ops/cuda/sparse.cu), same contract as lowvram/sparse.h on device
 * pointers. Every launcher validates its arguments as the CPU kernels do,
 * enqueues work on `stream` (a cudaStream_t), checks every launch and never
 * allocates, prints or synchronizes; LV_E_CUDA carries lv_cuda_last_error()
 * (lowvram/qgemm.h). Activation codes are plain int8, quantized by
 * lv_cuda_quantize_int8 (qgemm.h), as for qlinear.
 *
 * Masks live on the device, so a launcher cannot check them without a
 * synchronization. Instead: kernels never read values past KV or mask bytes
 * past ceil(K / 8) whatever the mask holds (a mask that does not keep exactly
 * KV weights per row gives unspecified outputs, never a bad memory access),
 * and the launchers that take an `int *flags` (device memory, zeroed by the
 * caller) report bad rows there for the shim to raise on.
 *
 * Paths (see ops/cuda/sparse.cu's header for why):
 *   sparse_linear           own kernels for every M (exact contract order:
 *                           16 lanes, fmaf chains, fixed tree) — a warp
 *                           kernel for M <= 16, a shared-memory tile kernel
 *                           above; no cuSPARSE (its summation order is not
 *                           the contract's).
 *   sparse_qlinear          M <= 16: own __dp4a kernel on the compressed
 *                           bytes. M > 16: cuSPARSELt (2:4 masks, per-channel
 *                           scales, when built with it) with int32 output and
 *                           the shared epilogue; otherwise the shim
 *                           decompresses N-chunks into a scratch tile and runs
 *                           lv_cuda_qgemm_int8 (cuBLASLt) — exact either way.
 *   *_grad_input            own tile kernel; fmaf chain over every n.
 */
#ifndef LOWVRAM_SPARSE_CUDA_H
#define LOWVRAM_SPARSE_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "lowvram/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The last CUDA failure's description recorded by these launchers on this
 * thread ("" when none); lv_cuda_last_error() is qgemm.cu's. */
const char *lv_cuda_sparse_last_error(void);

/* flags[0] bits set by the checking launchers. */
#define LV_SPARSE_FLAG_NAN 1      /* nm_mask: a NaN score */
#define LV_SPARSE_FLAG_COUNT 2    /* a row does not keep exactly KV weights (or bits past K) */
#define LV_SPARSE_FLAG_NOT_2_4 4  /* lv_cuda_sparse_check_masks: not every 4 columns keep 2 */

/* keep [N, K] uint8 0/1 (row stride ldk) of score [N, K] f32 (row stride
 * lds); flags[0] |= LV_SPARSE_FLAG_NAN for a NaN score (keep then unspecified). */
lv_status lv_cuda_nm_mask(const float *score, int64_t lds, int64_t N, int64_t K, int n, int m,
                          uint8_t *keep, int64_t ldk, int *flags, void *stream);

/* values [N, KV] + mask_bits [N, KB] of w [N, K] (esz 1, 2 or 4 bytes) under
 * keep; flags[0] |= LV_SPARSE_FLAG_COUNT when a row keeps != KV. */
lv_status lv_cuda_sparse_compress(const void *w, int esz, int64_t ldw, const uint8_t *keep,
                                  int64_t ldk, int64_t N, int64_t K, int64_t KV, void *values,
                                  int64_t ldv, uint8_t *mask_bits, int64_t ldb, int *flags,
                                  void *stream);

/* w [N, K] of values + mask_bits; flags (may be NULL) as above. */
lv_status lv_cuda_sparse_decompress(const void *values, int esz, int64_t ldv,
                                    const uint8_t *mask_bits, int64_t ldb, int64_t N, int64_t K,
                                    int64_t KV, void *w, int64_t ldw, int *flags, void *stream);

/* flags[0] |= LV_SPARSE_FLAG_COUNT for a row without exactly KV set bits
 * (or with bits past K), |= LV_SPARSE_FLAG_NOT_2_4 unless K % 4 == 0 and
 * every 4 aligned columns keep exactly 2. */
lv_status lv_cuda_sparse_check_masks(const uint8_t *mask_bits, int64_t ldb, int64_t N,
                                     int64_t K, int64_t KV, int *flags, void *stream);

/* Bytes of device workspace the product / gradient launchers below need: a
 * table of kept-value offsets per row and 64-column block (int32
 * [N, ceil(K / 64)]); 0 when the launcher needs none for these sizes. */
size_t lv_cuda_sparse_gemm_workspace(int64_t M, int64_t N, int64_t K);
size_t lv_cuda_sparse_grad_workspace(int64_t N, int64_t K);

/* sparse_linear over all M x N outputs (float values). */
lv_status lv_cuda_sparse_gemm(const void *x, lv_dtype xdt, int64_t ldx, const void *values,
                              lv_dtype vdt, int64_t ldv, const uint8_t *mask_bits, int64_t ldb,
                              int64_t KV, const float *bias, int64_t M, int64_t N, int64_t K,
                              void *y, lv_dtype ydt, int64_t ldy, void *workspace,
                              size_t workspace_bytes, void *stream);

/* sparse_qlinear over all M x N outputs with the own __dp4a kernel (any M;
 * the shim uses it for M <= LV_CUDA_SPARSE_SMALL_M). xq int8 codes [M, K]. */
#define LV_CUDA_SPARSE_SMALL_M 16
lv_status lv_cuda_sparse_qgemm_int8(const int8_t *xq, int64_t ldx, const float *xscale,
                                    const int8_t *qvalues, int64_t ldv,
                                    const uint8_t *mask_bits, int64_t ldb, int64_t KV,
                                    const float *wscale, int64_t group_size, const float *bias,
                                    int64_t M, int64_t N, int64_t K, void *y, lv_dtype ydt,
                                    int64_t ldy, void *stream);

/* Input gradients, gx [M, K] (row stride ldgx); workspace as above. */
lv_status lv_cuda_sparse_qlinear_grad_input(const void *gy, lv_dtype gdt, int64_t ldg,
                                            const int8_t *qvalues, int64_t ldv,
                                            const uint8_t *mask_bits, int64_t ldb, int64_t KV,
                                            const float *wscale, int64_t group_size,
                                            const float *act_scale, int64_t M, int64_t N,
                                            int64_t K, void *gx, lv_dtype xdt, int64_t ldgx,
                                            void *workspace, size_t workspace_bytes,
                                            void *stream);
lv_status lv_cuda_sparse_linear_grad_input(const void *gy, lv_dtype gdt, int64_t ldg,
                                           const void *values, lv_dtype vdt, int64_t ldv,
                                           const uint8_t *mask_bits, int64_t ldb, int64_t KV,
                                           int64_t M, int64_t N, int64_t K, void *gx,
                                           lv_dtype xdt, int64_t ldgx, void *workspace,
                                           size_t workspace_bytes, void *stream);

/*
 * cuSPARSELt (2:4 int8 x int8 -> int32 tensor cores). The canonical form is
 * converted once per weight (lv_cuda_cslt_compress on the decompressed int8
 * weight) into cuSPARSELt's opaque compressed layout, which the shim caches
 * (bindings/sparse_cuda.cpp); it is never saved. The product takes the
 * activation codes as xq [Mp, ldx] with Mp = lv_cuda_cslt_rows(M) rows, rows
 * M .. Mp-1 zero. Every cuSPARSELt failure is LV_E_UNSUPPORTED (the caller
 * then takes another path), never a partial write of y.
 */
/* 1 when this build has cuSPARSELt and it works for (N, K) on the current
 * device (library present, shapes it accepts: N % 32 == 0, K % 64 == 0). */
int lv_cuda_cslt_supported(int64_t N, int64_t K);
int64_t lv_cuda_cslt_rows(int64_t M);
/* Bytes of the compressed weight and of the scratch buffer compression needs. */
lv_status lv_cuda_cslt_weight_bytes(int64_t N, int64_t K, size_t *compressed,
                                    size_t *buffer);
/* dense int8 [N, K] (row stride K, a valid 2:4 pattern) -> compressed. */
lv_status lv_cuda_cslt_compress(const int8_t *dense, int64_t N, int64_t K, void *compressed,
                                void *buffer, void *stream);
/* Workspace bytes of lv_cuda_cslt_qgemm_int8 (int32 products + cuSPARSELt's);
 * 0 when no plan exists for the shape (then the product is unsupported). */
size_t lv_cuda_cslt_qgemm_workspace(int64_t M, int64_t N, int64_t K);
/* y = sparse_qlinear with per-channel wscale [N] (G = 1). */
lv_status lv_cuda_cslt_qgemm_int8(const void *compressed, const int8_t *xq, int64_t ldx,
                                  const float *xscale, const float *wscale, const float *bias,
                                  int64_t M, int64_t N, int64_t K, void *y, lv_dtype ydt,
                                  int64_t ldy, void *workspace, size_t workspace_bytes,
                                  void *stream);

#ifdef __cplusplus
}
#endif

#endif /* LOWVRAM_SPARSE_CUDA_H */
