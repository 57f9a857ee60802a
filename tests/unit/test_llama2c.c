/* test_llama2c.c — llama2.c checkpoints and tokenizer.bin files.
 *
 * Oracles: stories260K.gguf in ../shared holds the same weights as
 * stories260K.bin, so every tensor mapped from the checkpoint must match the
 * same-named GGUF tensor in shape and bit for bit; a synthetic checkpoint whose
 * every float is its own index pins the layout of run.c (which array starts
 * where, the skipped RoPE tables, the untied classifier) independently of the
 * fixture; corrupt headers, truncations and bad tokenizer entries must fail
 * with a message, never crash. */
#include "io/llama2c.h"
#include "test.h"

#include <stdint.h>
#include <sys/stat.h>

static char tmpdir[256];

static bool f32_bits_equal(const void *a, const void *b, uint64_t n_bytes) {
    return memcmp(a, b, (size_t)n_bytes) == 0;
}

/* GGUF converters from HF checkpoints permute q/k rows; this is that
 * permutation, to say so if the fixture turns out to use it. */
static bool is_permuted(const float *l2c, const float *gg, int64_t cols, int64_t rows, int n_head) {
    int64_t hs = rows / n_head;
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t i = 0; i < hs; i++) {
            int64_t src = h * hs + (i % 2) * (hs / 2) + i / 2; /* reshape(n,2,hs/2).swap */
            if (memcmp(&gg[(h * hs + i) * cols], &l2c[src * cols], (size_t)cols * 4)) return false;
        }
    return true;
}

static void test_stories(void) {
    char bin[512], gg[512];
    test_path(bin, sizeof bin, "models/stories260K.bin");
    test_path(gg, sizeof gg, "models/stories260K.gguf");
    mf_gguf *a = NULL, *b = NULL;
    CHECK(mf_llama2c_open(bin, &a) == MF_OK, "%s: %s", bin, mf_last_error());
    CHECK(mf_gguf_open(gg, &b) == MF_OK, "%s: %s", gg, mf_last_error());
    if (!a || !b) goto fail;
    CHECK(mf_llama2c_sniff(bin) && !mf_llama2c_sniff(gg), "sniff");
    int64_t v;
    const char *ikeys[] = {"llama.embedding_length", "llama.feed_forward_length",
                           "llama.block_count", "llama.attention.head_count",
                           "llama.attention.head_count_kv", "llama.context_length",
                           "llama.rope.dimension_count", "general.file_type"};
    const int64_t want[] = {64, 172, 5, 8, 4, 512, 8, 0};
    for (int i = 0; i < 8; i++) {
        int64_t w;
        CHECK(mf_gguf_get_int(a, ikeys[i], &v) && v == want[i], "%s", ikeys[i]);
        CHECK(mf_gguf_get_int(b, ikeys[i], &w) && w == v, "%s differs from the gguf", ikeys[i]);
    }
    double eps, base;
    CHECK(mf_gguf_get_float(a, "llama.attention.layer_norm_rms_epsilon", &eps) && eps == 1e-5f, "eps");
    CHECK(mf_gguf_get_float(a, "llama.rope.freq_base", &base) && base == 10000.0, "freq_base");
    const mf_gguf_str *arch = mf_gguf_get_str(a, "general.architecture");
    CHECK(arch && arch->len == 5 && memcmp(arch->ptr, "llama", 5) == 0, "arch");
    CHECK(a->n_tensors == 1 + 5 * 9 + 1, "%llu tensors", (unsigned long long)a->n_tensors);
    CHECK(mf_gguf_find_tensor(a, "output.weight") == NULL, "tied: no output.weight");
    int n_same = 0, n_perm = 0;
    for (uint64_t i = 0; i < a->n_tensors; i++) {
        const mf_gguf_tensor *x = &a->tensors[i], *y = mf_gguf_find_tensor(b, x->name);
        CHECK(y != NULL, "%s is not in the gguf", x->name);
        if (!y) continue;
        CHECK((const uint8_t *)x->data + x->n_bytes <= a->base + a->size, "%s inside", x->name);
        bool shape = x->n_dims == y->n_dims && memcmp(x->ne, y->ne, sizeof x->ne) == 0 &&
                     x->type == y->type && x->n_bytes == y->n_bytes;
        CHECK(shape, "%s: shape differs", x->name);
        if (!shape) continue;
        if (f32_bits_equal(x->data, y->data, x->n_bytes)) n_same++;
        else if (is_permuted(x->data, y->data, x->ne[0], x->ne[1],
                             strstr(x->name, "attn_k") ? 4 : 8)) {
            n_perm++;
            printf("  NOTE %s: the gguf's rows are the HF q/k permutation of llama2.c's\n", x->name);
        } else CHECK(0, "%s: data differs", x->name);
    }
    printf("  stories260K: %d of %llu tensors bit-identical to the gguf, %d permuted\n", n_same,
           (unsigned long long)a->n_tensors, n_perm);
    CHECK(n_same == (int)a->n_tensors, "bit-identical tensors");
    /* The gguf stores the tied classifier as a copy: it must equal the embedding. */
    const mf_gguf_tensor *out = mf_gguf_find_tensor(b, "output.weight");
    const mf_gguf_tensor *emb = mf_gguf_find_tensor(a, "token_embd.weight");
    if (out && emb)
        printf("  stories260K.gguf output.weight %s token_embd.weight\n",
               out->n_bytes == emb->n_bytes && f32_bits_equal(out->data, emb->data, emb->n_bytes)
                   ? "is a copy of" : "DIFFERS from");
fail:
    mf_gguf_close(a);
    mf_gguf_close(b);
}

