/* llama2c.c — llama2.c checkpoints and tokenizer.bin files.
 *
 * A checkpoint (llama2.c's legacy export, read by its run.c) is a 7 x int32
 * header and then bare f32 arrays in a fixed order; nothing in the file names
 * or sizes them, so the header is validated first (every size overflow-checked
 * and the file at least as long as the header implies) and the arrays are then
 * presented as an mf_gguf carrying the metadata and tensor names a GGUF of the
 * same model has. The tensors point into the mapping; the tables and strings
 * live in the mf_gguf's arena, so mf_gguf_close frees both kinds of file alike.
 * Layout facts are in docs/formats.md ("llama2.c checkpoint"). */
#include "io/llama2c.h"
#include "io/io_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define L2C_HEADER_BYTES 28
#define L2C_MAX_TOKEN_BYTES (1u << 16)

typedef struct l2c_config {
    int32_t dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len;
    bool tied;
    uint64_t head_size, kv_dim;
    uint64_t n_floats; /* floats the file must hold after the header */
} l2c_config;

/* Running float offset through the weights, with overflow detection. */
typedef struct cursor {
    uint64_t pos;
    bool overflow;
} cursor;

static uint64_t take(cursor *c, uint64_t a, uint64_t b, uint64_t k) {
    uint64_t n, at = c->pos;
    if (!mf_mul_ok(a, b, &n) || !mf_mul_ok(n, k, &n) || !mf_add_ok(c->pos, n, &c->pos))
        c->overflow = true;
    return at;
}

static mf_status read_config(const uint8_t *p, uint64_t size, const char *name, l2c_config *c) {
    int32_t h[7];
    if (size < L2C_HEADER_BYTES)
        return mf_errorf(MF_E_FORMAT, "%s: %llu bytes is too short for a llama2.c checkpoint "
                         "(the header alone is %d bytes)", name, (unsigned long long)size,
                         L2C_HEADER_BYTES);
    if (memcmp(p, "GGUF", 4) == 0)
        return mf_errorf(MF_E_FORMAT, "%s: is a GGUF file, not a llama2.c checkpoint", name);
    if (memcmp(p, "24ka", 4) == 0) /* uint32 0x616b3432 "ak42" written little-endian */
        return mf_errorf(MF_E_UNSUPPORTED, "%s: llama2.c export version %d ('ak42' header) is "
                         "not supported; export with --version 0 (legacy)", name,
                         (int)(p[4] | p[5] << 8));
    memcpy(h, p, sizeof h);
    *c = (l2c_config){h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[5] > 0, 0, 0, 0};
    static const char *fields[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads",
                                    "vocab_size", "seq_len"};
    for (int i = 0; i < 7; i++)
        if (i == 5 ? (h[i] == 0 || h[i] == INT32_MIN) : h[i] <= 0)
            return mf_errorf(MF_E_FORMAT, "%s: llama2.c header: %s = %d is not a positive size",
                             name, fields[i], h[i]);
    if (!c->tied) c->vocab = -c->vocab;
    if (c->dim % c->n_heads)
        return mf_errorf(MF_E_FORMAT, "%s: llama2.c header: dim %d is not a multiple of n_heads %d",
                         name, c->dim, c->n_heads);
    if (c->n_heads % c->n_kv_heads)
        return mf_errorf(MF_E_FORMAT, "%s: llama2.c header: n_heads %d is not a multiple of "
                         "n_kv_heads %d", name, c->n_heads, c->n_kv_heads);
    c->head_size = (uint64_t)(c->dim / c->n_heads);
    c->kv_dim = (uint64_t)c->n_kv_heads * c->head_size;
    return MF_OK;
}

typedef struct l2c_tensor {
    char name[48];
    int n_dims;
    int64_t ne0, ne1;
    uint64_t at; /* float offset after the header */
} l2c_tensor;

static void put_tensor(l2c_tensor *t, const char *name, int n_dims, uint64_t ne0, uint64_t ne1,
                       uint64_t at) {
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    t->ne0 = (int64_t)ne0;
    t->ne1 = (int64_t)ne1;
    t->at = at;
}

/* The per-layer arrays: one base offset per kind, each holding n_layers slices. */
enum { K_ATT, K_Q, K_K, K_V, K_O, K_FFN, K_GATE, K_DOWN, K_UP, K_COUNT };

/* Walk the weights in file order; fill t (9 per layer + 2 or 3) when non-NULL.
 * Returns the tensor count; c->n_floats receives the floats the file needs. */
