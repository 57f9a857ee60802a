/*
 * lowvram/accum.h — the contract of fused multi-tensor gradient accumulation
 * (torch.ops.lowvram.grad_accum_). ops/cpu/accum_ref.c is this contract in
 * scalar C; the AVX2, AVX-512 and CUDA variants match it bit for bit.
 *
 * ## Math (one rounding)
 *
 * For every tensor t of the list and every element i of it:
 *
 *     acc[t][i] = fmaf(scale, (float)g[t][i], acc[t][i])
 *
 * acc is float32; g is float32, bfloat16 or float16 (each tensor its own
 * dtype), converted to float32 exactly (lowvram/convert.h). The product and
 * the sum are rounded once, to nearest even, as one fused multiply-add:
 * vfmadd on x86, __fmaf_rn on CUDA. There is nothing else: no special case
 * for NaN or Inf (they propagate as IEEE says: 0 * Inf = NaN, Inf - Inf =
 * NaN), no flush of subnormals (the kernels never set FTZ/DAZ; a caller's
 * MXCSR is the caller's), and the scale is whatever the caller passes (the
 * torch shim refuses a NaN or infinite scale; the kernels do not check).
 * Which NaN comes out when two meet is not specified (x86 propagates one
 * operand's payload, and vcvtph2ps quietens a signalling f16 NaN while the
 * scalar conversion keeps its bits); that the result is NaN is.
 *
 * Every element is computed alone, from its own acc and g, so the result is
 * bit-identical whatever the split of elements across threads, chunks,
 * vector widths or CUDA blocks.
 *
 * ## Layout
 *
 * The list is seen as one concatenation of its tensors' elements: tensor t
 * holds global elements [offsets[t], offsets[t + 1]) (offsets[0] = 0,
 * non-decreasing; empty tensors allowed). Entry points take a global range
 * [e0, e1) of that concatenation, so that a caller splits the whole list
 * across threads in one parallel region (multi-tensor apply). Every tensor
 * is contiguous (the torch shim copies a non-contiguous gradient to a
 * contiguous temporary first; accumulators must be contiguous). Aliasing: an
 * acc may be its own g (same address, float32: acc += scale * acc is still
 * elementwise); no other overlap between an acc and anything is allowed (the
 * shim checks).
 *
 * Kernels never start threads, allocate, print or exit; they return an
 * lv_status.
 */
#ifndef LOWVRAM_ACCUM_H
#define LOWVRAM_ACCUM_H

#include <stddef.h>
#include <stdint.h>

#include "lowvram/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * acc[i] = fmaf(scale, (float)g[i], acc[i]) for i in [0, n) of one
 * contiguous tensor. LV_E_INVALID for n < 0, a NULL pointer when n > 0 or an
 * unknown dtype.
 */
lv_status lv_grad_accum_span(float *acc, const void *g, lv_dtype gdt, float scale, int64_t n);

/*
 * The same over the global elements [e0, e1) of a list of `count` tensors
 * (layout above): acc[t] float32, g[t] of dtype gdt[t], offsets[count + 1].
 * Each tensor's part of the range goes to lv_grad_accum_span.
 * LV_E_INVALID for count < 0, e0 < 0, e1 < e0, e1 > offsets[count],
 * decreasing offsets, or a NULL pointer that the range needs.
 */
lv_status lv_grad_accum_multi(float *const *acc, const void *const *g, const lv_dtype *gdt,
                              const int64_t *offsets, int64_t count, float scale, int64_t e0,
                              int64_t e1);

/* lv_grad_accum_span, one per variant (the dispatching entries above call the
 * one lv_cpu_isa() names). _avx2 and _avx512 return LV_E_UNSUPPORTED when
 * the CPU lacks them. */
lv_status lv_grad_accum_span_ref(float *acc, const void *g, lv_dtype gdt, float scale, int64_t n);
lv_status lv_grad_accum_span_avx2(float *acc, const void *g, lv_dtype gdt, float scale,
                                  int64_t n);
lv_status lv_grad_accum_span_avx512(float *acc, const void *g, lv_dtype gdt, float scale,
                                    int64_t n);

/*
 * CUDA launcher (ops/cuda/accum.cu): the whole list in one kernel launch on
 * `stream` (a cudaStream_t). `meta` is a device array of int64 words: acc
 * pointers, g pointers, gdt (lv_dtype values) and offsets, laid out as
 *     meta[0 .. count)            acc[t]   (as int64 bit patterns of pointers)
 *     meta[count .. 2 count)      g[t]
 *     meta[2 count .. 3 count)    gdt[t]
 *     meta[3 count .. 4 count]    offsets[0 .. count]
 * i.e. 4 * count + 1 words in all; `total` = offsets[count] (the host knows
 * it; the kernel does not read it back). Nothing synchronizes or allocates.
 * LV_E_INVALID for count < 0, total < 0 or a NULL meta when total > 0;
 * LV_E_CUDA when the launch fails (lv_cuda_accum_last_error() says why).
 */
lv_status lv_cuda_grad_accum(const int64_t *meta, int64_t count, int64_t total, float scale,
                             void *stream);

/* Words of `meta` for `count` tensors: 4 * count + 1. */
static inline int64_t lv_grad_accum_meta_words(int64_t count) { return 4 * count + 1; }

/* The last CUDA failure of lv_cuda_grad_accum on this thread ("" when none). */
const char *lv_cuda_accum_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* LOWVRAM_ACCUM_H */
