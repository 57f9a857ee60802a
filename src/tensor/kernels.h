/* kernels.h — internal to src/tensor: the kernel functions that types.c puts
 * into the traits tables, and the little-endian block readers they share.
 *
 * Blocks are read through byte pointers and memcpy, never by casting to a
 * struct: weights come from a mapped file and activations from scratch rows
 * whose block size (34 bytes for q8_0) leaves fields at any even offset.
 * Block layouts are ggml's (ggml-common.h); docs/kernels.md lists them. */
#ifndef MF_TENSOR_KERNELS_H
#define MF_TENSOR_KERNELS_H

#include "tensor/tensor.h"

#include <string.h>

#define MF_QK8_0 32
#define MF_Q8_0_BYTES 34 /* f16 d, int8 qs[32] */

static inline uint16_t mf_rd16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline uint32_t mf_rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void mf_wr16(uint8_t *p, uint16_t v) { memcpy(p, &v, sizeof v); }

/* ---- scalar reference kernels (kernels_ref.c, kernels_quant_ref.c) ---- */
void mf_ref_f32_to_float(const void *src, float *dst, int64_t n);
void mf_ref_f32_from_float(const float *src, void *dst, int64_t n);
void mf_ref_f16_to_float(const void *src, float *dst, int64_t n);
void mf_ref_f16_from_float(const float *src, void *dst, int64_t n);
void mf_ref_bf16_to_float(const void *src, float *dst, int64_t n);
void mf_ref_bf16_from_float(const float *src, void *dst, int64_t n);
void mf_ref_q8_0_to_float(const void *src, float *dst, int64_t n);
void mf_ref_q8_0_from_float(const float *src, void *dst, int64_t n);
void mf_ref_q8_0_act_from_float(const float *src, void *dst, int64_t n);

void mf_ref_dot_f32(int64_t n, float *s, const void *x, const void *y);
void mf_ref_dot_f16(int64_t n, float *s, const void *x, const void *y);
void mf_ref_dot_bf16(int64_t n, float *s, const void *x, const void *y);
void mf_ref_dot_q8_0(int64_t n, float *s, const void *x, const void *y);

/* Read-only formats of llama.cpp files (dequantization only). */
void mf_ref_q4_0_to_float(const void *src, float *dst, int64_t n);
void mf_ref_q4_1_to_float(const void *src, float *dst, int64_t n);
void mf_ref_q5_0_to_float(const void *src, float *dst, int64_t n);
void mf_ref_q5_1_to_float(const void *src, float *dst, int64_t n);
void mf_ref_q2_k_to_float(const void *src, float *dst, int64_t n);
void mf_ref_q3_k_to_float(const void *src, float *dst, int64_t n);
void mf_ref_q4_k_to_float(const void *src, float *dst, int64_t n);
void mf_ref_q5_k_to_float(const void *src, float *dst, int64_t n);
void mf_ref_q6_k_to_float(const void *src, float *dst, int64_t n);
void mf_ref_iq4_nl_to_float(const void *src, float *dst, int64_t n);
void mf_ref_iq4_xs_to_float(const void *src, float *dst, int64_t n);

/* ---- AVX2 + FMA + F16C (kernels_avx2.c) ---- */
/* Only called after __builtin_cpu_supports found avx2, fma and f16c.
 * Replace the entries that have AVX2 versions in a table indexed by type. */
void mf_avx2_install(mf_type_traits table[MF_TYPE_COUNT]);

#endif