/* A checkpoint whose float i (after the header) has the value i. */
static float *make_ckpt(const int32_t h[7], uint64_t *n_bytes) {
    int64_t dim = h[0], hid = h[1], L = h[2], nh = h[3], nkv = h[4], seq = h[6];
    int64_t vocab = h[5] < 0 ? -h[5] : h[5], hs = dim / nh;
    int64_t n = vocab * dim + L * (dim + dim * dim + 2 * dim * nkv * hs + dim * dim + dim +
                                   3 * dim * hid) + dim + 2 * (seq * hs / 2) +
                (h[5] < 0 ? vocab * dim : 0);
    float *f = malloc(28 + (size_t)n * 4);
    memcpy(f, h, 28);
    for (int64_t i = 0; i < n; i++) f[7 + i] = (float)i;
    *n_bytes = 28 + (uint64_t)n * 4;
    return f;
}

static float first(const mf_gguf *g, const char *name) {
    const mf_gguf_tensor *t = mf_gguf_find_tensor(g, name);
    return t ? *(const float *)t->data : -1.0f;
}

static float last(const mf_gguf *g, const char *name) {
    const mf_gguf_tensor *t = mf_gguf_find_tensor(g, name);
    return t ? ((const float *)t->data)[t->n_bytes / 4 - 1] : -1.0f;
}

