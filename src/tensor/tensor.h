/* tensor.h — the arithmetic of each tensor type and the matrix products.
 *
 * One table indexed by mf_type (as ggml's type_traits) gives, per type, the
 * row conversions to and from f32 and the dot product of a weight row with an
 * activation row already converted to the type's vec_dot_type (llama.cpp's
 * choice: f16 weights meet f16 activations, q8_0 weights q8_0 activations).
 * A scalar *_ref kernel exists for every entry; SIMD versions are chosen at
 * run time by CPU features, and MF_FORCE_REF=1 forces the reference ones. */
#ifndef MF_TENSOR_H
#define MF_TENSOR_H

#include "core/core.h"
#include "core/dtype.h"

/* n is a multiple of the type's block size in all of these. */
typedef void (*mf_to_float_fn)(const void *src, float *dst, int64_t n);
typedef void (*mf_from_float_fn)(const float *src, void *dst, int64_t n);
/* *s = dot(x, y) over n elements; x of the weight type, y of its vec_dot_type. */
typedef void (*mf_vec_dot_fn)(int64_t n, float *s, const void *x, const void *y);
/* s[k] = dot(row k, y) for the 4 weight rows x, x + x_stride, ... (bytes);
 * each s[k] is bit-identical to what vec_dot gives for that row. */
typedef void (*mf_vec_dot4_fn)(int64_t n, float s[4], const void *x, uint64_t x_stride,
                               const void *y);

/* Quantize nrows rows of n_per_row values (a multiple of the block size).
 * imatrix (n_per_row importances, e.g. mean squared activation of each
 * input channel) weights the squared error the scale search minimises;
 * NULL gives the type's unweighted rule. Returns the bytes written. */
typedef uint64_t (*mf_quantize_fn)(const float *src, void *dst, int64_t nrows,
                                   int64_t n_per_row, const float *imatrix);

/* Packed (row-interleaved) weight layouts, optional per type: pack one
 * group of pack_rows rows (src_stride bytes apart, n_in elements each) into
 * dst, which takes exactly their row-major bytes; gemm_packed computes
 * y[t*ldy + r] for the group's rows r and n_tok activation rows (act_row
 * bytes apart, of the vec_dot_type), each bit-identical to vec_dot. */
typedef void (*mf_pack_fn)(const void *src, uint64_t src_stride, void *dst, int64_t n_in);
typedef void (*mf_gemm_packed_fn)(int64_t n_in, int n_tok, float *y, int64_t ldy,
                                  const void *group, const void *act, uint64_t act_row);

typedef struct mf_type_traits {
    mf_to_float_fn to_float;      /* NULL: cannot be read */
    mf_from_float_fn from_float;  /* NULL: cannot be written */
    /* How matmul converts activations to this type when it is a vec_dot_type
     * (NULL: from_float). For q8_0 this is llama.cpp's CPU quantizer
     * (scale 127/amax, ties to even), which rounds a few values differently
     * from the reference weight quantizer (1/d, ties away from zero). */
    mf_from_float_fn act_from_float;
    mf_quantize_fn quantize;      /* NULL: from_float row by row (no importance) */
    mf_vec_dot_fn vec_dot;        /* NULL: no matmul for this weight type */
    int vec_dot_type;             /* type activations are converted to */
    mf_vec_dot4_fn vec_dot4;      /* optional, faster: four rows share each y load */
    /* vec_dot4 also beats vec_dot for one token (decoding): set where the
     * one-row kernel is bound by its float chain's latency */
    bool dot4_decode;
    int pack_rows;                  /* 0: no packed layout on this CPU */
    mf_pack_fn pack;
    mf_gemm_packed_fn gemm_packed;
} mf_type_traits;

/* The traits in use (SIMD where available). Entries are NULL for types
 * memfit cannot compute with. */
const mf_type_traits *mf_traits(int type);
/* The scalar reference traits (the spec; tests compare against these). */
const mf_type_traits *mf_traits_ref(int type);
/* Quantize rows with the type's quantize (or from_float); 0 if the type
 * cannot be written or n_per_row is not a whole number of blocks. */
uint64_t mf_quantize_rows(int type, const float *src, void *dst, int64_t nrows,
                          int64_t n_per_row, const float *imatrix);
/* True if type can be used as a matmul weight. */
bool mf_type_can_matmul(int type);

/* fp16 / bf16 scalar conversions (exact IEEE round-to-nearest-even). */
float mf_f16_to_f32(uint16_t h);
uint16_t mf_f32_to_f16(float f);
float mf_bf16_to_f32(uint16_t h);
uint16_t mf_f32_to_bf16(float f);

/* Y(n_tok, n_out) = X(n_tok, n_in) . W(n_out, n_in)^T
 * W: n_out rows of n_in elements of type wtype (row stride = row bytes).
 * X, Y: f32, row-major. The activations are first converted to the weight's
 * vec_dot_type into scratch (mf_matmul_scratch_bytes), then output rows are
 * split across the pool. Bit-identical for any thread count and any n_tok
 * (each output is one vec_dot with a fixed order). */
uint64_t mf_matmul_scratch_bytes(int wtype, int64_t n_in, int64_t n_tok);
void mf_matmul(mf_pool *pool, const void *w, int wtype, int64_t n_in, int64_t n_out,
               const float *x, int64_t n_tok, float *y, void *scratch);

/* mf_matmul_ld for W in its type's packed layout (traits pack_rows > 0,
 * n_out a multiple of pack_rows): the same bits as the row-major W. */
void mf_matmul_packed_ld(mf_pool *pool, const void *w, int wtype, int64_t n_in, int64_t n_out,
                         const float *x, int64_t n_tok, float *y, int64_t ldy, void *scratch);
/* True if a matrix of this type and shape would be packed (MF_NO_REPACK=1
 * in the environment turns packing off, as llama.cpp's --no-repack). */
bool mf_can_pack(int wtype, int64_t n_in, int64_t n_out);
/* Pack rows (n_out x row bytes, row-major) into dst (same size); in place
 * when dst == src (uses a group-sized temporary). False: out of memory. */
bool mf_pack_rows(int wtype, const void *src, void *dst, int64_t n_in, int64_t n_out);

/* The same with Y's rows ldy floats apart (ldy >= n_out): a matrix split
 * into row ranges writes each range's columns of the full Y. */
void mf_matmul_ld(mf_pool *pool, const void *w, int wtype, int64_t n_in, int64_t n_out,
                  const float *x, int64_t n_tok, float *y, int64_t ldy, void *scratch);

/* Convert row `row` of a matrix of type `type` (n_in columns) to f32. */
void mf_get_row(const void *w, int type, int64_t n_in, int64_t row, float *dst);

#endif
