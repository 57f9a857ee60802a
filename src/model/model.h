/* model.h — a loaded LLaMA-family model and its forward pass (internal).
 *
 * mf_model binds the tensors of a GGUF (or a llama2.c checkpoint presented as
 * one) to their roles and checks every shape once at load; the forward pass
 * then trusts them. Weights stay in the file mapping: nothing is copied
 * except the small norm vectors, which are converted to f32. */
#ifndef MF_MODEL_H
#define MF_MODEL_H

#include "core/core.h"
#include "io/gguf.h"
#include "text/text.h"

typedef struct mf_weight {
    const void *data;  /* borrowed: the mapping */
    int type;          /* mf_type */
    int64_t n_in;      /* row length (ne[0]) */
    int64_t n_out;     /* rows (ne[1]) */
    const char *name;  /* borrowed from the gguf */
    int id;            /* matrix number in forward order: layer*7 + k, output n_layers*7 */
    bool packed;       /* data in the type's packed layout (tensor.h), not rows */
} mf_weight;

#define MF_LAYER_MATS 7  /* wq wk wv wo w_gate w_up w_down */

typedef struct mf_layer {
    const float *attn_norm;  /* (dim) f32, owned by the model */
    const float *ffn_norm;   /* (dim) */
    mf_weight wq;            /* (n_heads*head_dim, dim) : rows x row length */
    mf_weight wk, wv;        /* (n_kv_heads*head_dim, dim) */
    mf_weight wo;            /* (dim, n_heads*head_dim) */
    mf_weight w_gate, w_up;  /* (n_ff, dim) */
    mf_weight w_down;        /* (dim, n_ff) */
} mf_layer;

typedef struct mf_hparams {
    int n_vocab, dim, n_layers, n_heads, n_kv_heads, head_dim, n_ff;
    int n_ctx_train, rope_dim;
    float rope_base, norm_eps;
} mf_hparams;

struct mf_model {
    mf_gguf *file;
    mf_tokenizer *tok;        /* NULL if the file has none */
    mf_hparams hp;
    mf_weight tok_embd;       /* (n_vocab, dim) */
    mf_weight output;         /* (n_vocab, dim); = tok_embd when tied */
    int tied;
    const float *out_norm;    /* (dim) */
    mf_layer *layers;         /* (n_layers) */
    float *norms;             /* owned storage of all norm vectors */
    char format[16];
    char *path;               /* the file, for streaming */
};

/* Matrix number id (mf_weight.id: layer*7 + k, the output last). */
const mf_weight *mf_model_weight(const mf_model *m, int id);

/* Read hyperparameters and bind tensors; fills m (file already opened). */
mf_status mf_model_bind(mf_model *m);

#endif
