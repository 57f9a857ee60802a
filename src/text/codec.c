/* codec.c — the public encode, piece and decode calls of a tokenizer.
 *
 * Encoding first cuts the text around special tokens as llama.cpp's
 * tokenizer_st_partition does: for each special token, longest text first,
 * every occurrence in every still-plain fragment becomes that token (user-
 * defined tokens always, control and unknown ones only with parse_special).
 * Each plain fragment then goes to the SentencePiece encoder (which prefixes
 * the space symbol at the start and after a special token) or to the BPE
 * encoder. Decoding maps ids back to bytes; SentencePiece drops the space it
 * added at the start of the text. */
#include "text/text_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

typedef struct frag {
    int32_t id;        /* a special token, or -1 for plain text */
    size_t off, len;   /* plain text: bytes of the input */
} frag;

typedef struct fragvec {
    frag *v;
    size_t n, cap;
} fragvec;

static mf_status frag_push(fragvec *fv, int32_t id, size_t off, size_t len) {
    if (id < 0 && len == 0) return MF_OK;
    if (fv->n == fv->cap) {
        size_t cap = fv->cap ? fv->cap * 2 : 16;
        frag *v = realloc(fv->v, cap * sizeof *v);
        if (!v) return mf_errorf(MF_E_NOMEM, "tokenizer: cannot grow the fragment list");
        fv->v = v;
        fv->cap = cap;
    }
    fv->v[fv->n++] = (frag){id, off, len};
    return MF_OK;
}

/* Cut one plain fragment at every occurrence of special token sid. */
static mf_status split_fragment(const mf_tokenizer *t, int32_t sid, const char *text, frag f,
                                fragvec *out) {
    const char *s = t->text[sid];
    size_t sl = t->len[sid], off = f.off, len = f.len;
    while (len > 0) {
        const char *m = memmem(text + off, len, s, sl);
        if (!m) break;
        size_t at = (size_t)(m - text), left = at - off;
        if (t->flags[sid] & TF_LSTRIP)
            while (left > 0 && isspace((unsigned char)text[off + left - 1])) left--;
        TRY(frag_push(out, -1, off, left));
        TRY(frag_push(out, sid, 0, 0));
        len -= at + sl - off;
        off = at + sl;
        if (t->flags[sid] & TF_RSTRIP)
            while (len > 0 && isspace((unsigned char)text[off])) off++, len--;
    }
    return frag_push(out, -1, off, len);
}

static mf_status partition(const mf_tokenizer *t, const char *text, size_t len,
                           bool parse_special, fragvec *cur) {
    fragvec next = {0};
    mf_status st = frag_push(cur, -1, 0, len);
    for (int k = 0; k < t->n_special && st == MF_OK; k++) {
        int32_t sid = t->special[k];
        if (!parse_special && t->type[sid] != TT_USER) continue;
        next.n = 0;
        for (size_t i = 0; i < cur->n && st == MF_OK; i++)
            st = cur->v[i].id >= 0 ? frag_push(&next, cur->v[i].id, 0, 0)
                                   : split_fragment(t, sid, text, cur->v[i], &next);
        fragvec tmp = *cur;
        *cur = next;
        next = tmp;
    }
    free(next.v);
    return st;
}

static mf_status encode_all(const mf_tokenizer *t, const char *text, size_t len, bool add_bos,
                            bool parse_special, idvec *out) {
    if (add_bos && t->bos >= 0) TRY(idvec_push(out, t->bos));
    if (len == 0) return MF_OK;
    fragvec fv = {0};
    mf_status st = partition(t, text, len, parse_special, &fv);
    bool after_special = true; /* the text start counts as "after a special" */
    for (size_t i = 0; i < fv.n && st == MF_OK; i++) {
        const frag *f = &fv.v[i];
        if (f->id >= 0) {
            st = idvec_push(out, f->id);
            after_special = true;
        } else if (t->kind == TOK_SPM) {
            st = spm_encode(t, text + f->off, f->len, t->add_space_prefix && after_special, out);
            after_special = false;
        } else {
            st = bpe_encode(t, text + f->off, f->len, out);
        }
    }
    free(fv.v);
    return st;
}

