/* test_tokenizer.c — the tokenizers against llama.cpp's own test vectors.
 *
 * Oracles: ../shared/vocab/ggml-vocab-NAME.gguf with its .inp/.out (every
 * string must encode to exactly the listed ids, no BOS, special text not
 * parsed; and decode(our ids) == decode(expected ids)); the prompt ids that
 * llama.cpp produced for llama-2-tiny-random and synth-mini-f16 (with BOS);
 * a llama2.c tokenizer.bin built in memory from the Llama vocabulary (must
 * give the GGUF tokenizer's ids). Properties: byte-level BPE and SPM with
 * byte fallback decode any byte string (invalid UTF-8 included) back to
 * itself; special tokens are parsed only when asked; a too-small id buffer
 * is reported with the full count. */
#include "test.h"
#include "text/text.h"

#define SEP "\n__ggml_vocab_test__\n"

static const char *const vocab_names[] = {"llama-spm", "phi-3", "gpt-2", "starcoder",
                                          "deepseek-coder", "falcon"};

static mf_tokenizer *load_tok(const char *rel) {
    char path[512];
    mf_gguf *g = NULL;
    mf_tokenizer *t = NULL;
    test_path(path, sizeof path, rel);
    if (mf_gguf_open(path, &g) != MF_OK) {
        CHECK(0, "open %s: %s", path, mf_last_error());
        return NULL;
    }
    mf_status st = mf_tokenizer_from_gguf(g, &t);
    CHECK(st == MF_OK, "tokenizer of %s: %s", path, mf_last_error());
    mf_gguf_close(g); /* the tokenizer must not borrow from the file */
    return st == MF_OK ? t : NULL;
}

/* Encode into a fresh array (no BOS unless asked); *n = count. */
static int32_t *enc(const mf_tokenizer *t, const char *s, size_t len, bool bos, bool special,
                    int *n) {
    int cap = (int)len + 8;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    mf_status st = mf_tokenizer_encode(t, s, len, bos, special, ids, cap, n);
    CHECK(st == MF_OK, "encode: %s", mf_last_error());
    if (st != MF_OK) *n = 0;
    return ids;
}

static char *dec(const mf_tokenizer *t, const int32_t *ids, int n, size_t *len) {
    size_t cap = 16 * (size_t)n + 16;
    char *buf = malloc(cap);
    mf_status st = mf_tokenizer_decode(t, ids, n, buf, cap, len);
    CHECK(st == MF_OK && *len < cap, "decode: %s", mf_last_error());
    return buf;
}

static int parse_ids(const char *line, int32_t *ids, int cap) {
    int n = 0;
    char *end;
    for (const char *p = line; n < cap;) {
        long v = strtol(p, &end, 10);
        if (end == p) break;
        ids[n++] = (int32_t)v;
        p = end;
    }
    return n;
}

