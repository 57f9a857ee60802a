/* load.c — opening a model file and binding its tensors to LLaMA roles.
 *
 * Reads the llama.* hyperparameters (with llama.cpp's defaults where a key is
 * optional), finds every tensor by its GGUF name, and checks each shape and
 * type against the hyperparameters so the forward pass never meets a
 * surprise. llama2.c checkpoints arrive here already dressed as GGUF. */
#include "model/model.h"

#include "io/llama2c.h"
#include "tensor/tensor.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static mf_status get_dim(const mf_gguf *g, const char *key, int *out, bool required,
                         int dflt) {
    int64_t v;
    if (!mf_gguf_get_int(g, key, &v)) {
        if (required) return mf_errorf(MF_E_FORMAT, "missing metadata key '%s'", key);
        *out = dflt;
        return MF_OK;
    }
    if (v <= 0 || v > (1 << 24))
        return mf_errorf(MF_E_FORMAT, "metadata '%s' = %lld is out of range", key,
                         (long long)v);
    *out = (int)v;
    return MF_OK;
}

static mf_status read_hparams(const mf_gguf *g, mf_hparams *hp) {
    const mf_gguf_str *arch = mf_gguf_get_str(g, "general.architecture");
    if (!arch) return mf_errorf(MF_E_FORMAT, "missing metadata key 'general.architecture'");
    if (arch->len != 5 || memcmp(arch->ptr, "llama", 5) != 0)
        return mf_errorf(MF_E_UNSUPPORTED, "architecture '%.*s' is not supported (only llama)",
                         (int)(arch->len > 64 ? 64 : arch->len), arch->ptr);
    TRY(get_dim(g, "llama.embedding_length", &hp->dim, true, 0));
    TRY(get_dim(g, "llama.block_count", &hp->n_layers, true, 0));
    TRY(get_dim(g, "llama.feed_forward_length", &hp->n_ff, true, 0));
    TRY(get_dim(g, "llama.attention.head_count", &hp->n_heads, true, 0));
    TRY(get_dim(g, "llama.attention.head_count_kv", &hp->n_kv_heads, false, hp->n_heads));
    TRY(get_dim(g, "llama.context_length", &hp->n_ctx_train, false, 2048));
    if (hp->dim % hp->n_heads)
        return mf_errorf(MF_E_FORMAT, "embedding length %d is not a multiple of %d heads",
                         hp->dim, hp->n_heads);
    if (hp->n_heads % hp->n_kv_heads)
        return mf_errorf(MF_E_FORMAT, "%d heads are not a multiple of %d KV heads",
                         hp->n_heads, hp->n_kv_heads);
    hp->head_dim = hp->dim / hp->n_heads;
    TRY(get_dim(g, "llama.rope.dimension_count", &hp->rope_dim, false, hp->head_dim));
    if (hp->rope_dim > hp->head_dim || hp->rope_dim % 2)
        return mf_errorf(MF_E_FORMAT, "rope dimension %d does not fit head size %d",
                         hp->rope_dim, hp->head_dim);
    double v;
    hp->rope_base = mf_gguf_get_float(g, "llama.rope.freq_base", &v) ? (float)v : 10000.0f;
    hp->norm_eps = mf_gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", &v)
                       ? (float)v : 1e-5f;
    if (!(hp->rope_base > 0) || !(hp->norm_eps >= 0))
        return mf_errorf(MF_E_FORMAT, "bad rope.freq_base or layer_norm_rms_epsilon");
    return MF_OK;
}

/* Find a 2-D (or 1-D when n_out == 0) tensor of the expected shape. */
static mf_status find(const mf_gguf *g, const char *name, int64_t n_in, int64_t n_out,
                      const mf_gguf_tensor **out) {
    const mf_gguf_tensor *t = mf_gguf_find_tensor(g, name);
    if (!t) return mf_errorf(MF_E_FORMAT, "missing tensor '%s'", name);
    int64_t want1 = n_out ? n_out : 1;
    if (t->ne[0] != n_in || t->ne[1] != want1 || t->ne[2] != 1 || t->ne[3] != 1)
        return mf_errorf(MF_E_FORMAT,
                         "tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]",
                         name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                         (long long)t->ne[3], (long long)n_in, (long long)want1);
    *out = t;
    return MF_OK;
}

