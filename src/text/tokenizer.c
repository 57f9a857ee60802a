/* tokenizer.c — building a tokenizer: the vocabulary and its lookup tables.
 *
 * Owns the mf_tokenizer's life: reading the vocabulary from a GGUF's
 * tokenizer.* keys or from a llama2.c tokenizer.bin, copying every string
 * into one blob (the source file may be closed afterwards), the token and
 * merge maps, the byte-fallback table, the list of special tokens matched as
 * whole pieces, and the defaults llama.cpp (llama-vocab.cpp) applies when a
 * key is absent. Encoding and decoding live in codec.c. */
#include "text/text_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPACE_2581 "\xE2\x96\x81"

/* ---- construction ---------------------------------------------------------- */

void mf_tokenizer_free(mf_tokenizer *t) {
    if (!t) return;
    strmap_free(&t->tokens);
    strmap_free(&t->merges);
    bpe_pre_free(t->pre);
    free(t->special);
    free(t->text);
    free(t->len);
    free(t->score);
    free(t->type);
    free(t->flags);
    free(t->blob);
    free(t);
}

/* All per-token arrays and the blob that will hold blob_bytes of text. */
static mf_status tok_new(int kind, uint64_t n_vocab, uint64_t blob_bytes, mf_tokenizer **out) {
    if (n_vocab == 0 || n_vocab > INT32_MAX / 4)
        return mf_errorf(MF_E_FORMAT, "tokenizer: bad vocabulary size %llu",
                         (unsigned long long)n_vocab);
    mf_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return mf_errorf(MF_E_NOMEM, "tokenizer: no memory");
    t->kind = kind;
    t->n_vocab = (int)n_vocab;
    t->blob = blob_bytes < SIZE_MAX ? malloc((size_t)blob_bytes + 1) : NULL;
    t->text = calloc(n_vocab, sizeof *t->text);
    t->len = calloc(n_vocab, sizeof *t->len);
    t->score = calloc(n_vocab, sizeof *t->score);
    t->type = calloc(n_vocab, 1);
    t->flags = calloc(n_vocab, 1);
    t->bos = t->eos = t->unk = -1;
    t->space = SPACE_2581;
    if (!t->blob || !t->text || !t->len || !t->score || !t->type || !t->flags) {
        mf_tokenizer_free(t);
        return mf_errorf(MF_E_NOMEM, "tokenizer: cannot allocate %llu tokens",
                         (unsigned long long)n_vocab);
    }
    *out = t;
    return MF_OK;
}