static void print_ids(const char *what, const int32_t *ids, int n) {
    fprintf(stderr, "  %s:", what);
    for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

/* One vector: exact ids, then the decode check. Returns 1 if both pass. */
static int check_vector(const mf_tokenizer *t, const char *name, const char *s, size_t len,
                        const char *line) {
    int32_t want[1024];
    int n_want = parse_ids(line, want, 1024), n_got;
    int32_t *got = enc(t, s, len, false, false, &n_got);
    bool same = n_got == n_want && memcmp(got, want, (size_t)n_got * sizeof *got) == 0;
    CHECK(same, "%s: vector \"%.*s\" encodes differently", name, (int)len, s);
    if (!same) {
        print_ids("got ", got, n_got);
        print_ids("want", want, n_want);
    }
    size_t l1, l2;
    char *d1 = dec(t, got, n_got, &l1), *d2 = dec(t, want, n_want, &l2);
    bool dsame = l1 == l2 && memcmp(d1, d2, l1) == 0;
    CHECK(dsame, "%s: decode of \"%.*s\" differs", name, (int)len, s);
    free(d1);
    free(d2);
    free(got);
    return same && dsame;
}

/* Split .inp on the separator and .out on lines; walk them together. */
static void check_vocab(const char *name) {
    char rel[256], path[512];
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf", name);
    mf_tokenizer *t = load_tok(rel);
    size_t ilen, olen;
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf.inp", name);
    char *inp = (char *)test_read_file(test_path(path, sizeof path, rel), &ilen);
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf.out", name);
    char *out = (char *)test_read_file(test_path(path, sizeof path, rel), &olen);
    CHECK(t && inp && out, "%s: fixtures missing", name);
    int total = 0, pass = 0;
    char *ip = inp, *op = out;
    while (t && inp && out && *op) {
        char *isep = strstr(ip, SEP), *nl = strchr(op, '\n');
        size_t slen = isep ? (size_t)(isep - ip) : strlen(ip);
        if (nl) *nl = 0;
        pass += check_vector(t, name, ip, slen, op);
        total++;
        if (!isep || !nl) break;
        ip = isep + strlen(SEP);
        op = nl + 1;
    }
    CHECK(total >= 40, "%s: only %d vectors read", name, total);
    printf("vocab %-15s %d/%d vectors pass\n", name, pass, total);
    free(inp);
    free(out);
    mf_tokenizer_free(t);
}

/* llama.cpp's prompt ids for a model (the "tokens:" line of its .txt). */
static void check_prompt(const char *model, const char *ref) {
    char rel[256], path[512];
    snprintf(rel, sizeof rel, "models/%s", model);
    mf_tokenizer *t = load_tok(rel);
    size_t plen, rlen;
    char *prompt = (char *)test_read_file(test_path(path, sizeof path, "reference/prompt.txt"), &plen);
    snprintf(rel, sizeof rel, "reference/%s", ref);
    char *txt = (char *)test_read_file(test_path(path, sizeof path, rel), &rlen);
    char *line = txt ? strstr(txt, "tokens:") : NULL;
    CHECK(t && prompt && line, "%s: fixtures missing", model);
    if (t && prompt && line) {
        int32_t want[512];
        int n_want = parse_ids(line + 7, want, 512), n;
        int32_t *ids = enc(t, prompt, plen, true, false, &n);
        CHECK(n == n_want && memcmp(ids, want, (size_t)n * sizeof *ids) == 0,
              "%s: prompt ids differ from llama.cpp's (%d vs %d ids)", model, n, n_want);
        size_t dl;
        char *d = dec(t, ids, n, &dl);
        CHECK(dl == plen && memcmp(d, prompt, plen) == 0, "%s: prompt does not decode back", model);
        printf("prompt %-26s %d ids\n", model, n);
        free(d);
        free(ids);
    }
    free(prompt);
    free(txt);
    mf_tokenizer_free(t);
}

/* Every byte string decodes back to itself (awkward lengths, fixed seed). */
static void check_roundtrip(const mf_tokenizer *t, const char *name) {
    static const int lens[] = {1, 2, 3, 5, 7, 15, 16, 17, 31, 33, 100};
    uint64_t x = 0x9E3779B97F4A7C15ull;
    int ok = 0, n_all = 0;
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        for (int rep = 0; rep < 20; rep++, n_all++) {
            char s[128];
            for (int i = 0; i < lens[k]; i++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                /* mix ASCII, spaces and arbitrary (often invalid UTF-8) bytes */
                s[i] = (char)(rep % 3 == 0 ? (uint8_t)x
                              : rep % 3 == 1 ? (uint8_t)" a\xC3\xA9\n"[x % 5] : 32 + x % 95);
            }
            if (t == NULL) continue;
            int n;
            size_t dl;
            int32_t *ids = enc(t, s, (size_t)lens[k], false, false, &n);
            char *d = dec(t, ids, n, &dl);
            bool same = dl == (size_t)lens[k] && memcmp(d, s, dl) == 0;
            if (!same && ok + 3 > n_all) { /* show the first few failures */
                fprintf(stderr, "  %s: no round trip for", name);
                for (int i = 0; i < lens[k]; i++) fprintf(stderr, " %02x", (uint8_t)s[i]);
                fprintf(stderr, "\n");
            }
            ok += same;
            free(ids);
            free(d);
        }
    }
    CHECK(ok == n_all, "%s: %d of %d random byte strings round-trip", name, ok, n_all);
}

/* "<s>" / "<|endoftext|>" become the control token only with parse_special;
 * a buffer that is too small reports the full count. */
static void check_special(const mf_tokenizer *spm, const mf_tokenizer *bpe) {
    int n;
    int32_t ids[64];
    if (spm) {
        CHECK(mf_tokenizer_encode(spm, "<s>hi", 5, false, true, ids, 64, &n) == MF_OK &&
                  n >= 2 && ids[0] == 1, "spm: <s> parsed as BOS");
        CHECK(mf_tokenizer_encode(spm, "<s>hi", 5, false, false, ids, 64, &n) == MF_OK &&
                  ids[0] != 1, "spm: <s> left as text without parse_special");
        CHECK(mf_tokenizer_encode(spm, "Hello world", 11, true, false, ids, 2, &n) == MF_E_INVALID &&
                  n == 3 && ids[0] == 1, "spm: small buffer gives MF_E_INVALID and the count (%d)", n);
        size_t len;
        char buf[8];
        int32_t nl = 13; /* <0x0A> */
        CHECK(mf_tokenizer_piece(spm, -1, nl, buf, sizeof buf, &len) == MF_OK && len == 1 &&
                  buf[0] == '\n', "spm: byte token piece");
        CHECK(mf_tokenizer_piece(spm, -1, 1, buf, sizeof buf, &len) == MF_OK && len == 0,
              "spm: control token piece is empty");
        CHECK(mf_tokenizer_bos(spm) == 1 && mf_tokenizer_eos(spm) == 2 && mf_tokenizer_add_bos(spm) &&
                  strcmp(mf_tokenizer_model(spm), "llama") == 0, "spm: ids and flags");
    }
    if (bpe) {
        const char *s = "a<|endoftext|>b";
        CHECK(mf_tokenizer_encode(bpe, s, strlen(s), false, true, ids, 64, &n) == MF_OK && n == 3 &&
                  ids[1] == 50256, "gpt2: <|endoftext|> parsed");
        CHECK(mf_tokenizer_encode(bpe, s, strlen(s), false, false, ids, 64, &n) == MF_OK && n > 3,
              "gpt2: <|endoftext|> left as text");
        CHECK(strcmp(mf_tokenizer_model(bpe), "gpt2") == 0 && !mf_tokenizer_add_bos(bpe),
              "gpt2: model name and add_bos");
    }
}