static mf_status bind_weight(const mf_gguf *g, const char *name, int64_t n_in, int64_t n_out,
                             int id, mf_weight *w) {
    const mf_gguf_tensor *t;
    TRY(find(g, name, n_in, n_out, &t));
    if (!mf_type_can_matmul(t->type))
        return mf_errorf(MF_E_UNSUPPORTED, "tensor '%s' has type %s, which memfit cannot "
                         "multiply yet", name, mf_type_name(t->type));
    w->data = t->data;
    w->type = t->type;
    w->n_in = n_in;
    w->n_out = n_out;
    w->name = t->name;
    w->id = id;
    return MF_OK;
}

/* Norm vectors are read with pread, not through the mapping: touching the
 * mapping can fault in whole large folios around them (megabytes), which a
 * memory budget would then have to pay for. */
static mf_status bind_norm(const mf_model *m, int fd, const char *name, int64_t dim, float *dst) {
    const mf_gguf_tensor *t;
    TRY(find(m->file, name, dim, 0, &t));
    const mf_type_traits *tr = mf_traits(t->type);
    if (!tr || !tr->to_float || dim % mf_type_layout_of(t->type)->block)
        return mf_errorf(MF_E_UNSUPPORTED, "norm tensor '%s' has type %s", name,
                         mf_type_name(t->type));
    uint8_t *raw = malloc((size_t)t->n_bytes);
    if (!raw) return mf_errorf(MF_E_NOMEM, "out of memory");
    uint64_t off = (uint64_t)((const uint8_t *)t->data - m->file->base), got = 0;
    mf_status st = mf_pread_full(fd, raw, t->n_bytes, off, &got);
    if (st == MF_OK && got < t->n_bytes)
        st = mf_errorf(MF_E_IO, "tensor '%s': unexpected end of file", name);
    if (st != MF_OK) {
        free(raw);
        return st;
    }
    tr->to_float(raw, dst, dim);
    free(raw);
    return MF_OK;
}

static mf_status bind_layer(mf_model *m, int fd, int l, float *norms) {
    const mf_gguf *g = m->file;
    const mf_hparams *hp = &m->hp;
    mf_layer *L = &m->layers[l];
    int64_t q_out = (int64_t)hp->n_heads * hp->head_dim;
    int64_t kv_out = (int64_t)hp->n_kv_heads * hp->head_dim;
    char name[96];
#define NAME(s) (snprintf(name, sizeof name, "blk.%d.%s.weight", l, s), name)
    TRY(bind_norm(m, fd, NAME("attn_norm"), hp->dim, norms));
    TRY(bind_norm(m, fd, NAME("ffn_norm"), hp->dim, norms + hp->dim));
    L->attn_norm = norms;
    L->ffn_norm = norms + hp->dim;
    int id = l * MF_LAYER_MATS;
    TRY(bind_weight(g, NAME("attn_q"), hp->dim, q_out, id, &L->wq));
    TRY(bind_weight(g, NAME("attn_k"), hp->dim, kv_out, id + 1, &L->wk));
    TRY(bind_weight(g, NAME("attn_v"), hp->dim, kv_out, id + 2, &L->wv));
    TRY(bind_weight(g, NAME("attn_output"), q_out, hp->dim, id + 3, &L->wo));
    TRY(bind_weight(g, NAME("ffn_gate"), hp->dim, hp->n_ff, id + 4, &L->w_gate));
    TRY(bind_weight(g, NAME("ffn_up"), hp->dim, hp->n_ff, id + 5, &L->w_up));
    TRY(bind_weight(g, NAME("ffn_down"), hp->n_ff, hp->dim, id + 6, &L->w_down));
#undef NAME
    return MF_OK;
}

static mf_status bind_vocab_size(mf_model *m) {
    const mf_gguf_tensor *t = mf_gguf_find_tensor(m->file, "token_embd.weight");
    if (!t) return mf_errorf(MF_E_FORMAT, "missing tensor 'token_embd.weight'");
    if (t->ne[1] <= 0 || t->ne[1] > (1 << 24))
        return mf_errorf(MF_E_FORMAT, "token_embd.weight has %lld rows", (long long)t->ne[1]);
    m->hp.n_vocab = (int)t->ne[1];
    if (m->tok && mf_tokenizer_n_vocab(m->tok) > m->hp.n_vocab)
        return mf_errorf(MF_E_FORMAT, "the tokenizer has %d tokens but the model only %d",
                         mf_tokenizer_n_vocab(m->tok), m->hp.n_vocab);
    return MF_OK;
}

