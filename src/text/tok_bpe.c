/* tok_bpe.c — the GPT-2 style byte-level BPE encoder and its pre-tokenizers.
 *
 * Owns three things. (1) The GPT-2 byte -> unicode table: printable bytes
 * ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) stand for themselves, the other 68 bytes
 * get code points 256, 257, ... in byte order, so every byte has a visible
 * symbol and merges can be written as text. (2) The pre-tokenizer: the regex
 * sequence llama.cpp's llama-vocab.cpp assigns to each tokenizer.ggml.pre
 * name, compiled once with PCRE2 (UTF + UCP, invalid UTF-8 allowed). Each
 * regex cuts every piece left by the previous one into its matches and the
 * gaps between them, so no byte is ever dropped. (3) The merge loop: within a
 * piece, repeatedly merge the adjacent pair with the lowest merge rank
 * (left-most on ties), then map each symbol to its token id. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/text_internal.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REGEX 6

struct bpe_pre {
    int n;
    pcre2_code *re[MAX_REGEX];
};

/* ---- the byte table ------------------------------------------------------- */

static bool byte_is_printable(int b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

void bpe_init_bytes(mf_tokenizer *t) {
    int extra = 0;
    for (int i = 0; i < 0x144; i++) t->bpe_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int cp = byte_is_printable(b) ? b : 256 + extra++;
        t->bpe_byte[cp] = (int16_t)b;
        /* every code point here is < 0x800: one or two UTF-8 bytes */
        if (cp < 0x80) {
            t->bpe_sym[b][0] = (char)cp;
            t->bpe_sym_len[b] = 1;
        } else {
            t->bpe_sym[b][0] = (char)(0xC0 | (cp >> 6));
            t->bpe_sym[b][1] = (char)(0x80 | (cp & 0x3F));
            t->bpe_sym_len[b] = 2;
        }
    }
}

/* ---- pre-tokenizer regexes (from llama.cpp's llama-vocab.cpp) -------------- */

#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_LLAMA3_HEAD "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
#define RE_LLAMA3_TAIL "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

typedef struct pre_def {
    const char *names;            /* '|'-separated tokenizer.ggml.pre values */
    bool ignore_merges;           /* a piece that is a whole token is kept whole */
    const char *re[MAX_REGEX];    /* applied in order, NULL-terminated */
} pre_def;

static const pre_def pre_defs[] = {
    {"default", false,
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]", NULL}},
    {"gpt-2|phi-2|mpt|olmo|jais|roberta-bpe|gigachat|jina-es|jina-de|jina-v1-en|jina-v2-es|"
     "jina-v2-de|jina-v2-code", false,
     {RE_GPT2, NULL}},
    {"starcoder|refact|command-r|smollm|codeshell|exaone|minerva-7b", false,
     {"\\p{N}", RE_GPT2, NULL}},
    {"falcon", false,
     {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]", NULL}},
    {"deepseek-coder", false,
     {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+",
      "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+", "\\p{N}", NULL}},
    {"llama3|llama-v3|llama-bpe|falcon3", true,
     {RE_LLAMA3_HEAD "\\p{N}{1,3}" RE_LLAMA3_TAIL, NULL}},
    {"dbrx|smaug-bpe", false,
     {RE_LLAMA3_HEAD "\\p{N}{1,3}" RE_LLAMA3_TAIL, NULL}},
    {"qwen2|stablelm2|megrez", false,
     {RE_LLAMA3_HEAD "\\p{N}" RE_LLAMA3_TAIL, NULL}},
};

static bool name_in(const char *names, const char *s, size_t n) {
    for (const char *p = names; *p;) {
        const char *e = strchr(p, '|');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && memcmp(p, s, n) == 0) return true;
        if (!e) break;
        p = e + 1;
    }
    return false;
}

void bpe_pre_free(bpe_pre *p) {
    if (!p) return;
    for (int i = 0; i < p->n; i++) pcre2_code_free(p->re[i]);
    free(p);
}

static mf_status compile_one(const char *re, pcre2_code **out) {
    int err;
    PCRE2_SIZE at;
    /* MATCH_INVALID_UTF: arbitrary bytes are legal subjects; invalid
     * sequences simply never match, so they end up in the gaps. */
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF;
    *out = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, opts, &err, &at, NULL);
    if (!*out) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return mf_errorf(MF_E_UNSUPPORTED, "bpe: regex %s: %s at %zu", re, (char *)msg,
                         (size_t)at);
    }
    pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE); /* optional: falls back to the interpreter */
    return MF_OK;
}