/* A llama2.c tokenizer.bin written in memory from the Llama vocabulary
 * (U+2581 replaced by ' ', as llama2.c exports it) must encode and decode the
 * prompt exactly as the GGUF tokenizer does. */
static void check_llama2c(const mf_tokenizer *spm, const char *gguf_rel) {
    char path[512];
    mf_gguf *g = NULL;
    if (!spm || mf_gguf_open(test_path(path, sizeof path, gguf_rel), &g) != MF_OK) return;
    const mf_gguf_value *toks = mf_gguf_get_arr(g, "tokenizer.ggml.tokens", MF_GGUF_STRING);
    const mf_gguf_value *sc = mf_gguf_get_arr(g, "tokenizer.ggml.scores", MF_GGUF_F32);
    int nv = (int)toks->v.arr.n;
    unsigned char *bin = malloc(4 + (size_t)nv * 8 + 64 * (size_t)nv), *p = bin + 4;
    int32_t maxlen = 0;
    for (int i = 0; i < nv; i++) {
        const mf_gguf_str *s = &toks->v.arr.strs[i];
        float score = (float)mf_gguf_arr_f64(sc, (uint64_t)i);
        int32_t len = 0;
        unsigned char *lp = p + 4;
        for (uint64_t k = 0; k < s->len; k++) {
            bool sp = k + 2 < s->len && memcmp(s->ptr + k, "\xE2\x96\x81", 3) == 0;
            (lp + 4)[len++] = sp ? ' ' : (unsigned char)s->ptr[k];
            k += sp ? 2 : 0;
        }
        memcpy(p, &score, 4);
        memcpy(lp, &len, 4);
        maxlen = len > maxlen ? len : maxlen;
        p = lp + 4 + len;
    }
    memcpy(bin, &maxlen, 4);
    mf_llama2c_vocab *v = NULL;
    mf_tokenizer *t = NULL;
    CHECK(mf_llama2c_vocab_parse(bin, (uint64_t)(p - bin), "mem", nv, &v) == MF_OK &&
              mf_tokenizer_from_llama2c(v, &t) == MF_OK, "llama2c vocab: %s", mf_last_error());
    size_t plen;
    char *prompt = (char *)test_read_file(test_path(path, sizeof path, "reference/prompt.txt"), &plen);
    if (t && prompt) {
        int n1, n2;
        size_t l1, l2;
        int32_t *a = enc(spm, prompt, plen, true, false, &n1), *b = enc(t, prompt, plen, true, false, &n2);
        CHECK(n1 == n2 && memcmp(a, b, (size_t)n1 * sizeof *a) == 0, "llama2c: ids differ from GGUF");
        char *d1 = dec(spm, a, n1, &l1), *d2 = dec(t, b, n2, &l2);
        CHECK(l1 == l2 && memcmp(d1, d2, l1) == 0, "llama2c: decode differs");
        check_roundtrip(t, "llama2c");
        free(a), free(b), free(d1), free(d2);
    }
    free(prompt);
    mf_tokenizer_free(t);
    mf_llama2c_vocab_free(v);
    free(bin);
    mf_gguf_close(g);
}

int main(void) {
    if (!test_shared()) {
        printf("SKIP tokenizer: ../shared not found (set MF_SHARED)\n");
        return test_report("tokenizer");
    }
    for (size_t i = 0; i < sizeof vocab_names / sizeof vocab_names[0]; i++) check_vocab(vocab_names[i]);
    check_prompt("llama-2-tiny-random.gguf", "llama-2-tiny-random.txt");
    check_prompt("synth-mini-f16.gguf", "synth-mini-f16.txt");
    mf_tokenizer *spm = load_tok("vocab/ggml-vocab-llama-spm.gguf");
    mf_tokenizer *bpe = load_tok("vocab/ggml-vocab-gpt-2.gguf");
    check_special(spm, bpe);
    check_roundtrip(spm, "llama-spm");
    check_roundtrip(bpe, "gpt-2");
    check_llama2c(spm, "vocab/ggml-vocab-llama-spm.gguf");
    mf_tokenizer_free(spm);
    mf_tokenizer_free(bpe);
    return test_report("tokenizer");
}