static bool streq(const char *s, size_t n, const char *lit) {
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

/* Texts llama.cpp treats as end-of-generation and forces to control type,
 * so they are parsed only with parse_special. */
static bool is_eog_text(const char *s, size_t n) {
    static const char *const eog[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                      "<|endoftext|>", "<|eom_id|>", "<EOT>"};
    for (size_t i = 0; i < sizeof eog / sizeof eog[0]; i++)
        if (streq(s, n, eog[i])) return true;
    return false;
}

typedef struct sp_key {
    uint32_t len;
    int32_t id;
} sp_key;

static int cmp_special(const void *a, const void *b) {
    const sp_key *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The token map, SPM byte fallback ids and the special list (longest first,
 * then lowest id, so the order does not depend on the sort). */
static mf_status build_tables(mf_tokenizer *t) {
    TRY(strmap_init(&t->tokens, (uint32_t)t->n_vocab));
    int n_sp = 0;
    for (int i = 0; i < t->n_vocab; i++) {
        if (t->len[i] == 0) continue; /* an empty text can never be matched */
        strmap_put(&t->tokens, t->text[i], t->len[i], i);
        if (is_eog_text(t->text[i], t->len[i])) t->type[i] = TT_CONTROL;
        uint8_t ty = t->type[i];
        n_sp += ty == TT_CONTROL || ty == TT_USER || ty == TT_UNKNOWN;
    }
    for (int b = 0; b < 256; b++) {
        char hex[8], one[1] = {(char)b};
        snprintf(hex, sizeof hex, "<0x%02X>", b);
        t->byte_id[b] = strmap_get(&t->tokens, hex, 6);
        if (t->byte_id[b] < 0) t->byte_id[b] = strmap_get(&t->tokens, one, 1);
    }
    sp_key *keys = malloc((size_t)(n_sp ? n_sp : 1) * sizeof *keys);
    t->special = malloc((size_t)(n_sp ? n_sp : 1) * sizeof *t->special);
    if (!keys || !t->special) {
        free(keys);
        return mf_errorf(MF_E_NOMEM, "tokenizer: no memory for special tokens");
    }
    for (int i = 0; i < t->n_vocab; i++) {
        uint8_t ty = t->type[i];
        if (t->len[i] && (ty == TT_CONTROL || ty == TT_USER || ty == TT_UNKNOWN))
            keys[t->n_special++] = (sp_key){t->len[i], i};
    }
    qsort(keys, (size_t)t->n_special, sizeof *keys, cmp_special);
    for (int i = 0; i < t->n_special; i++) t->special[i] = keys[i].id;
    free(keys);
    return MF_OK;
}

/* Phi-3 models strip whitespace after their special tokens (llama.cpp sets
 * RSTRIP on them by model name); everyone else keeps it. */
static void apply_name_quirks(mf_tokenizer *t, const mf_gguf_str *name) {
    char low[64];
    size_t n = name ? (name->len < sizeof low - 1 ? name->len : sizeof low - 1) : 0;
    for (size_t i = 0; i < n; i++) low[i] = (char)tolower((unsigned char)name->ptr[i]);
    low[n] = 0;
    if (!strstr(low, "phi-3") && !strstr(low, "phi3")) return;
    for (int i = 0; i < t->n_special; i++) t->flags[t->special[i]] |= TF_RSTRIP;
    int32_t id = strmap_get(&t->tokens, "</s>", 4);
    if (id >= 0) t->flags[id] |= TF_RSTRIP;
    static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
    for (size_t k = 0; k < 3; k++) {
        id = strmap_get(&t->tokens, keep[k], strlen(keep[k]));
        if (id >= 0) t->flags[id] &= (uint8_t)~TF_RSTRIP;
    }
}

/* ---- from GGUF ---------------------------------------------------------------- */

static const mf_gguf_value *num_arr(const mf_gguf *g, const char *key) {
    const mf_gguf_value *v = mf_gguf_get(g, key);
    if (!v || v->type != MF_GGUF_ARRAY) return NULL;
    mf_gguf_vtype e = v->v.arr.type;
    return e != MF_GGUF_STRING && e != MF_GGUF_ARRAY && e < MF_GGUF_VTYPE_COUNT ? v : NULL;
}

static void get_id(const mf_gguf *g, const char *key, int n_vocab, int32_t *id) {
    int64_t v;
    if (mf_gguf_get_int(g, key, &v) && v >= 0 && v < n_vocab) *id = (int32_t)v;
    if (*id >= n_vocab) *id = -1;
}

static mf_status copy_strings(mf_tokenizer *t, const mf_gguf_value *toks,
                              const mf_gguf_value *merges, char **end) {
    char *p = t->blob;
    for (int i = 0; i < t->n_vocab; i++) {
        const mf_gguf_str *s = &toks->v.arr.strs[i];
        memcpy(p, s->ptr, s->len);
        t->text[i] = p;
        t->len[i] = (uint32_t)s->len;
        p += s->len;
        *p++ = 0;
    }
    if (merges) {
        TRY(strmap_init(&t->merges, (uint32_t)merges->v.arr.n));
        for (uint64_t i = 0; i < merges->v.arr.n; i++) {
            const mf_gguf_str *s = &merges->v.arr.strs[i];
            memcpy(p, s->ptr, s->len);
            strmap_put(&t->merges, p, (uint32_t)s->len, (int32_t)i);
            p += s->len;
            *p++ = 0;
        }
    }
    *end = p;
    return MF_OK;
}

static mf_status blob_size(const mf_gguf_value *a, uint64_t *total) {
    for (uint64_t i = 0; a && i < a->v.arr.n; i++) {
        if (a->v.arr.strs[i].len > UINT32_MAX / 2 ||
            !mf_add_ok(*total, a->v.arr.strs[i].len + 1, total))
            return mf_errorf(MF_E_FORMAT, "tokenizer: string %llu is too long",
                             (unsigned long long)i);
    }
    return MF_OK;
}

static void read_types(mf_tokenizer *t, const mf_gguf *g) {
    const mf_gguf_value *sc = num_arr(g, "tokenizer.ggml.scores");
    const mf_gguf_value *ty = num_arr(g, "tokenizer.ggml.token_type");
    for (int i = 0; i < t->n_vocab; i++) {
        t->score[i] = sc && (uint64_t)i < sc->v.arr.n ? (float)mf_gguf_arr_f64(sc, (uint64_t)i) : 0.0f;
        int64_t k = ty && (uint64_t)i < ty->v.arr.n ? mf_gguf_arr_i64(ty, (uint64_t)i) : TT_NORMAL;
        t->type[i] = k >= 0 && k <= TT_BYTE ? (uint8_t)k : TT_UNDEFINED;
    }
}

static mf_status read_options(mf_tokenizer *t, const mf_gguf *g) {
    bool spm = t->kind == TOK_SPM;
    /* llama.cpp's defaults: SPM 1/2/0, BPE 11/11/none */
    t->bos = spm ? 1 : 11;
    t->eos = spm ? 2 : 11;
    t->unk = spm ? 0 : -1;
    get_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos);
    get_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos);
    get_id(g, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk);
    t->add_bos = spm;
    t->add_space_prefix = spm;
    if (!spm) {
        const mf_gguf_str *pre = mf_gguf_get_str(g, "tokenizer.ggml.pre");
        TRY(bpe_pre_create(pre ? pre->ptr : NULL, pre ? pre->len : 0, &t->pre, &t->ignore_merges));
        /* llama.cpp turns BOS on for the llama3-style pre-tokenizers */
        t->add_bos = t->ignore_merges;
        bpe_init_bytes(t);
    }
    mf_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos);
    mf_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);
    return MF_OK;
}

