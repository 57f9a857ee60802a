/* synth.c — random-weight LLaMA models of any shape, for benchmarks and
 * memory tests of big models without downloads.
 *
 * Matrices are uniform with the standard deviation 0.02 that LLaMA-style
 * initializations use, norms are 1, and each tensor's numbers come from its
 * own seeded stream, so the same parameters always give the same file.
 * The file is written by the GGUF writer (atomic), tensor by tensor. */
#include "core/core.h"
#include "io/gguf.h"
#include "tensor/tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t seed;
    int type;        /* the type of every matrix */
    int *is_norm;    /* per tensor index */
    int *row_lens;   /* per tensor index: ne[0] */
    int row_len;     /* of the tensor being filled */
    float *row;      /* (max row length) f32 staging */
} synth_ctx;

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Rows of uniform(-a, a) numbers in f32, converted to the tensor's type. */
static mf_status fill(void *vctx, int idx, void *dst, uint64_t n_bytes) {
    synth_ctx *c = vctx;
    c->row_len = c->row_lens[idx];
    if (c->is_norm[idx]) {
        float *f = dst;
        for (uint64_t i = 0; i < n_bytes / 4; i++) f[i] = 1.0f;
        return MF_OK;
    }
    uint64_t state = c->seed ^ (0x5851f42d4c957f2dull * (uint64_t)(idx + 1));
    const float k = 0.02f * sqrtf(3.0f) / 2147483648.0f;  /* uniform(-a, a): std 0.02 */
    const mf_type_traits *tr = mf_traits(c->type);
    uint64_t row_bytes;
    if (!mf_type_row_bytes(c->type, (uint64_t)c->row_len, &row_bytes) || n_bytes % row_bytes)
        return mf_errorf(MF_E_INVALID, "synth: bad row length %d", c->row_len);
    for (uint64_t off = 0; off < n_bytes; off += row_bytes) {
        for (int i = 0; i < c->row_len; i += 2) {
            uint64_t r = splitmix64(&state);
            c->row[i] = (float)(int32_t)(uint32_t)r * k;
            c->row[i + 1] = (float)(int32_t)(uint32_t)(r >> 32) * k;
        }
        tr->from_float(c->row, (char *)dst + off, c->row_len);
    }
    return MF_OK;
}

static mf_status check_params(const mf_synth_params *p) {
    int v[] = {p->dim, p->n_layers, p->n_heads, p->n_kv_heads, p->n_ff, p->n_vocab};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        if (v[i] <= 0 || v[i] > (1 << 20))
            return mf_errorf(MF_E_INVALID, "synth: dimensions must be in 1..%d", 1 << 20);
    if (p->dim % p->n_heads || p->n_heads % p->n_kv_heads)
        return mf_errorf(MF_E_INVALID, "synth: dim %d must divide into %d heads, and heads "
                         "into %d KV heads", p->dim, p->n_heads, p->n_kv_heads);
    if ((p->dim / p->n_heads) % 2)
        return mf_errorf(MF_E_INVALID, "synth: head size %d must be even", p->dim / p->n_heads);
    return MF_OK;
}

typedef struct { mf_gguf_writer *w; int *is_norm, *row_lens; int n; } tensor_list;

static mf_status add(tensor_list *tl, const char *name, int64_t n_in, int64_t n_out, int type) {
    int64_t ne[2] = {n_in, n_out};
    tl->is_norm[tl->n] = n_out == 0;
    tl->row_lens[tl->n++] = (int)n_in;
    return mf_gguf_writer_add_tensor(tl->w, name, n_out ? 2 : 1, ne, n_out ? type : MF_TYPE_F32,
                                     NULL);
}

static mf_status add_tensors(tensor_list *tl, const mf_synth_params *p, int type) {
    int64_t d = p->dim, hd = p->dim / p->n_heads, kv = hd * p->n_kv_heads;
    TRY(add(tl, "token_embd.weight", d, p->n_vocab, type));
    char name[64];
    for (int l = 0; l < p->n_layers; l++) {
#define N(s) (snprintf(name, sizeof name, "blk.%d.%s.weight", l, s), name)
        TRY(add(tl, N("attn_norm"), d, 0, type));
        TRY(add(tl, N("attn_q"), d, d, type));
        TRY(add(tl, N("attn_k"), d, kv, type));
        TRY(add(tl, N("attn_v"), d, kv, type));
        TRY(add(tl, N("attn_output"), d, d, type));
        TRY(add(tl, N("ffn_norm"), d, 0, type));
        TRY(add(tl, N("ffn_gate"), d, p->n_ff, type));
        TRY(add(tl, N("ffn_up"), d, p->n_ff, type));
        TRY(add(tl, N("ffn_down"), p->n_ff, d, type));
#undef N
    }
    TRY(add(tl, "output_norm.weight", d, 0, type));
    return add(tl, "output.weight", d, p->n_vocab, type);
}