mf_status bpe_pre_create(const char *pre, size_t pre_len, bpe_pre **out, bool *ignore_merges) {
    const pre_def *d = NULL;
    if (!pre) pre = "default", pre_len = 7;
    for (size_t i = 0; i < sizeof pre_defs / sizeof pre_defs[0] && !d; i++)
        if (name_in(pre_defs[i].names, pre, pre_len)) d = &pre_defs[i];
    if (!d)
        return mf_errorf(MF_E_UNSUPPORTED, "tokenizer: unknown pre-tokenizer '%.*s'",
                         (int)(pre_len > 64 ? 64 : pre_len), pre);
    bpe_pre *p = calloc(1, sizeof *p);
    if (!p) return mf_errorf(MF_E_NOMEM, "bpe: no memory");
    for (int i = 0; i < MAX_REGEX && d->re[i]; i++) {
        mf_status st = compile_one(d->re[i], &p->re[i]);
        if (st != MF_OK) {
            bpe_pre_free(p);
            return st;
        }
        p->n++;
    }
    *ignore_merges = d->ignore_merges;
    *out = p;
    return MF_OK;
}

/* ---- splitting ------------------------------------------------------------------ */

typedef struct span {
    size_t off, len;
} span;

typedef struct spanvec {
    span *v;
    size_t n, cap;
} spanvec;

static mf_status span_push(spanvec *sv, size_t off, size_t len) {
    if (len == 0) return MF_OK;
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? sv->cap * 2 : 32;
        span *v = realloc(sv->v, cap * sizeof *v);
        if (!v) return mf_errorf(MF_E_NOMEM, "bpe: cannot grow the piece list");
        sv->v = v;
        sv->cap = cap;
    }
    sv->v[sv->n++] = (span){off, len};
    return MF_OK;
}

/* Cut one piece into matches and the gaps between them. The piece is the
 * whole subject, so lookaheads like (?!\S) see its end as the text's end,
 * exactly as when llama.cpp runs each regex over each previous piece. A
 * matching error (a resource limit on pathological input) ends the search:
 * the rest of the piece stays one piece. */
static mf_status split_piece(const pcre2_code *re, pcre2_match_data *md, const char *text,
                             span c, spanvec *out) {
    const char *subj = text + c.off;
    size_t pos = 0, done = 0;
    while (pos < c.len) {
        int rc = pcre2_match(re, (PCRE2_SPTR)subj, c.len, pos, 0, md, NULL);
        if (rc < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[1] <= ov[0]) { /* empty match: step one character */
            pos = ov[0] + 1;
            while (pos < c.len && ((uint8_t)subj[pos] & 0xC0) == 0x80) pos++;
            continue;
        }
        TRY(span_push(out, c.off + done, ov[0] - done));
        TRY(span_push(out, c.off + ov[0], ov[1] - ov[0]));
        done = pos = ov[1];
    }
    return span_push(out, c.off + done, c.len - done);
}

static mf_status pre_split(const bpe_pre *p, const char *text, size_t len, spanvec *cur) {
    spanvec next = {0};
    mf_status st = MF_OK;
    pcre2_match_data *md = pcre2_match_data_create(16, NULL);
    if (!md) return mf_errorf(MF_E_NOMEM, "bpe: no memory for match data");
    st = span_push(cur, 0, len);
    for (int r = 0; r < p->n && st == MF_OK; r++) {
        next.n = 0;
        for (size_t i = 0; i < cur->n && st == MF_OK; i++)
            st = split_piece(p->re[r], md, text, cur->v[i], &next);
        spanvec tmp = *cur;
        *cur = next;
        next = tmp;
    }
    free(next.v);
    pcre2_match_data_free(md);
    return st;
}

/* ---- merging one piece ---------------------------------------------------------- */

typedef struct bsym {
    int prev, next;
    uint32_t off, n;   /* bytes of the encoded piece; n == 0: merged away */
} bsym;

typedef struct bbigram {
    int left, right;
    int32_t rank;
    uint32_t size;
} bbigram;

typedef struct bpe_work {
    const mf_tokenizer *t;
    char *enc;         /* the piece with every byte replaced by its symbol */
    char *key;         /* scratch for "left right" */
    bsym *syms;
    bbigram *heap;
    size_t n_heap, cap_heap;
} bpe_work;

