/* quant.h — quantizing whole model files, and the importance matrix (internal).
 *
 * Three parts: the mixture rules (mixture.c: which type each tensor of a file
 * gets for a name such as "q4_k_m", as llama.cpp's llama_tensor_get_type
 * decides), the file quantizer (quantize.c: streams tensors through
 * mf_quantize_rows into the GGUF writer), and the importance matrix store
 * (imatrix.c: per-tensor mean squared activations, llama.cpp's legacy .dat
 * file). Collecting an importance matrix needs a model, so it lives above,
 * in src/calib, and feeds this store through mf_imatrix_add. */
#ifndef MF_QUANT_H
#define MF_QUANT_H

#include "core/core.h"
#include "io/gguf.h"

/* ---- mixtures ---- */

/* llama.cpp's llama_ftype values (general.file_type) memfit writes. */
enum {
    MF_FTYPE_ALL_F32 = 0, MF_FTYPE_F16 = 1, MF_FTYPE_Q4_0 = 2, MF_FTYPE_Q4_1 = 3,
    MF_FTYPE_Q8_0 = 7, MF_FTYPE_Q5_0 = 8, MF_FTYPE_Q5_1 = 9, MF_FTYPE_Q2_K = 10,
    MF_FTYPE_Q3_K_S = 11, MF_FTYPE_Q3_K_M = 12, MF_FTYPE_Q3_K_L = 13, MF_FTYPE_Q4_K_S = 14,
    MF_FTYPE_Q4_K_M = 15, MF_FTYPE_Q5_K_S = 16, MF_FTYPE_Q5_K_M = 17, MF_FTYPE_Q6_K = 18,
    MF_FTYPE_Q2_K_S = 21, MF_FTYPE_IQ4_NL = 25, MF_FTYPE_IQ4_XS = 30, MF_FTYPE_BF16 = 32
};

typedef struct mf_quant_mixture {
    const char *name;  /* "q4_k_m" */
    int ftype;         /* MF_FTYPE_* */
    int base;          /* mf_type most matrices get */
} mf_quant_mixture;

/* The mixture of a name (case-insensitive), or NULL. */
const mf_quant_mixture *mf_quant_mixture_find(const char *name);
const mf_quant_mixture *mf_quant_mixture_at(int i); /* NULL past the end */

/* What one tensor becomes. */
typedef struct mf_quant_choice {
    int type;       /* the type written */
    int wanted;     /* the rules' choice before the row-length fallback */
    bool fallback;  /* wanted's block does not divide the row length */
    bool copy;      /* bytes copied unchanged (not a matrix, or already `type`) */
} mf_quant_choice;

/* The order llama.cpp writes a quantized file's tensors in (its loader's
 * weight_name_comparer): tensors outside the blocks first, then block by
 * block, by name within each. order receives n_tensors source indices. */
mf_status mf_quant_order(const mf_gguf *g, int *order);
/* Choose a type for each of g's n_tensors tensors, visiting them in `order`
 * (layer counters advance in that order); out is indexed like g->tensors. */
mf_status mf_quant_plan(const mf_gguf *g, const int *order, const mf_quant_mixture *mx,
                        bool pure, bool has_imatrix, mf_quant_choice *out);

/* ---- the importance matrix store ---- */

mf_status mf_imatrix_create(mf_imatrix **out);
/* Add the squares of n_tok rows of x (n_in floats each) to the entry `name`
 * (created on first use; a later call with another n_in is an error). */
mf_status mf_imatrix_add(mf_imatrix *im, const char *name, const float *x, int64_t n_in,
                         int n_tok);
/* One calibration window has ended. */
void mf_imatrix_end_chunk(mf_imatrix *im);
/* Make the means mf_imatrix_get returns (after the last mf_imatrix_add). */
void mf_imatrix_finish(mf_imatrix *im);
/* Parse a .dat image in memory (name for messages). */
mf_status mf_imatrix_parse(const void *data, uint64_t size, const char *name, mf_imatrix **out);

#endif