static int layout(l2c_config *c, l2c_tensor *t, bool *overflow) {
    uint64_t L = (uint64_t)c->n_layers, d = (uint64_t)c->dim, hd = (uint64_t)c->hidden;
    uint64_t v = (uint64_t)c->vocab, qd = (uint64_t)c->n_heads * c->head_size;
    static const char *names[K_COUNT] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                         "ffn_norm", "ffn_gate", "ffn_down", "ffn_up"};
    const uint64_t ne[K_COUNT][2] = {{d, 1}, {d, qd}, {d, c->kv_dim}, {d, c->kv_dim}, {qd, d},
                                     {d, 1}, {d, hd}, {hd, d}, {d, hd}};
    cursor cur = {0, false};
    uint64_t emb = take(&cur, v, d, 1), base[K_COUNT];
    for (int k = 0; k < K_COUNT; k++) base[k] = take(&cur, L, ne[k][0], ne[k][1]);
    uint64_t norm = take(&cur, d, 1, 1);
    take(&cur, (uint64_t)c->seq_len * c->head_size / 2, 2, 1); /* freq_cis_real, _imag */
    uint64_t cls = c->tied ? 0 : take(&cur, v, d, 1);
    *overflow = cur.overflow;
    c->n_floats = cur.pos;
    if (!t) return 2 + (int)L * K_COUNT + !c->tied; /* before the sizes are checked: no loop */
    int n = 0;
    put_tensor(&t[n++], "token_embd.weight", 2, d, v, emb);
    for (uint64_t l = 0; l < L; l++)
        for (int k = 0; k < K_COUNT; k++, n++) {
            char nm[48];
            snprintf(nm, sizeof nm, "blk.%llu.%s.weight", (unsigned long long)l, names[k]);
            put_tensor(&t[n], nm, ne[k][1] == 1 ? 1 : 2, ne[k][0], ne[k][1],
                       base[k] + l * ne[k][0] * ne[k][1]);
        }
    put_tensor(&t[n++], "output_norm.weight", 1, d, 1, norm);
    if (!c->tied) put_tensor(&t[n++], "output.weight", 2, d, v, cls);
    return n;
}

/* Header and size checks shared by parse and sniff. */
static mf_status check_file(const uint8_t *p, uint64_t size, const char *name, l2c_config *c) {
    bool overflow;
    TRY(read_config(p, size, name, c));
    if (c->n_layers > (INT32_MAX - 3) / K_COUNT)
        return mf_errorf(MF_E_FORMAT, "%s: llama2.c header: %d layers is too many", name,
                         c->n_layers);
    layout(c, NULL, &overflow);
    uint64_t need;
    if (overflow || !mf_mul_ok(c->n_floats, 4, &need) || !mf_add_ok(need, L2C_HEADER_BYTES, &need))
        return mf_errorf(MF_E_FORMAT, "%s: llama2.c header: the weight sizes overflow", name);
    if (size < need)
        return mf_errorf(MF_E_FORMAT, "%s: llama2.c checkpoint is truncated: the header (dim %d, "
                         "hidden %d, %d layers, vocab %d, seq_len %d) needs %llu bytes, the file "
                         "has %llu", name, c->dim, c->hidden, c->n_layers, c->vocab, c->seq_len,
                         (unsigned long long)need, (unsigned long long)size);
    return MF_OK;
}

static mf_status add_kv(mf_gguf *g, io_arena **a, const char *key, mf_gguf_vtype t, uint64_t u,
                        double f) {
    mf_gguf_kv *kv = &g->kv[g->n_kv];
    if (!(kv->key = io_arena_strndup(a, key, strlen(key)))) return MF_E_NOMEM;
    kv->value.type = t;
    if (t == MF_GGUF_F32) kv->value.v.f64 = (float)f;
    else kv->value.v.u64 = u;
    g->n_kv++;
    return MF_OK;
}