static mf_status fill_from_gguf(mf_tokenizer *t, const mf_gguf *g, const mf_gguf_value *toks,
                                const mf_gguf_value *merges) {
    char *end;
    TRY(copy_strings(t, toks, merges, &end));
    read_types(t, g);
    TRY(read_options(t, g));
    TRY(build_tables(t));
    apply_name_quirks(t, mf_gguf_get_str(g, "general.name"));
    return MF_OK;
}

mf_status mf_tokenizer_from_gguf(const mf_gguf *g, mf_tokenizer **out) {
    if (!g || !out) return mf_errorf(MF_E_INVALID, "tokenizer: NULL argument");
    *out = NULL;
    const mf_gguf_str *model = mf_gguf_get_str(g, "tokenizer.ggml.model");
    if (!model) return mf_errorf(MF_E_UNSUPPORTED, "GGUF has no tokenizer.ggml.model");
    int kind;
    if (streq(model->ptr, model->len, "llama")) kind = TOK_SPM;
    else if (streq(model->ptr, model->len, "gpt2")) kind = TOK_BPE;
    else
        return mf_errorf(MF_E_UNSUPPORTED, "tokenizer model '%.*s' is not supported",
                         (int)(model->len > 64 ? 64 : model->len), model->ptr);
    const mf_gguf_value *toks = mf_gguf_get_arr(g, "tokenizer.ggml.tokens", MF_GGUF_STRING);
    if (!toks) return mf_errorf(MF_E_FORMAT, "GGUF has no tokenizer.ggml.tokens string array");
    const mf_gguf_value *merges = NULL;
    if (kind == TOK_BPE) {
        merges = mf_gguf_get_arr(g, "tokenizer.ggml.merges", MF_GGUF_STRING);
        if (!merges) return mf_errorf(MF_E_FORMAT, "gpt2 tokenizer without tokenizer.ggml.merges");
        if (merges->v.arr.n > INT32_MAX / 4)
            return mf_errorf(MF_E_FORMAT, "tokenizer: %llu merges is too many",
                             (unsigned long long)merges->v.arr.n);
    }
    uint64_t bytes = 0;
    TRY(blob_size(toks, &bytes));
    TRY(blob_size(merges, &bytes));
    mf_tokenizer *t;
    TRY(tok_new(kind, toks->v.arr.n, bytes, &t));
    mf_status st = fill_from_gguf(t, g, toks, merges);
    if (st != MF_OK) {
        mf_tokenizer_free(t);
        return st;
    }
    *out = t;
    return MF_OK;
}