static void test_synthetic_layout(void) {
    /* dim 8, hidden 12, 2 layers, 2 heads (hs 4), 1 kv head, vocab 10 untied, seq 5 */
    const int32_t h[7] = {8, 12, 2, 2, 1, -10, 5};
    uint64_t n;
    float *f = make_ckpt(h, &n);
    mf_gguf *g = NULL;
    mf_status st = mf_llama2c_parse(f, n, "synthetic.bin", &g);
    CHECK(st == MF_OK, "synthetic: %s", mf_last_error());
    if (st == MF_OK) {
        /* run.c's order, by hand: emb 80, rms_att 2x8, wq 2x64, wk 2x32, wv 2x32,
         * wo 2x64, rms_ffn 2x8, w1 2x96, w2 2x96, w3 2x96, rms_final 8, 2 x 10 RoPE, wcls. */
        CHECK(first(g, "token_embd.weight") == 0 && last(g, "token_embd.weight") == 79, "emb");
        CHECK(first(g, "blk.0.attn_norm.weight") == 80 && first(g, "blk.1.attn_norm.weight") == 88, "att");
        CHECK(first(g, "blk.0.attn_q.weight") == 96 && first(g, "blk.1.attn_q.weight") == 160, "q");
        CHECK(first(g, "blk.0.attn_k.weight") == 224 && first(g, "blk.1.attn_k.weight") == 256, "k");
        CHECK(first(g, "blk.0.attn_v.weight") == 288 && last(g, "blk.1.attn_v.weight") == 351, "v");
        CHECK(first(g, "blk.0.attn_output.weight") == 352 && first(g, "blk.1.attn_output.weight") == 416, "o");
        CHECK(first(g, "blk.0.ffn_norm.weight") == 480 && first(g, "blk.1.ffn_norm.weight") == 488, "ffn");
        CHECK(first(g, "blk.0.ffn_gate.weight") == 496 && first(g, "blk.1.ffn_gate.weight") == 592, "w1");
        CHECK(first(g, "blk.0.ffn_down.weight") == 688 && first(g, "blk.1.ffn_down.weight") == 784, "w2");
        CHECK(first(g, "blk.0.ffn_up.weight") == 880 && last(g, "blk.1.ffn_up.weight") == 1071, "w3");
        CHECK(first(g, "output_norm.weight") == 1072 && last(g, "output_norm.weight") == 1079, "norm");
        CHECK(first(g, "output.weight") == 1100 && last(g, "output.weight") == 1179, "wcls");
        const mf_gguf_tensor *t = mf_gguf_find_tensor(g, "blk.1.ffn_down.weight");
        CHECK(t && t->ne[0] == 12 && t->ne[1] == 8 && t->n_dims == 2, "w2 shape {hidden, dim}");
        t = mf_gguf_find_tensor(g, "blk.0.attn_k.weight");
        CHECK(t && t->ne[0] == 8 && t->ne[1] == 4, "wk shape {dim, kv_dim}");
        t = mf_gguf_find_tensor(g, "blk.0.attn_norm.weight");
        CHECK(t && t->n_dims == 1 && t->ne[0] == 8 && t->ne[1] == 1, "norm shape");
        int64_t v;
        CHECK(mf_gguf_get_int(g, "llama.rope.dimension_count", &v) && v == 4, "rope dim");
        mf_gguf_close(g);
    }
    /* Truncated anywhere: rejected. */
    int bad = 0;
    for (uint64_t len = 0; len < n; len++) {
        void *c = malloc(len ? len : 1);
        memcpy(c, f, len);
        mf_clear_error();
        if (mf_llama2c_parse(c, len, "cut.bin", &g) == MF_OK || !mf_last_error()[0]) {
            bad++;
            mf_gguf_close(g);
        }
        free(c);
    }
    CHECK(bad == 0, "%d truncations accepted", bad);
    free(f);
    /* Odd head size: run.c skips seq_len * head_size / 2 floats (integer division). */
    const int32_t h2[7] = {6, 4, 1, 2, 2, -3, 3};
    f = make_ckpt(h2, &n);
    CHECK(mf_llama2c_parse(f, n, "odd.bin", &g) == MF_OK, "odd: %s", mf_last_error());
    /* emb 18, layer 6+36+36+36+36+6+72 = 228, norm 6 -> 252, RoPE 2 x 4 -> wcls at 260 */
    if (g) CHECK(first(g, "output.weight") == 260, "odd wcls at %g", first(g, "output.weight"));
    mf_gguf_close(g);
    free(f);
}