static mf_status build_kvs(mf_gguf *g, io_arena **a, const l2c_config *c) {
    enum { N_KV = 12 };
    if (!(g->kv = io_arena_alloc(a, N_KV * sizeof(mf_gguf_kv)))) return MF_E_NOMEM;
    char *arch = io_arena_strndup(a, "llama", 5);
    if (!arch) return MF_E_NOMEM;
    TRY(add_kv(g, a, "general.architecture", MF_GGUF_STRING, 0, 0));
    g->kv[0].value.v.str = (mf_gguf_str){arch, 5};
    TRY(add_kv(g, a, "general.file_type", MF_GGUF_U32, 0, 0)); /* all f32 */
    TRY(add_kv(g, a, "llama.context_length", MF_GGUF_U32, (uint64_t)c->seq_len, 0));
    TRY(add_kv(g, a, "llama.embedding_length", MF_GGUF_U32, (uint64_t)c->dim, 0));
    TRY(add_kv(g, a, "llama.feed_forward_length", MF_GGUF_U32, (uint64_t)c->hidden, 0));
    TRY(add_kv(g, a, "llama.block_count", MF_GGUF_U32, (uint64_t)c->n_layers, 0));
    TRY(add_kv(g, a, "llama.attention.head_count", MF_GGUF_U32, (uint64_t)c->n_heads, 0));
    TRY(add_kv(g, a, "llama.attention.head_count_kv", MF_GGUF_U32, (uint64_t)c->n_kv_heads, 0));
    TRY(add_kv(g, a, "llama.rope.dimension_count", MF_GGUF_U32, c->head_size, 0));
    TRY(add_kv(g, a, "llama.attention.layer_norm_rms_epsilon", MF_GGUF_F32, 0, 1e-5));
    TRY(add_kv(g, a, "llama.rope.freq_base", MF_GGUF_F32, 0, 10000.0));
    TRY(add_kv(g, a, "llama.vocab_size", MF_GGUF_U32, (uint64_t)c->vocab, 0));
    return MF_OK;
}

static mf_status build_tensors(mf_gguf *g, io_arena **a, l2c_config *c) {
    bool overflow;
    int n = layout(c, NULL, &overflow);
    l2c_tensor *lt = calloc((size_t)n, sizeof *lt);
    if (!lt) return mf_errorf(MF_E_NOMEM, "out of memory");
    mf_status st = MF_OK;
    layout(c, lt, &overflow);
    if (!(g->tensors = io_arena_alloc(a, (uint64_t)n * sizeof(mf_gguf_tensor)))) {
        st = MF_E_NOMEM;
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        mf_gguf_tensor *t = &g->tensors[i];
        if (!(t->name = io_arena_strndup(a, lt[i].name, strlen(lt[i].name)))) {
            st = MF_E_NOMEM;
            goto fail;
        }
        t->n_dims = lt[i].n_dims;
        t->ne[0] = lt[i].ne0;
        t->ne[1] = lt[i].ne1;
        t->ne[2] = t->ne[3] = 1;
        t->type = MF_TYPE_F32;
        t->offset = lt[i].at * 4;
        t->n_bytes = (uint64_t)lt[i].ne0 * (uint64_t)lt[i].ne1 * 4;
        t->data = g->base + g->data_offset + t->offset;
    }
    g->n_tensors = (uint64_t)n;
fail:
    free(lt);
    return st;
}

mf_status mf_llama2c_parse(const void *data, uint64_t size, const char *name, mf_gguf **out) {
    l2c_config c;
    io_arena *arena = NULL;
    *out = NULL;
    if (!name) name = "(buffer)";
    if (!data && size) return mf_errorf(MF_E_INVALID, "mf_llama2c_parse: NULL data");
    TRY(check_file(data, size, name, &c));
    mf_gguf *g = calloc(1, sizeof *g);
    if (!g) return mf_errorf(MF_E_NOMEM, "out of memory");
    g->version = 0; /* not a GGUF: synthesized from a llama2.c checkpoint */
    g->alignment = 4;
    g->data_offset = L2C_HEADER_BYTES;
    g->base = data;
    g->size = size;
    mf_status st;
    if ((st = build_kvs(g, &arena, &c)) != MF_OK) goto fail;
    if ((st = build_tensors(g, &arena, &c)) != MF_OK) goto fail;
    g->arena = arena;
    *out = g;
    return MF_OK;
fail:
    io_arena_free(arena);
    free(g);
    return st;
}

mf_status mf_llama2c_open(const char *path, mf_gguf **out) {
    void *map;
    uint64_t size;
    *out = NULL;
    TRY(io_map_file(path, &map, &size));
    mf_status st = mf_llama2c_parse(map, size, path, out);
    if (st != MF_OK) {
        io_unmap(map, size);
        return st;
    }
    (*out)->map = map;
    return MF_OK;
}

bool mf_llama2c_sniff(const char *path) {
    void *map;
    uint64_t size;
    l2c_config c;
    if (io_map_file(path, &map, &size) != MF_OK) return false;
    bool ok = size >= 4 && (memcmp(map, "24ka", 4) == 0 || check_file(map, size, path, &c) == MF_OK);
    io_unmap(map, size);
    mf_clear_error();
    return ok;
}

