/* dtype.h — tensor type ids and their block layouts.
 *
 * The ids are GGML's (GGUF stores them in tensor infos), so a file written by
 * llama.cpp reads here unchanged. The layout (elements per block, bytes per
 * block) is all that file parsing needs; the arithmetic of each type lives in
 * src/tensor. Lives in core because io, tensor and model all need it. */
#ifndef MF_DTYPE_H
#define MF_DTYPE_H

#include <stdbool.h>
#include <stdint.h>

typedef enum mf_type {
    MF_TYPE_F32 = 0, MF_TYPE_F16 = 1, MF_TYPE_Q4_0 = 2, MF_TYPE_Q4_1 = 3,
    MF_TYPE_Q5_0 = 6, MF_TYPE_Q5_1 = 7, MF_TYPE_Q8_0 = 8, MF_TYPE_Q8_1 = 9,
    MF_TYPE_Q2_K = 10, MF_TYPE_Q3_K = 11, MF_TYPE_Q4_K = 12, MF_TYPE_Q5_K = 13,
    MF_TYPE_Q6_K = 14, MF_TYPE_Q8_K = 15, MF_TYPE_IQ2_XXS = 16, MF_TYPE_IQ2_XS = 17,
    MF_TYPE_IQ3_XXS = 18, MF_TYPE_IQ1_S = 19, MF_TYPE_IQ4_NL = 20, MF_TYPE_IQ3_S = 21,
    MF_TYPE_IQ2_S = 22, MF_TYPE_IQ4_XS = 23, MF_TYPE_I8 = 24, MF_TYPE_I16 = 25,
    MF_TYPE_I32 = 26, MF_TYPE_I64 = 27, MF_TYPE_F64 = 28, MF_TYPE_IQ1_M = 29,
    MF_TYPE_BF16 = 30, MF_TYPE_TQ1_0 = 34, MF_TYPE_TQ2_0 = 35,
    MF_TYPE_COUNT = 36
} mf_type;

typedef struct mf_type_layout {
    const char *name;   /* NULL: not a type id */
    int block;          /* elements per block */
    int bytes;          /* bytes per block */
} mf_type_layout;

/* NULL if t is not a known type id. */
const mf_type_layout *mf_type_layout_of(int t);
const char *mf_type_name(int t);            /* "?" if unknown */
/* Type id for a name such as "q8_0" or "Q8_0"; -1 if none. */
int mf_type_from_name(const char *name);
/* Bytes of a row of n elements; false if n is not a whole number of blocks
 * or the size overflows. */
bool mf_type_row_bytes(int t, uint64_t n, uint64_t *bytes);

#endif
