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
/* The f32 scale d at the start of a q8_K block. */
static inline float mf_q8k_d(const uint8_t *p) {
    float d;
    memcpy(&d, p, sizeof d);
    return d;
}

/* ggml's nearest_int: adding 1.5*2^23 leaves round-to-nearest-even of v in
 * the low mantissa bits (|v| < 2^22; bounded garbage, never UB, outside). */
static inline int mf_nearest_int(float v) {
    float t = v + 12582912.0f;
    uint32_t u;
    memcpy(&u, &t, sizeof u);
    return (int)(u & 0x007fffff) - 0x00400000;
}
static inline int mf_clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* ggml's make_qkx2_quants (quant_search.c): x ~ scale*L - min over n <= 32
 * values, L in 0..nmax, min <= 0; starts from the range fit, then tries
 * iscale = (nmax + rmin + rdelta*k)/(max - min), k = 0..nstep, each refined by
 * weighted least squares; keeps the smallest weighted error (|e| when
 * use_mad, else e^2). Returns the scale, stores -min in *the_min. */
typedef struct mf_qkx_search {
    float rmin, rdelta;
    int nstep;
    bool use_mad;
} mf_qkx_search;
float mf_qkx2_quants(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min,
                     const mf_qkx_search *sp);

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

/* ---- k-quants: q8_K activations, q4_K/q5_K/q6_K (kernels_k_ref.c) ---- */
#define MF_QK_K 256
#define MF_Q8_K_BYTES 292 /* f32 d @0, i8 qs[256] @4, i16 bsums[16] @260 */
/* llama.cpp's q8_K quantizer (activations): iscale = -127/max where max is
 * the value of largest |x| with its sign, q = nearest (ties even), d = 1/iscale;
 * bsums[g] = sum of qs[16g..16g+15]. */
void mf_ref_q8_k_from_float(const float *src, void *dst, int64_t n);
void mf_ref_q8_k_to_float(const void *src, float *dst, int64_t n);
uint64_t mf_ref_quantize_q4_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix);
uint64_t mf_ref_quantize_q5_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix);
uint64_t mf_ref_quantize_q6_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix);
void mf_ref_q4_k_from_float(const float *src, void *dst, int64_t n);
void mf_ref_q5_k_from_float(const float *src, void *dst, int64_t n);
void mf_ref_q6_k_from_float(const float *src, void *dst, int64_t n);
void mf_ref_dot_q4_k(int64_t n, float *s, const void *x, const void *y);

/* ---- packed x16 layouts (pack.c): 16 rows interleaved per group ---- */
#define MF_Q4K_X16_BYTES (16 * 144) /* one super-block of a 16-row group */
/* Pack rows 0..15 (src_stride bytes apart) of n_in elements into one group
 * at dst (16 x row bytes); unpack is the inverse (for tests). */
void mf_pack_q4_k_x16(const void *src, uint64_t src_stride, void *dst, int64_t n_in);
void mf_unpack_q4_k_x16(const void *src, void *dst, uint64_t dst_stride, int64_t n_in);
#define MF_Q8_0_X16_BYTES (16 * 34) /* one 32-column block of a 16-row group */
#define MF_Q5K_X16_BYTES (16 * 176) /* one super-block of a 16-row group */
void mf_pack_q5_k_x16(const void *src, uint64_t src_stride, void *dst, int64_t n_in);
void mf_unpack_q5_k_x16(const void *src, void *dst, uint64_t dst_stride, int64_t n_in);
#define MF_Q6K_X16_BYTES (16 * 210) /* one super-block of a 16-row group */
void mf_pack_q6_k_x16(const void *src, uint64_t src_stride, void *dst, int64_t n_in);
void mf_unpack_q6_k_x16(const void *src, void *dst, uint64_t dst_stride, int64_t n_in);
/* q4_0 and iq4_nl share one packed layout (18-byte blocks) */
#define MF_Q4_0_X16_BYTES (16 * 18)
void mf_pack_q4_0_x16(const void *src, uint64_t src_stride, void *dst, int64_t n_in);
void mf_unpack_q4_0_x16(const void *src, void *dst, uint64_t dst_stride, int64_t n_in);
/* iq4_nl's 16 levels plus 128 (kernels_q32_ref.c) */
extern const uint8_t mf_iq4nl_levels_u[16];
void mf_pack_q8_0_x16(const void *src, uint64_t src_stride, void *dst, int64_t n_in);
void mf_unpack_q8_0_x16(const void *src, void *dst, uint64_t dst_stride, int64_t n_in);
void mf_ref_dot_q5_k(int64_t n, float *s, const void *x, const void *y);
void mf_ref_dot_q6_k(int64_t n, float *s, const void *x, const void *y);
/* AVX2 versions (kernels_k_avx2.c), installed by mf_avx2_install. */
void mf_avx2_install_k(mf_type_traits table[MF_TYPE_COUNT]);