static mf_status bind_all(mf_model *m, int fd) {
    mf_hparams *hp = &m->hp;
    TRY(read_hparams(m->file, hp));
    TRY(bind_vocab_size(m));
    uint64_t n_norm = (uint64_t)(2 * hp->n_layers + 1) * (uint64_t)hp->dim;
    m->norms = calloc(n_norm, sizeof(float));
    m->layers = calloc((size_t)hp->n_layers, sizeof(mf_layer));
    if (!m->norms || !m->layers) return mf_errorf(MF_E_NOMEM, "out of memory binding tensors");
    TRY(bind_weight(m->file, "token_embd.weight", hp->dim, hp->n_vocab, -1, &m->tok_embd));
    for (int l = 0; l < hp->n_layers; l++)
        TRY(bind_layer(m, fd, l, m->norms + (size_t)2 * l * hp->dim));
    float *on = m->norms + (size_t)2 * hp->n_layers * hp->dim;
    TRY(bind_norm(m, fd, "output_norm.weight", hp->dim, on));
    m->out_norm = on;
    m->tied = mf_gguf_find_tensor(m->file, "output.weight") == NULL;
    int out_id = hp->n_layers * MF_LAYER_MATS;
    if (m->tied) {
        m->output = m->tok_embd;
        m->output.id = out_id;
    } else TRY(bind_weight(m->file, "output.weight", hp->dim, hp->n_vocab, out_id, &m->output));
    return MF_OK;
}

mf_status mf_model_bind(mf_model *m) {
    int fd = open(m->path, O_RDONLY);
    if (fd < 0) return mf_errorf(MF_E_IO, "cannot open '%s': %s", m->path, strerror(errno));
    mf_status st = bind_all(m, fd);
    close(fd);
    return st;
}

static mf_status open_file(mf_model *m, const char *path, const mf_model_params *p) {
    if (mf_llama2c_sniff(path)) {
        snprintf(m->format, sizeof m->format, "llama2c");
        TRY(mf_llama2c_open(path, &m->file));
        if (p && p->tokenizer_path) {
            mf_llama2c_vocab *v = NULL;
            int64_t n_vocab = 0;
            const mf_gguf_tensor *t = mf_gguf_find_tensor(m->file, "token_embd.weight");
            if (t) n_vocab = t->ne[1];
            TRY(mf_llama2c_vocab_load(p->tokenizer_path, (int)n_vocab, &v));
            mf_status st = mf_tokenizer_from_llama2c(v, &m->tok);
            mf_llama2c_vocab_free(v);
            TRY(st);
        }
        return MF_OK;
    }
    snprintf(m->format, sizeof m->format, "gguf");
    TRY(mf_gguf_open(path, &m->file));
    if (mf_gguf_get(m->file, "tokenizer.ggml.model")) {
        mf_status st = mf_tokenizer_from_gguf(m->file, &m->tok);
        if (st != MF_OK && st != MF_E_UNSUPPORTED) return st;
        if (st == MF_E_UNSUPPORTED) mf_log(MF_LOG_WARN, "no tokenizer: %s", mf_last_error());
    }
    return MF_OK;
}

mf_status mf_model_load(const char *path, const mf_model_params *p, mf_model **out) {
    *out = NULL;
    if (!path) return mf_errorf(MF_E_INVALID, "no model path");
    mf_model *m = calloc(1, sizeof *m);
    if (!m) return mf_errorf(MF_E_NOMEM, "out of memory");
    m->path = strdup(path);
    mf_status st = m->path ? open_file(m, path, p) : mf_errorf(MF_E_NOMEM, "out of memory");
    if (st == MF_OK) st = mf_model_bind(m);
    if (st != MF_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", mf_last_error());
        mf_model_free(m);
        if (strncmp(msg, path, strlen(path)) == 0) return mf_errorf(st, "%s", msg);
        return mf_errorf(st, "%s: %s", path, msg);
    }
    *out = m;
    return MF_OK;
}

void mf_model_free(mf_model *m) {
    if (!m) return;
    mf_tokenizer_free(m->tok);
    mf_gguf_close(m->file);
    free(m->norms);
    free(m->layers);
    free(m->path);
    free(m);
}

const mf_weight *mf_model_weight(const mf_model *m, int id) {
    if (id == m->hp.n_layers * MF_LAYER_MATS) return &m->output;
    const mf_layer *L = &m->layers[id / MF_LAYER_MATS];
    const mf_weight *ws[MF_LAYER_MATS] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up,
                                          &L->w_down};
    return ws[id % MF_LAYER_MATS];
}