mf_status mf_tokenizer_encode(const mf_tokenizer *t, const char *text, size_t len,
                              bool add_bos, bool parse_special, int32_t *ids, int cap,
                              int *n_out) {
    if (!t || !n_out || (!text && len) || cap < 0 || (!ids && cap > 0))
        return mf_errorf(MF_E_INVALID, "tokenize: bad arguments");
    idvec out = {0};
    mf_status st = encode_all(t, text, len, add_bos, parse_special, &out);
    if (st == MF_OK && out.n > INT32_MAX) st = mf_errorf(MF_E_INVALID, "tokenize: too many ids");
    if (st == MF_OK) {
        *n_out = (int)out.n;
        size_t n_copy = out.n < (size_t)cap ? out.n : (size_t)cap;
        if (n_copy) memcpy(ids, out.v, n_copy * sizeof *ids);
        if (out.n > (size_t)cap)
            st = mf_errorf(MF_E_INVALID, "tokenize: %zu ids do not fit in %d", out.n, cap);
    }
    free(out.v);
    return st;
}

/* ---- decoding ------------------------------------------------------------------ */

/* Copy n bytes to buf at *pos, writing only what fits in cap. */
static void put(char *buf, size_t cap, size_t *pos, const char *s, size_t n) {
    if (*pos < cap) memcpy(buf + *pos, s, n < cap - *pos ? n : cap - *pos);
    *pos += n;
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                        : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* A normal SentencePiece token: the space symbol back to ' ', and the space
 * the encoder put at the very start dropped again. */
static size_t spm_normal(const mf_tokenizer *t, int32_t prev, int32_t id, char *buf, size_t cap) {
    const char *s = t->text[id];
    size_t n = t->len[id], sl = strlen(t->space), pos = 0, i = 0;
    bool strip = t->add_space_prefix && (prev < 0 || prev == t->bos);
    while (i < n) {
        if (n - i >= sl && memcmp(s + i, t->space, sl) == 0) {
            if (!(strip && pos == 0)) put(buf, cap, &pos, " ", 1);
            i += sl;
        } else {
            put(buf, cap, &pos, s + i, 1);
            i++;
        }
        strip = false;
    }
    return pos;
}

static size_t piece_into(const mf_tokenizer *t, int32_t prev, int32_t id, char *buf, size_t cap) {
    uint8_t ty = t->type[id];
    size_t pos = 0;
    if (ty == TT_CONTROL || ty == TT_UNKNOWN) return 0;
    if (ty == TT_USER) {
        put(buf, cap, &pos, t->text[id], t->len[id]);
        return pos;
    }
    if (t->kind == TOK_BPE) return ty == TT_NORMAL ? bpe_decode_piece(t, id, buf, cap) : 0;
    if (ty == TT_BYTE && t->len[id] == 6) {
        int hi = hexval(t->text[id][3]), lo = hexval(t->text[id][4]);
        char b = (char)(hi * 16 + lo);
        if (hi >= 0 && lo >= 0) put(buf, cap, &pos, &b, 1);
        return pos;
    }
    return ty == TT_NORMAL ? spm_normal(t, prev, id, buf, cap) : 0;
}

mf_status mf_tokenizer_piece(const mf_tokenizer *t, int32_t prev, int32_t id, char *buf,
                             size_t cap, size_t *len) {
    if (!t || !len || (!buf && cap)) return mf_errorf(MF_E_INVALID, "piece: bad arguments");
    if (id < 0 || id >= t->n_vocab)
        return mf_errorf(MF_E_INVALID, "piece: token id %d outside [0, %d)", id, t->n_vocab);
    *len = piece_into(t, prev, id, buf, cap);
    return MF_OK;
}

mf_status mf_tokenizer_decode(const mf_tokenizer *t, const int32_t *ids, int n, char *buf,
                              size_t cap, size_t *len) {
    if (!t || !len || n < 0 || (!ids && n) || (!buf && cap))
        return mf_errorf(MF_E_INVALID, "decode: bad arguments");
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return mf_errorf(MF_E_INVALID, "decode: token id %d outside [0, %d)", ids[i],
                             t->n_vocab);
        pos += piece_into(t, i ? ids[i - 1] : -1, ids[i], pos < cap ? buf + pos : NULL,
                          pos < cap ? cap - pos : 0);
    }
    if (pos < cap) buf[pos] = 0;
    *len = pos;
    return MF_OK;
}