/* ---- q2_K, q3_K, iq4_xs: quantizers and dots with q8_K (kernels_k2_ref.c) ---- */
uint64_t mf_ref_quantize_q2_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix);
uint64_t mf_ref_quantize_q3_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix);
uint64_t mf_ref_quantize_iq4_xs(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                                const float *imatrix);
void mf_ref_q2_k_from_float(const float *src, void *dst, int64_t n);
void mf_ref_q3_k_from_float(const float *src, void *dst, int64_t n);
void mf_ref_iq4_xs_from_float(const float *src, void *dst, int64_t n);
void mf_ref_dot_q2_k(int64_t n, float *s, const void *x, const void *y);
void mf_ref_dot_q3_k(int64_t n, float *s, const void *x, const void *y);
void mf_ref_dot_iq4_xs(int64_t n, float *s, const void *x, const void *y);
/* AVX2 versions (kernels_k2_avx2.c), installed by mf_avx2_install. */
void mf_avx2_install_k2(mf_type_traits table[MF_TYPE_COUNT]);

/* ---- 32-blocks q4_0, q4_1, q5_0, q5_1, iq4_nl and q8_1 (kernels_q32_ref.c) ---- */
#define MF_Q4_0_BYTES 18   /* f16 d, u8 qs[16] */
#define MF_Q4_1_BYTES 20   /* f16 d, f16 m, u8 qs[16] */
#define MF_Q5_0_BYTES 22   /* f16 d, u8 qh[4], u8 qs[16] */
#define MF_Q5_1_BYTES 24   /* f16 d, f16 m, u8 qh[4], u8 qs[16] */
#define MF_IQ4_NL_BYTES 18 /* f16 d, u8 qs[16] */
#define MF_Q8_1_BYTES 36   /* f16 d, f16 s = d*sum(qs), i8 qs[32] */
void mf_ref_q8_1_to_float(const void *src, float *dst, int64_t n);
void mf_ref_q8_1_from_float(const float *src, void *dst, int64_t n);
void mf_ref_q8_1_act_from_float(const float *src, void *dst, int64_t n);
void mf_ref_q4_0_from_float(const float *src, void *dst, int64_t n);
void mf_ref_q4_1_from_float(const float *src, void *dst, int64_t n);
void mf_ref_q5_0_from_float(const float *src, void *dst, int64_t n);
void mf_ref_q5_1_from_float(const float *src, void *dst, int64_t n);
void mf_ref_iq4_nl_from_float(const float *src, void *dst, int64_t n);
uint64_t mf_ref_quantize_q4_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix);
uint64_t mf_ref_quantize_q4_1(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix);
uint64_t mf_ref_quantize_q5_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix);
uint64_t mf_ref_quantize_q5_1(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                              const float *imatrix);
uint64_t mf_ref_quantize_iq4_nl(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                                const float *imatrix);
void mf_ref_dot_q4_0(int64_t n, float *s, const void *x, const void *y);
void mf_ref_dot_q4_1(int64_t n, float *s, const void *x, const void *y);
void mf_ref_dot_q5_0(int64_t n, float *s, const void *x, const void *y);
void mf_ref_dot_q5_1(int64_t n, float *s, const void *x, const void *y);
void mf_ref_dot_iq4_nl(int64_t n, float *s, const void *x, const void *y);
/* AVX2 versions (kernels_q32_avx2.c), installed by mf_avx2_install. */
void mf_avx2_install_q32(mf_type_traits table[MF_TYPE_COUNT]);

/* ---- AVX2 + FMA + F16C (kernels_avx2.c) ---- */
/* Only called after __builtin_cpu_supports found avx2, fma and f16c.
 * Replace the entries that have AVX2 versions in a table indexed by type. */
void mf_avx2_install(mf_type_traits table[MF_TYPE_COUNT]);

/* ---- AVX-512 F/BW/VL/VNNI (kernels_*_avx512.c) ---- */
/* Only called after __builtin_cpu_supports found avx512f, avx512bw,
 * avx512vl and avx512vnni (and after mf_avx2_install). */
void mf_avx512_install(mf_type_traits table[MF_TYPE_COUNT]);
void mf_avx512_install_q32(mf_type_traits table[MF_TYPE_COUNT]);
void mf_avx512_install_k(mf_type_traits table[MF_TYPE_COUNT]);
void mf_avx512_install_pack(mf_type_traits table[MF_TYPE_COUNT]);

/* ---- NEON (kernels_*_neon.c, aarch64 only) ---- */
/* NEON is part of the aarch64 base ISA: types.c installs these there with no
 * CPU check (unless MF_FORCE_REF). Every kernel equals its reference bit for
 * bit. */
void mf_neon_install(mf_type_traits table[MF_TYPE_COUNT]);
void mf_neon_install_q32(mf_type_traits table[MF_TYPE_COUNT]);
void mf_neon_install_k(mf_type_traits table[MF_TYPE_COUNT]);
void mf_neon_install_k2(mf_type_traits table[MF_TYPE_COUNT]);

#endif