static void expect_bad_header(const int32_t h[7], uint64_t size, mf_status want, const char *needle,
                              const char *what) {
    uint8_t *c = calloc(1, size < 28 ? 28 : size);
    memcpy(c, h, 28);
    mf_gguf *g = NULL;
    mf_clear_error();
    mf_status st = mf_llama2c_parse(c, size, "bad.bin", &g);
    CHECK(st == want && g == NULL, "%s: status %d: %s", what, st, mf_last_error());
    CHECK(strstr(mf_last_error(), needle) && strstr(mf_last_error(), "bad.bin"),
          "%s: message '%s' lacks '%s'", what, mf_last_error(), needle);
    free(c);
}

static void test_bad_headers(void) {
    const int32_t ok[7] = {8, 12, 2, 2, 1, 10, 5};
    const char *fields[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
    for (int i = 0; i < 7; i++) {
        int32_t h[7];
        memcpy(h, ok, sizeof h);
        h[i] = 0;
        expect_bad_header(h, 100000, MF_E_FORMAT, fields[i], "zero field");
        if (i == 5) h[i] = INT32_MIN;
        else h[i] = -3;
        expect_bad_header(h, 100000, MF_E_FORMAT, fields[i], "negative field");
    }
    int32_t h[7] = {9, 12, 2, 2, 1, 10, 5};
    expect_bad_header(h, 100000, MF_E_FORMAT, "multiple of n_heads", "dim % heads");
    const int32_t h2[7] = {8, 12, 2, 2, 3, 10, 5};
    expect_bad_header(h2, 100000, MF_E_FORMAT, "n_kv_heads", "heads % kv");
    const int32_t h3[7] = {INT32_MAX, INT32_MAX, INT32_MAX, 1, 1, INT32_MAX, INT32_MAX};
    expect_bad_header(h3, 100000, MF_E_FORMAT, "bad.bin", "huge sizes");
    const int32_t h4[7] = {65536, 65536, 1000, 1, 1, 1000000, 1};
    expect_bad_header(h4, 100000, MF_E_FORMAT, "truncated", "big model, small file");
    expect_bad_header(ok, 20, MF_E_FORMAT, "too short", "short file");
    const int32_t ak42[7] = {0x616b3432, 1, 0, 0, 0, 0, 0};
    expect_bad_header(ak42, 100000, MF_E_UNSUPPORTED, "ak42", "version 1 export");
    int32_t gg[7] = {0};
    memcpy(gg, "GGUF", 4);
    expect_bad_header(gg, 100000, MF_E_FORMAT, "GGUF", "a gguf");
    char path[512];
    mf_gguf *g = NULL;
    CHECK(mf_llama2c_open("/nonexistent/model.bin", &g) == MF_E_IO && !g, "missing file");
    CHECK(!mf_llama2c_sniff("/nonexistent/model.bin"), "sniff of a missing file");
    snprintf(path, sizeof path, "%s/junk.bin", tmpdir);
    FILE *f = fopen(path, "wb");
    fwrite("hello world, this is not a model at all", 1, 39, f);
    fclose(f);
    CHECK(!mf_llama2c_sniff(path), "sniff of text");
    CHECK(mf_llama2c_open(path, &g) == MF_E_FORMAT, "open text: %s", mf_last_error());
    remove(path);
    if (test_shared()) { /* the real file missing its last byte */
        size_t n;
        uint8_t *real = test_read_file(test_path(path, sizeof path, "models/stories260K.bin"), &n);
        CHECK(real && mf_llama2c_parse(real, n - 1, "cut", &g) == MF_E_FORMAT &&
                  strstr(mf_last_error(), "truncated"), "real minus one byte: %s", mf_last_error());
        free(real);
    }
}

/* ---- tokenizer.bin ---- */

typedef struct tbuf {
    uint8_t d[256];
    size_t n;
} tbuf;

static void tput(tbuf *b, const void *p, size_t n) {
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void tok(tbuf *b, float score, int32_t len, const char *s) {
    tput(b, &score, 4);
    tput(b, &len, 4);
    size_t avail = strlen(s) + 1; /* an absurd len writes only the bytes there are */
    if (len > 0) tput(b, s, (size_t)len < avail ? (size_t)len : avail);
}

static void make_vocab(tbuf *b, int32_t bad_len) {
    int32_t max = 3;
    b->n = 0;
    tput(b, &max, 4);
    tok(b, 0.0f, 5, "<unk>"); /* longer than max_token_length: tolerated */
    tok(b, -1.5f, 0, "");
    tok(b, 2.0f, 2, "a\0");
    tok(b, 3.0f, bad_len, "xyz");
}

static mf_status parse_vocab(const void *d, size_t n, int n_vocab, mf_llama2c_vocab **v) {
    void *c = malloc(n ? n : 1);
    memcpy(c, d, n);
    mf_status st = mf_llama2c_vocab_parse(c, n, "tok.bin", n_vocab, v);
    free(c);
    return st;
}

static void test_vocab(void) {
    tbuf b;
    mf_llama2c_vocab *v = NULL;
    make_vocab(&b, 3);
    CHECK(parse_vocab(b.d, b.n, 4, &v) == MF_OK, "vocab: %s", mf_last_error());
    if (v) {
        CHECK(v->n == 4 && v->max_token_len == 5, "n %d max %d", v->n, v->max_token_len);
        CHECK(strcmp(v->tokens[0], "<unk>") == 0 && v->tokens[1][0] == 0 &&
                  memcmp(v->tokens[2], "a\0", 3) == 0 && strcmp(v->tokens[3], "xyz") == 0, "tokens");
        CHECK(v->scores[0] == 0.0f && v->scores[1] == -1.5f && v->scores[3] == 3.0f, "scores");
        mf_llama2c_vocab_free(v);
    }
    int bad = 0;
    for (size_t len = 0; len < b.n; len++)
        if (parse_vocab(b.d, len, 4, &v) == MF_OK || !mf_last_error()[0]) bad++;
    CHECK(bad == 0, "%d truncated vocabularies accepted", bad);
    CHECK(parse_vocab(b.d, b.n, 3, &v) == MF_E_FORMAT && strstr(mf_last_error(), "another model"),
          "trailing bytes: %s", mf_last_error());
    CHECK(parse_vocab(b.d, b.n, 5, &v) == MF_E_FORMAT, "too few tokens");
    CHECK(parse_vocab(b.d, b.n, 1 << 30, &v) == MF_E_FORMAT, "huge n_vocab");
    CHECK(parse_vocab(b.d, b.n, 0, &v) == MF_E_INVALID, "n_vocab 0");
    make_vocab(&b, -1);
    CHECK(parse_vocab(b.d, b.n, 4, &v) == MF_E_FORMAT && strstr(mf_last_error(), "token 3"),
          "negative length: %s", mf_last_error());
    make_vocab(&b, 70000);
    CHECK(parse_vocab(b.d, b.n, 4, &v) == MF_E_FORMAT, "length 70000");
    int32_t neg = -1;
    CHECK(parse_vocab(&neg, 4, 1, &v) == MF_E_FORMAT, "negative max_token_length");
    char path[512];
    snprintf(path, sizeof path, "%s/tok.bin", tmpdir);
    make_vocab(&b, 3);
    FILE *f = fopen(path, "wb");
    fwrite(b.d, 1, b.n, f);
    fclose(f);
    CHECK(mf_llama2c_vocab_load(path, 4, &v) == MF_OK && v && v->n == 4, "load: %s",
          mf_last_error());
    mf_llama2c_vocab_free(v);
    mf_llama2c_vocab_free(NULL);
    remove(path);
    CHECK(mf_llama2c_vocab_load("/nonexistent/tok.bin", 4, &v) == MF_E_IO && !v, "missing");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/memfit_test_l2c_%d", (int)getpid());
    mkdir(tmpdir, 0700);
    if (test_shared()) test_stories();
    else printf("SKIP stories260K comparison: ../shared not found (set MF_SHARED)\n");
    test_synthetic_layout();
    test_bad_headers();
    test_vocab();
    rmdir(tmpdir);
    return test_report("llama2c");
}