/* ---- tokenizer.bin ---- */

/* One pass over the entries: checks every length, and sums the token bytes. */
static mf_status scan_vocab(io_reader *r, int n_vocab, uint64_t *total, int *max_len) {
    for (int i = 0; i < n_vocab; i++) {
        float score;
        int32_t len;
        const uint8_t *b = NULL;
        snprintf(r->what, sizeof r->what, "token %d", i);
        TRY(io_reader_f32(r, &score));
        TRY(io_reader_i32(r, &len));
        if (len < 0 || (uint32_t)len > L2C_MAX_TOKEN_BYTES)
            return io_reader_fail(r, MF_E_FORMAT, "token length %d (must be 0 to %u)", len,
                                  L2C_MAX_TOKEN_BYTES);
        TRY(io_reader_bytes(r, (uint64_t)len, &b));
        *total += (uint64_t)len + 1;
        if (len > *max_len) *max_len = len;
    }
    if (io_reader_left(r))
        return io_reader_fail(r, MF_E_FORMAT, "%llu bytes follow the %d tokens the model has: "
                              "is this the tokenizer of another model?",
                              (unsigned long long)io_reader_left(r), n_vocab);
    return MF_OK;
}

mf_status mf_llama2c_vocab_parse(const void *data, uint64_t size, const char *name, int n_vocab,
                                 mf_llama2c_vocab **out) {
    io_reader r;
    int32_t max_len;
    uint64_t total = 0, need;
    *out = NULL;
    if (!data && size) return mf_errorf(MF_E_INVALID, "mf_llama2c_vocab_parse: NULL data");
    if (n_vocab <= 0) return mf_errorf(MF_E_INVALID, "%s: vocabulary size %d", name, n_vocab);
    io_reader_init(&r, data ? data : "", size, name);
    TRY(io_reader_i32(&r, &max_len));
    if (max_len < 0 || (uint32_t)max_len > L2C_MAX_TOKEN_BYTES)
        return io_reader_fail(&r, MF_E_FORMAT, "max_token_length %d (must be 0 to %u)", max_len,
                              L2C_MAX_TOKEN_BYTES);
    if ((uint64_t)n_vocab > io_reader_left(&r) / 8)
        return io_reader_fail(&r, MF_E_FORMAT, "%d tokens cannot fit in the %llu bytes left",
                              n_vocab, (unsigned long long)io_reader_left(&r));
    int max_seen = max_len;
    TRY(scan_vocab(&r, n_vocab, &total, &max_seen));
    /* One block: the struct, the token pointers, the scores, then the bytes. */
    need = sizeof(mf_llama2c_vocab) + (uint64_t)n_vocab * (sizeof(char *) + sizeof(float)) + total;
    mf_llama2c_vocab *v = need <= SIZE_MAX ? malloc((size_t)need) : NULL;
    if (!v) return mf_errorf(MF_E_NOMEM, "%s: out of memory for %d tokens", name, n_vocab);
    v->n = n_vocab;
    v->max_token_len = max_seen; /* a buffer of this size holds every token */
    v->tokens = (char **)(v + 1);
    v->scores = (float *)(v->tokens + n_vocab);
    char *bytes = (char *)(v->scores + n_vocab);
    io_reader_init(&r, data, size, name);
    r.pos = 4;
    for (int i = 0; i < n_vocab; i++) { /* cannot fail: scan_vocab read the same bytes */
        int32_t len = 0;
        const uint8_t *b = NULL;
        io_reader_f32(&r, &v->scores[i]);
        io_reader_i32(&r, &len);
        io_reader_bytes(&r, (uint64_t)len, &b);
        v->tokens[i] = bytes;
        if (len) memcpy(bytes, b, (size_t)len);
        bytes[len] = 0;
        bytes += len + 1;
    }
    *out = v;
    return MF_OK;
}

mf_status mf_llama2c_vocab_load(const char *path, int n_vocab, mf_llama2c_vocab **out) {
    void *map;
    uint64_t size;
    *out = NULL;
    TRY(io_map_file(path, &map, &size));
    mf_status st = mf_llama2c_vocab_parse(map, size, path, n_vocab, out);
    io_unmap(map, size);
    return st;
}

void mf_llama2c_vocab_free(mf_llama2c_vocab *v) { free(v); }