static mf_status set_metadata(mf_gguf_writer *w, const mf_synth_params *p, int type) {
    TRY(mf_gguf_writer_set_str(w, "general.architecture", "llama"));
    TRY(mf_gguf_writer_set_str(w, "general.name", "memfit synth"));
    /* llama.cpp's llama_ftype numbers: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q8_0 7, MOSTLY_BF16 32 */
    uint32_t ftype = type == MF_TYPE_F32 ? 0 : type == MF_TYPE_F16 ? 1 : type == MF_TYPE_Q8_0 ? 7 : 32;
    TRY(mf_gguf_writer_set_u32(w, "general.file_type", ftype));
    TRY(mf_gguf_writer_set_u32(w, "llama.context_length", (uint32_t)(p->n_ctx ? p->n_ctx : 2048)));
    TRY(mf_gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)p->dim));
    TRY(mf_gguf_writer_set_u32(w, "llama.block_count", (uint32_t)p->n_layers));
    TRY(mf_gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)p->n_ff));
    TRY(mf_gguf_writer_set_u32(w, "llama.attention.head_count", (uint32_t)p->n_heads));
    TRY(mf_gguf_writer_set_u32(w, "llama.attention.head_count_kv", (uint32_t)p->n_kv_heads));
    TRY(mf_gguf_writer_set_u32(w, "llama.rope.dimension_count", (uint32_t)(p->dim / p->n_heads)));
    TRY(mf_gguf_writer_set_f32(w, "llama.rope.freq_base", 10000.0f));
    return mf_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
}

/* Copy every tokenizer.* key of the vocabulary file; returns its size. */
static mf_status copy_vocab(mf_gguf_writer *w, const mf_gguf *v, int *n_vocab) {
    const mf_gguf_value *toks = mf_gguf_get_arr(v, "tokenizer.ggml.tokens", MF_GGUF_STRING);
    if (!toks || toks->v.arr.n == 0 || toks->v.arr.n > (1u << 24))
        return mf_errorf(MF_E_FORMAT, "synth: the vocabulary file has no tokenizer.ggml.tokens");
    *n_vocab = (int)toks->v.arr.n;
    for (uint64_t i = 0; i < v->n_kv; i++)
        if (strncmp(v->kv[i].key, "tokenizer.", 10) == 0)
            TRY(mf_gguf_writer_set_value(w, v->kv[i].key, &v->kv[i].value));
    return MF_OK;
}

static mf_status pick_type(const mf_synth_params *q, int *type) {
    const char *name = q->type ? q->type : "f16";
    *type = mf_type_from_name(name);
    if (*type != MF_TYPE_F16 && *type != MF_TYPE_F32 && *type != MF_TYPE_BF16 &&
        *type != MF_TYPE_Q8_0)
        return mf_errorf(MF_E_INVALID, "synth: type '%s' is not one of f16, f32, bf16, q8_0",
                         name);
    int blk = mf_type_layout_of(*type)->block;
    if (q->dim % blk || q->n_ff % blk)
        return mf_errorf(MF_E_INVALID, "synth: %s needs dim and ff to be multiples of %d", name,
                         blk);
    return MF_OK;
}

static mf_status synth_write(mf_gguf_writer *w, mf_synth_params q, const char *path,
                             mf_gguf *vocab, synth_ctx *ctx) {
    int type;
    if (vocab) {
        int nv = 0;
        TRY(copy_vocab(w, vocab, &nv));
        if (q.n_vocab && q.n_vocab != nv)
            return mf_errorf(MF_E_INVALID, "synth: --vocab %d differs from the %d tokens of "
                             "the vocabulary file", q.n_vocab, nv);
        q.n_vocab = nv;
    }
    TRY(check_params(&q));
    TRY(pick_type(&q, &type));
    TRY(set_metadata(w, &q, type));
    tensor_list tl = {w, ctx->is_norm, ctx->row_lens, 0};
    TRY(add_tensors(&tl, &q, type));
    ctx->seed = q.seed;
    ctx->type = type;
    return mf_gguf_writer_write(w, path, fill, ctx);
}

mf_status mf_synth(const mf_synth_params *p, const char *path) {
    if (!p || !path) return mf_errorf(MF_E_INVALID, "synth: no parameters or output path");
    if (p->vocab_from && mf_same_file(p->vocab_from, path))
        return mf_errorf(MF_E_INVALID, "synth: refusing to overwrite the input '%s'", path);
    if (p->n_layers <= 0 || p->n_layers > (1 << 20))
        return mf_errorf(MF_E_INVALID, "synth: layer count must be in 1..%d", 1 << 20);
    mf_gguf *vocab = NULL;
    mf_gguf_writer *w = NULL;
    size_t n_t = (size_t)p->n_layers * 9 + 4, row = (size_t)(p->dim > p->n_ff ? p->dim : p->n_ff);
    synth_ctx ctx = {.is_norm = calloc(n_t, sizeof(int)), .row_lens = calloc(n_t, sizeof(int)),
                     .row = calloc(row + 2, sizeof(float))};
    mf_status st = ctx.is_norm && ctx.row_lens && ctx.row ? MF_OK
                                                          : mf_errorf(MF_E_NOMEM, "out of memory");
    if (st == MF_OK && p->vocab_from) st = mf_gguf_open(p->vocab_from, &vocab);
    if (st == MF_OK) st = mf_gguf_writer_create(&w);
    if (st == MF_OK) st = synth_write(w, *p, path, vocab, &ctx);
    mf_gguf_writer_free(w);
    mf_gguf_close(vocab);
    free(ctx.is_norm);
    free(ctx.row_lens);
    free(ctx.row);
    return st;
}
