/* info.c — what the public API tells about a loaded model: hyperparameters,
 * the tensor table, and the tokenizer entry points (thin wrappers that
 * check the model has a tokenizer). */
#include "model/model.h"

#include <stdio.h>
#include <string.h>

void mf_model_get_info(const mf_model *m, mf_model_info *info) {
    memset(info, 0, sizeof *info);
    const mf_hparams *hp = &m->hp;
    snprintf(info->arch, sizeof info->arch, "llama");
    snprintf(info->file_format, sizeof info->file_format, "%s", m->format);
    info->n_vocab = hp->n_vocab;
    info->dim = hp->dim;
    info->n_layers = hp->n_layers;
    info->n_heads = hp->n_heads;
    info->n_kv_heads = hp->n_kv_heads;
    info->head_dim = hp->head_dim;
    info->n_ff = hp->n_ff;
    info->n_ctx_train = hp->n_ctx_train;
    info->rope_dim = hp->rope_dim;
    info->rope_base = hp->rope_base;
    info->norm_eps = hp->norm_eps;
    info->tied_embeddings = m->tied;
    info->n_tensors = (int)m->file->n_tensors;
    for (uint64_t i = 0; i < m->file->n_tensors; i++) {
        const mf_gguf_tensor *t = &m->file->tensors[i];
        info->n_params += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
        info->n_bytes += t->n_bytes;
    }
    snprintf(info->tokenizer, sizeof info->tokenizer, "%s",
             m->tok ? mf_tokenizer_model(m->tok) : "none");
}

mf_status mf_model_tensor(const mf_model *m, int i, mf_tensor_info *out) {
    if (i < 0 || (uint64_t)i >= m->file->n_tensors)
        return mf_errorf(MF_E_INVALID, "tensor index %d out of range", i);
    const mf_gguf_tensor *t = &m->file->tensors[i];
    out->name = t->name;
    out->n_dims = t->n_dims;
    for (int d = 0; d < 4; d++) out->ne[d] = t->ne[d];
    out->type_name = mf_type_name(t->type);
    out->n_bytes = t->n_bytes;
    return MF_OK;
}

int32_t mf_token_bos(const mf_model *m) { return m->tok ? mf_tokenizer_bos(m->tok) : -1; }
int32_t mf_token_eos(const mf_model *m) { return m->tok ? mf_tokenizer_eos(m->tok) : -1; }

static mf_status need_tok(const mf_model *m) {
    if (!m->tok)
        return mf_errorf(MF_E_UNSUPPORTED, "the model has no tokenizer (give one with -z, "
                         "or pass token ids)");
    return MF_OK;
}

mf_status mf_tokenize(const mf_model *m, const char *text, size_t len, int add_bos,
                      int32_t *ids, int cap, int *n_out) {
    TRY(need_tok(m));
    return mf_tokenizer_encode(m->tok, text, len, add_bos != 0, false, ids, cap, n_out);
}

mf_status mf_token_to_piece(const mf_model *m, int32_t prev, int32_t id, char *buf,
                            size_t cap, size_t *len) {
    TRY(need_tok(m));
    return mf_tokenizer_piece(m->tok, prev, id, buf, cap, len);
}