/* ---- from llama2.c -------------------------------------------------------------- */

static bool is_byte_text(const char *s, size_t n) {
    return n == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && isxdigit((unsigned char)s[3]) &&
           isxdigit((unsigned char)s[4]) && s[5] == '>';
}

/* llama2.c's tokenizer.bin is a SentencePiece vocabulary exported with real
 * spaces instead of U+2581; ids 0, 1, 2 are <unk>, <s>, </s>. */
mf_status mf_tokenizer_from_llama2c(const mf_llama2c_vocab *v, mf_tokenizer **out) {
    if (!v || !out || !v->tokens || !v->scores) return mf_errorf(MF_E_INVALID, "tokenizer: NULL argument");
    *out = NULL;
    uint64_t bytes = 0;
    for (int i = 0; i < v->n; i++)
        if (!v->tokens[i] || !mf_add_ok(bytes, strlen(v->tokens[i]) + 1, &bytes))
            return mf_errorf(MF_E_FORMAT, "llama2.c vocab: bad token %d", i);
    mf_tokenizer *t;
    TRY(tok_new(TOK_SPM, v->n < 0 ? 0 : (uint64_t)v->n, bytes, &t));
    char *p = t->blob;
    for (int i = 0; i < t->n_vocab; i++) {
        size_t n = strlen(v->tokens[i]);
        memcpy(p, v->tokens[i], n + 1);
        t->text[i] = p;
        t->len[i] = (uint32_t)n;
        t->score[i] = v->scores[i];
        t->type[i] = i == 0 ? TT_UNKNOWN : i <= 2 ? TT_CONTROL : is_byte_text(p, n) ? TT_BYTE : TT_NORMAL;
        p += n + 1;
    }
    t->space = " ";
    t->unk = 0;
    t->bos = t->n_vocab > 1 ? 1 : -1;
    t->eos = t->n_vocab > 2 ? 2 : -1;
    t->add_bos = t->add_space_prefix = true;
    mf_status st = build_tables(t);
    if (st != MF_OK) {
        mf_tokenizer_free(t);
        return st;
    }
    *out = t;
    return MF_OK;
}

/* ---- accessors -------------------------------------------------------------------- */

int mf_tokenizer_n_vocab(const mf_tokenizer *t) { return t ? t->n_vocab : 0; }
int32_t mf_tokenizer_bos(const mf_tokenizer *t) { return t ? t->bos : -1; }
int32_t mf_tokenizer_eos(const mf_tokenizer *t) { return t ? t->eos : -1; }
bool mf_tokenizer_add_bos(const mf_tokenizer *t) { return t && t->add_bos; }
const char *mf_tokenizer_model(const mf_tokenizer *t) {
    return !t ? "none" : t->kind == TOK_SPM ? "llama" : "gpt2";
}
