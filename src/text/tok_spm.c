/* tok_spm.c — the SentencePiece-style (BPE-by-score) encoder.
 *
 * Follows llama.cpp's llm_tokenizer_spm (llama-vocab.cpp) as the statement of
 * behaviour: spaces become the space symbol (U+2581, or ' ' for llama2.c
 * vocabularies), one is prefixed when asked, the text is cut into UTF-8
 * characters, and then the adjacent pair whose concatenation is a token with
 * the highest score is merged, again and again (a max-heap of candidate
 * pairs, left-most first on equal scores). Symbols that are not tokens at the
 * end fall back to byte tokens <0xXX>. Invalid UTF-8 never stops it: each
 * byte of an invalid sequence is a symbol of its own and ends as a byte
 * token. */
#include "text/text_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct sym {
    int prev, next;    /* neighbours in the live chain, -1 at the ends */
    uint32_t off, n;   /* bytes of the escaped text; n == 0: merged away */
} sym;

typedef struct bigram {
    int left, right;
    float score;
    uint32_t size;     /* bytes of left+right when queued: stale if changed */
} bigram;

typedef struct heap {
    bigram *v;
    size_t n, cap;
} heap;

/* The pair to merge first: higher score, then the left-most. */
static bool better(const bigram *a, const bigram *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static mf_status heap_push(heap *h, bigram b) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        bigram *v = realloc(h->v, cap * sizeof *v);
        if (!v) return mf_errorf(MF_E_NOMEM, "spm: cannot grow the merge queue");
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0 && better(&b, &h->v[(i - 1) / 2])) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = b;
    return MF_OK;
}

static bigram heap_pop(heap *h) {
    bigram top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && better(&h->v[c + 1], &h->v[c])) c++;
        if (!better(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

/* Byte length of the UTF-8 character at s (n bytes left). The length comes
 * from the lead byte as in llama.cpp's unicode_len_utf8, but a sequence that
 * is cut short or lacks its continuation bytes counts as one byte: otherwise
 * a stray lead byte would swallow the first bytes of the next character (of
 * an escaped space, say) and the text would not decode back. */
static uint32_t utf8_len(const char *s, size_t n) {
    static const uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    uint32_t l = lookup[(uint8_t)s[0] >> 4];
    if (l > n) return 1;
    for (uint32_t i = 1; i < l; i++)
        if (((uint8_t)s[i] & 0xC0) != 0x80) return 1;
    return l;
}

/* The escaped text: optional leading space symbol, every ' ' replaced. */
static mf_status escape(const mf_tokenizer *t, const char *text, size_t len, bool prefix,
                        char **out, size_t *out_len) {
    size_t sl = strlen(t->space), cap;
    if (len > (SIZE_MAX - sl) / sl) return mf_errorf(MF_E_INVALID, "spm: text too long");
    cap = (len + 1) * sl;
    char *s = malloc(cap ? cap : 1);
    if (!s) return mf_errorf(MF_E_NOMEM, "spm: cannot allocate %zu bytes", cap);
    size_t n = 0;
    if (prefix) {
        memcpy(s, t->space, sl);
        n = sl;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(s + n, t->space, sl);
            n += sl;
        } else {
            s[n++] = text[i];
        }
    }
    *out = s;
    *out_len = n;
    return MF_OK;
}

typedef struct spm_state {
    const mf_tokenizer *t;
    const char *s;
    sym *syms;
    heap q;
} spm_state;

static mf_status try_bigram(spm_state *st, int left, int right) {
    if (left < 0 || right < 0) return MF_OK;
    const sym *l = &st->syms[left], *r = &st->syms[right];
    int32_t id = strmap_get(&st->t->tokens, st->s + l->off, (size_t)l->n + r->n);
    if (id < 0) return MF_OK;
    bigram b = {left, right, st->t->score[id], l->n + r->n};
    return heap_push(&st->q, b);
}

static mf_status merge_all(spm_state *st) {
    while (st->q.n) {
        bigram b = heap_pop(&st->q);
        sym *l = &st->syms[b.left], *r = &st->syms[b.right];
        /* Either side already merged into something else: stale entry. */
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) st->syms[r->next].prev = b.left;
        TRY(try_bigram(st, l->prev, b.left));
        TRY(try_bigram(st, b.left, l->next));
    }
    return MF_OK;
}

/* A final symbol: its token, or one byte token per byte (unk if the
 * vocabulary has neither). */
static mf_status emit(const mf_tokenizer *t, const char *s, uint32_t n, idvec *out) {
    int32_t id = strmap_get(&t->tokens, s, n);
    if (id >= 0) return idvec_push(out, id);
    for (uint32_t i = 0; i < n; i++) {
        int32_t b = t->byte_id[(uint8_t)s[i]];
        if (b < 0) b = t->unk;
        if (b >= 0) TRY(idvec_push(out, b));
    }
    return MF_OK;
}

static mf_status run(spm_state *st, size_t n, idvec *out) {
    int n_syms = 0;
    for (size_t off = 0; off < n; n_syms++) {
        uint32_t cl = utf8_len(st->s + off, n - off);
        st->syms[n_syms] = (sym){n_syms - 1, off + cl == n ? -1 : n_syms + 1, (uint32_t)off, cl};
        off += cl;
    }
    for (int i = 1; i < n_syms; i++) TRY(try_bigram(st, i - 1, i));
    TRY(merge_all(st));
    for (int i = n_syms ? 0 : -1; i >= 0; i = st->syms[i].next)
        TRY(emit(st->t, st->s + st->syms[i].off, st->syms[i].n, out));
    return MF_OK;
}

mf_status spm_encode(const mf_tokenizer *t, const char *text, size_t len, bool prefix,
                     idvec *out) {
    char *s = NULL;
    size_t n = 0;
    TRY(escape(t, text, len, prefix, &s, &n));
    if (n > UINT32_MAX / 2) {
        free(s);
        return mf_errorf(MF_E_INVALID, "spm: text of %zu bytes is too long", len);
    }
    spm_state st = {t, s, malloc((n ? n : 1) * sizeof(sym)), {0}};
    mf_status rc = st.syms ? run(&st, n, out) : mf_errorf(MF_E_NOMEM, "spm: no memory");
    free(st.q.v);
    free(st.syms);
    free(s);
    return rc;
}