static bool bb_better(const bbigram *a, const bbigram *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static mf_status bb_push(bpe_work *w, bbigram b) {
    if (w->n_heap == w->cap_heap) {
        size_t cap = w->cap_heap ? w->cap_heap * 2 : 64;
        bbigram *v = realloc(w->heap, cap * sizeof *v);
        if (!v) return mf_errorf(MF_E_NOMEM, "bpe: cannot grow the merge queue");
        w->heap = v;
        w->cap_heap = cap;
    }
    size_t i = w->n_heap++;
    while (i > 0 && bb_better(&b, &w->heap[(i - 1) / 2])) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = b;
    return MF_OK;
}

static bbigram bb_pop(bpe_work *w) {
    bbigram top = w->heap[0], last = w->heap[--w->n_heap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= w->n_heap) break;
        if (c + 1 < w->n_heap && bb_better(&w->heap[c + 1], &w->heap[c])) c++;
        if (!bb_better(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (w->n_heap) w->heap[i] = last;
    return top;
}

static mf_status add_bigram(bpe_work *w, int left, int right) {
    if (left < 0 || right < 0) return MF_OK;
    const bsym *l = &w->syms[left], *r = &w->syms[right];
    memcpy(w->key, w->enc + l->off, l->n);
    w->key[l->n] = ' ';
    memcpy(w->key + l->n + 1, w->enc + r->off, r->n);
    int32_t rank = strmap_get(&w->t->merges, w->key, (size_t)l->n + 1 + r->n);
    if (rank < 0) return MF_OK;
    return bb_push(w, (bbigram){left, right, rank, l->n + r->n});
}

static mf_status merge_piece(bpe_work *w, int n_syms) {
    w->n_heap = 0;
    for (int i = 1; i < n_syms; i++) TRY(add_bigram(w, i - 1, i));
    while (w->n_heap) {
        bbigram b = bb_pop(w);
        bsym *l = &w->syms[b.left], *r = &w->syms[b.right];
        /* stale: a side was merged into something else since queuing */
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) w->syms[r->next].prev = b.left;
        TRY(add_bigram(w, l->prev, b.left));
        TRY(add_bigram(w, b.left, l->next));
    }
    return MF_OK;
}

/* A final symbol: its token, else each of its bytes that is a token. */
static mf_status emit_sym(const mf_tokenizer *t, const char *s, uint32_t n, idvec *out) {
    int32_t id = strmap_get(&t->tokens, s, n);
    if (id >= 0) return idvec_push(out, id);
    for (uint32_t i = 0; i < n; i++) {
        id = strmap_get(&t->tokens, s + i, 1);
        if (id >= 0) TRY(idvec_push(out, id));
    }
    return MF_OK;
}

static mf_status encode_piece(bpe_work *w, const char *p, size_t len, idvec *out) {
    const mf_tokenizer *t = w->t;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t b = (uint8_t)p[i];
        w->syms[i] = (bsym){(int)i - 1, i + 1 == len ? -1 : (int)i + 1, (uint32_t)n,
                            t->bpe_sym_len[b]};
        memcpy(w->enc + n, t->bpe_sym[b], t->bpe_sym_len[b]);
        n += t->bpe_sym_len[b];
    }
    if (t->ignore_merges) {
        int32_t id = strmap_get(&t->tokens, w->enc, n);
        if (id >= 0) return idvec_push(out, id);
    }
    TRY(merge_piece(w, (int)len));
    for (int i = 0; i >= 0; i = w->syms[i].next)
        TRY(emit_sym(t, w->enc + w->syms[i].off, w->syms[i].n, out));
    return MF_OK;
}

mf_status bpe_encode(const mf_tokenizer *t, const char *text, size_t len, idvec *out) {
    if (len == 0) return MF_OK;
    if (len > INT32_MAX / 4) return mf_errorf(MF_E_INVALID, "bpe: text of %zu bytes is too long", len);
    spanvec pieces = {0};
    bpe_work w = {t, malloc(2 * len), malloc(4 * len + 1), malloc(len * sizeof(bsym)), NULL, 0, 0};
    mf_status st = (w.enc && w.key && w.syms) ? MF_OK : mf_errorf(MF_E_NOMEM, "bpe: no memory");
    if (st == MF_OK) st = pre_split(t->pre, text, len, &pieces);
    for (size_t i = 0; i < pieces.n && st == MF_OK; i++)
        st = encode_piece(&w, text + pieces.v[i].off, pieces.v[i].len, out);
    free(pieces.v);
    free(w.enc);
    free(w.key);
    free(w.syms);
    free(w.heap);
    return st;
}

/* ---- decoding ------------------------------------------------------------------ */

/* Decode one code point; returns its byte length, or 0 if s is not valid UTF-8
 * at this position (the caller copies one raw byte). */
static size_t utf8_cp(const uint8_t *s, size_t n, uint32_t *cp) {
    if (s[0] < 0x80) return *cp = s[0], 1;
    size_t l = (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3 : (s[0] & 0xF8) == 0xF0 ? 4 : 0;
    if (l == 0 || l > n) return 0;
    uint32_t c = s[0] & (0x7F >> l);
    for (size_t i = 1; i < l; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    *cp = c;
    return l;
}

size_t bpe_decode_piece(const mf_tokenizer *t, int32_t id, char *buf, size_t cap) {
    const uint8_t *s = (const uint8_t *)t->text[id];
    size_t n = t->len[id], out = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t l = utf8_cp(s + i, n - i, &cp);
        if (l && cp < 0x144 && t->bpe_byte[cp] >= 0) {
            if (out < cap) buf[out] = (char)t->bpe_byte[cp];
            out++;
        } else {
            /* not a byte symbol: pass its bytes through unchanged */
            if (l == 0) l = 1;
            for (size_t k = 0; k < l; k++, out++)
                if (out < cap) buf[out] = (char)s[i + k];
        }
        i += l;
    }
    return out;
}
